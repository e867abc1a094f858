"""Checks of a sweep config before anything is compiled: its fields, its method, its work directory.

:func:`validate_config` refuses a config with a typo (every field must exist in
:func:`~jpq_jax.sweep.config.base_config`), an unknown name (cost model, model, strategy,
optimizer, ...), a value out of range, or a work directory that holds another run (the fields a
resumed run may change are :data:`RESUME_MAY_CHANGE`). Every error is a
:class:`~jpq_jax.sweep.config.ConfigError` that names its field.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from typing import Any, Optional, Tuple

import jax
import ml_collections

from jpq_jax import train as T
from jpq_jax.compiler import SETTINGS as COMPILER_SETTINGS
from jpq_jax.sweep.build import _space, build_task, monitor_of
from jpq_jax.sweep.config import (DATA_LOADERS, DATA_WORKER_TYPES, FREE_FORM_GROUPS, KILL_WHEN,
                                  METHODS, SCHEDULE_FIELDS,
                                  SCHEDULE_GROUPS, STOP_SIGNALS, STRATEGIES, _field_error,
                                  base_config, resolve_method)


def _check_schedules(cfg) -> None:
  """Each phase's ``schedule``: a known kind with exactly its fields.

  Raises:
    ConfigError: naming the schedule, the unknown kind or field and what is expected.
  """
  for path in SCHEDULE_GROUPS:
    node = cfg
    for part in path.split("."):
      node = node.get(part) if hasattr(node, "get") else None
      if node is None:
        break
    if node is None:
      continue
    kind = node.get("kind", "constant")
    if kind not in SCHEDULE_FIELDS:
      raise _field_error(f"{path}.kind", f"unknown schedule {kind!r}; use one of "
                         f"{tuple(SCHEDULE_FIELDS)}")
    allowed = ("kind",) + SCHEDULE_FIELDS[kind]
    for k in node.keys():
      if k not in allowed:
        raise _field_error(f"{path}.{k}", f"unknown field for a {kind!r} schedule (a typo?); "
                           f"its fields are {list(allowed)}")
    missing = [k for k in SCHEDULE_FIELDS[kind] if k not in node and kind in ("multistep", "step")]
    if missing:
      raise _field_error(f"{path}.{missing[0]}", f"a {kind!r} schedule needs {missing}")
    if kind == "multistep" and len(node["milestones"]) != len(node["factors"]):
      raise _field_error(f"{path}.factors", f"{len(node['factors'])} factors for "
                         f"{len(node['milestones'])} milestones (one factor per milestone)")


def _check_data(cfg) -> None:
  """``data.loader``, ``data.workers`` and ``data.worker_type``.

  Raises:
    ConfigError: naming the field and what it accepts.
  """
  d = cfg.data
  if d.get("loader", "auto") not in DATA_LOADERS:
    raise _field_error("data.loader", f"unknown loader {d.loader!r}; use one of {DATA_LOADERS}")
  workers = d.get("workers", 0)
  if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
    raise _field_error("data.workers", f"must be an integer >= 0 (0: no worker), got {workers!r}")
  if d.get("worker_type", "threads") not in DATA_WORKER_TYPES:
    raise _field_error("data.worker_type", f"unknown worker type {d.worker_type!r}; use one of "
                       f"{DATA_WORKER_TYPES}")


def _check_task_metrics(cfg, task) -> None:
  """``train.monitor`` and ``sweep.pareto_metric`` name metrics of the config's task.

  Raises:
    ConfigError: naming the field, the task and its metrics.
  """
  names = list(task.metrics)
  monitor = str(cfg.train.get("monitor", "auto"))
  if monitor != "auto" and monitor not in names:
    raise _field_error("train.monitor", f"task {task.name!r} has no metric {monitor!r}; use "
                       f"'auto' (its own, {task.selection!r}) or one of {names}")
  pm = str(cfg.sweep.get("pareto_metric", "auto"))
  split, _, metric = pm.partition("_")
  if pm != "auto" and (split not in ("val", "test") or metric not in names):
    raise _field_error("sweep.pareto_metric", f"use 'auto' (val_{task.selection}) or "
                       f"'<val|test>_<metric>' with a metric of task {task.name!r} {names}, got "
                       f"{pm!r}")


def _canonical(config: Any) -> Any:
  """A config dict with ``train.monitor = 'auto'`` written as the metric it means (the resume
  check: a run of jpq before tasks existed recorded ``'acc'``, what ``auto`` means for it)."""
  train = config.get("train") if isinstance(config, dict) else None
  if not isinstance(train, dict) or train.get("monitor", "auto") != "auto":
    return config
  try:
    task = build_task(config)
  except ValueError:
    return config
  return dict(config, train=dict(train, monitor=monitor_of(config, task)))


def _check_schema(cfg) -> None:
  """Every field of ``cfg`` must exist in :func:`base_config` (a typo would be ignored silently).

  Raises:
    ConfigError: naming the unknown field and the known ones at its level.
  """
  ref = base_config()

  def walk(node, refnode, prefix):
    if prefix in FREE_FORM_GROUPS or prefix in SCHEDULE_GROUPS:
      return
    for k in node.keys():
      path = f"{prefix}.{k}" if prefix else k
      if k not in refnode:
        raise _field_error(path, f"unknown field (a typo?); known {'fields' if not prefix else 'in ' + repr(prefix)}: "
                           f"{sorted(refnode.keys())}")
      sub, subref = node[k], refnode[k]
      if isinstance(subref, (dict, ml_collections.ConfigDict)) and isinstance(
          sub, (dict, ml_collections.ConfigDict)):
        walk(sub, subref, path)

  walk(cfg, ref, "")
  _check_schedules(cfg)


def _builtin_models():
  from jpq_jax.models import MODELS  # pylint: disable=import-outside-toplevel
  return MODELS


def _writable(directory: str) -> bool:
  """Whether this process can create files in ``directory`` (False on a read-only filesystem or
  without permission; a probe file, as ``os.access`` answers for root as if it could)."""
  import errno  # pylint: disable=import-outside-toplevel
  probe = os.path.join(directory, f".jpq_write_probe{os.getpid()}")
  try:
    with open(probe, "w"):
      pass
    os.remove(probe)
    return True
  except OSError as e:
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
      return False
    raise


def _validate_method(cfg) -> None:
  """The fields of ``cfg.method`` and its own sections (``fixed_bits``, ``pit``).

  Raises:
    ConfigError: naming the offending field.
  """
  method = cfg.get("method", "joint")
  if method not in METHODS:
    raise _field_error("method", f"unknown method {method!r}; use one of {METHODS}")
  fb = tuple(cfg.get("fixed_bits", (8, 8)))
  if method == "fixed":
    if len(fb) != 2 or not all(isinstance(b, int) and b > 0 for b in fb):
      raise _field_error("fixed_bits", f"expected (weight bits, activation bits) > 0, got {fb}")
  nonzero = tuple(p for p in cfg.model.w_precisions if p != 0)
  if method in ("mixprec", "layerwise", "pit_mixprec") and not nonzero:
    raise _field_error("model.w_precisions", f"method {method!r} needs a non-zero precision")
  if method == "pit_mixprec" and cfg.search.sampling != "softmax":
    raise _field_error("search.sampling", "pit_mixprec pins PIT's pruned channels through exact "
                       "0/1 softmax thetas; Gumbel noise would unpin them: use 'softmax'")
  if method == "pit_mixprec" and cfg.model.granularity != "channel":
    raise _field_error("model.granularity", "pit_mixprec needs channel-wise logits")
  if method in ("pit", "pit_mixprec"):
    for ph in ("search", "finetune"):
      p = cfg.pit[ph]
      if int(p.epochs) < 0:
        raise _field_error(f"pit.{ph}.epochs", f"must be >= 0, got {p.epochs}")
      for o in ("optimizer", "arch_optimizer") if ph == "search" else ("optimizer",):
        if p[o].name not in ("adam", "sgd") or not p[o].lr > 0:
          raise _field_error(f"pit.{ph}.{o}", "needs name adam|sgd and lr > 0")
    if method == "pit_mixprec" and not (math.isfinite(cfg.pit.strength) and cfg.pit.strength >= 0):
      raise _field_error("pit.strength", f"must be a finite number >= 0, got {cfg.pit.strength}")


def validate_config(cfg: ml_collections.ConfigDict, workdir: Optional[str] = None,
                    n_devices: Optional[int] = None) -> None:
  """Check a sweep config before anything is compiled or trained.

  Args:
    cfg: the config.
    workdir: the run's directory; a ``config.json`` of a *different* run there is an error.
    n_devices: devices available (default ``jax.device_count()``).

  Raises:
    ConfigError: naming the offending field.
  """
  from jpq_jax.models import model_factory  # pylint: disable=import-outside-toplevel
  _check_schema(cfg)
  if "method" in cfg:
    _validate_method(cfg)
  s = cfg.sweep
  lams = tuple(s.lambdas) if isinstance(s.lambdas, (tuple, list)) else (s.lambdas,)
  if not lams:
    raise _field_error("sweep.lambdas", "no lambda given; e.g. --config.sweep.lambdas=1e-6,1e-5")
  for l in lams:
    if not isinstance(l, (int, float)) or not math.isfinite(l) or l < 0:
      raise _field_error("sweep.lambdas", f"every lambda must be a finite number >= 0, got {l!r}")
  if len(set(lams)) != len(lams):
    raise _field_error("sweep.lambdas", f"repeated lambda in {lams}")
  if not tuple(s.seeds):
    raise _field_error("sweep.seeds", "no seed given")
  if s.get("xla_options", "auto") not in COMPILER_SETTINGS:
    raise _field_error("sweep.xla_options", f"unknown setting {s.xla_options!r}; use one of "
                       f"{COMPILER_SETTINGS}")
  if s.strategy not in STRATEGIES:
    raise _field_error("sweep.strategy", f"unknown strategy {s.strategy!r}; use one of {STRATEGIES}")
  _check_data(cfg)
  chunk = s.get("member_chunk", 0)
  if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 0:
    raise _field_error("sweep.member_chunk", f"a number of members >= 0 (0: all at once), got "
                       f"{chunk!r}")
  if chunk and s.strategy == "sharded":
    raise _field_error("sweep.member_chunk", "works with strategy 'vmap' (one device); with "
                       "'sharded' spread the members over more devices instead")
  costs = T.cost_names()
  if cfg.search.cost not in costs:
    raise _field_error("search.cost", f"unknown cost model {cfg.search.cost!r}; registered: {costs}")
  if s.pareto_cost and s.pareto_cost not in costs:
    raise _field_error("sweep.pareto_cost", f"unknown cost model {s.pareto_cost!r}; registered: "
                       f"{costs}")
  task = build_task(cfg)
  _check_task_metrics(cfg, task)
  try:
    model_factory(cfg.model.name)  # built-in, jpq_jax.register_model or "pkg.module:Class"
  except ValueError as e:
    raise _field_error("model.name", str(e)) from None
  _space(resolve_method(cfg) if "method" in cfg else cfg)
  if cfg.train.get("remat", "none") not in T.REMAT_POLICIES:
    raise _field_error("train.remat", f"unknown policy {cfg.train.remat!r}; use one of "
                       f"{T.REMAT_POLICIES}")
  kill = str(cfg.get("debug", {}).get("kill_at", "") or "")
  if kill:
    parts = kill.split(":")
    if (len(parts) != 3 or not parts[1].isdigit()
        or not (parts[2] in KILL_WHEN or re.fullmatch(r"step\d+", parts[2]))):
      raise _field_error("debug.kill_at", f"expected '<phase>:<epoch>:<when>' with <when> in "
                         f"{KILL_WHEN} or step<i>, got {kill!r}")
  sig_at = str(cfg.get("debug", {}).get("signal_at", "") or "")
  if sig_at:
    parts = sig_at.split(":")
    if (len(parts) != 4 or not parts[1].isdigit() or not re.fullmatch(r"step\d+", parts[2])
        or parts[3] not in STOP_SIGNALS):
      raise _field_error("debug.signal_at", "expected '<phase>:<epoch>:step<i>:<signal>' with "
                         f"<signal> in {tuple(STOP_SIGNALS)}, got {sig_at!r}")
  from jpq_jax import choice  # pylint: disable=import-outside-toplevel
  if cfg.search.sampling not in choice.SAMPLINGS:
    raise _field_error("search.sampling", f"unknown sampling {cfg.search.sampling!r}; use one of "
                       f"{choice.SAMPLINGS}")
  optimizers = [(f"{ph}.optimizer", cfg[ph].optimizer) for ph in ("warmup", "search", "finetune")]
  optimizers += [("search.arch_optimizer", cfg.search.arch_optimizer),
                 ("pit.search.optimizer", cfg.pit.search.optimizer),
                 ("pit.search.arch_optimizer", cfg.pit.search.arch_optimizer),
                 ("pit.finetune.optimizer", cfg.pit.finetune.optimizer)]
  for path, opt in optimizers:
    if opt.name not in ("adam", "sgd"):
      raise _field_error(f"{path}.name", f"unknown optimizer {opt.name!r}")
    if not opt.lr > 0:
      raise _field_error(f"{path}.lr", f"must be > 0, got {opt.lr}")
    if float(opt.get("wd", 0.0)) < 0:
      raise _field_error(f"{path}.wd", f"must be >= 0, got {opt.wd}")
  for ph in ("warmup", "search", "finetune"):
    p = cfg[ph]
    if int(p.epochs) < 0:
      raise _field_error(f"{ph}.epochs", f"must be >= 0, got {p.epochs}")
    try:
      T.lr_factor(p.schedule, 0, 1)
    except (ValueError, KeyError) as e:
      raise _field_error(f"{ph}.schedule", str(e)) from None
  wc = str(cfg.warmup.get("checkpoint") or "")
  if wc:
    if not os.path.isdir(wc):
      raise _field_error("warmup.checkpoint", f"{wc!r} is not a directory (give the warmup/ "
                         "directory of an earlier run)")
    if any(os.path.exists(os.path.join(wc, f)) for f in ("config.json", "checkpoints")):
      raise _field_error("warmup.checkpoint", f"{wc!r} is a sweep work directory, not a warm-up "
                         f"checkpoint; use {os.path.join(wc, 'warmup')!r}")
  uc = str(cfg.warmup.get("user_checkpoint") or "")
  if uc:
    if wc:
      raise _field_error("warmup.user_checkpoint", "set either warmup.checkpoint (a jpq warm-up) "
                         "or warmup.user_checkpoint (your own model's trained variables), not both")
    if not os.path.isdir(uc):
      raise _field_error("warmup.user_checkpoint", f"{uc!r} is not a directory (save your model's "
                         "variables with jpq_jax.checkpoint.save_tree(path, variables))")
    if ":" not in cfg.model.name and cfg.model.name in _builtin_models():
      raise _field_error("warmup.user_checkpoint", "takes the variables of a plain Flax model "
                         "(model.name = 'pkg.module:Class'), not of a built-in jpq model; use "
                         "warmup.checkpoint for those")
  if int(cfg.search.epochs) < 1:
    raise _field_error("search.epochs", "the search needs at least one epoch")
  td = cfg.search.temperature_decay
  if not isinstance(td, (int, float)) or not math.isfinite(td) or td < 0:
    raise _field_error("search.temperature_decay", f"must be a number >= 0 (T <- T exp(-decay) "
                       f"per epoch; 0 keeps T), got {td!r}")
  if int(cfg.train.patience) < 1:
    raise _field_error("train.patience", f"must be >= 1 epoch, got {cfg.train.patience}")
  if int(s.checkpoint_keep) < 1:
    raise _field_error("sweep.checkpoint_keep", f"must keep >= 1 checkpoint step (2 lets a damaged "
                       f"newest step fall back to the one before), got {s.checkpoint_keep}")
  if not cfg.search.temperature > 0:
    raise _field_error("search.temperature", f"must be > 0, got {cfg.search.temperature}")
  ft = cfg.search.get("final_temperature", 0.0)
  if not isinstance(ft, (int, float)) or not math.isfinite(ft) or ft < 0:
    raise _field_error("search.final_temperature", f"must be a number >= 0 (0: off), got {ft!r}")
  if ft and not ft < cfg.search.temperature:
    raise _field_error("search.final_temperature", f"{ft} must be below the initial temperature "
                       f"search.temperature={cfg.search.temperature} (the temperature anneals)")
  wts = cfg.warmup.get("train_size", 0)
  if isinstance(wts, bool) or not isinstance(wts, int) or wts < 0:
    raise _field_error("warmup.train_size", f"a number of training examples >= 0 (0: the run's "
                       f"training split), got {wts!r}")
  bs = int(cfg.train.batch_size)
  if bs <= 0:
    raise _field_error("train.batch_size", f"must be > 0, got {bs}")
  if int(cfg.train.eval_batch_size) <= 0:
    raise _field_error("train.eval_batch_size", "must be > 0")
  nd = int(s.data_devices)
  ndev = jax.device_count() if n_devices is None else n_devices
  if nd < 1 or ndev % nd:
    raise _field_error("sweep.data_devices", f"must divide the {ndev} devices, got {nd}")
  if bs % nd or int(cfg.train.eval_batch_size) % nd:
    raise _field_error("train.batch_size", f"batch {bs} (eval {cfg.train.eval_batch_size}) cannot "
                       f"be split evenly across the {nd} devices of the mesh's data axis")
  if nd > 1 and s.strategy not in ("sharded", "auto"):
    raise _field_error("sweep.data_devices", "a data axis needs strategy 'sharded'")
  if workdir is not None:
    path = os.path.join(workdir, "config.json")
    old = None
    if os.path.exists(path) and _holds_work(workdir):
      try:
        with open(path) as f:
          old = json.load(f)["config"]
      except (OSError, ValueError, KeyError, TypeError) as e:
        # Written non-atomically by jpq before 2026-11-29: a kill mid-write could truncate it. The
        # checkpoints' structure checks still refuse another model or member grid.
        print(f"jpq sweep: {path} is unreadable ({type(e).__name__}): the config cannot be "
              "checked against the trained run; it is rewritten from this config",
              file=sys.stderr)
    if old is not None:
      # A field added to the config after the run started is its default there (the run computed
      # what the default computes): a run of an earlier jpq version resumes.
      # Both sides are filled: a config that replaced a whole group (e.g. ``finetune.schedule =
      # {"kind": "cosine"}``, which drops the default's ``gamma``) lacks those keys on this side
      # too, and an absent key means its default on either side (before 2026-12-02 only the saved
      # side was filled, so such a run could not be resumed or read back with its own config).
      new = json.loads(cfg.to_json_best_effort())
      # ``distributed`` describes how a run is launched, not what it computes (process_id even
      # differs between the processes of one run); the strategy, the data axis of the mesh, the
      # evaluation batch, rematerialisation, the XLA options and the form of the activation
      # mixture change only float32 rounding, and a preempted run may resume on other devices
      # (its member padding is rebuilt) with its data mounted elsewhere. Both loaders give the same
      # batches (data.loader, data.workers, data.worker_type change only the speed).
      diff = config_difference(old, new, ignore=RESUME_MAY_CHANGE)
      if diff is not None:
        was, now = diff[1], diff[2]
        diff = diff[0]
        raise _field_error(diff, f"the work directory {workdir!r} holds another run (its config "
                           f"differs at {diff!r}: the run has {was!r}, this config {now!r}); use a "
                           "new --workdir or the same config to resume")
      old_dir = (old.get("data") or {}).get("data_dir") or ""
      new_dir = cfg.data.get("data_dir") or ""
      if old_dir != new_dir and jax.process_index() == 0:
        print(f"jpq sweep: resuming with data.data_dir={new_dir!r} (the run started with "
              f"{old_dir!r}): it must hold the same data", file=sys.stderr)


# Config fields a run may change when it resumes in the same work directory (see validate_config).
RESUME_MAY_CHANGE = ("sweep.strategy", "sweep.data_devices", "sweep.xla_options",
                     "sweep.member_chunk", "model.activation_mixture", "sweep.async_checkpoint",
                     "sweep.checkpoint_keep", "sweep.pareto_metric",
                     "train.eval_batch_size", "train.remat", "data.data_dir", "debug",
                     "distributed", "data.loader", "data.workers", "data.worker_type")


def config_difference(a: dict, b: dict, ignore: Tuple[str, ...] = ()) -> Optional[Tuple[str, Any, Any]]:
  """Where two recorded configs (``config.json``'s ``config``) compute different runs.

  An absent key means its default on either side (a field added after a run started is what the
  run computed, and a config that replaced a whole group, e.g. ``finetune.schedule = {"kind":
  "cosine"}``, lacks the default's other keys), and ``train.monitor = 'auto'`` reads as the
  metric it means. Used by the resume check and by :func:`jpq_jax.compare.merge_runs`.

  Args:
    a, b: the two configs as nested dicts.
    ignore: dotted fields (or groups) that may differ.

  Returns:
    None when they agree outside ``ignore``, else ``(dotted field, value in a, value in b)`` of
    the first difference in sorted order.
  """
  defaults = json.loads(base_config().to_json_best_effort())
  a, b = _fill_defaults(a, defaults), _fill_defaults(b, defaults)
  diff = _first_diff(_canonical(a), _canonical(b), ignore=ignore)
  return None if diff is None else (diff, _at(a, diff), _at(b, diff))


def _holds_work(workdir: str) -> bool:
  """Whether a work directory holds anything trained (a checkpoint, the warm-up, the final state).

  A run that stopped before its first checkpoint (a bad path, data that failed to load) left only
  its config.json: the directory may then be reused with a corrected config.
  """
  ckpts = os.path.join(workdir, "checkpoints")
  return (any(os.path.exists(os.path.join(workdir, d)) for d in ("warmup", "final", "pit"))
          or (os.path.isdir(ckpts) and any(n.isdigit() for n in os.listdir(ckpts))))


def _fill_defaults(saved: Any, defaults: Any) -> Any:
  """``saved`` with the keys it lacks taken from ``defaults`` (nested dicts, recursively)."""
  if not isinstance(saved, dict) or not isinstance(defaults, dict):
    return saved
  out = dict(saved)
  for k, v in defaults.items():
    out[k] = _fill_defaults(saved[k], v) if k in saved else v
  return out


def _at(tree, dotted: str):
  """The value at a dotted path of nested dicts (``<absent>`` when a key is missing)."""
  node = tree
  for p in dotted.split("."):
    if not isinstance(node, dict) or p not in node:
      return "<absent>"
    node = node[p]
  return node


def _first_diff(a, b, prefix="", ignore=()) -> Optional[str]:
  """The first dotted path (sorted) where nested dicts ``a`` and ``b`` differ, outside ``ignore``."""
  if prefix.rstrip(".") in ignore or any(prefix.startswith(i + ".") for i in ignore):
    return None
  if isinstance(a, dict) and isinstance(b, dict):
    for k in sorted(set(a) | set(b)):
      if k not in a or k not in b:
        if (prefix + k) in ignore:
          continue
        return prefix + k
      d = _first_diff(a[k], b[k], prefix + k + ".", ignore)
      if d is not None:
        return d
    return None
  if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
    a, b = list(a), list(b)
  return None if a == b else prefix.rstrip(".")


def reported_costs(cfg, table) -> Tuple[str, ...]:
  """The registered cost models that can cost ``table`` (the ones a run reports).

  Args:
    cfg: the (resolved) sweep config.
    table: the model's :class:`~jpq_jax.table.LayerTable`.

  Returns:
    Their names, in registry order.

  Raises:
    ValueError, KeyError: ``search.cost`` cannot cost this table (the registry's message).
    ConfigError: ``sweep.pareto_cost`` cannot (the front would be empty after the whole sweep).
  """
  T.get_cost_fn(cfg.search.cost)  # fail on a cost model that cannot cost this table
  reg = T._registry()  # pylint: disable=protected-access
  bad = []
  for name in T.cost_names():
    try:
      reg.validate_cost(name, table)
    except (ValueError, KeyError):
      bad.append(name)
  if cfg.search.cost in bad:
    reg.validate_cost(cfg.search.cost, table)  # re-raise with the registry's message
  if cfg.sweep.pareto_cost in bad:
    # The front would be empty after the whole sweep: refuse before training.
    try:
      reg.validate_cost(cfg.sweep.pareto_cost, table)
    except (ValueError, KeyError) as e:
      raise _field_error("sweep.pareto_cost", f"{cfg.sweep.pareto_cost!r} cannot cost this "
                         f"model: {e}") from None
  return tuple(c for c in T.cost_names() if c not in bad)
