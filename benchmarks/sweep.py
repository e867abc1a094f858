"""Search-phase throughput and memory of the sweep strategies: member-images/s for N members.

For every N (default 1, 2, 4, 8, 16; batch 32; ResNet-8 search step with the size cost) and every
strategy (``loop``: a Python loop of one jitted single-member step; ``vmap``: the step vmapped over
the stacked member axis; ``sharded`` when JAX sees more than one device), each measurement runs in
a fresh subprocess so that its peak memory is its own, and reports:

* compile time (first call) and the steady-state step time, median over ``--repeats`` timed blocks
  of ``--steps`` steps; member-images/s = N * batch / step time;
* the ratio to ``loop`` at the same N (the baseline the issue names), and which strategy the
  driver's ``auto`` picks on this backend (``sweep.choose_strategy``);
* ``bound`` (not a strategy: a reference row): ONE member at batch N * batch, i.e. the same images
  per step as N members in one program, with no per-member weights, no grouped convolutions and no
  member-axis transposes. It bounds what any program that batches the members' work together can
  reach on this machine; where it is below the loop (CPU caches favour the small working set of one
  member at a time), no vmap-like formulation can beat the loop;
* recompiles: the step is called with new lambdas, temperatures and learning-rate factors (what
  changes across members and epochs) and its traces are counted: must stay at 1;
* peak resident memory of the subprocess (``ru_maxrss``: XLA's buffers live outside the Python
  heap) against the budget 1.5 GB + 0.25 GB * N, and on accelerators the device allocator's peak;
* member-images/s relative to the same strategy at N = 1 (the accelerator target: N = 64 at
  >= 20x N = 1).

``vmap:K`` (``--strategies``) is ``vmap`` with ``sweep.member_chunk = K``: the members K at a
time, one vmapped program per chunk (rows only where K < N): less memory than ``vmap``.

Prints a table and writes ``benchmarks/results/sweep.json``.

Usage::

  python benchmarks/sweep.py                              # ResNet-8, N = 1..16 (about 15 min, 2 cores)
  python benchmarks/sweep.py --model demo --members 1,2,4,8 --steps 20
  python benchmarks/sweep.py --quick                       # N = 1, 2, 4; 2 repeats
  python benchmarks/sweep.py --members 1,8,64 --loop-max 8 # accelerator (see gpu.sh)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = {"demo": (8, 8, 1), "resnet8": (32, 32, 3), "dscnn": (49, 10, 1), "resnet18": (64, 64, 3)}


def _budget_mb(n: int) -> float:
  return (1.5 + 0.25 * n) * 1024


def build(model_name: str, n: int, strategy: str, batch: int, xla: str = "auto"):
  """The executor of ``strategy`` for ``n`` ResNet-8-style search members, and its step arguments.

  Args:
    model_name: a key of :data:`SHAPES`.
    n: members.
    strategy: ``loop``, ``vmap`` or ``sharded`` (``bound`` is resolved by :func:`measure`).
    batch: images per member and step.
    xla: XLA options setting (:func:`jpq_jax.compiler_options`).

  Returns:
    ``(executor, args, traces)``: ``executor.train_step(*args)`` runs one step of every member
    (lambdas, lr factor, poison as the driver passes them); ``traces`` grows by one per trace.
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  sys.path.insert(0, ROOT)
  from jpq_jax import compiler_options, sweep, to_search, trace_table  # pylint: disable=import-outside-toplevel
  from jpq_jax import train as T  # pylint: disable=import-outside-toplevel
  from jpq_jax.layers import Ctx  # pylint: disable=import-outside-toplevel
  from jpq_jax.models import get_model  # pylint: disable=import-outside-toplevel

  model = get_model(model_name, num_classes=10)
  shape = SHAPES[model_name]
  x = np.random.RandomState(0).rand(batch, *shape).astype(np.float32)
  y = (np.arange(batch) % 10).astype(np.int32)
  table = trace_table(model, jnp.zeros((1,) + shape))
  fv = model.init(jax.random.PRNGKey(0), jnp.zeros((1,) + shape), Ctx.float())
  sv = to_search(model, fv, jnp.zeros((1,) + shape), table=table)
  tx = T.make_optimizer({"name": "adam", "lr": 1e-3, "wd": 1e-4},
                        {"name": "sgd", "lr": 1e-2, "momentum": 0.9})
  inner = T.make_train_step(model, table, "search", tx, cost="size")
  traces = []

  def step(*a):
    traces.append(1)  # Python side effect: runs once per trace
    return inner(*a)

  ev = T.make_eval_step(model, "search")
  end = lambda s, m: T.end_epoch(s, m, start=-1, patience=10)
  states = [T.init_state("search", sv, tx, key=jax.random.PRNGKey(k), lam=1e-6) for k in range(n)]
  name, _, chunk = strategy.partition(":")  # "vmap:K": members in chunks of K (member_chunk)
  ex = sweep.make_executor(name, step, ev, end, n, compiler_options=compiler_options(xla),
                           member_chunk=int(chunk or 0))
  ex.set_states(jax.tree_util.tree_map(lambda *a: jnp.stack(a), *states))
  lams = np.geomspace(1e-7, 1e-5, n).astype(np.float32)
  return ex, (x, y, lams, np.float32(1), np.zeros((n,), np.float32)), traces


