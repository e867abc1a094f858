"""``results.json``: what every member reached (the task's metrics, every cost, per-layer bits) and
the run (its task: metrics and their directions).

The records are built on every process (the evaluations are collectives with several processes);
process 0 writes them (:func:`jpq_jax.pareto.write_results`).
"""

from __future__ import annotations

from typing import Any, Dict

import jax
import jax.numpy as jnp
import numpy as np

from jpq_jax import train as T
from jpq_jax.ctx import Ctx
from jpq_jax.sweep.build import pareto_metric_of
from jpq_jax.sweep.distributed import _host_tree
from jpq_jax.sweep.executors import _host_flags
from jpq_jax.sweep.phases import _evaluate
from jpq_jax.sweep.records import _finite, library_versions


def _evaluate_splits(sw, ex) -> Dict[str, Dict[str, Any]]:
  """The task's metrics of every member of ``ex`` on ``val``, ``test`` and the extra test splits."""
  ds, bs = sw.dataset, int(sw.cfg.train.eval_batch_size)
  evals = {"val": _evaluate(ex, ds.val, bs, sw.loader_cls, ex.n, sw.task),
           "test": _evaluate(ex, ds.test, bs, sw.loader_cls, ex.n, sw.task)}
  for name, split in (ds.extra_tests or {}).items():
    evals[f"test_{name}"] = _evaluate(ex, split, bs, sw.loader_cls, ex.n, sw.task)
  return evals


def _split_metrics(rec, evals, k: int, failed: bool) -> None:
  """``<split>_<metric>`` of member ``k`` into its record (None for a failed member)."""
  for split, ev in evals.items():
    for metric, values in ev.items():
      rec[f"{split}_{metric}"] = None if failed else _finite(values[k])


def task_record(sw) -> Dict[str, Any]:
  """The run's task in ``results.json``: name, options, metrics (label, direction), the metric
  that selected each member's epochs (``monitor``) and the task's own (``selection``)."""
  from jpq_jax.sweep.build import monitor_of  # pylint: disable=import-outside-toplevel
  rec = sw.task.describe()
  rec["monitor"] = monitor_of(sw.cfg, sw.task)
  return rec


def run_header(sw, members) -> Dict[str, Any]:
  """``results.json``: the run-level fields, and ``members`` (one record per member).

  Args:
    sw: the sweep (config, dataset, method, strategy, phase times in ``sw._meta``).
    members: the members' records.

  Returns:
    The results.
  """
  from jpq_jax.costs import registry as creg  # pylint: disable=import-outside-toplevel
  cfg, ds = sw.cfg, sw.dataset
  times = sw._meta.get("times", {})
  out = {"name": cfg.name, "method": sw.method, "dataset": ds.name, "model": cfg.model.name,
         "num_classes": int(ds.num_classes), "input_shape": list(ds.input_shape),
         "task": task_record(sw),
         "search_cost": "params" if sw.method == "pit" else cfg.search.cost,
         "pareto_cost": cfg.sweep.pareto_cost or ("size" if sw.method == "pit"
                                                  else cfg.search.cost),
         "pareto_metric": pareto_metric_of(cfg, sw.task),
         "w_precisions": list(cfg.model.w_precisions), "a_precisions": list(cfg.model.a_precisions),
         "granularity": cfg.model.granularity,
         "cost_units": {n: creg.cost_unit(n) for n in sw.report_costs},
         "strategy": sw.strategy, "measured_step_s": getattr(sw, "measured", None),
         "times_s": times,
         # Training time of the method (the warm-up is shared by every method, METHOD.md §7.2).
         "train_time_s": float(sum(v for p, v in times.items() if p != "warmup" and v)),
         "versions": library_versions(), "members": members}
  if sw.method == "fixed":
    out["fixed_bits"] = [int(b) for b in cfg.fixed_bits]
  if sw.method == "pit_mixprec":
    out["pit"] = sw._meta.get("pit")
    out["train_time_s_stages"] = {
        "pit": float(sum(times.get(p, 0.0) for p in ("pit_search", "pit_finetune"))),
        "mixprec": float(sum(times.get(p, 0.0) for p in ("search", "finetune")))}
  return out


def search_costs(sw, stacked) -> Dict[str, Any]:
  """Every reported cost of the search's selected states: ``{'soft'|'hard': {cost: [member]}}``."""
  fn = jax.jit(jax.vmap(T.make_cost_fn(sw.table, sw.report_costs)))
  out = _host_tree(fn(stacked.params["arch"], stacked.temperature))
  return {kind: {name: [_finite(v) for v in np.asarray(vals)[:sw.n]]
                 for name, vals in out[kind].items()} for kind in ("soft", "hard")}


