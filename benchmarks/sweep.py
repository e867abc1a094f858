"""Search-phase throughput of the sweep strategies: member-images/s for N members.

For N in {1, 2, 4, 8} (batch 32) and each strategy (``vmap``; ``sharded`` with >1 device) against
``loop`` (a Python loop of single-member jitted steps), measures the compile time (first call),
the steady-state step time, member-images/s (= N * batch / step time) and the process RSS (XLA's
buffers live outside the Python heap, so tracemalloc would miss them). Prints a table and writes
``benchmarks/results/sweep.json``. This is what the ``auto`` strategy's per-backend rule rests on.

Usage::

  python benchmarks/sweep.py                       # DemoNet 8x8x1 (fast)
  python benchmarks/sweep.py --model resnet8 --steps 5
"""

import argparse
import sys
import json
import os
import platform
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np
import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from jpq_jax import sweep, to_search, trace_table
from jpq_jax import train as T
from jpq_jax.layers import Ctx
from jpq_jax.models import get_model

SHAPES = {"demo": (8, 8, 1), "resnet8": (32, 32, 3), "dscnn": (49, 10, 1), "resnet18": (64, 64, 3)}


def _rss_mb():
  return psutil.Process().memory_info().rss / 2 ** 20


def bench(model_name, n, strategy, batch, steps):
  model = get_model(model_name, num_classes=10)
  shape = SHAPES[model_name]
  x = np.random.RandomState(0).rand(batch, *shape).astype(np.float32)
  y = (np.arange(batch) % 10).astype(np.int32)
  table = trace_table(model, jnp.zeros((1,) + shape))
  fv = model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + shape), Ctx.float())
  sv = to_search(model, fv, jnp.zeros((1,) + shape), table=table)
  tx = T.make_optimizer({"name": "adam", "lr": 1e-3, "wd": 1e-4},
                        {"name": "sgd", "lr": 1e-2, "momentum": 0.9})
  step = T.make_train_step(model, table, "search", tx, cost="size")
  ev = T.make_eval_step(model, "search")
  end = lambda s, m: T.end_epoch(s, m, start=-1, patience=10)
  states = [T.init_state("search", sv, tx, key=jax.random.PRNGKey(k), lam=1e-6) for k in range(n)]
  ex = sweep.make_executor(strategy, step, ev, end, n)
  ex.set_states(jax.tree_util.tree_map(lambda *a: jnp.stack(a), *states))
  lam = np.full((n,), 1e-6, np.float32)
  zero = np.zeros((n,), np.float32)
  t0 = time.perf_counter()
  jax.block_until_ready(ex.train_step(x, y, lam, np.float32(1), zero))
  compile_s = time.perf_counter() - t0
  jax.block_until_ready(ex.train_step(x, y, lam, np.float32(1), zero))
  t0 = time.perf_counter()
  for _ in range(steps):
    out = ex.train_step(x, y, lam, np.float32(1), zero)
  jax.block_until_ready(out)
  dt = (time.perf_counter() - t0) / steps
  return {"model": model_name, "members": n, "strategy": strategy, "batch": batch,
          "compile_s": compile_s, "step_ms": 1e3 * dt, "member_images_per_s": n * batch / dt,
          "rss_mb": _rss_mb(), "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--model", default="demo", choices=sorted(SHAPES))
  ap.add_argument("--members", default="1,2,4,8")
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--steps", type=int, default=20)
  ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "sweep.json"))
  args = ap.parse_args()
  strategies = ["loop", "vmap"] + (["sharded"] if jax.device_count() > 1 else [])
  rows = []
  print(f"{'N':>3} {'strategy':<8} {'compile s':>9} {'step ms':>9} {'member-img/s':>13} "
        f"{'vs loop':>8} {'RSS MB':>8}")
  for n in [int(v) for v in args.members.split(",")]:
    base = None
    for s in strategies:
      if s == "sharded" and n % jax.device_count():
        continue
      r = bench(args.model, n, s, args.batch, args.steps)
      base = r["member_images_per_s"] if s == "loop" else base
      r["speedup_vs_loop"] = r["member_images_per_s"] / base
      rows.append(r)
      print(f"{n:>3} {s:<8} {r['compile_s']:>9.2f} {r['step_ms']:>9.2f} "
            f"{r['member_images_per_s']:>13.0f} {r['speedup_vs_loop']:>8.2f} {r['rss_mb']:>8.0f}")
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  meta = {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
          "cpu_count": os.cpu_count(), "platform": platform.platform(), "jax": jax.__version__}
  with open(args.out, "w") as f:
    json.dump({"meta": meta, "rows": rows}, f, indent=2)
  print(f"written {args.out}")


if __name__ == "__main__":
  main()
