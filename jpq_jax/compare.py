"""Compare the fronts of several sweeps: one plot, and cost reduction at iso-accuracy.

The paper's headline metric is a cost (size) reduction *at iso-accuracy*: how much cheaper the
method's front is at the accuracy a baseline reaches. This module reads the ``results.json`` of
several sweep work directories (one method each: the joint search, fixed-precision QAT, PIT, ...),
extracts each Pareto front (the task's metric in its direction, e.g. accuracy to maximise or a
reconstruction's MSE to minimise, as ``results['task']`` records it; cost to minimise; members
that failed left out) and computes, for every pair (method, baseline):

* each front is **chosen on the validation metric** (``select``, default ``val_acc``: which
  members are Pareto-optimal) and **read on the test metric** (``metric``, default ``test_acc``),
  so the test set never decides which points are shown; ``select="test_acc"`` is the explicit,
  leaky choice;
* for each point of the baseline's front, the method's cost at the same (test) accuracy, read off
  the method's front by **linear interpolation of log(cost) against accuracy between the two
  adjacent front points** where the front first reaches it, in order of cost (the cheapest front
  point when it already does; "not reached" when the method's front never reaches that accuracy),
  and the reduction ``1 - cost_method / cost_baseline``. A front chosen on validation need not
  be monotonic in test accuracy; the rule reads the cheapest crossing;
* the headline: that reduction at the baseline's most accurate front point (for a fixed-precision
  baseline, its only point, as in "47.5% smaller than w8a8 at the same accuracy").

For a lower-is-better metric "reaches" means "at or below". Points keep the classification
format's field name ``accuracy`` for the reported metric's value, whatever the task. Writes
``compare.md`` (tables), ``compare.json`` and ``compare.png`` / ``compare.pdf`` (every front, the
metric vs cost, log x; sizes in kB).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from jpq_jax.pareto import (default_cost, default_metric, display_scale, is_healthy, metric_info,
                            metric_label)

__all__ = ["Run", "load_run", "merge_runs", "pareto_front", "cost_at_accuracy", "iso_accuracy",
           "compare_runs", "write_comparison"]


class Run:
  """One sweep's members as (cost, accuracy) points.

  Attributes:
    name: display name (the method, or the work directory's name).
    workdir: where it was read from.
    points: list of dicts ``{member, lambda, cost, accuracy, ...}`` (failed members excluded).
    failed: number of failed members left out.
    cost: the cost name; unit: its unit.
    metric: the field reported (``accuracy`` of each point: its value, whatever the task).
    select: the field that chose the front (``selection`` of each point); equal to ``metric``
      for a front chosen on the reported metric.
    higher_is_better, select_higher_is_better: the directions of ``metric`` and ``select``.
    label: how plots and tables name ``metric`` (``test accuracy [%]``); percent: it is a
      fraction shown in %; select_label: how they name ``select`` (``validation accuracy``);
      metric_name: the metric without its split (``accuracy``, ``MSE``).
    train_time_s: training time of the method: every phase of ``times_s`` except the warm-up,
      which every method shares (METHOD.md §7.2): search + fine-tune for the joint search and
      the MPS baselines, PIT search + PIT fine-tune (+ MPS search + fine-tune for
      ``pit_mixprec``).
    not_applicable: members without a value for this cost (e.g. the float PIT networks have no
      MPIC/NE16 latency), left out of the front without counting as failed.
  """

  def __init__(self, name, workdir, points, failed, cost, unit, metric, train_time_s, times,
               method=None, not_applicable=0, task=None, select=None, higher_is_better=True,
               select_higher_is_better=None, label=None, percent=True, select_label=None,
               metric_name=None):
    self.name, self.workdir, self.points, self.failed = name, workdir, points, failed
    self.cost, self.unit, self.metric = cost, unit, metric
    self.select = select or metric
    self.higher_is_better = bool(higher_is_better)
    self.select_higher_is_better = (self.higher_is_better if select_higher_is_better is None
                                    else bool(select_higher_is_better))
    self.label, self.percent = label or metric, bool(percent)
    self.select_label = select_label or self.select
    self.metric_name = metric_name or ("accuracy" if self.percent else metric)
    self.train_time_s, self.times = train_time_s, times
    self.method, self.not_applicable = method, not_applicable
    self.task = task  # {"dataset", "model"} as recorded in results.json (None: unknown)
    self.merged_from = None  # the sweeps' work directories when made by merge_runs

  @property
  def front(self) -> List[Dict[str, Any]]:
    """The points Pareto-optimal on (cost, ``select``), by increasing cost."""
    return pareto_front(self.points, key="selection", higher_is_better=self.select_higher_is_better)


def load_run(workdir: str, cost: Optional[str] = None, metric: Optional[str] = None,
             name: Optional[str] = None, select: Optional[str] = None) -> Run:
  """Read a sweep's ``results.json``.

  Args:
    workdir: the sweep's work directory.
    cost: cost name to compare on (default: the run's Pareto cost).
    metric: the field reported and compared at iso-metric (default ``test_<m>`` of the metric
      ``m`` of the run's front: ``test_acc`` for a classification, ``test_loss`` for a
      regression).
    select: the field that chooses the front (default ``val_<m>``: no test leakage).
    name: display name (default: the run's ``method`` (``wXaY`` for a fixed-precision run), else
      its ``name``, else the folder name).

  Returns:
    The :class:`Run`.

  Raises:
    FileNotFoundError: no results.json (the sweep did not finish).
    ValueError: the cost or the metric is not in the results.
  """
  path = pathlib.Path(workdir) / "results.json"
  if not path.exists():
    raise FileNotFoundError(f"{path} not found: {workdir!r} holds no finished sweep")
  with open(path) as f:
    res = json.load(f)
  cost = cost or default_cost(res)
  base = metric_info(res, default_metric(res))["metric"]
  metric = metric or f"test_{base}"
  select = select or f"val_{base}"
  units = res.get("cost_units", {})
  pts, failed, na = [], 0, 0
  for m in res.get("members", []):
    if not is_healthy(m):
      failed += 1
      continue
    costs = m.get("costs_argmax") or {}
    if cost not in costs:
      raise ValueError(f"{workdir}: cost {cost!r} not in the results (have {sorted(costs)})")
    for f in (metric, select):
      if f not in m:
        raise ValueError(f"{workdir}: metric {f!r} not in the results")
    c, a, sel = costs[cost], m[metric], m[select]
    if c is None and a is not None:
      na += 1  # the cost does not apply to this network (e.g. float PIT on a hardware model)
      continue
    if (c is None or a is None or sel is None or not math.isfinite(c) or not math.isfinite(a)
        or not math.isfinite(sel)):
      failed += 1
      continue
    pts.append({"member": m.get("member"), "lambda": m.get("lambda"), "cost": float(c),
                "accuracy": float(a), "selection": float(sel)})
  times = res.get("times_s", {}) or {}
  fb = res.get("fixed_bits")
  method_label = (f"w{fb[0]}a{fb[1]}" if res.get("method") == "fixed" and fb else res.get("method"))
  label = name or method_label or res.get("name") or pathlib.Path(workdir).name
  total = res.get("train_time_s")
  if total is None:  # results written before the field existed
    total = sum(v for p, v in times.items() if v and p != "warmup")
  task = {k: res[k] for k in ("dataset", "model") if res.get(k) is not None} or None
  info = metric_info(res, metric)
  return Run(label, str(workdir), pts, failed, cost, units.get(cost, ""), metric, float(total),
             times, method=res.get("method"), not_applicable=na, task=task, select=select,
             higher_is_better=info["higher_is_better"],
             select_higher_is_better=metric_info(res, select)["higher_is_better"],
             label=metric_label(res, metric), percent=info["percent"],
             select_label=metric_label(res, select, unit=False), metric_name=info["label"])


# Config fields that may differ between sweeps merged into one front: the display name, the
# lambdas (what the sweeps split between them), where the float warm-up was read from, and the
# metric of the sweep's own front (``auto`` since the tasks, ``val_acc`` before: the comparison
# chooses its fronts on its own ``select``, checked equal).
_MERGE_FREE = ("name", "sweep.lambdas", "warmup.checkpoint", "sweep.pareto_metric")


def _sweep_config(workdir: str) -> Optional[Dict[str, Any]]:
  path = pathlib.Path(workdir) / "config.json"
  if not path.exists():
    return None
  with open(path) as f:
    rec = json.load(f)
  return rec.get("config", rec)


def merge_runs(runs: Sequence[Run], name: Optional[str] = None) -> Run:
  """One front from several sweeps of one method that differ in their lambdas only.

  A member's trajectory depends on its lambda and seed only (not on which sweep trains it), so
  sweeps of the same config over different lambdas are together one sweep over every lambda: a
  front extended later at its small-size end is read as one. The sweeps' ``config.json`` must
  agree (:func:`jpq_jax.sweep.validation.config_difference`, the resume check's comparison:
  absent keys are their defaults) on every field except the name, ``sweep.lambdas``,
  ``sweep.pareto_metric`` (the fronts compared are chosen on ``select``, which must agree) and
  ``warmup.checkpoint`` (the same warm-up trained again or read from elsewhere; that it is the
  same is the caller's claim, e.g. a reproduced warm-up).

  Args:
    runs: the sweeps, each loaded with :func:`load_run` on the same cost and metric.
    name: the merged run's display name (default: the first run's).

  Returns:
    A :class:`Run` whose points are every run's (each point's ``run`` names its sweep's
    directory), whose
    training time and per-phase times are the sums, and whose failed members add up.

  Raises:
    ValueError: fewer than one run, different cost/metric/method/task, configs that differ in
      another field (named), or a lambda trained by two of the sweeps.
  """
  runs = list(runs)
  if not runs:
    raise ValueError("merge_runs: no run given")
  first = runs[0]
  for r in runs[1:]:
    for attr in ("cost", "metric", "select", "method", "task"):
      if getattr(r, attr) != getattr(first, attr):
        raise ValueError(f"cannot merge {r.name!r} into {first.name!r}: {attr} differs "
                         f"({getattr(r, attr)!r} vs {getattr(first, attr)!r})")
    ca, cb = _sweep_config(first.workdir), _sweep_config(r.workdir)
    if ca is not None and cb is not None:
      from jpq_jax.sweep.validation import (  # pylint: disable=import-outside-toplevel
          config_difference)
      diff = config_difference(ca, cb, ignore=_MERGE_FREE)
      if diff is not None:
        raise ValueError(f"cannot merge {r.workdir!r} into {first.workdir!r}: their configs "
                         f"differ in {diff[0]} ({diff[1]!r} vs {diff[2]!r}; only the lambdas "
                         "may differ)")
  seen = {}
  points = []
  for r in runs:
    sweep = pathlib.Path(r.workdir).name
    for p in r.points:
      lam = p.get("lambda")
      if lam is not None and lam in seen and seen[lam] != sweep:
        raise ValueError(f"cannot merge: lambda {lam} is trained by {seen[lam]!r} and {sweep!r}")
      seen[lam] = sweep
      points.append(dict(p, run=sweep))
  times: Dict[str, float] = {}
  for r in runs:
    for k, v in (r.times or {}).items():
      if v:
        times[k] = times.get(k, 0.0) + float(v)
  merged = Run(name or first.name, first.workdir, points, sum(r.failed for r in runs),
               first.cost, first.unit, first.metric, sum(r.train_time_s for r in runs), times,
               method=first.method, not_applicable=sum(r.not_applicable for r in runs),
               task=first.task, select=first.select, higher_is_better=first.higher_is_better,
               select_higher_is_better=first.select_higher_is_better, label=first.label,
               percent=first.percent, select_label=first.select_label,
               metric_name=first.metric_name)
  merged.merged_from = [r.workdir for r in runs]
  return merged


def pareto_front(points: Sequence[Dict[str, Any]], key: str = "accuracy",
                 higher_is_better: bool = True) -> List[Dict[str, Any]]:
  """Points not dominated by another (lower-or-equal cost and a better ``key``), by cost.

  Args:
    points: dicts with ``cost`` and ``key`` (points without ``key`` use ``accuracy``).
    key: the field the front is chosen on (``selection`` for a :class:`Run`'s points).
    higher_is_better: the direction of ``key`` (False: a loss).

  Returns:
    The front, sorted by increasing cost (and so improving ``key``).
  """
  sign = 1.0 if higher_is_better else -1.0
  val = lambda p: sign * p.get(key, p["accuracy"])
  pts = sorted(points, key=lambda p: (p["cost"], -val(p)))
  front, best = [], -math.inf
  for p in pts:
    if val(p) > best:
      front.append(p)
      best = val(p)
  return front


def cost_at_accuracy(front: Sequence[Dict[str, Any]], accuracy: float,
                     higher_is_better: bool = True) -> Optional[float]:
  """The cost a front needs to reach ``accuracy`` (log-linear interpolation; None if never).

  The front is walked by increasing cost; at the first point whose ``accuracy`` reaches the
  target, the cost is interpolated (log cost linear in accuracy) between it and the point before
  it. For a front chosen on its own accuracy this is the usual interpolation between the two
  adjacent points around the target; for a front chosen on another metric (validation) whose
  ``accuracy`` (test) is not monotonic, it is the cheapest crossing.

  Args:
    front: a Pareto front sorted by cost (see :func:`pareto_front`).
    accuracy: the target value of the points' ``accuracy`` field (the reported metric).
    higher_is_better: its direction; False (a loss): reaching means being at or below it.

  Returns:
    The interpolated cost, or None when no front point reaches ``accuracy``.
  """
  sign = 1.0 if higher_is_better else -1.0
  for i, hi in enumerate(front):
    if sign * hi["accuracy"] >= sign * accuracy:
      if i == 0:
        return hi["cost"]
      lo = front[i - 1]
      t = (accuracy - lo["accuracy"]) / (hi["accuracy"] - lo["accuracy"])
      return float(math.exp(math.log(lo["cost"]) + t * (math.log(hi["cost"]) - math.log(lo["cost"]))))
  return None


def iso_accuracy(method: Run, baseline: Run) -> Dict[str, Any]:
  """Cost reduction of ``method`` against ``baseline`` at the baseline's front accuracies.

  Args:
    method: the run whose front is measured.
    baseline: the run it is compared against (same cost and metric).

  Returns:
    ``{"points": [...], "headline": {...}}`` where each point gives the baseline's accuracy and
    cost, the method's interpolated cost (None if not reached) and the reduction.

  Raises:
    ValueError: the two runs use different costs or metrics, or different datasets or models.
  """
  if (method.cost != baseline.cost or method.metric != baseline.metric
      or method.select != baseline.select):
    raise ValueError(f"cannot compare {method.name!r} ({method.cost}, {method.metric}, front "
                     f"chosen on {method.select}) with {baseline.name!r} ({baseline.cost}, "
                     f"{baseline.metric}, chosen on {baseline.select}); pass --cost to "
                     "compare both on one cost")
  if method.task and baseline.task and method.task != baseline.task:
    raise ValueError(f"cannot compare {method.name!r} ({method.task}) with {baseline.name!r} "
                     f"({baseline.task}): different datasets or models")
  mf = method.front
  rows = []
  for p in baseline.front:
    c = cost_at_accuracy(mf, p["accuracy"], method.higher_is_better)
    red = None if c is None or p["cost"] <= 0 else 1.0 - c / p["cost"]
    rows.append({"accuracy": p["accuracy"], "baseline_cost": p["cost"], "method_cost": c,
                 "reduction": red})
  head = rows[-1] if rows else None
  return {"method": method.name, "baseline": baseline.name, "points": rows, "headline": head,
          "metric": method.metric, "selected_on": method.select,
          "higher_is_better": method.higher_is_better,
          "interpolation": f"log-linear cost vs {method.metric_name} between adjacent front "
                           "points"}


def compare_runs(runs: Sequence[Run], reference: Optional[str] = None) -> Dict[str, Any]:
  """Every pairwise iso-accuracy comparison of ``reference`` (default: the first run) vs the rest.

  Args:
    runs: the runs (same cost and metric).
    reference: name of the method whose reductions are reported.

  Returns:
    A JSON-able dict with the fronts, the comparisons and the training times.

  Raises:
    ValueError: fewer than two runs, or an unknown reference.
  """
  if len(runs) < 2:
    raise ValueError("compare needs at least two sweep directories")
  names = [r.name for r in runs]
  ref = runs[0] if reference is None else next((r for r in runs if r.name == reference), None)
  if ref is None:
    raise ValueError(f"unknown reference {reference!r}; runs: {names}")
  return {
      "cost": ref.cost, "unit": ref.unit, "metric": ref.metric, "selected_on": ref.select,
      "metric_label": ref.label, "selected_label": ref.select_label,
      "metric_name": ref.metric_name,
      "higher_is_better": ref.higher_is_better,
      "percent": ref.percent, "reference": ref.name,
      "runs": [{"name": r.name, "method": r.method, "workdir": r.workdir, "front": r.front,
                "task": r.task,
                "n_points": len(r.points), "failed": r.failed,
                "not_applicable": r.not_applicable, "train_time_s": r.train_time_s,
                "times_s": r.times,
                **({"merged_from": r.merged_from} if r.merged_from else {})}
               for r in runs],
      "comparisons": [iso_accuracy(ref, r) for r in runs if r is not ref],
  }


def _fmt_cost(c, unit):
  if c is None:
    return "not reached"
  scale, shown = display_scale(unit)
  if scale != 1.0:
    return f"{scale * c:.2f} {shown}"
  return f"{c:,.0f} {unit}".strip()


def _fmt_value(comp, v) -> str:
  """A metric value as the tables show it: ``91.23%`` for a percentage, else 4 digits."""
  return f"{100 * v:.2f}%" if comp.get("percent", True) else f"{v:.4g}"


def write_comparison(runs: Sequence[Run], out: str, reference: Optional[str] = None) -> Dict[str, Any]:
  """Write ``compare.md``, ``compare.json`` and ``compare.png`` into ``out``.

  Args:
    runs: the runs to compare.
    out: output directory (created).
    reference: the method whose reductions are reported (default: the first run).

  Returns:
    The comparison dict (also in compare.json).
  """
  comp = compare_runs(runs, reference)
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "compare.json"), "w") as f:
    json.dump(comp, f, indent=2)
  unit = comp["unit"]
  sel = comp.get("selected_on", comp["metric"])
  what = comp.get("metric_name") or "accuracy"
  way = "" if comp.get("higher_is_better", True) else " (lower is better)"
  lines = [f"# Comparison on {comp['cost']} ({unit}) vs {comp['metric']}", "",
           f"Fronts chosen on **{sel}**, {'accuracies' if what == 'accuracy' else 'values'} "
           f"reported and compared on **{comp['metric']}**{way}"
           + (" (the test set chose the points: optimistic)." if sel.startswith("test_") else "."),
           "", "Training time: every phase except the shared float warm-up.", "",
           f"| method | front points | failed | best {what} | cheapest front cost | training time |",
           "|---|---|---|---|---|---|"]
  for r in comp["runs"]:
    fr = r["front"]
    best = _fmt_value(comp, fr[-1]["accuracy"]) if fr else "-"
    cheap = _fmt_cost(fr[0]["cost"], unit) if fr else "-"
    na = f" ({r['not_applicable']} without this cost)" if r.get("not_applicable") else ""
    lines.append(f"| {r['name']} | {len(fr)}{na} | {r['failed']} | {best} | {cheap} | "
                 f"{r['train_time_s']:.0f} s |")
  lines += ["", f"Cost reduction of **{comp['reference']}** at iso-{what} ({comp['metric']}; cost read "
            f"off its front, chosen on {sel}, by log-linear interpolation between adjacent points):",
            "",
            f"| baseline | {what} | baseline cost | method cost | reduction |",
            "|---|---|---|---|---|"]
  for c in comp["comparisons"]:
    for p in c["points"]:
      red = "-" if p["reduction"] is None else f"{100 * p['reduction']:.2f}%"
      mark = " (headline)" if p is c["headline"] else ""
      lines.append(f"| {c['baseline']}{mark} | {_fmt_value(comp, p['accuracy'])} | "
                   f"{_fmt_cost(p['baseline_cost'], unit)} | {_fmt_cost(p['method_cost'], unit)} | "
                   f"{red} |")
  with open(os.path.join(out, "compare.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  _plot(comp, os.path.join(out, "compare.png"))
  return comp


def _plot(comp, path):
  """The fronts on one axis; also written as a vector copy (``.pdf`` beside ``path``)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  import matplotlib.ticker  # pylint: disable=import-outside-toplevel
  scale, shown = display_scale(comp["unit"])
  xl = f"{comp['cost']} [{shown}]" if shown else comp["cost"]
  yscale = 100.0 if comp.get("percent", True) else 1.0
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for i, r in enumerate(comp["runs"]):
    fr = r["front"]
    if not fr:
      continue
    xs = np.array([p["cost"] for p in fr]) * scale
    ys = yscale * np.array([p["accuracy"] for p in fr])
    # The reference (the searched method) on top, thicker; fronts as lines with markers, single
    # points (fixed precision) as squares.
    ax.plot(xs, ys, linestyle="-" if len(fr) > 1 else "none", label=r["name"],
            ms=7 if i == 0 else 6, lw=2 if i == 0 else 1.2, zorder=3 if i == 0 else 2,
            marker="s" if len(fr) == 1 else "oDv^<>ph*"[i % 9])
  ax.set_xscale("log")
  # Plain numbers on the log axis ("5", "20", "50 kB"), not "5x10^0".
  plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
  ax.xaxis.set_major_formatter(plain)
  ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
      lambda v, _: f"{v:g}" if f"{v:.1e}"[0] in "25" else ""))
  ax.set_xlabel(xl)
  label = comp.get("metric_label") or comp["metric"]
  ax.set_ylabel(label)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=8)
  task = next((r.get("task") for r in comp["runs"] if r.get("task")), None) or {}
  where = f"{task.get('model', '')} on {task.get('dataset', '')}: " if task else ""
  sel = comp.get("selected_label") or comp.get("selected_on", comp["metric"])
  metric = label.replace(" [%]", "").replace(" (lower is better)", "")
  ax.set_title(f"{where}{metric} vs {comp['cost']}, reference {comp['reference']}\n"
               f"(front points chosen on {sel})", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  fig.savefig(os.path.splitext(path)[0] + ".pdf")
  plt.close(fig)