def member_results(sw, ex, final) -> Dict[str, Any]:
  """The results of the fine-tuned members (``results.json``).

  Args:
    sw: the sweep.
    ex: the fine-tuning executor holding ``final``.
    final: the stacked final states.

  Returns:
    The results (:func:`run_header` with a record per member: the task's metrics per split
    (``val_acc``, ``test_loss``, ...), soft and
    argmax costs, per-layer bits, best epochs, times).
  """
  from jpq_jax.arch import precision_summary  # pylint: disable=import-outside-toplevel
  evals = _evaluate_splits(sw, ex)
  # Fixed-mode costs: the one-hot theta of the frozen precision (equals the argmax of the search).
  from jpq_jax.arch import thetas  # pylint: disable=import-outside-toplevel
  reg = T._registry()  # pylint: disable=protected-access
  fixed_costs = jax.jit(jax.vmap(lambda prec: reg.all_costs(
      sw.table, thetas({"precision": prec}, sw.table, Ctx.fixed()), sw.report_costs)))(
          final.extra["precision"])
  fixed_costs = _host_tree(fixed_costs)
  precision = _host_tree(final.extra["precision"])
  sc = sw._meta.get("search_costs", {"soft": {}, "hard": {}})
  times = sw._meta.get("times", {})
  total = sum(times.get(p, 0.0) for p in ("search", "finetune"))
  # pit_mixprec: every member's pipeline includes the (shared, single) PIT stage in full.
  pit_total = sum(times.get(p, 0.0) for p in ("pit_search", "pit_finetune"))
  flags = _host_flags(ex)
  members = []
  for k, m in enumerate(sw.members):
    prec = jax.tree_util.tree_map(lambda a: a[k], precision)
    groups = precision_summary(prec, sw.table)
    layers = {}
    for l in sw.table.layers:
      g = groups[l.w_group]
      hist = g.get("w_bits_hist", {})
      kept = g.get("kept", l.cout)
      mean_bits = (sum(b * c for b, c in hist.items()) / kept) if kept else 0.0
      layers[l.name] = {"group": l.w_group, "cout": l.cout, "kept": kept,
                        "w_bits_hist": {str(b): c for b, c in hist.items()},
                        "mean_w_bits": mean_bits,
                        "a_bits": g.get("a_bits")}
    failed = bool(flags["failed"][k])
    rec = {"member": k, "lambda": m["lam"], "seed": m["seed"], "failed": failed,
           "status": "failed (non-finite loss)" if failed else "ok",
           "warmup_best_epoch": sw._meta.get("warmup_best_epoch"),
           "search_best_epoch": sw._meta.get("search_best_epoch", [None] * sw.n)[k],
           "finetune_best_epoch": int(flags["best_epoch"][k]),
           "final_temperature": sw._meta.get("final_temperature", [None] * sw.n)[k],
           "costs_soft": {n: v[k] for n, v in sc.get("soft", {}).items()},
           "costs_argmax": {n: _finite(np.asarray(v)[k]) for n, v in fixed_costs.items()},
           "layers": layers,
           "groups": {g: {kk: (({str(b): c for b, c in vv.items()}) if isinstance(vv, dict) else vv)
                          for kk, vv in rec_.items()} for g, rec_ in groups.items()},
           "train_time_s": pit_total + total / max(sw.n, 1),
           "sweep_time_s": pit_total + total}
    _split_metrics(rec, evals, k, failed)
    members.append(rec)
  return run_header(sw, members)


def pit_results(sw, ex, masks_all, soft, failed_s) -> Dict[str, Any]:
  """The results of a ``pit`` run's fine-tuned float members (their costs at 32 bits).

  Args:
    sw: the sweep.
    ex: the PIT fine-tuning executor holding the final states.
    masks_all: every member's binary channel masks (``{group: (C,) numpy}``).
    soft: every member's soft effective weight count at the selected search epoch.
    failed_s: whether each member's PIT search failed.

  Returns:
    The results (:func:`run_header` with a record per member).
  """
  from jpq_jax import pit  # pylint: disable=import-outside-toplevel
  evals = _evaluate_splits(sw, ex)
  flags = _host_flags(ex)
  reg = T._registry()  # pylint: disable=protected-access
  members = []
  for k, m in enumerate(sw.members):
    masks = masks_all[k]
    th = pit.as_precision_theta({g: jnp.asarray(v) for g, v in masks.items()}, sw.table)
    base = {n: _finite(v) for n, v in reg.all_costs(sw.table, th, ("params", "macs")).items()}
    # A float network: 32-bit weights and activations; no hardware model covers it.
    costs = {n: None for n in sw.report_costs}
    costs.update(base)
    for n in ("size", "size_nodetach"):
      if n in costs:
        costs[n] = 32.0 * base["params"]
    if "bitops" in costs:
      costs["bitops"] = 32.0 * 32.0 * base["macs"]
    kept = pit.kept_summary(masks, sw.table)
    layers = {}
    for l in sw.table.layers:
      kk = kept[l.w_group]["kept"]
      layers[l.name] = {"group": l.w_group, "cout": l.cout, "kept": kk,
                        "w_bits_hist": {"0": l.cout - kk, "32": kk},
                        "mean_w_bits": 32.0 if kk else 0.0, "a_bits": 32}
    failed = bool(flags["failed"][k]) or failed_s[k]
    rec = {"member": k, "lambda": m["lam"], "seed": m["seed"], "failed": failed,
           "status": "failed (non-finite loss)" if failed else "ok",
           "warmup_best_epoch": sw._meta.get("warmup_best_epoch"),
           "finetune_best_epoch": int(flags["best_epoch"][k]),
           "costs_soft": {"params": soft[k]}, "costs_argmax": costs, "layers": layers,
           "groups": {g: dict(v, w_bits_hist={"0": v["channels"] - v["kept"], "32": v["kept"]})
                      for g, v in kept.items()}}
    _split_metrics(rec, evals, k, failed)
    members.append(rec)
  results = run_header(sw, members)
  for rec in members:
    rec["train_time_s"] = results["train_time_s"] / max(sw.n, 1)
    rec["sweep_time_s"] = results["train_time_s"]
  return results
