"""Markdown tables of a benchmark work directory: every run's members, and the iso-accuracy headlines.

Reads the ``results.json`` of every finished run under a ``run_benchmark.py`` work directory and
prints, per run and member, lambda, size (kB), MPIC / NE16 cycles, validation and test accuracy and
status, marking the members on the run's front (chosen on validation accuracy), then the headline
reductions of ``compare_size/compare.json``. Used to write ``experiments/results/*/README.md``.

Usage::

  python experiments/summarize.py experiments/results/cifar10_cpu/v2_seed14
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def member_rows(workdir: str):
  """``(run, member dict, on_front)`` of every finished run in ``workdir`` (sorted by run name)."""
  from jpq_jax import pareto  # pylint: disable=import-outside-toplevel
  out = []
  for run in sorted(os.listdir(workdir)):
    d = os.path.join(workdir, run)
    if not os.path.exists(os.path.join(d, "results.json")):
      continue
    res = pareto.load_results(d)
    front = {r["member"] for r in pareto.front_of_results(res, "size", "val_acc")}
    for m in res["members"]:
      out.append((run, m, m["member"] in front, res))
  return out


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("workdir")
  args = ap.parse_args(argv)
  print("| run | lambda | size | MPIC cycles | NE16 cycles | val acc | test acc | status |")
  print("|---|---|---|---|---|---|---|---|")
  for run, m, on, res in member_rows(args.workdir):
    c = m["costs_argmax"]
    fixed = res.get("method") == "fixed"
    lam = "-" if fixed else f"{m['lambda']:.3g}"
    fmt = lambda v: "-" if v is None else f"{v:,.0f}"
    star = " *" if on and not fixed else ""
    print(f"| {run} | {lam} | {c['size'] / 8000:.2f} kB{star} | {fmt(c.get('mpic'))} | "
          f"{fmt(c.get('ne16'))} | {100 * m['val_acc']:.2f}% | {100 * m['test_acc']:.2f}% | "
          f"{m.get('status', 'ok')} |")
  comp = os.path.join(args.workdir, "compare_size", "compare.json")
  if os.path.exists(comp):
    with open(comp) as f:
      c = json.load(f)
    print(f"\nReductions of {c['reference']} (fronts chosen on {c.get('selected_on')}, "
          f"accuracy {c['metric']}):\n")
    print("| baseline | accuracy | baseline size | joint size | reduction |")
    print("|---|---|---|---|---|")
    for cmp in c["comparisons"]:
      h = cmp["headline"]
      if h is None:
        continue
      red = "not reached" if h["reduction"] is None else f"{100 * h['reduction']:.1f}%"
      mc = "-" if h["method_cost"] is None else f"{h['method_cost'] / 8000:.2f} kB"
      print(f"| {cmp['baseline']} | {100 * h['accuracy']:.2f}% | {h['baseline_cost'] / 8000:.2f} kB | "
            f"{mc} | {red} |")
    print("\n| run | training time (s, without the shared warm-up) |\n|---|---|")
    for r in c["runs"]:
      print(f"| {r['name']} | {r['train_time_s']:.0f} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
