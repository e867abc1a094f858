"""Where do the ``loop`` and ``vmap`` strategies first differ, and is it float32 roundoff?

The two strategies run the same single-member step: ``loop`` calls it jitted per member, ``vmap``
calls ``jax.vmap`` of it over the stacked members. XLA compiles the two programs differently
(batched convolutions and reductions, other fusion and summation orders), so their float32 results
may differ in the last bits; an optimisation trajectory then amplifies such differences, and the
argmax of the precision logits (and the rounding ties of the quantizers) turns them into discrete
differences. This script tells that apart from a defect:

1. **one step**: the same search states and the same batch through both executors; every tensor
   of every member's new state compared (max abs / relative difference, differing elements);
2. **N steps**: the same batches for ``--steps`` steps; per step, the largest relative
   difference of the weights and of the precision logits, the train loss of member 0, and how many
   channels have a different argmax precision;
3. **the control**: the same N steps with ``loop`` twice, the second run's initial weights
   perturbed by one ulp (``np.nextafter`` towards +inf on every float weight; a 1-ulp change of
   the *inputs* does nothing here: the 8-bit input quantizer maps it to the same codes). This is
   the spread float32 roundoff alone produces along a trajectory; a strategy difference that
   stays at or below it is roundoff, one above it from the first step is a defect.

Prints the tables and writes ``benchmarks/results/agreement.json``.

Usage::

  python benchmarks/agreement.py                 # the demo, its 10 lambdas, 1 epoch of steps
  python benchmarks/agreement.py --steps 200 --out /tmp/agreement.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _leaves(tree):
  import jax  # pylint: disable=import-outside-toplevel
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [(jax.tree_util.keystr(p), np.asarray(v)) for p, v in flat]


def _compare(a, b):
  """Per tensor: max abs diff, max relative diff (to max |a|), fraction of differing elements."""
  rows = []
  for (name, x), (_, y) in zip(_leaves(a), _leaves(b)):
    if x.dtype.kind not in "fc" or x.size == 0:
      same = bool(np.array_equal(x, y))
      rows.append({"tensor": name, "max_abs": 0.0 if same else float("nan"), "max_rel": 0.0 if same
                   else float("nan"), "frac_diff": 0.0 if same else 1.0})
      continue
    d = np.abs(x.astype(np.float64) - y.astype(np.float64))
    scale = max(float(np.max(np.abs(x))), 1e-30)
    rows.append({"tensor": name, "max_abs": float(d.max()), "max_rel": float(d.max() / scale),
                 "frac_diff": float(np.mean(d > 0))})
  return rows


def _argmax_bits(states, n):
  """Per member: the argmax index of every weight-precision logit (flattened, concatenated)."""
  import jax  # pylint: disable=import-outside-toplevel
  out = []
  for k in range(n):
    arch = jax.tree_util.tree_map(lambda v: np.asarray(v[k]), states.params["arch"])
    parts = [np.argmax(v, axis=0).ravel() for _, v in _leaves(arch) if v.ndim == 2]
    out.append(np.concatenate(parts) if parts else np.zeros(0, int))
  return out


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--steps", type=int, default=0, help="training steps (default: one epoch)")
  ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "agreement.json"))
  args = ap.parse_args(argv)

  import jax  # pylint: disable=import-outside-toplevel
  from jpq_jax import sweep  # pylint: disable=import-outside-toplevel
  from jpq_jax.fold import to_search  # pylint: disable=import-outside-toplevel

  cfg = sweep.demo_config()
  work = tempfile.mkdtemp(prefix="jpq_agreement_")
  sw = sweep.Sweep(cfg, work, progress=False)
  sw._setup()  # pylint: disable=protected-access
  log = sweep._Log(work, -1, False, sw.members, cfg.search.cost)  # pylint: disable=protected-access
  sw._meta = {"times": {}}  # pylint: disable=protected-access
  t0 = time.time()
  float_vars = sw._warmup(0, None, log)  # pylint: disable=protected-access
  print(f"demo warm-up: {time.time() - t0:.0f} s")
  svars = to_search(sw.model, float_vars, sw.sample, table=sw.table)
  tx, _, _, _ = sw._phase_fns("search")  # pylint: disable=protected-access
  init = lambda: sw._initial_states("search", tx, [svars] * sw.n,  # pylint: disable=protected-access
                                    float(cfg.search.temperature))
  n = sw.n
  lams = np.asarray([m["lam"] for m in sw.members], np.float32)
  poison = np.zeros((n,), np.float32)
  steps = args.steps or sw.steps
  batches = []
  for i, (x, y) in enumerate(sw.train_loader.epoch(0)):
    if i >= steps:
      break
    batches.append((np.asarray(x), np.asarray(y)))
  steps = len(batches)

  def ulp(tree):
    return jax.tree_util.tree_map(
        lambda v: np.nextafter(np.asarray(v), np.asarray(np.inf, np.asarray(v).dtype))
        if np.asarray(v).dtype.kind == "f" else v, tree)

  def run(strategy, perturb=False, record=None):
    _, ex = sw._make_ex("search", n, strategy)  # pylint: disable=protected-access
    st0 = init()
    if perturb:
      st0 = st0.replace(params={**st0.params, "params": ulp(st0.params["params"])})
    ex.set_states(st0)
    traj = []
    for i, (x, y) in enumerate(batches):
      lam_e = sweep.T.strength_at(lams, 0, int(cfg.search.epochs), False)
      m = ex.train_step(x, y, lam_e, np.float32(1.0), poison)
      m = sweep._stack(m) if isinstance(m, list) else m  # pylint: disable=protected-access
      st = jax.tree_util.tree_map(np.asarray, ex.stacked())
      traj.append((st, np.asarray(m["loss"])))
      if record is not None and i == 0:
        record.append(st)
    return traj

  first = {}
  t0 = time.time()
  loop = run("loop")
  vmap = run("vmap")
  loop2 = run("loop", perturb=True)
  print(f"three runs of {steps} steps x {n} members: {time.time() - t0:.0f} s")

  # 1. one step, per tensor
  one = _compare(loop[0][0].params, vmap[0][0].params)
  one_ulp = _compare(loop[0][0].params, loop2[0][0].params)
  worst = sorted(one, key=lambda r: -r["max_rel"])[:8]
  print("\nafter ONE step, loop vs vmap (largest relative differences, all members):")
  print(f"{'tensor':<58} {'max abs':>10} {'max rel':>10} {'frac diff':>9}")
  for r in worst:
    print(f"{r['tensor'][:58]:<58} {r['max_abs']:10.3g} {r['max_rel']:10.3g} {r['frac_diff']:9.3f}")
  first["one_step_loop_vs_vmap"] = one
  first["one_step_loop_vs_ulp"] = one_ulp

  # 2./3. N steps
  def spread(a, b):
    out = []
    for (sa, la), (sb, lb) in zip(a, b):
      w = _compare(sa.params["params"], sb.params["params"])
      ar = _compare(sa.params["arch"], sb.params["arch"])
      ba, bb = _argmax_bits(sa, n), _argmax_bits(sb, n)
      out.append({"w_rel": max(r["max_rel"] for r in w), "arch_rel": max(r["max_rel"] for r in ar),
                  "loss0_a": float(la[0]), "loss0_b": float(lb[0]),
                  "argmax_diff": int(sum(int(np.sum(p != q)) for p, q in zip(ba, bb)))})
    return out

  sv, su = spread(loop, vmap), spread(loop, loop2)
  print(f"\nover {steps} steps: loop vs vmap | loop vs loop with 1-ulp perturbed initial weights")
  print(f"{'step':>5} {'w rel':>9} {'arch rel':>9} {'argmax':>6} | {'w rel':>9} {'arch rel':>9} "
        f"{'argmax':>6} | loss m0: loop / vmap / loop+ulp")
  marks = sorted({0, 1, 2, 4, 9, 19, 49, 99, 199, 499, steps - 1} & set(range(steps)))
  for i in marks:
    a, b = sv[i], su[i]
    print(f"{i + 1:>5} {a['w_rel']:9.2e} {a['arch_rel']:9.2e} {a['argmax_diff']:>6} | "
          f"{b['w_rel']:9.2e} {b['arch_rel']:9.2e} {b['argmax_diff']:>6} | "
          f"{a['loss0_a']:.5f} / {a['loss0_b']:.5f} / {b['loss0_b']:.5f}")
  first_diff = next((i for i, r in enumerate(sv) if r["w_rel"] > 0 or r["arch_rel"] > 0), None)
  print(f"first step whose new state differs between loop and vmap: "
        f"{'none' if first_diff is None else first_diff + 1}")
  res = {"model": "demo", "members": n, "steps": steps, "backend": jax.default_backend(),
         "jax": jax.__version__, "first_step_with_difference": first_diff,
         "loop_vs_vmap": sv, "loop_vs_loop_ulp": su, **first,
         "mean_loss_member0": {"loop": float(np.mean([r["loss0_a"] for r in sv])),
                               "vmap": float(np.mean([r["loss0_b"] for r in sv])),
                               "loop_ulp": float(np.mean([r["loss0_b"] for r in su]))}}
  print(f"\nmean train loss of member 0 over the {steps} steps: loop "
        f"{res['mean_loss_member0']['loop']:.4f}, vmap {res['mean_loss_member0']['vmap']:.4f}, "
        f"loop + 1 ulp {res['mean_loss_member0']['loop_ulp']:.4f}")
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(res, f, indent=1)
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
