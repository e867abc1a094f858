"""The paper's comparison on one benchmark: the joint search, every baseline, then ``jpq compare``.

One command per benchmark (configs in ``experiments/configs/``)::

  # Full protocol (accelerator; the configs' 500-epoch reference schedules):
  python experiments/run_benchmark.py cifar10_resnet8 --data-dir ../shared/data/cifar10-jpeg.zip
  python experiments/run_benchmark.py gsc_dscnn --data-dir /data/speech_commands
  python experiments/run_benchmark.py tinyimagenet_resnet18 --data-dir /data/tiny-imagenet-200.zip

  # Reduced protocol for a 2-core CPU (CIFAR-10 only, about 2 hours; see CPU_PROTOCOL):
  python experiments/run_benchmark.py cifar10_resnet8 --protocol cpu \\
      --data-dir ../shared/data/cifar10-jpeg.zip --workdir experiments/results/cifar10_cpu

  # Minutes-long smoke test of the same pipeline (proves it runs; the numbers mean nothing):
  python experiments/run_benchmark.py cifar10_resnet8 --protocol smoke --data-dir ...

Runs (each a sweep in ``<workdir>/<run>``, all sharing the float warm-up of ``joint``):

* ``joint``: the method, size cost, weights (0, 2, 4, 8);
* ``mixprec`` (channel-wise, (2, 4, 8)), ``layerwise`` (EdMIPS-like), ``w8a8``/``w4a8``/``w2a8``
  (fixed-precision QAT), ``pit`` (float PIT, sizes at 32 bit), ``pit_mixprec`` (sequential);
* ``joint_mpic`` / ``joint_ne16``: the joint search with each hardware cost (full protocol), so the
  MPIC and NE16 reports cross-evaluate the two hardware-tailored fronts on both models (every run's
  results.json holds every cost of every member).

Lambdas: the size lambdas of the config; for another cost they are rescaled so that lambda * cost
of the all-8-bit network is the same as with the size cost (the cost scales differ by orders of
magnitude); PIT strengths are size lambdas * 8 (PIT's regulariser counts weights, not bits).

Reports: ``<workdir>/compare_size`` (every method, reference ``joint``), ``compare_mpic`` and
``compare_ne16`` (reference the front searched with that cost), each with compare.md/json/png.
A rerun resumes: finished sweeps are read back, an interrupted one continues from its checkpoint.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FULL_RUNS = ("joint", "mixprec", "layerwise", "w8a8", "w4a8", "w2a8", "pit", "pit_mixprec",
             "joint_mpic", "joint_ne16")

# Reduced CPU protocol (CIFAR-10 / ResNet-8 on 2 cores, target ~2 h): joint vs fixed w8a8 / w4a8 /
# w2a8 vs sequential PIT -> MixPrec. A seeded 10,000-image subset of the 40,000 training images,
# a 2,000-image subset of the validation split, the full 10,000-image test set; batch 32; epochs
# below (early stopping never triggers: earlystop_start 20 > every phase); everything else as the
# reference config (optimizers, lr schedule 0.99^epoch, temperature decay per epoch).
CPU_PROTOCOL = {
    "runs": ("joint", "w8a8", "w4a8", "w2a8", "pit_mixprec"),
    "data": {"train_size": 10000, "val_size": 2000},
    "epochs": {"warmup": 15, "search": 10, "finetune": 5, "pit.search": 8, "pit.finetune": 5},
    # Fixed precision: QAT for search + fine-tune epochs of the joint method (same budget).
    "fixed_search_epochs": 15,
    "lambdas": (3e-7, 1e-6, 3e-6),
    "pit_strength": 8e-6,
}
SMOKE_PROTOCOL = {
    "runs": ("joint", "w8a8", "w4a8", "w2a8", "pit_mixprec"),
    "data": {"train_size": 512, "val_size": 128, "test_size": 256},
    "epochs": {"warmup": 1, "search": 1, "finetune": 1, "pit.search": 1, "pit.finetune": 1},
    "fixed_search_epochs": 2,
    "lambdas": (1e-6, 1e-5),
    "pit_strength": 8e-5,
    "max_steps_per_epoch": 6,
}


def _set(cfg, dotted: str, value) -> None:
  node = cfg
  parts = dotted.split(".")
  for p in parts[:-1]:
    node = node[p]
  node[parts[-1]] = value


def all8_costs(cfg) -> Dict[str, float]:
  """Every cost of the all-8-bit network of ``cfg`` (the scale of each cost model)."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from jpq_jax import costs, sweep  # pylint: disable=import-outside-toplevel
  from jpq_jax.arch import GroupTheta  # pylint: disable=import-outside-toplevel
  from jpq_jax.models import get_model  # pylint: disable=import-outside-toplevel
  from jpq_jax.table import trace_table  # pylint: disable=import-outside-toplevel
  shapes = {"cifar10": (32, 32, 3), "gsc": (49, 10, 1), "speech_commands": (49, 10, 1),
            "tiny_imagenet": (64, 64, 3), "tinyimagenet": (64, 64, 3), "demo": (8, 8, 1)}
  classes = {"cifar10": 10, "gsc": 12, "speech_commands": 12, "tiny_imagenet": 200,
             "tinyimagenet": 200, "demo": 10}
  name = cfg.data.name
  model = get_model(cfg.model.name, sweep._space(cfg), classes.get(name, 10))  # pylint: disable=protected-access
  table = trace_table(model, jnp.zeros((1,) + shapes.get(name, (32, 32, 3))))
  theta = {}
  for g in table.groups:
    w = None if g.kind == "input" else jnp.zeros((len(g.w_precisions), g.channels)).at[
        g.w_precisions.index(max(g.w_precisions))].set(1.0)
    a = (jnp.zeros((len(g.a_precisions),)).at[g.a_precisions.index(max(g.a_precisions))].set(1.0)
         if g.a_precisions else None)
    theta[g.name] = GroupTheta(w=w, a=a)
  out = {}
  for n in ("size", "mpic", "ne16"):
    try:
      out[n] = float(costs.get_cost(n)(table, theta))
    except (ValueError, KeyError):
      pass
  return out


