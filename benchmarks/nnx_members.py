"""Benchmark: how the sweep should step the members of a Flax NNX model.

Two formulations of one search-phase training step (task loss + lambda * size, Adam on weights and
logits) over N members of a converted NNX model (``tests/userpkg/nnx_nets.py::NnxTinyNet``):

* ``split_pure``: the NNX module split into its Linen variables once (``model.variables()``), and
  the sweep driver's pure step (:func:`jpq_jax.train.make_train_step`) under ``jax.vmap`` over
  the stacked member states: what the driver runs for an NNX model.
* ``nnx_vmap``: N stacked :class:`jpq_jax.nnx.Searchable` modules and ``nnx.Optimizer``s, stepped
  by ``nnx.vmap`` of an ``nnx.grad`` + ``optimizer.update`` function (the NNX idiom: state lives
  in the modules and is updated in place), jitted as ``nnx.jit`` does it (split/merge around
  ``jax.jit``, written out so that the XLA options apply).

Both are run with jpq's XLA options (:func:`jpq_jax.compiler_options`, what the driver uses) and
with XLA's defaults.

* ``split_minimal``: the split formulation with ``nnx_vmap``'s step body (``jax.vmap`` of
  value_and_grad + Adam on the Linen variables), to tell the formulation's cost from the body's.

Per row: compile time (first call) and the median step time over repeats, members/s. The faster
one is what the driver uses (see README "Flax NNX models"). Prints a table and writes
``benchmarks/results/nnx_members.json``.

Usage::

  python benchmarks/nnx_members.py [--members 4 8] [--batch 64] [--width 16] [--repeats 15]
      [--options auto default]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import jpq_jax as jpq
from jpq_jax import nnx as jnnx
from jpq_jax import train

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from userpkg.nnx_nets import NnxTinyNet  # noqa: E402  pylint: disable=wrong-import-position


def _timed(fn, repeats):
  """(first-call seconds incl. compile, median seconds of the later calls)."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return first, statistics.median(times)


def _split_pure(sm, n, x, y, lams, tx, options=None):
  """The driver's formulation: pure step on the Linen variables, jax.vmap over members
  (``options``: the XLA compiler options it is jitted with)."""
  table = sm.table()
  step = train.make_train_step(sm.net, table, "search", tx, cost="size")
  v = sm.variables()
  keys = jax.random.split(jax.random.PRNGKey(0), n)
  states = jax.vmap(lambda k, lam: train.init_state("search", v, tx, key=k, lam=lam))(keys, lams)
  vstep = jax.jit(jax.vmap(step, in_axes=(0, None, None, 0, None, None)),
                  compiler_options=options)
  box = {"s": states}

  def run():
    box["s"], m = vstep(box["s"], x, y, lams, jnp.float32(1.0), jnp.float32(0.0))
    return m["loss"]
  return run


def _split_minimal(sm, n, x, y, lams, tx, options=None):
  """The same split formulation with ``nnx_vmap``'s minimal step body (no fault isolation, no
  early-stopping bookkeeping): separates the cost of the formulation from that of the body."""
  net, table = sm.net, sm.table()
  v = sm.variables()
  params = jax.tree_util.tree_map(lambda a: jnp.stack([a] * n), {"params": v["params"],
                                                                 "arch": v["arch"]})
  opt = jax.vmap(tx.init)(params)
  size = jpq.costs.get_cost("size")

  def one(p, o, step, lam):
    def loss_fn(p):
      ctx = jpq.Ctx.search(1.0, train=True)
      key = jax.random.fold_in(jax.random.PRNGKey(0), step)
      out = net.apply(p, x, ctx, rngs={"dropout": key}).value
      ce = optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
      return ce + lam * size(table, jpq.thetas(p, table, ctx))
    loss, g = jax.value_and_grad(loss_fn)(p)
    u, o = tx.update(g, o, p)
    return optax.apply_updates(p, u), o, loss

  jstep = jax.jit(jax.vmap(one, in_axes=(0, 0, None, 0)), compiler_options=options)
  box = {"p": params, "o": opt, "step": 0}

  def run():
    box["p"], box["o"], loss = jstep(box["p"], box["o"], jnp.int32(box["step"]), lams)
    box["step"] += 1
    return loss
  return run