def measure(model_name: str, n: int, strategy: str, batch: int, steps: int, repeats: int,
            xla: str = "auto") -> dict:
  """One (N, strategy) measurement in this process (run it in a fresh subprocess)."""
  import resource  # pylint: disable=import-outside-toplevel

  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  row = {"model": model_name, "members": n, "strategy": strategy, "batch": batch, "xla": xla,
         "budget_mb": _budget_mb(n)}
  images = n * batch  # images per step across the members
  if strategy == "bound":  # one member over all N * batch images (see the module docstring)
    n, batch, strategy = 1, n * batch, "loop"
  ex, (x, y, lams, _, zero), traces = build(model_name, n, strategy, batch, xla)
  t0 = time.perf_counter()
  jax.block_until_ready(ex.train_step(x, y, lams, np.float32(1), zero))
  compile_s = time.perf_counter() - t0
  # What changes across epochs and members enters as arrays: new lambdas, a new lr factor and
  # (inside the state) a new temperature must not trigger a trace.
  n_traces_first = len(traces)
  for e in range(3):
    ex.map(lambda s, e=e: s.replace(temperature=s.temperature * np.float32(0.9)))
    jax.block_until_ready(ex.train_step(x, y, lams * (e + 2), np.float32(0.99**(e + 1)), zero))
  recompiles = len(traces) - n_traces_first
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(steps):
      out = ex.train_step(x, y, lams, np.float32(1), zero)
    jax.block_until_ready(out)
    times.append((time.perf_counter() - t0) / steps)
  dt = statistics.median(times)
  dev_peak = None
  try:  # accelerators: the device allocator's own peak (RSS does not see device memory)
    dev_peak = jax.devices()[0].memory_stats().get("peak_bytes_in_use")
  except Exception:  # pylint: disable=broad-except
    pass
  return {**row,
          "device_peak_mb": dev_peak / 2**20 if dev_peak else None,
          "compile_s": compile_s, "step_ms": 1e3 * dt, "step_ms_all": [1e3 * t for t in times],
          "member_images_per_s": images / dt, "recompiles": recompiles,
          "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
          "devices": len(jax.devices())}