def run_configs(bench: str, protocol: str, data_dir: str) -> Dict[str, object]:
  """The config of every run of ``bench`` under ``protocol`` (``full``, ``cpu`` or ``smoke``)."""
  from jpq_jax.cli import load_config  # pylint: disable=import-outside-toplevel
  base = load_config(os.path.join(ROOT, "experiments", "configs", f"{bench}.py"))
  if data_dir:
    base.data.data_dir = data_dir
  prot = {"cpu": CPU_PROTOCOL, "smoke": SMOKE_PROTOCOL}.get(protocol)
  runs = FULL_RUNS if prot is None else prot["runs"]
  if prot is not None:
    with base.data.options.unlocked():
      for k, v in prot["data"].items():
        base.data.options[k] = v
    for k, v in prot["epochs"].items():
      _set(base, f"{k}.epochs", v)
    base.sweep.lambdas = tuple(prot["lambdas"])
    base.pit.strength = prot["pit_strength"]
    base.debug.max_steps_per_epoch = prot.get("max_steps_per_epoch", 0)
  else:
    base.pit.strength = 8 * sorted(base.sweep.lambdas)[len(base.sweep.lambdas) // 2]
  scale = all8_costs(base)
  cfgs = {}
  for r in runs:
    c = copy.deepcopy(base)
    c.name = f"{bench}_{r}"
    if r.startswith("w") and "a" in r:
      c.method = "fixed"
      c.fixed_bits = tuple(int(b) for b in r[1:].split("a"))
      if prot is not None:
        c.search.epochs = prot["fixed_search_epochs"]
    elif r.startswith("joint_"):
      cost = r[len("joint_"):]
      c.method = "joint"
      c.search.cost = cost
      c.sweep.pareto_cost = cost
      c.sweep.lambdas = tuple(float(l) * scale["size"] / scale[cost] for l in base.sweep.lambdas)
    elif r == "pit":
      c.method = "pit"
      c.sweep.lambdas = tuple(8.0 * float(l) for l in base.sweep.lambdas)
    else:
      c.method = r
    cfgs[r] = c
  return cfgs


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("bench", help="config name in experiments/configs (e.g. cifar10_resnet8)")
  ap.add_argument("--protocol", choices=("full", "cpu", "smoke"), default="full")
  ap.add_argument("--data-dir", default="")
  ap.add_argument("--workdir", default="", help="default runs/bench_<bench>_<protocol>")
  ap.add_argument("--runs", default="", help="comma-separated subset of the runs")
  args = ap.parse_args(argv)
  from jpq_jax import compare, sweep  # pylint: disable=import-outside-toplevel
  wd = args.workdir or os.path.join("runs", f"bench_{args.bench}_{args.protocol}")
  os.makedirs(wd, exist_ok=True)
  cfgs = run_configs(args.bench, args.protocol, args.data_dir)
  if args.runs:
    keep = args.runs.split(",")
    cfgs = {k: v for k, v in cfgs.items() if k in keep or k == "joint"}
  order = ["joint"] + [k for k in cfgs if k != "joint"]
  wall = {}
  for r in order:
    c = cfgs[r]
    if r != "joint":  # every method starts from the same float warm-up (METHOD.md §7.2)
      c.warmup.checkpoint = os.path.abspath(os.path.join(wd, "joint", "warmup"))
    t0 = time.time()
    print(f"== {r}: method={c.method} lambdas={tuple(c.sweep.lambdas)}", flush=True)
    sweep.run_sweep(c, os.path.join(wd, r), progress=False)
    wall[r] = time.time() - t0
    print(f"== {r} done in {wall[r]:.0f} s", flush=True)
  reports = {"size": [r for r in order]}
  if "joint_mpic" in cfgs and "joint_ne16" in cfgs:
    reports["mpic"] = ["joint_mpic", "joint_ne16"] + [r for r in order if not r.startswith("joint_")]
    reports["ne16"] = ["joint_ne16", "joint_mpic"] + [r for r in order if not r.startswith("joint_")]
  for cost, names in reports.items():
    runs = []
    for r in names:
      run = compare.load_run(os.path.join(wd, r), cost=cost)
      run.name = r
      runs.append(run)
    compare.write_comparison(runs, os.path.join(wd, f"compare_{cost}"))
    print(open(os.path.join(wd, f"compare_{cost}", "compare.md")).read())
  with open(os.path.join(wd, "benchmark.json"), "w") as f:
    json.dump({"bench": args.bench, "protocol": args.protocol, "runs": order,
               "wall_s_this_invocation": wall,
               "protocol_settings": {"cpu": CPU_PROTOCOL, "smoke": SMOKE_PROTOCOL}.get(
                   args.protocol, "configs as given")}, f, indent=2, default=list)
  return 0


if __name__ == "__main__":
  sys.exit(main())
