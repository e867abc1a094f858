"""Per-epoch checkpoint overhead: the time a sweep's training loop is blocked by one save.

A sweep saves its stacked member states once per epoch, asynchronously: the training loop is
blocked only for the part of :meth:`jpq_jax.checkpoint.SweepCheckpointer.save` that runs on the
main thread (waiting for the previous save, which has long finished at epoch boundaries, writing
its manifest when that is still pending, checksumming the new state's arrays, handing them to
Orbax). This script measures that blocked time, and the time until the step is committed with
its manifest, for the search states of two sweeps:

* ``demo``: DemoNet, the demo's 10 members;
* ``resnet8``: ResNet-8 (CIFAR-10), 4 members (the CPU protocol's sweep);

for the checkpointer of this checkout (``after``: manifest committed with the step by Orbax's
post-finalization callback, array checksums in the metadata) and for the one of a git revision
(``before``, default ``334845f~1``: manifest of step N written when the save of step N+1 starts),
loaded side by side in one process. Medians over ``--repeats`` saves (each after ``--gap``
seconds of idle time, as the epoch between two saves).

Prints a table and writes ``benchmarks/results/checkpoint.json``.

Usage::

  python benchmarks/checkpoint.py
  python benchmarks/checkpoint.py --repeats 5 --before 1120c5c
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _old_module(rev: str):
  src = subprocess.run(["git", "show", f"{rev}:jpq_jax/checkpoint.py"], cwd=ROOT, check=True,
                       capture_output=True, text=True).stdout
  path = os.path.join(tempfile.mkdtemp(prefix="jpq_ckpt_old_"), "checkpoint_old.py")
  with open(path, "w") as f:
    f.write(src)
  spec = importlib.util.spec_from_file_location("checkpoint_old", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _state(model_name: str, members: int):
  """Random host arrays with the structure of ``members`` stacked search states of the model."""
  import jax  # pylint: disable=import-outside-toplevel
  from jpq_jax import sweep  # pylint: disable=import-outside-toplevel
  cfg = sweep.demo_config() if model_name == "demo" else sweep.base_config()
  if model_name == "resnet8":
    cfg.model.name, cfg.data.name = "resnet8", "cifar10"
  cfg.sweep.lambdas = tuple(1e-6 * (k + 1) for k in range(members))
  shape = (8, 8, 1) if model_name == "demo" else (32, 32, 3)
  sw = sweep.Sweep(cfg, tempfile.mkdtemp(prefix="jpq_ckpt_bench_"), progress=False)
  sw.model, sw.table, sw.sample = sweep.build_model_from_config(sw.cfg, 10, shape)
  sw.n_pad, sw.cw = members, None
  tmpl = sw._search_template()  # pylint: disable=protected-access
  rng = np.random.default_rng(0)
  return jax.tree_util.tree_map(lambda s: rng.standard_normal(s.shape).astype(s.dtype)
                                if np.dtype(s.dtype).kind == "f" else np.zeros(s.shape, s.dtype),
                                tmpl)


def _measure(mod, state, repeats: int, gap: float):
  d = tempfile.mkdtemp(prefix="jpq_ckpt_run_")
  ck = mod.SweepCheckpointer(os.path.join(d, "ck"), keep=2, async_save=True)
  blocked, committed = [], []
  for step in range(1, repeats + 2):
    t0 = time.perf_counter()
    ck.save(step, state, {"phase": "search", "epoch": step})
    t1 = time.perf_counter()
    # Time until the step is committed *with* its manifest, polled as a killed run would see it.
    final = os.path.join(d, "ck", str(step), mod.MANIFEST)
    while not os.path.exists(final) and time.perf_counter() - t0 < gap:
      time.sleep(0.002)
    t2 = time.perf_counter()
    if step > 1:  # the first save creates the directory and warms Orbax up
      blocked.append(t1 - t0)
      committed.append(t2 - t0 if os.path.exists(final) else float("nan"))
    time.sleep(max(0.0, gap - (t2 - t0)))
  ck.close()
  nbytes = sum(np.asarray(a).nbytes for a in __import__("jax").tree_util.tree_leaves(state))
  return {"blocked_s_median": statistics.median(blocked),
          "manifest_after_s_median": (statistics.median(committed)
                                      if all(c == c for c in committed) else None),
          "manifest_within_gap": sum(c == c for c in committed), "saves": len(blocked),
          "state_mb": nbytes / 1e6}


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--repeats", type=int, default=7)
  ap.add_argument("--gap", type=float, default=1.5, help="idle seconds between saves (an epoch)")
  ap.add_argument("--before", default="334845f~1", help="git revision of the 'before' code")
  ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "checkpoint.json"))
  args = ap.parse_args(argv)
  from jpq_jax import checkpoint as new  # pylint: disable=import-outside-toplevel
  old = _old_module(args.before)
  rows = []
  for model_name, members in (("demo", 10), ("resnet8", 4)):
    state = _state(model_name, members)
    for label, mod in (("before", old), ("after", new)):
      r = _measure(mod, state, args.repeats, args.gap)
      rows.append({"model": model_name, "members": members, "code": label, **r})
  print(f"{'model':<8} {'N':>3} {'code':<7} {'state MB':>8} {'blocked ms':>10} "
        f"{'manifest on disk after':>22}")
  for r in rows:
    m = r["manifest_after_s_median"]
    man = (f"{1000 * m:.0f} ms" if m is not None else
           f"not within the epoch ({r['manifest_within_gap']}/{r['saves']})")
    print(f"{r['model']:<8} {r['members']:>3} {r['code']:<7} {r['state_mb']:8.2f} "
          f"{1000 * r['blocked_s_median']:10.1f} {man:>22}")
  for model_name in ("demo", "resnet8"):
    b, a = [r for r in rows if r["model"] == model_name]
    print(f"{model_name}: blocked time after / before = "
          f"{a['blocked_s_median'] / b['blocked_s_median']:.2f}")
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"rows": rows, "repeats": args.repeats, "gap_s": args.gap, "before": args.before,
               "time": time.strftime("%Y-%m-%d %H:%M:%S")}, f, indent=1)
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
