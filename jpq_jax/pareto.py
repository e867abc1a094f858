"""Pareto fronts of a sweep: extraction, result files, table and plot.

A member is on the front when no other healthy member is at least as good *and* at most as
costly with one of the two strictly better. "Good" is the run's ``pareto_metric`` in the direction
its task records (``results['task']``, :mod:`jpq_jax.tasks`: an accuracy is maximised, a loss
such as a reconstruction's MSE minimised): the validation split's metric by default
(``sweep.pareto_metric``), so that the test set never chooses the points; their test metric is
reported beside it (``test_acc`` is the explicit, optimistic choice). Results written before
tasks existed are a classification's; before ``pareto_metric`` was recorded, their fronts are read
as chosen on test accuracy, as they were. Members whose status is not ``ok`` (failed, or
degenerate: a whole group pruned, non-finite costs) are reported in ``results.json`` but kept off
the front. Files written into the run's work directory:

* ``results.json``: every member (the task's metrics, every cost soft and argmax, per-layer bits,
  times);
* ``pareto.json`` / ``pareto.csv``: the front (the metric vs the chosen cost), sorted by cost;
* ``pareto.png``: all members and the front (matplotlib, Agg backend, no display needed).
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = ["pareto_front", "front_of_results", "write_results", "format_front", "format_member",
           "plot_front", "plot_member", "load_results", "default_cost", "default_metric",
           "is_healthy", "lambda_labels", "display_scale", "metric_info", "metric_label"]

# The metrics of results written before tasks existed (a classification's).
_CLASSIFICATION_METRICS = {"acc": {"label": "accuracy", "higher_is_better": True, "percent": True},
                           "loss": {"label": "cross-entropy", "higher_is_better": False,
                                    "percent": False}}
_SPLIT_NAMES = {"val": "validation", "test": "test"}


def metric_info(results: Mapping, key: str) -> Dict[str, Any]:
  """What a member key of a sweep's results measures (``val_acc``, ``test_loss``, ...).

  Args:
    results: a sweep's results; its ``task.metrics`` (absent: a classification's ``acc`` and
      ``loss``).
    key: ``<split>_<metric>`` (``val``, ``test`` or ``test_<extra split>``).

  Returns:
    ``{'split', 'metric', 'label', 'higher_is_better', 'percent'}``; a key naming no metric of the
    task is read as higher-is-better, not a percentage, labelled with itself.
  """
  metrics = ((results.get("task") or {}).get("metrics")) or _CLASSIFICATION_METRICS
  for name in sorted(metrics, key=len, reverse=True):
    if key.endswith(f"_{name}"):
      split = key[:-len(name) - 1]
      return dict(metrics[name], split=split, metric=name)
  return {"split": "", "metric": key, "label": key, "higher_is_better": True, "percent": False}


def metric_label(results: Mapping, key: str, unit: bool = True) -> str:
  """How plots and tables name a member key: ``test accuracy [%]``, ``test MSE (lower is better)``.

  Args:
    results: a sweep's results (see :func:`metric_info`).
    key: ``<split>_<metric>``.
    unit: add the unit (``[%]``) or, for a lower-is-better metric, ``(lower is better)``.

  Returns:
    The label.
  """
  info = metric_info(results, key)
  split = _SPLIT_NAMES.get(info["split"], info["split"].replace("_", " "))
  text = f"{split} {info['label']}".strip()
  if unit:
    if info["percent"]:
      text += " [%]"
    elif not info["higher_is_better"]:
      text += " (lower is better)"
  return text


def pareto_front(points: Sequence[Tuple[float, float]], higher_is_better: bool = True) -> List[int]:
  """Indices of the non-dominated points (minimise cost, best metric), sorted by cost.

  Args:
    points: ``(cost, metric)`` pairs; pairs with a None/NaN entry are ignored.
    higher_is_better: the metric's direction (an accuracy: True; a loss: False).

  Returns:
    Indices into ``points``. Duplicated points keep their first index only.
  """
  if not higher_is_better:
    points = [(c, None if a is None else -a) for c, a in points]
  valid = [(i, c, a) for i, (c, a) in enumerate(points)
           if c is not None and a is not None and c == c and a == a]
  valid.sort(key=lambda t: (t[1], -t[2], t[0]))
  out, best_acc, seen = [], -float("inf"), set()
  for i, c, a in valid:
    if a > best_acc and (c, a) not in seen:
      out.append(i)
      best_acc = a
      seen.add((c, a))
  return out


def is_healthy(member: Mapping) -> bool:
  """Whether a member of a sweep's results trained to a usable model (a front candidate).

  Args:
    member: one record of ``results['members']``.

  Returns:
    True when it did not fail and, where the driver annotated it, its ``status`` is ``ok``.
  """
  return not member.get("failed") and member.get("status", "ok") == "ok"


def display_scale(unit: str):
  """How a cost in ``unit`` is shown to a user: ``(factor, shown unit)`` (bits as kB).

  Args:
    unit: the cost model's unit (``costs.cost_unit``), e.g. ``'bits'`` or ``'cycles'``.

  Returns:
    ``(1 / 8000, 'kB')`` for bits, else ``(1.0, unit)``.
  """
  return (1 / 8000, "kB") if unit == "bits" else (1.0, unit)


def default_cost(results: Mapping) -> str:
  """The cost a sweep's front, table and plot use unless told otherwise.

  Args:
    results: a sweep's results (the content of ``results.json``).

  Returns:
    ``results['pareto_cost']``, else ``results['search_cost']`` (results written before the
    Pareto cost was recorded), else ``'size'``.
  """
  return results.get("pareto_cost") or results.get("search_cost") or "size"


def default_metric(results: Mapping) -> str:
  """The metric that chooses a sweep's front: ``results['pareto_metric']``.

  Args:
    results: a sweep's results (the content of ``results.json``).

  Returns:
    ``results['pareto_metric']``; ``'test_acc'`` for results written before it was recorded
    (what chose their fronts then).
  """
  return results.get("pareto_metric") or "test_acc"


def front_of_results(results: Mapping, cost: Optional[str] = None,
                     metric: Optional[str] = None) -> List[Dict[str, Any]]:
  """The front of a sweep's results as rows ``{member, lambda, cost, value, ...}``.

  Only healthy members (not failed and, where annotated, of status ``ok``) are candidates; the
  front is :func:`pareto_front` of their (argmax cost, metric) pairs, in the metric's direction
  (:func:`metric_info`).

  Args:
    results: a sweep's results (the content of ``results.json``): ``members`` (each with
      ``member``, ``lambda``, ``seed``, ``costs_argmax`` and the metric), optionally
      ``pareto_cost``, ``search_cost``, ``pareto_metric`` and ``cost_units``.
    cost: name of the cost in each member's ``costs_argmax`` (default: :func:`default_cost`).
    metric: the member key of the metric that chooses the front (default:
      :func:`default_metric`).

  Returns:
    One dict per front member, sorted by cost: ``member``, ``lambda``, ``seed``, ``cost``,
    ``cost_name``, ``unit`` (``''`` when ``cost_units`` has none), ``value`` (the choosing
    metric's value; also as ``accuracy``, the name of the classification-only format, kept for
    its readers), ``metric`` (its name), ``higher_is_better`` (its direction) and
    ``val_<m>`` / ``test_<m>`` of the metric (classification: ``val_acc``, ``test_acc``; None when
    the member has none).
  """
  cost = cost or default_cost(results)
  metric = metric or default_metric(results)
  info = metric_info(results, metric)
  base = info["metric"]
  members = [m for m in results["members"] if is_healthy(m)]
  pts = [(m["costs_argmax"].get(cost), m.get(metric)) for m in members]
  rows = []
  for i in pareto_front(pts, info["higher_is_better"]):
    m = members[i]
    rows.append({"member": m["member"], "lambda": m["lambda"], "seed": m["seed"],
                 "cost": m["costs_argmax"][cost], "cost_name": cost,
                 "unit": results.get("cost_units", {}).get(cost, ""), "accuracy": m[metric],
                 "value": m[metric], "metric": metric,
                 "higher_is_better": bool(info["higher_is_better"]),
                 f"val_{base}": m.get(f"val_{base}"), f"test_{base}": m.get(f"test_{base}")})
  return rows


def _cost_label(cost: str, unit: str) -> str:
  """``size [kB]``: the cost and its display unit (:func:`display_scale`)."""
  _, shown = display_scale(unit)
  return f"{cost} [{shown}]" if shown else cost


def plot_front(results: Mapping, path: str, cost: Optional[str] = None,
               metric: Optional[str] = None) -> None:
  """Scatter of every member and the front line, saved to ``path`` and as a vector ``.pdf``.

  The y axis is the test split's value of the front's metric (the validation value when no
  member has a test value), whichever split chose the front: the front is the points chosen on
  ``metric`` (the validation accuracy, or loss, by default), drawn through their test values in
  cost order and named in the legend and the title; the axis says what it shows (``test accuracy
  [%]``, ``test MSE (lower is better)``, ``size [kB]``). Sizes are shown in kB; every member is
  labelled with its lambda,
  offset so that neighbouring labels do not collide, in a notation that tells the lambdas apart.
  Uses matplotlib's Agg backend (no display needed).

  Args:
    results: a sweep's results (see :func:`front_of_results`); ``name``, ``model``,
      ``dataset`` and ``method`` make the title.
    path: the image file to write (``pareto.png`` in :func:`write_results`); a ``.pdf`` copy is
      written beside it.
    cost: the cost on the x axis (default: :func:`default_cost`).
    metric: the metric that chooses the front (default: :func:`default_metric`).

  Returns:
    None; the figure is written to ``path``.

  Raises:
    ImportError: matplotlib is not installed.
  """
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  import matplotlib.ticker  # pylint: disable=import-outside-toplevel,unused-import
  cost = cost or default_cost(results)
  metric = metric or default_metric(results)
  unit = results.get("cost_units", {}).get(cost, "")
  base = metric_info(results, metric)["metric"]
  test_key = f"test_{base}"
  shown = test_key if any(m.get(test_key) is not None for m in results["members"]) else metric
  yscale = 100.0 if metric_info(results, shown)["percent"] else 1.0
  scale, _ = display_scale(unit)
  ok = [m for m in results["members"] if not m.get("failed") and m.get(shown) is not None
        and m["costs_argmax"].get(cost) is not None]
  front = front_of_results(results, cost, metric)
  by_member = {m["member"]: m for m in results["members"]}
  fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
  xs = [scale * m["costs_argmax"][cost] for m in ok]
  ys = [yscale * m[shown] for m in ok]
  ax.scatter(xs, ys, s=18, c="0.6", label="members", zorder=2)
  labels = lambda_labels([m["lambda"] for m in ok])
  # Alternate the label offsets of members sorted by cost so that neighbours do not overlap.
  order = sorted(range(len(ok)), key=lambda i: (xs[i], ys[i]))
  for rank, i in enumerate(order):
    dy = (4, -9, 12, -17)[rank % 4]
    ax.annotate(labels[i], (xs[i], ys[i]), fontsize=6, xytext=(3, dy), textcoords="offset points",
                color="0.35")
  fx = [scale * r["cost"] for r in front]
  fy = [yscale * by_member[r["member"]].get(shown, r["value"]) for r in front]
  sel = metric_label(results, metric, unit=False)
  ax.plot(fx, fy, color="C0", marker="o", label=f"Pareto front (chosen on {sel})", zorder=3)
  ax.set_xscale("log")
  plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
  ax.xaxis.set_major_formatter(plain)
  ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
      lambda v, _: f"{v:g}" if f"{v:.1e}"[0] in "25" else ""))
  ax.tick_params(axis="x", which="minor", labelsize=7)
  ax.set_xlabel(_cost_label(cost, unit))
  ax.set_ylabel(metric_label(results, shown))
  method = results.get("method") or ""
  title = f"{results.get('model', '')} on {results.get('dataset', '')}"
  if method:
    title += f", {method}"
  ax.set_title(f"{title}: {metric_label(results, shown, unit=False)} vs {cost}\n"
               f"({results.get('name', '')}, front points chosen on {sel})", fontsize=9)
  ax.grid(True, which="both", alpha=0.3)
  ax.margins(x=0.08, y=0.08)  # room for the labels of the extreme points
  ax.legend(loc="best", fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  fig.savefig(os.path.splitext(path)[0] + ".pdf")
  plt.close(fig)


def plot_member(results: Mapping, k: int, path: str) -> None:
  """Heatmap of one member's architecture: layers x weight bit-widths, channels in each cell.

  One row per layer (in network order, named with its sharing group and activation bits), one
  column per weight precision (0 = pruned); each cell shows how many of the layer's output
  channels took that bit-width, coloured by the fraction of the layer's channels; a last column
  gives the kept channels and the mean weight bits. Written to ``path`` and as a ``.pdf`` beside it.

  Args:
    results: a sweep's results (see :func:`format_member`).
    k: index into ``results['members']``.
    path: the image file to write.

  Raises:
    IndexError: ``k`` is not a member.
    ImportError: matplotlib is not installed.
  """
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  ms = results["members"]
  if not 0 <= k < len(ms):
    raise IndexError(f"member {k} out of range: the sweep has {len(ms)} members (0..{len(ms) - 1})")
  m = ms[k]
  layers = list(m["layers"].items())
  bits = sorted({int(b) for _, l in layers for b in l["w_bits_hist"]})
  counts = np.array([[l["w_bits_hist"].get(str(b), 0) for b in bits] for _, l in layers], float)
  frac = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
  fig, ax = plt.subplots(figsize=(3.6 + 0.9 * len(bits), 1.6 + 0.32 * len(layers)), dpi=120)
  im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, aspect="auto")
  for i in range(len(layers)):
    for j in range(len(bits)):
      c = int(counts[i, j])
      if c:
        ax.text(j, i, str(c), ha="center", va="center", fontsize=7,
                color="white" if frac[i, j] > 0.6 else "black")
  ax.set_xticks(range(len(bits)), [("0 (pruned)" if b == 0 else f"{b} bit") for b in bits],
                fontsize=8)
  names = [f"{n} [{l['group']}, a{l.get('a_bits') or '-'}]" for n, l in layers]
  ax.set_yticks(range(len(layers)), names, fontsize=7)
  right = ax.secondary_yaxis("right")
  right.set_yticks(range(len(layers)), [f"{l['kept']}/{l['cout']} kept, {l['mean_w_bits']:.2f} b"
                                         for _, l in layers], fontsize=7)
  size = m["costs_argmax"].get("size")
  scale, shown = display_scale(results.get("cost_units", {}).get("size", "bits"))
  kb = f", {scale * size:.2f} {shown}" if size is not None else ""
  key = f"test_{metric_info(results, default_metric(results))['metric']}"
  value = m.get(key)
  ax.set_title(f"member {k}: lambda {m['lambda']:.3g}{kb}"
               + (f", {metric_label(results, key, unit=False)} {_fmt_metric(results, key, value)}"
                  if value is not None else "")
               + f"\n{results.get('model', '')} on {results.get('dataset', '')}: output channels "
               "per weight bit-width", fontsize=8)
  cb = fig.colorbar(im, ax=ax, orientation="horizontal", fraction=0.05, pad=0.12 + 0.4 / len(layers))
  cb.set_label("fraction of the layer's output channels", fontsize=7)
  cb.ax.tick_params(labelsize=7)
  fig.tight_layout()
  fig.savefig(path)
  fig.savefig(os.path.splitext(path)[0] + ".pdf")
  plt.close(fig)


def lambda_labels(lams: Sequence[float]) -> List[str]:
  """Short labels of lambdas that tell every distinct value apart.

  Three significant digits (``3.5e-06``, not a rounded ``4e-06``), more where two distinct
  lambdas would still share a label; 0 is ``0``.

  Args:
    lams: the lambdas.

  Returns:
    One label per lambda, e.g. ``['0', '1e-05', '1.5e-05']``.
  """
  distinct = sorted(set(float(l) for l in lams))
  for digits in range(3, 8):
    fmt = lambda v: "0" if v == 0 else f"{v:.{digits}g}"
    if len({fmt(v) for v in distinct}) == len(distinct):
      return [fmt(float(l)) for l in lams]
  return [repr(float(l)) for l in lams]


def write_results(workdir: str, results: Mapping) -> List[Dict[str, Any]]:
  """Write ``results.json``, ``pareto.json``, ``pareto.csv`` and ``pareto.png`` into ``workdir``.

  Existing files are overwritten; ``pareto.png`` is silently skipped when matplotlib is missing.

  Args:
    workdir: the directory to write into (must exist).
    results: a sweep's results (see :func:`front_of_results`), dumped as-is to ``results.json``;
      the front uses :func:`front_of_results`' default cost and metric.

  Returns:
    The front rows (see :func:`front_of_results`), also written to ``pareto.json`` (with the cost
    and metric the front was taken on) and ``pareto.csv``.
  """
  write_json_atomic(os.path.join(workdir, "results.json"), results)
  front = front_of_results(results)
  write_json_atomic(os.path.join(workdir, "pareto.json"),
              {"cost": default_cost(results), "metric": default_metric(results),
               "selected_on": default_metric(results),
               "higher_is_better": bool(metric_info(results, default_metric(results))
                                        ["higher_is_better"]), "front": front})
  info = metric_info(results, default_metric(results))
  base = info["metric"]
  with open(os.path.join(workdir, "pareto.csv"), "w", newline="") as f:
    w = csv.writer(f)
    # A classification's columns keep their names (accuracy, val_acc, test_acc).
    w.writerow(["member", "lambda", "seed", "cost_name", "cost", "unit",
                "accuracy" if info["percent"] else "value", f"val_{base}", f"test_{base}"])
    for r in front:
      w.writerow([r["member"], r["lambda"], r["seed"], r["cost_name"], r["cost"], r["unit"],
                  r["value"], r[f"val_{base}"], r[f"test_{base}"]])
  try:
    plot_front(results, os.path.join(workdir, "pareto.png"))
  except ImportError:
    pass  # matplotlib missing: the table files are enough
  return front


def write_json_atomic(path: str, obj: Any) -> None:
  """Write ``obj`` as indented JSON to ``path`` atomically.

  A temporary file renamed over the old one: a crash mid-write leaves the previous file or the new
  one, never a truncated one.

  Args:
    path: the file to (over)write.
    obj: a JSON-serialisable object.
  """
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(tmp, path)


def load_results(workdir: str) -> Dict[str, Any]:
  """``results.json`` of a finished sweep.

  Args:
    workdir: the sweep's work directory.

  Returns:
    The parsed ``results.json`` (see :func:`write_results`).

  Raises:
    FileNotFoundError: no results (the sweep has not finished).
    ValueError: the file is not valid JSON or not a sweep's results (no ``members`` list); rerunning
      the sweep rewrites it.
  """
  path = os.path.join(workdir, "results.json")
  if not os.path.isdir(workdir):
    raise FileNotFoundError(f"{workdir!r} does not exist (give a sweep's work directory, e.g. "
                            "runs/demo)")
  if not os.path.exists(path):
    if not os.path.exists(os.path.join(workdir, "config.json")):
      raise FileNotFoundError(f"{workdir!r} holds no sweep (no config.json, no results.json)")
    raise FileNotFoundError(f"{workdir!r} has no results.json: its sweep has not finished (rerun "
                            "`jpq sweep` with the same --workdir and config to resume it)")
  try:
    with open(path) as f:
      results = json.load(f)
  except ValueError as e:
    raise ValueError(f"{path} is not valid JSON ({e}); rerun `jpq sweep` with the same --workdir "
                     "to rewrite it") from None
  if not isinstance(results, dict) or not isinstance(results.get("members"), list):
    raise ValueError(f"{path} is not a sweep's results (no 'members' list)")
  return results


def format_front(results: Mapping, cost: Optional[str] = None) -> str:
  """A text table of every member, front members marked with ``*``.

  Members are sorted by argmax cost (those without one first); columns: member, lambda, seed,
  cost, the validation and test value of the front's metric (an accuracy in %), status. A last
  line gives the number of front points, the metric that chose them and ``results['strategy']``.

  Args:
    results: a sweep's results (see :func:`front_of_results`).
    cost: the cost column and the front's cost (default: :func:`default_cost`); the front's
      metric is :func:`default_metric`.

  Returns:
    The table as one string, newline-separated.
  """
  cost = cost or default_cost(results)
  metric = default_metric(results)
  unit = results.get("cost_units", {}).get(cost, "")
  on = {r["member"] for r in front_of_results(results, cost, metric)}
  base = metric_info(results, metric)["metric"]
  short = _short_name(results, base)
  hdr = f"{'':1} {'member':>6} {'lambda':>9} {'seed':>5} {cost + ' [' + unit + ']':>18} " \
        f"{'val ' + short:>8} {'test ' + short:>8}  status"
  rows = [hdr, "-" * len(hdr)]
  for m in sorted(results["members"], key=lambda m: (m["costs_argmax"].get(cost) or 0)):
    c = m["costs_argmax"].get(cost)
    fmt = lambda key: _fmt_metric(results, key, m.get(key))
    rows.append(f"{'*' if m['member'] in on else ' '} {m['member']:>6} {m['lambda']:>9.2e} "
                f"{m['seed']:>5} {('-' if c is None else f'{c:,.0f}'):>18} {fmt('val_' + base):>8} "
                f"{fmt('test_' + base):>8}  {m.get('status', 'ok')}")
  leak = " (the test set chose it: optimistic)" if metric.startswith("test_") else ""
  way = "" if metric_info(results, metric)["higher_is_better"] else " (lower is better)"
  rows.append(f"* = on the Pareto front ({len(on)} points), chosen on "
              f"{metric_label(results, metric, unit=False)}{way}{leak}; strategy "
              f"{results.get('strategy')}")
  return "\n".join(rows)


def _short_name(results: Mapping, base: str) -> str:
  """A metric's column name: ``acc`` for the accuracy, else its label (``MSE``)."""
  if base == "acc":
    return "acc"
  return metric_info(results, f"val_{base}")["label"]


