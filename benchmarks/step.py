"""Benchmark: float step vs search step of ResNet-8 (speed, compile time, memory, FLOP/s).

Measures, side by side in one process, the training step of the float (warm-up) model and of the
search-mode model (weights {0,2,4,8}, activations {8} or {2,4,8}) at batch 32 and 128. The float step
is compiled with XLA's default options and with jpq's (:func:`jpq_jax.compiler_options`); the search
step as jpq runs it (fused activation mixture, jpq's options), the same with ``remat="dots"``
(``--no-remat`` skips it) and as the literal sum of per-precision PACT copies with XLA's defaults
(jpq before the fused mixture; ``--no-copies`` skips it). Per row:

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


def search_step_fn(model, table, tx, counter, remat="none"):
  size = jpq.costs.get_cost("size")

  def step(params, arch, opt, x, y, lam, temperature):
    counter.append(1)  # Python side effect: runs once per trace.

    def loss_fn(pa):
      ctx = jpq.Ctx.search(temperature, train=True)
      out = model.apply({"params": pa[0], "arch": pa[1]}, x, ctx)
      th = jpq.thetas({"arch": pa[1]}, table, ctx)
      return _ce(out.value, y) + lam * size(table, th)

    if remat == "dots":  # as jpq_jax.train.make_train_step(remat="dots")
      loss_fn = jax.checkpoint(loss_fn, policy=jax.checkpoint_policies.dots_saveable)

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


def _time_side_by_side(entries, repeats, inner=3):
  """Median step times of AOT-compiled steps (first three arguments donated), timed round-robin.

  Each repeat times every step once, so slow phases of a noisy machine hit all steps alike.
  """
  calls = [lambda c=c, a=a: c(*jax.tree_util.tree_map(jnp.copy, a[:3]), *a[3:])
           for c, a in entries]
  for f in calls:
    jax.block_until_ready(f())
  times = [[] for _ in calls]
  for _ in range(repeats):
    for i, f in enumerate(calls):
      t0 = time.perf_counter()
      for _ in range(inner):
        out = f()
      jax.block_until_ready(out)
      times[i].append((time.perf_counter() - t0) / inner)
  return [statistics.median(t) for t in times]


def _row(compiled, batch, **fields):
  return dict(batch=batch, mem_bytes=_memory(compiled), flops=_flops(compiled), **fields)


def run(batches, repeats, abits_sets, with_copies=True, with_remat=True, on_batch=None):
  """Every step of one batch size is compiled in this process and timed side by side.

  Rows: the float step with XLA's default options and with jpq's (``jpq_jax.compiler``); per
  activation set the search step as jpq runs it (fused activation mixture, jpq's options) and, with
  ``with_copies``, the literal sum of PACT copies with XLA's defaults (what jpq ran before), and,
  with ``with_remat``, jpq's step with ``remat="dots"`` (conv/matmul outputs kept, the rest
  recomputed in the backward). ``on_batch(rows, peak)``, when given, is called with the rows so
  far after each batch size (to save partial results).
  """
  rows = []
  key = jax.random.PRNGKey(0)
  peak = matmul_peak(repeats)
  jpq_opts = jpq.compiler_options()
  xla_label = lambda o: "jpq" if o else "default"
  for batch in batches:
    x = jax.random.uniform(key, (batch, 32, 32, 3))
    y = jnp.arange(batch) % 10
    fm = ResNet8()
    fv = fm.init(key, x[:1], jpq.Ctx.float())
    tx = optax.adam(1e-3)
    args = (fv["params"], fv["batch_stats"], tx.init(fv["params"]), x, y)
    floats, entries, batch_rows = {}, [], []
    for opts in ([None, jpq_opts] if jpq_opts else [None]):
      t0 = time.perf_counter()
      comp = jax.jit(float_step_fn(fm, tx), donate_argnums=(0, 1, 2),
                     compiler_options=opts).lower(*args).compile()
      floats[xla_label(opts)] = r = _row(comp, batch, step="float", abits="-", mixture="-",
                                         xla=xla_label(opts), remat="none",
                                         compile_s=time.perf_counter() - t0)
      entries.append((comp, args))
      batch_rows.append(r)
    for abits in abits_sets:
      variants = ([("fused", jpq_opts, "none")]
                  + ([("fused", jpq_opts, "dots")] if with_remat else [])
                  + ([("copies", None, "none")] if with_copies else []))
      for mixture, opts, remat in variants:
        space = jpq.SearchSpace(w_precisions=(0, 2, 4, 8), a_precisions=abits,
                                activation_mixture=mixture)
        sm = ResNet8(space=space)
        table = jpq.trace_table(sm, x[:1])
        sv = jpq.to_search(sm, {"params": fv["params"], "batch_stats": fv["batch_stats"]}, x[:1],
                           table=table)
        counter = []
        sstep = jax.jit(search_step_fn(sm, table, optax.adam(1e-3), counter, remat),
                        donate_argnums=(0, 1, 2), compiler_options=opts)
        opt = optax.adam(1e-3).init((sv["params"], sv["arch"]))
        sargs = (sv["params"], sv["arch"], opt, x, y, jnp.float32(1e-6), jnp.float32(1.0))
        t0 = time.perf_counter()
        scomp = sstep.lower(*sargs).compile()
        r = _row(scomp, batch, step="search", abits=",".join(map(str, abits)), mixture=mixture,
                 xla=xla_label(opts), remat=remat, compile_s=time.perf_counter() - t0)
        # Recompiles across "epochs" (temperatures) and "members" (lambdas): call the jitted
        # function (not the AOT executable) with new array values and count traces.
        n0 = len(counter)
        state = jax.tree_util.tree_map(jnp.copy, sargs[:3])
        for t, lam in ((1.0, 1e-6), (0.5, 1e-7), (0.1, 3e-6)):
          state = sstep(*state, x, y, jnp.float32(lam), jnp.float32(t))[:3]
        jax.block_until_ready(state)
        r["traces_for_3_new_T_lambda"] = len(counter) - n0 + 1
        entries.append((scomp, sargs))
        batch_rows.append(r)
    for r, t in zip(batch_rows, _time_side_by_side(entries, repeats)):
      r.update(time_s=t, img_s=batch / t)
    for r in batch_rows:
      for name, f in floats.items():
        r[f"ratio_vs_float_{name}"] = f["time_s"] / r["time_s"]
        r[f"mem_ratio_vs_float_{name}"] = (r["mem_bytes"] / f["mem_bytes"]
                                           if f["mem_bytes"] and r["mem_bytes"] else None)
    for r in batch_rows:
      r["flop_s"] = r["flops"] / r["time_s"] if r.get("flops") else None
      r["frac_of_matmul_peak"] = r["flop_s"] / peak if r["flop_s"] else None
    rows += batch_rows
    if on_batch is not None:
      on_batch(rows, peak)
  return rows, peak


def _fmt(v, spec):
  return "-" if v is None else format(v, spec)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--batches", type=int, nargs="+", default=[32, 128])
  ap.add_argument("--repeats", type=int, default=7)
  ap.add_argument("--quick", action="store_true", help="batch 32 only, 3 repeats")
  ap.add_argument("--no-copies", action="store_true",
                  help="skip the sum-of-copies search steps (the pre-fused implementation)")
  ap.add_argument("--no-remat", action="store_true",
                  help="skip the search steps with remat='dots'")
  ap.add_argument("--out", default=str(RESULTS / "step.json"))
  a = ap.parse_args()
  if a.quick:
    a.batches, a.repeats = [32], 3
  out = pathlib.Path(a.out)
  out.parent.mkdir(parents=True, exist_ok=True)

  def write(rows, peak, complete):
    # After every batch size too: a run cut short by its time limit (benchmarks/gpu.sh) keeps what
    # it measured, marked incomplete.
    meta = dict(date=time.strftime("%Y-%m-%d %H:%M:%S"), backend=jax.default_backend(),
                device=str(jax.devices()[0].device_kind), cpus=os.cpu_count(),
                machine=platform.machine(), jax=jax.__version__, matmul_peak_flop_s=peak,
                jpq_compiler_options=jpq.compiler_options(), complete=complete)
    out.write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))

  rows, peak = run(a.batches, a.repeats, [(8,), (2, 4, 8)], with_copies=not a.no_copies,
                   with_remat=not a.no_remat, on_batch=lambda r, p: write(r, p, False))
  hdr = (f"{'batch':>5} {'step':<6} {'abits':<6} {'mixture':<7} {'xla':<7} {'remat':<5} "
         f"{'ms/step':>8} "
         f"{'img/s':>6} {'x float':>7} {'x float':>7} {'compile':>7} {'mem MB':>7} {'mem x':>6} "
         f"{'mem x':>6} {'GFLOP/s':>7} {'%peak':>5} {'traces':>6}")
  sub = (f"{'':>5} {'':<6} {'':<6} {'':<7} {'':<7} {'':<5} {'':>8} {'':>6} {'(dflt)':>7} "
         f"{'(jpq)':>7} "
         f"{'s':>7} {'':>7} {'(dflt)':>6} {'(jpq)':>6}")
  print(hdr)
  print(sub)
  print("-" * len(hdr))
  for r in rows:
    print(f"{r['batch']:>5} {r['step']:<6} {r['abits']:<6} {r['mixture']:<7} {r['xla']:<7} "
          f"{r.get('remat', 'none'):<5} "
          f"{1e3 * r['time_s']:>8.1f} {r['img_s']:>6.0f} "
          f"{_fmt(r.get('ratio_vs_float_default'), '.2f'):>7} "
          f"{_fmt(r.get('ratio_vs_float_jpq'), '.2f'):>7} {r['compile_s']:>7.1f} "
          f"{(r['mem_bytes'] or 0) / 1e6:>7.1f} {_fmt(r.get('mem_ratio_vs_float_default'), '.2f'):>6} "
          f"{_fmt(r.get('mem_ratio_vs_float_jpq'), '.2f'):>6} {(r['flop_s'] or 0) / 1e9:>7.1f} "
          f"{100 * (r['frac_of_matmul_peak'] or 0):>5.1f} {r.get('traces_for_3_new_T_lambda', '-'):>6}")
  print(f"matmul peak (1024^2 f32): {peak / 1e9:.1f} GFLOP/s; xla 'jpq' = {jpq.compiler_options()}")
  write(rows, peak, True)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
