"""Benchmark: float step vs search step of ResNet-8 (speed, compile time, memory, FLOP/s).

Measures, side by side in one process, the training step of the float (warm-up) model and of the
search-mode model (weights {0,2,4,8}, activations {8} or {2,4,8}) at batch 32 and 128:

* median step time over repeats (after compile), images/s and the search/float ratio;
* compile time of each step;
* peak memory of each compiled step from XLA's memory analysis (arguments + outputs + temporaries,
  the figure that grows with the per-precision copies) and the ratio to the float step;
* achieved FLOP/s (XLA's cost analysis of the compiled step / step time) against a measured
  matmul peak on the same backend;
* recompiles: the search step is called at several temperatures and lambdas (as arrays) and the
  number of traces is counted (must be 1).

Prints a table and writes ``benchmarks/results/step.json``.

Usage::

  python benchmarks/step.py [--batches 32 128] [--repeats 7] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jpq_jax as jpq
from jpq_jax.models import ResNet8

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def _median_time(fn, args, repeats, inner=3):
  out = fn(*args)
  jax.block_until_ready(out)
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(inner):
      out = fn(*args)
    jax.block_until_ready(out)
    times.append((time.perf_counter() - t0) / inner)
  return statistics.median(times)


def _memory(compiled):
  try:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
               - m.alias_size_in_bytes)
  except Exception:  # pylint: disable=broad-except
    return None


def _flops(compiled):
  try:
    ca = compiled.cost_analysis()
    if isinstance(ca, (list, tuple)):
      ca = ca[0]
    return float(ca.get("flops", 0.0))
  except Exception:  # pylint: disable=broad-except
    return None


def _ce(logits, y):
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def float_step_fn(model, tx):
  def step(params, stats, opt, x, y):
    def loss_fn(p):
      out, st = model.apply({"params": p, "batch_stats": stats}, x, jpq.Ctx.float(train=True),
                            mutable=["batch_stats"])
      return _ce(out.value, y), st["batch_stats"]

    (loss, stats2), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
    upd, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, upd), stats2, opt, loss

  return step


def search_step_fn(model, table, tx, counter):
  size = jpq.costs.get_cost("size")

  def step(params, arch, opt, x, y, lam, temperature):
    counter.append(1)  # Python side effect: runs once per trace.

    def loss_fn(pa):
      ctx = jpq.Ctx.search(temperature, train=True)
      out = model.apply({"params": pa[0], "arch": pa[1]}, x, ctx)
      th = jpq.thetas({"arch": pa[1]}, table, ctx)
      return _ce(out.value, y) + lam * size(table, th)

    loss, g = jax.value_and_grad(loss_fn)((params, arch))
    upd, opt = tx.update(g, opt, (params, arch))
    params, arch = optax.apply_updates((params, arch), upd)
    return params, arch, opt, loss

  return step


def matmul_peak(repeats):
  n = 1024
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  t = _median_time(f, (a,), repeats)
  return 2 * n**3 / t


def run(batches, repeats, abits_sets):
  rows = []
  key = jax.random.PRNGKey(0)
  peak = matmul_peak(repeats)
  for batch in batches:
    x = jax.random.uniform(key, (batch, 32, 32, 3))
    y = jnp.arange(batch) % 10
    # Float step.
    fm = ResNet8()
    fv = fm.init(key, x[:1], jpq.Ctx.float())
    tx = optax.adam(1e-3)
    fstep = jax.jit(float_step_fn(fm, tx), donate_argnums=(0, 1, 2))
    args = (fv["params"], fv["batch_stats"], tx.init(fv["params"]), x, y)
    t0 = time.perf_counter()
    fcomp = fstep.lower(*args).compile()
    fcompile = time.perf_counter() - t0
    fargs = jax.tree_util.tree_map(jnp.copy, args)
    ft = _median_time(lambda *a: fcomp(*jax.tree_util.tree_map(jnp.copy, a[:3]), *a[3:]),
                      fargs, repeats)
    frow = dict(batch=batch, step="float", abits="-", time_s=ft, img_s=batch / ft,
                compile_s=fcompile, mem_bytes=_memory(fcomp), flops=_flops(fcomp))
    rows.append(frow)
    for abits in abits_sets:
      space = jpq.SearchSpace(w_precisions=(0, 2, 4, 8), a_precisions=abits)
      sm = ResNet8(space=space)
      table = jpq.trace_table(sm, x[:1])
      sv = jpq.to_search(sm, {"params": fv["params"], "batch_stats": fv["batch_stats"]}, x[:1],
                         table=table)
      counter = []
      sstep = jax.jit(search_step_fn(sm, table, optax.adam(1e-3), counter), donate_argnums=(0, 1, 2))
      opt = optax.adam(1e-3).init((sv["params"], sv["arch"]))
      sargs = (sv["params"], sv["arch"], opt, x, y, jnp.float32(1e-6), jnp.float32(1.0))
      t0 = time.perf_counter()
      scomp = sstep.lower(*sargs).compile()
      scompile = time.perf_counter() - t0
      st = _median_time(lambda *a: scomp(*jax.tree_util.tree_map(jnp.copy, a[:3]), *a[3:]),
                        sargs, repeats)
      # Recompiles across "epochs" (temperatures) and "members" (lambdas): call the jitted
      # function (not the AOT executable) with new array values and count traces.
      n0 = len(counter)
      state = jax.tree_util.tree_map(jnp.copy, sargs[:3])
      for t, lam in ((1.0, 1e-6), (0.5, 1e-7), (0.1, 3e-6)):
        state = sstep(*state, x, y, jnp.float32(lam), jnp.float32(t))[:3]
      jax.block_until_ready(state)
      rows.append(dict(batch=batch, step="search", abits=",".join(map(str, abits)), time_s=st,
                       img_s=batch / st, compile_s=scompile, mem_bytes=_memory(scomp),
                       flops=_flops(scomp), ratio_vs_float=ft / st,
                       mem_ratio_vs_float=(_memory(scomp) / frow["mem_bytes"]
                                           if frow["mem_bytes"] else None),
                       traces_for_3_new_T_lambda=len(counter) - n0 + 1))
  for r in rows:
    r["flop_s"] = r["flops"] / r["time_s"] if r.get("flops") else None
    r["frac_of_matmul_peak"] = r["flop_s"] / peak if r["flop_s"] else None
  return rows, peak


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--batches", type=int, nargs="+", default=[32, 128])
  ap.add_argument("--repeats", type=int, default=7)
  ap.add_argument("--quick", action="store_true", help="batch 32 only, 3 repeats")
  ap.add_argument("--out", default=str(RESULTS / "step.json"))
  a = ap.parse_args()
  if a.quick:
    a.batches, a.repeats = [32], 3
  rows, peak = run(a.batches, a.repeats, [(8,), (2, 4, 8)])
  hdr = (f"{'batch':>5} {'step':<7} {'abits':<6} {'ms/step':>8} {'img/s':>8} {'vs float':>8} "
         f"{'compile s':>9} {'mem MB':>8} {'mem x':>6} {'GFLOP/s':>8} {'%peak':>6} {'traces':>6}")
  print(hdr)
  print("-" * len(hdr))
  for r in rows:
    print(f"{r['batch']:>5} {r['step']:<7} {r['abits']:<6} {1e3 * r['time_s']:>8.1f} "
          f"{r['img_s']:>8.0f} {r.get('ratio_vs_float', 1.0):>8.2f} {r['compile_s']:>9.1f} "
          f"{(r['mem_bytes'] or 0) / 1e6:>8.1f} {r.get('mem_ratio_vs_float') or 1.0:>6.2f} "
          f"{(r['flop_s'] or 0) / 1e9:>8.1f} {100 * (r['frac_of_matmul_peak'] or 0):>6.1f} "
          f"{r.get('traces_for_3_new_T_lambda', '-'):>6}")
  print(f"matmul peak (1024^2 f32): {peak / 1e9:.1f} GFLOP/s")
  out = pathlib.Path(a.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  meta = dict(date=time.strftime("%Y-%m-%d %H:%M:%S"), backend=jax.default_backend(),
              device=str(jax.devices()[0].device_kind), cpus=os.cpu_count(),
              machine=platform.machine(), jax=jax.__version__, matmul_peak_flop_s=peak)
  out.write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