def _nnx_vmap(sm, n, x, y, lams, tx, options=None):
  """The NNX formulation: stacked modules and optimizers, nnx.vmap of grad + update."""
  wrt = nnx.Any(nnx.Param, jnnx.ArchLogits)
  graphdef, state = nnx.split(sm)
  stacked = jax.tree_util.tree_map(lambda a: jnp.stack([a] * n), state)

  @nnx.vmap(in_axes=0, out_axes=0)
  def build(st):
    m = nnx.merge(graphdef, st)
    return m, nnx.Optimizer(m, tx, wrt=wrt)

  models, opts = build(stacked)

  @nnx.vmap(in_axes=(0, 0, None, None, 0))
  def one(m, opt, x, y, lam):
    def loss_fn(m):
      ctx = jpq.Ctx.search(1.0, train=True)
      ce = optax.softmax_cross_entropy_with_integer_labels(m(x, ctx).value, y).mean()
      return ce + lam * m.cost("size", ctx)
    loss, g = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, wrt))(m)
    opt.update(m, g)
    return loss

  # nnx.jit is this split/merge around jax.jit; written out so that the XLA options apply.
  gd, st = nnx.split((models, opts))

  def pure(st, x, y, lams):
    models, opts = nnx.merge(gd, st)
    loss = one(models, opts, x, y, lams)
    return nnx.state((models, opts)), loss

  jstep = jax.jit(pure, compiler_options=options)
  box = {"s": st}

  def run():
    box["s"], loss = jstep(box["s"], x, y, lams)
    return loss
  return run


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--members", type=int, nargs="+", default=[4, 8])
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--width", type=int, default=16)
  p.add_argument("--repeats", type=int, default=15)
  p.add_argument("--options", nargs="+", default=["auto", "default"],
                 help="XLA options of the step (jpq_jax.compiler_options settings)")
  p.add_argument("--out", default=str(RESULTS / "nnx_members.json"))
  a = p.parse_args(argv)
  key_x, key_y = jax.random.split(jax.random.PRNGKey(1))
  x = jax.random.normal(key_x, (a.batch, 8, 8, 1))
  y = jax.random.randint(key_y, (a.batch,), 0, 10)
  sm = jpq.nnx_searchable(NnxTinyNet(width=a.width, rngs=nnx.Rngs(0)), x).to_search()
  tx = optax.adam(1e-3)
  rows = []
  for n in a.members:
    lams = jnp.asarray(np.geomspace(1e-6, 1e-4, n), jnp.float32)
    for name, make in (("split_pure", _split_pure), ("split_minimal", _split_minimal),
                       ("nnx_vmap", _nnx_vmap)):
      for opt_name in a.options:
        options = jpq.compiler_options(opt_name)
        first, med = _timed(make(sm, n, x, y, lams, tx, options), a.repeats)
        rows.append(dict(formulation=name, xla_options=opt_name, members=n, batch=a.batch,
                         width=a.width, first_call_s=first, step_ms=1e3 * med,
                         members_per_s=n / med))
  print(f"{'formulation':12s} {'xla options':>11s} {'members':>7s} {'first call (s)':>14s} "
        f"{'step (ms)':>10s} {'members/s':>10s}")
  for r in rows:
    print(f"{r['formulation']:12s} {r['xla_options']:>11s} {r['members']:7d} "
          f"{r['first_call_s']:14.2f} {r['step_ms']:10.2f} {r['members_per_s']:10.1f}")
  for n in a.members:
    for o in a.options:
      s, m, v = (next(r for r in rows if r["members"] == n and r["formulation"] == f
                      and r["xla_options"] == o)
                 for f in ("split_pure", "split_minimal", "nnx_vmap"))
      print(f"members={n}, xla options {o}: step time nnx_vmap / split_pure = "
            f"{v['step_ms'] / s['step_ms']:.2f}, nnx_vmap / split_minimal = "
            f"{v['step_ms'] / m['step_ms']:.2f}")
  out = dict(rows=rows, backend=jax.default_backend(), device=str(jax.devices()[0]),
             jax=jax.__version__, python=platform.python_version(),
             flax=__import__("flax").__version__, argv=sys.argv[1:])
  pathlib.Path(a.out).parent.mkdir(parents=True, exist_ok=True)
  with open(a.out, "w") as f:
    json.dump(out, f, indent=1)
  print(f"wrote {a.out}")


if __name__ == "__main__":
  main()