def _child(args, n, strategy):
  cmd = [sys.executable, os.path.abspath(__file__), "--child", f"{n}:{strategy}",
         "--model", args.model, "--batch", str(args.batch), "--steps", str(args.steps),
         "--repeats", str(args.repeats), "--xla", args.xla]
  out = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if out.returncode != 0:
    return {"members": n, "strategy": strategy, "error": out.stderr.strip().splitlines()[-1:]}
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--model", default="resnet8", choices=sorted(SHAPES))
  ap.add_argument("--members", default="1,2,4,8,16")
  ap.add_argument("--strategies", default="",
                  help="default: loop,vmap (+sharded with >1 device),bound; vmap:K = vmap in "
                       "member chunks of K")
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--steps", type=int, default=3, help="steps per timed block")
  ap.add_argument("--repeats", type=int, default=5, help="timed blocks (the median is reported)")
  ap.add_argument("--quick", action="store_true", help="N = 1, 2, 4 and 2 repeats")
  ap.add_argument("--loop-max", type=int, default=0,
                  help="skip 'loop' above this N (its time grows with N; for big accelerator sweeps)")
  ap.add_argument("--xla", default="auto", choices=["auto", "default"],
                  help="XLA options of the compiled steps (jpq_jax.compiler_options; the driver's "
                       "sweep.xla_options)")
  ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "sweep.json"))
  ap.add_argument("--child", default="", help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.child:
    n, strategy = args.child.split(":", 1)
    print(json.dumps(measure(args.model, int(n), strategy, args.batch, args.steps, args.repeats,
                             args.xla)))
    return
  import jax  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, ROOT)
  from jpq_jax.sweep import choose_strategy  # pylint: disable=import-outside-toplevel
  if args.quick:
    args.members, args.repeats = "1,2,4", 2
  strategies = (args.strategies.split(",") if args.strategies else
                ["loop", "vmap"] + (["sharded"] if jax.device_count() > 1 else []) + ["bound"])
  auto = choose_strategy("auto")
  rows = []
  hdr = (f"{'N':>3} {'strategy':<8} {'compile s':>9} {'step ms':>9} {'member-img/s':>13} "
         f"{'vs loop':>8} {'vs N=1':>6} {'recompiles':>10} {'peak MB':>8} {'budget MB':>9} "
         f"{'dev MB':>8}")
  print(f"{args.model}, batch {args.batch}, backend {jax.default_backend()}, auto -> {auto}, "
        f"xla options {args.xla}")
  print(hdr)
  print("-" * len(hdr))
  n1 = {}  # member-images/s at N = 1 per strategy: the accelerator target is N = 64 vs N = 1
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  meta = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "backend": jax.default_backend(),
          "devices": [str(d) for d in jax.devices()], "device_kind": jax.devices()[0].device_kind,
          "cpu_count": os.cpu_count(), "platform": platform.platform(), "jax": jax.__version__,
          "auto": auto, "model": args.model, "batch": args.batch, "steps": args.steps,
          "repeats": args.repeats, "xla": args.xla}

  def write(complete):
    # After every point: a run cut short by its time limit (benchmarks/gpu.sh) keeps what it
    # measured, marked incomplete.
    with open(args.out, "w") as f:
      json.dump({"meta": dict(meta, complete=complete), "rows": rows}, f, indent=2)

  for n in [int(v) for v in args.members.split(",")]:
    base = None
    for s in strategies:
      if s == "sharded" and n % jax.device_count():
        continue
      if s == "loop" and args.loop_max and n > args.loop_max:
        continue
      if s.startswith("vmap:") and int(s.split(":")[1]) >= n:
        continue  # one chunk: the plain vmap row
      r = _child(args, n, s)
      if "error" in r:
        print(f"{n:>3} {s:<8} failed: {r['error']}")
        rows.append(r)
        write(False)
        continue
      base = r["member_images_per_s"] if s == "loop" else base
      n1.setdefault(s, r["member_images_per_s"] / n if n == 1 else None)
      r["speedup_vs_loop"] = r["member_images_per_s"] / base if base else None
      r["vs_n1"] = r["member_images_per_s"] / n1[s] if n1.get(s) else None
      r["auto"] = s == auto
      rows.append(r)
      nan = float("nan")
      print(f"{n:>3} {s + ('*' if s == auto else ''):<8} {r['compile_s']:>9.2f} {r['step_ms']:>9.1f} "
            f"{r['member_images_per_s']:>13.0f} {r['speedup_vs_loop'] or nan:>8.2f} "
            f"{r['vs_n1'] or nan:>6.2f} {r['recompiles']:>10} {r['peak_rss_mb']:>8.0f} "
            f"{r['budget_mb']:>9.0f} {r['device_peak_mb'] or nan:>8.0f}", flush=True)
      write(False)
  print("* = the strategy the driver's 'auto' picks on this backend; bound = one member at batch "
        "N x batch (what a program batching the members' work can reach at best)")
  write(True)
  print(f"written {args.out}")


if __name__ == "__main__":
  main()