def _fmt_metric(results: Mapping, key: str, v) -> str:
  """A metric's value as tables show it: ``91.23%`` for a percentage, else 4 digits."""
  if v is None:
    return "-"
  if metric_info(results, key)["percent"]:
    return f"{100 * v:7.2f}%"
  return f"{v:.4g}"


def format_member(results: Mapping, k: int) -> str:
  """Per-layer bits and kept channels of member ``k``.

  Args:
    results: a sweep's results (see :func:`front_of_results`); the member needs ``layers`` (per
      layer ``group``, ``kept``, ``cout``, ``mean_w_bits``, ``w_bits_hist`` and optionally
      ``a_bits``), ``costs_argmax`` and ``costs_soft``.
    k: index into ``results['members']``.

  Returns:
    A newline-separated text block: a header line (lambda, seed, status, the validation and test
    value of the front's metric), one row per
    layer (group, kept/cout, mean weight bits, activation bits, weight-bit histogram), then the
    argmax and the soft costs (None values left out).

  Raises:
    IndexError: ``k`` is not in ``0 .. len(results['members']) - 1``.
  """
  ms = results["members"]
  if not 0 <= k < len(ms):
    raise IndexError(f"member {k} out of range: the sweep has {len(ms)} members (0..{len(ms) - 1})")
  m = ms[k]
  base = metric_info(results, default_metric(results))["metric"]
  short = _short_name(results, base)
  rows = [f"member {k}: lambda {m['lambda']:.3g}, seed {m['seed']}, {m.get('status', 'ok')}; "
          f"val {short} {m.get('val_' + base)}, test {short} {m.get('test_' + base)}"]
  hdr = f"{'layer':<24} {'group':<14} {'kept/cout':>10} {'mean w bits':>11} {'a bits':>6}  w bits histogram"
  rows += [hdr, "-" * len(hdr)]
  for name, l in m["layers"].items():
    hist = " ".join(f"{b}b:{c}" for b, c in l["w_bits_hist"].items())
    rows.append(f"{name:<24} {l['group']:<14} {str(l['kept']) + '/' + str(l['cout']):>10} "
                f"{l['mean_w_bits']:>11.2f} {str(l.get('a_bits') or '-'):>6}  {hist}")
  rows.append("")
  rows.append("costs (argmax): " + ", ".join(f"{n}={v:,.4g}" for n, v in m["costs_argmax"].items()
                                             if v is not None))
  rows.append("costs (soft):   " + ", ".join(f"{n}={v:,.4g}" for n, v in m["costs_soft"].items()
                                             if v is not None))
  return "\n".join(rows)
