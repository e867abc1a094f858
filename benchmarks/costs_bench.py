"""Benchmark: evaluating every registered cost for a sweep of members vs one training step.

Shows that the cost models are cheap (DESIGN.md principle 4): all registered costs of N = 64
members (theta pytree with a leading member axis, ``jax.vmap``) in one jitted call -- values only,
and values plus the gradient of a lambda-weighted total w.r.t. the logits, as the search step needs
-- compared with one ResNet-8 search-mode forward + backward step at batch 32 (one member).

Prints a table and writes ``benchmarks/results/costs_bench.json``. Timings are medians over
repeats after compilation. Runs in well under two minutes on a small CPU machine.

Usage::

  python benchmarks/costs_bench.py [--members 64] [--repeats 20] [--batch 32]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import sys
import time

# Run from a checkout without installing the package: put the repository root on the path.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jpq_jax  # noqa: E402
from jpq_jax import costs, models  # noqa: E402
from jpq_jax.layers import SearchSpace  # noqa: E402

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "costs_bench.json"


def _median_time(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))  # compile + warm up
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    ts.append(time.perf_counter() - t0)
  return statistics.median(ts)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--members", type=int, default=64)
  ap.add_argument("--repeats", type=int, default=20)
  ap.add_argument("--batch", type=int, default=32)
  args = ap.parse_args()

  space = SearchSpace(w_precisions=(0, 2, 4, 8), a_precisions=(2, 4, 8))
  model = models.ResNet8(space=space, num_classes=10)
  x = jnp.zeros((args.batch, 32, 32, 3))
  table = jpq_jax.trace_table(model, x[:1])
  t0 = time.perf_counter()
  variables = jax.jit(lambda x: model.init(jax.random.PRNGKey(0), x, jpq_jax.Ctx.search()))(x[:1])
  init_s = time.perf_counter() - t0
  params, arch = variables["params"], variables["arch"]
  names = costs.list_costs()

  # Members: the initial logits plus noise, one temperature each.
  n = args.members
  keys = jax.random.split(jax.random.PRNGKey(1), n)
  archs = jax.vmap(lambda k: jax.tree_util.tree_map(
      lambda a: a + 0.5 * jax.random.normal(k, a.shape), arch))(keys)
  temps = jnp.linspace(0.1, 1.0, n)
  lams = jnp.logspace(-9, -6, n)

  def member_costs(a, t):
    th = jpq_jax.thetas({"arch": a}, table, jpq_jax.Ctx.search(t, train=True))
    return costs.all_costs(table, th)

  costs_values = jax.jit(jax.vmap(member_costs))

  def weighted(a, t, lam):
    c = member_costs(a, t)
    return lam * (c["size"] + c["mpic"] + c["ne16"] + c["bitops"])

  costs_grads = jax.jit(jax.vmap(jax.value_and_grad(weighted)))

  # One search-mode training step (forward + backward w.r.t. params and arch), one member.
  y = jnp.zeros((args.batch,), jnp.int32)
  xb = jax.random.uniform(jax.random.PRNGKey(2), x.shape)

  def loss(p, a):
    logits = model.apply({"params": p, "arch": a}, xb, jpq_jax.Ctx.search(1.0, train=True)).value
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))

  step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))

  t_val = _median_time(costs_values, archs, temps, repeats=args.repeats)
  t_grad = _median_time(costs_grads, archs, temps, lams, repeats=args.repeats)
  t_step = _median_time(step, params, arch, repeats=max(3, args.repeats // 4))

  rows = [
      (f"all {len(names)} costs, {n} members (values)", t_val),
      (f"all costs + grad of weighted total, {n} members", t_grad),
      (f"ResNet-8 search fwd+bwd, batch {args.batch}, 1 member", t_step),
  ]
  print(f"ResNet-8 table: {len(table.layers)} layers, {len(table.groups)} groups; costs: {names}")
  print(f"{'measurement':<58} {'median ms':>10} {'/ step':>8}")
  print("-" * 78)
  for label, t in rows:
    print(f"{label:<58} {t * 1e3:>10.3f} {t / t_step:>8.4f}")
  out = {
      "members": n, "batch": args.batch, "repeats": args.repeats, "costs": names,
      "costs_values_s": t_val, "costs_values_and_grad_s": t_grad, "train_step_s": t_step,
      "ratio_values_to_step": t_val / t_step, "ratio_grad_to_step": t_grad / t_step,
      "init_s": init_s, "backend": jax.default_backend(), "devices": str(jax.devices()),
      "jax": jax.__version__, "machine": platform.machine(), "python": platform.python_version(),
  }
  RESULTS.parent.mkdir(parents=True, exist_ok=True)
  RESULTS.write_text(json.dumps(out, indent=2) + "\n")
  print(f"wrote {RESULTS}")


if __name__ == "__main__":
  main()
