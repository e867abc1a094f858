"""The Pareto sweep driver: N members (lambdas x seeds) trained together, in one job, one compile.

Protocol (METHOD.md §6): a float warm-up shared by every member (reused from its checkpoint when
present), conversion to search form (BatchNorm folded, weights compensated), the joint search
(loss = CE + lambda * cost), then fine-tuning of the argmax architecture. Each phase selects, per
member, the best epoch on the validation metric measured in eval (argmax) mode, and reloads it (with
its optimizer state) at the end of the phase.

Members are an axis (DESIGN.md principle 6). How the axis is executed is a *strategy*; every strategy
runs the same pure single-member step (:func:`jpq_jax.train.make_train_step`), so a member's
trajectory does not depend on the strategy nor on the other members:

* ``loop``: one jitted single-member step, called per member from Python;
* ``vmap``: ``jax.vmap`` of the step over the leading member axis of the stacked states;
* ``sharded``: ``vmap`` inside, the member axis spread over a ``jax.sharding.Mesh`` axis
  ``member`` (and the batch over an optional ``data`` axis), with ``NamedSharding``;
* ``auto``: a per-backend rule backed by ``benchmarks/sweep.py``: XLA:CPU lowers a vmapped conv
  whose kernel differs per member to a grouped convolution that is 2-3x slower per member than
  separate convs, so CPU uses ``loop``; accelerators use ``vmap`` (``sharded`` with >1 device);
* ``measure``: compile both ``loop`` and ``vmap`` (or ``sharded``) and time a few steps of each at
  startup, keep the faster.

Everything the run produces goes to its work directory: ``config.json`` (config as given and
resolved, library versions, command and start time of the run; each later invocation in the same
directory is appended to its ``resumed`` list), ``metrics.jsonl``, ``checkpoints/`` (Orbax, every
epoch and phase boundary), ``warmup/`` (the float model, reusable by other runs), ``final/``
(fine-tuned members), ``results.json`` and the Pareto front (``pareto.json``, ``pareto.csv``,
``pareto.png``).
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import platform
import re
import signal
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jpq_jax import checkpoint as ckpt_lib
from jpq_jax import train as T
from jpq_jax.compiler import SETTINGS as COMPILER_SETTINGS
from jpq_jax.compiler import compiler_options
from jpq_jax.layers import Ctx, SearchSpace
from jpq_jax.table import LayerTable, trace_table

__all__ = [
    "STRATEGIES", "base_config", "demo_config", "validate_config", "ConfigError", "run_sweep",
    "SweepInterrupted",
    "build_model_from_config", "fixed_variables_template", "choose_strategy", "make_executor",
    "load_dataset", "library_versions", "init_distributed", "METHODS", "resolve_method",
    "run_config",
]

STRATEGIES = ("auto", "measure", "loop", "vmap", "sharded")
# The joint method and the paper's baselines (METHOD.md §7, §10), selected by ``config.method``.
METHODS = ("joint", "mixprec", "layerwise", "fixed", "pit", "pit_mixprec")


class ConfigError(ValueError):
  """An invalid sweep configuration (raised before anything is compiled); names the field."""


class SweepInterrupted(Exception):
  """A sweep stopped by SIGINT (Ctrl-C) or SIGTERM at a step boundary, its state saved.

  Rerunning the same command (or :func:`run_sweep` with the same config and work directory)
  resumes it exactly where it stopped: the result is bit for bit that of an uninterrupted run.

  Attributes:
    phase: the phase it stopped in (``warmup``, ``search``, ``finetune``, ``pit_search``, ...).
    epoch: the epoch of that phase (0-based, as in ``metrics.jsonl``).
    step: the training steps of that epoch already done.
    signum: the signal received.
    saved: whether this point was saved (False in the PIT stages, which are not checkpointed:
      their rerun restarts them).
  """

  def __init__(self, phase: str, epoch: int, step: int, signum: int, saved: bool):
    self.phase, self.epoch, self.step, self.signum, self.saved = phase, epoch, step, signum, saved
    where = f"{phase} epoch {epoch}" + (f" step {step}" if step else "")
    how = ("rerun the same command to resume" if saved else
           f"the {phase.split('_')[0]} stage is not checkpointed: rerun the same command to "
           "restart it")
    super().__init__(f"interrupted at {where} ({signal.Signals(signum).name}); {how}")


# ---- configuration --------------------------------------------------------------------------------------
def _opt(name="adam", lr=1e-3, wd=1e-4, momentum=0.9, nesterov=False):
  return ml_collections.ConfigDict(dict(name=name, lr=lr, wd=wd, momentum=momentum,
                                        nesterov=nesterov))


def base_config() -> ml_collections.ConfigDict:
  """Every field of a sweep config with the CIFAR-10 reference defaults (METHOD.md §6).

  Fields:
    name: run name (default work directory ``runs/<name>``).
    method: what the run trains (:func:`resolve_method`): ``joint`` (the paper's joint pruning +
      channel-wise mixed precision, weights ``model.w_precisions``, default (0, 2, 4, 8)),
      ``mixprec`` (channel-wise MPS without the 0-bit option), ``layerwise`` (EdMIPS-like:
      one bit-width per sharing group, no 0 bit), ``fixed`` (QAT at ``fixed_bits``), ``pit``
      (PIT channel pruning in float, ``sweep.lambdas`` are the PIT strengths) or ``pit_mixprec``
      (PIT with strength ``pit.strength``, then MPS without 0 bit on the pruned network).
    fixed_bits: ``(weight bits, activation bits)`` of the ``fixed`` method, e.g. (4, 8) = w4a8.
    pit: PIT settings (METHOD.md §7.1): ``strength`` (lambda of the PIT stage of ``pit_mixprec``),
      ``search`` (``epochs``, ``optimizer``, ``arch_optimizer`` of ``alpha_pit``, ``schedule``) and
      ``finetune`` (``epochs``, ``optimizer``, ``schedule``) of the exported float network.
    seed: run seed (data order, model init).
    data: ``name`` (``demo``, ``cifar10``, ``gsc``, ``tinyimagenet``), ``data_dir``, ``options``
      (passed to :func:`jpq_jax.data.load`).
    model: ``name`` and the :class:`~jpq_jax.SearchSpace` fields.
    train: ``batch_size``, ``eval_batch_size``, ``monitor`` (``acc``: val accuracy max; ``loss``:
      val loss min, including lambda * argmax cost in the search), ``patience``, ``earlystop_start``
      (epochs <= it never count, when the phase has more epochs than it), ``class_weights``,
      ``label_smoothing``, ``remat`` (``none``; ``dots``: keep only convolution/matmul outputs
      for the backward and recompute the rest, less memory per member on accelerators, see
      :func:`jpq_jax.train.make_train_step`).
    warmup / search / finetune: ``epochs``, ``optimizer`` (``adam``/``sgd``, lr, wd, momentum,
      nesterov), ``schedule`` (see :func:`jpq_jax.train.lr_factor`); warm-up ``checkpoint`` (a
      ``warmup/`` directory of an earlier run to reuse) and ``train_size`` (jpq's option, 0 = off:
      the float warm-up trains on a seeded subset of this many examples of the *whole* training
      split, before ``data.options.train_size``, so a reduced protocol can afford a well-trained
      float model and search on fewer images; the subset of the other phases is a subset of it);
      search ``arch_optimizer``, ``cost``, ``temperature``, ``temperature_decay``,
      ``final_temperature`` (jpq's option, 0 = off: the per-epoch decay is derived from the
      search length so that the temperature after the last search epoch is this value, as the
      reference rescales the decay for its shorter Tiny ImageNet / ImageNet schedules; it replaces
      ``temperature_decay``, see :func:`temperature_decay_of`), ``sampling``,
      ``incremental_strength``.
    sweep: ``lambdas``, ``seeds`` (members = lambdas x seeds), ``strategy``, ``data_devices``
      (size of the mesh's ``data`` axis for ``sharded``), ``checkpoint_keep``, ``async_checkpoint``,
      ``pareto_cost`` (x axis of the front; default the search cost), ``pareto_metric`` (the
      accuracy that chooses the front's points: ``val_acc``, the default, or ``test_acc``, the
      explicit choice that lets the test set pick them; the test accuracy is reported either way),
      ``xla_options`` (``auto``: jpq's XLA options for the backend, see :mod:`jpq_jax.compiler`;
      ``default``: XLA's own), ``member_chunk`` (``vmap``: run the members this many at a time,
      each chunk one vmapped program, so that fewer members' activations are alive at once; 0: all
      together).
    distributed: ``enabled``, ``coordinator_address`` (``host:port`` of process 0),
      ``coordinator_bind_address`` (where process 0 listens; JAX's default is every interface,
      ``[::]:port``), ``num_processes``, ``process_id`` (``jax.distributed.initialize``; empty or
      0 fields are auto-detected by JAX on SLURM / Cloud TPU). With several processes,
      ``train.batch_size`` stays the global batch, only process 0 writes the result files, and
      ``sweep.strategy`` ``auto`` means ``sharded`` (members spread over every process's devices).
    debug: ``nan_member``/``nan_epoch`` (force a NaN loss in one member, fault-isolation tests),
      ``max_steps_per_epoch`` (0 = all), ``kill_at`` (preemption tests: the process SIGKILLs
      itself at ``<phase>:<epoch>:<when>``; see :func:`kill_point`), ``signal_at``
      (interruption tests: the process sends itself SIGINT or SIGTERM before a training step,
      ``<phase>:<epoch>:step<i>:<SIGINT|SIGTERM>``; see :func:`signal_point`).

  Returns:
    A new :class:`ml_collections.ConfigDict` (override fields, then check it with
    :func:`validate_config`).
  """
  c = ml_collections.ConfigDict()
  c.name = "sweep"
  c.method = "joint"
  c.fixed_bits = (8, 8)
  c.seed = 14
  c.data = ml_collections.ConfigDict(dict(name="cifar10", data_dir="", options={}))
  c.data.options = ml_collections.ConfigDict()
  c.model = ml_collections.ConfigDict(dict(
      name="resnet8", w_precisions=(0, 2, 4, 8), a_precisions=(8,), input_precisions=(),
      granularity="channel", clip_init=6.0, input_clip_init=1.0, input_signed=False,
      input_signed_clips=(-6.0, 6.0), activation_mixture="fused", keep_alive=0))
  c.train = ml_collections.ConfigDict(dict(
      batch_size=32, eval_batch_size=256, monitor="acc", patience=50, earlystop_start=20,
      class_weights=False, label_smoothing=0.0, remat="none"))
  c.warmup = ml_collections.ConfigDict(dict(
      epochs=500, optimizer=_opt(), schedule=ml_collections.ConfigDict(dict(kind="exp", gamma=0.99)),
      checkpoint="", train_size=0))
  c.search = ml_collections.ConfigDict(dict(
      epochs=500, optimizer=_opt(), arch_optimizer=_opt("sgd", 1e-2, 0.0, 0.9),
      schedule=ml_collections.ConfigDict(dict(kind="exp", gamma=0.99)), cost="size",
      temperature=1.0, temperature_decay=0.045, final_temperature=0.0, sampling="softmax",
      incremental_strength=False))
  c.finetune = ml_collections.ConfigDict(dict(
      epochs=500, optimizer=_opt(),
      schedule=ml_collections.ConfigDict(dict(kind="exp", gamma=0.99))))
  # PIT (icl PIT script): Adam lr 1e-3 wd 1e-4 on the weights, Adam lr 1e-3 wd 0 on alpha_pit.
  c.pit = ml_collections.ConfigDict(dict(
      strength=1e-5,
      search=ml_collections.ConfigDict(dict(
          epochs=500, optimizer=_opt(), arch_optimizer=_opt("adam", 1e-3, 0.0),
          schedule=ml_collections.ConfigDict(dict(kind="exp", gamma=0.99)))),
      finetune=ml_collections.ConfigDict(dict(
          epochs=500, optimizer=_opt(),
          schedule=ml_collections.ConfigDict(dict(kind="exp", gamma=0.99))))))
  c.sweep = ml_collections.ConfigDict(dict(
      lambdas=(1e-6,), seeds=(14,), strategy="auto", data_devices=1, checkpoint_keep=2,
      async_checkpoint=True, pareto_cost="", pareto_metric="val_acc", xla_options="auto",
      member_chunk=0))
  c.distributed = ml_collections.ConfigDict(dict(enabled=False, coordinator_address="",
                                                 coordinator_bind_address="", num_processes=1,
                                                 process_id=0))
  c.debug = ml_collections.ConfigDict(dict(nan_member=-1, nan_epoch=0, max_steps_per_epoch=0,
                                            kill_at="", signal_at=""))
  return c


def demo_config() -> ml_collections.ConfigDict:
  """The quick demo: DemoNet on the built-in 8x8 digits, 8 lambdas, a few minutes on a laptop CPU.

  Returns:
    A new :class:`ml_collections.ConfigDict`: :func:`base_config` with the demo's fields.
  """
  c = base_config()
  c.name = "demo"
  c.data.name = "demo"
  c.model.name = "demo"
  c.model.input_clip_init = 1.0
  c.train.batch_size = 32
  c.train.patience = 10
  c.train.earlystop_start = 5
  c.warmup.epochs = 15
  c.search.epochs = 12
  c.finetune.epochs = 8
  c.search.temperature_decay = 0.2
  c.search.arch_optimizer.lr = 5e-2
  c.pit.search.epochs = 12
  c.pit.finetune.epochs = 8
  c.pit.strength = 1e-4  # the demo network has ~9.7k weights: lambda * weights ~ 1 at full width
  c.sweep.lambdas = (0.0, 1e-5, 3e-5, 6e-5, 1e-4, 1.5e-4, 2.2e-4, 2.7e-4, 3.3e-4, 4e-4)
  return c


def temperature_decay_of(cfg) -> float:
  """The per-epoch temperature decay of a config's search phase: ``T <- T * exp(-decay)``.

  ``search.temperature_decay`` (the reference's 0.045 per epoch, meant for 500 epochs), unless
  ``search.final_temperature`` is set (> 0): then the decay that takes ``search.temperature``
  to it over ``search.epochs`` epochs, ``ln(T0 / T_final) / epochs`` (the reference's own rescaling
  for shorter schedules, METHOD.md §2.4: Tiny ImageNet keeps the 500-epoch final temperature
  over 50 epochs).

  Args:
    cfg: a sweep config (dict or ConfigDict).

  Returns:
    The decay per search epoch.
  """
  s = cfg["search"]
  ft = float(s.get("final_temperature", 0.0) or 0.0)
  if ft > 0:
    return math.log(float(s["temperature"]) / ft) / max(1, int(s["epochs"]))
  return float(s["temperature_decay"])


# Groups whose keys are free-form (a dataset's keyword options): not checked against the schema.
_FREE_FORM_GROUPS = ("data.options",)
# Learning-rate schedules: their fields depend on the kind (train.lr_factor), checked by
# _check_schedules instead of against base_config's (exp) schedule.
SCHEDULE_FIELDS = {"constant": (), "exp": ("gamma",), "multistep": ("milestones", "factors"),
                   "step": ("step_size", "gamma"), "cosine": ()}
_SCHEDULE_GROUPS = ("warmup.schedule", "search.schedule", "finetune.schedule",
                    "pit.search.schedule", "pit.finetune.schedule")


def _check_schedules(cfg) -> None:
  """Each phase's ``schedule``: a known kind with exactly its fields.

  Raises:
    ConfigError: naming the schedule, the unknown kind or field and what is expected.
  """
  for path in _SCHEDULE_GROUPS:
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


def _check_schema(cfg) -> None:
  """Every field of ``cfg`` must exist in :func:`base_config` (a typo would be ignored silently).

  Raises:
    ConfigError: naming the unknown field and the known ones at its level.
  """
  ref = base_config()

  def walk(node, refnode, prefix):
    if prefix in _FREE_FORM_GROUPS or prefix in _SCHEDULE_GROUPS:
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


def _field_error(field: str, msg: str) -> ConfigError:
  return ConfigError(f"config field {field!r}: {msg}")


def _space(cfg) -> SearchSpace:
  m = cfg["model"]
  inp = tuple(m.get("input_precisions") or ()) or None
  try:
    return SearchSpace(w_precisions=tuple(m["w_precisions"]), a_precisions=tuple(m["a_precisions"]),
                       input_precisions=inp, granularity=m["granularity"],
                       clip_init=float(m["clip_init"]), input_clip_init=float(m["input_clip_init"]),
                       input_signed=bool(m["input_signed"]),
                       input_signed_clips=tuple(m["input_signed_clips"]),
                       activation_mixture=m.get("activation_mixture", "fused"),
                       keep_alive=m.get("keep_alive", 0))
  except ValueError as e:
    field = "model"
    for f in ("w_precisions", "a_precisions", "input_precisions", "granularity", "clip",
              "input_signed_clips", "activation_mixture", "keep_alive"):
      if f in str(e):
        field = f"model.{f}" if f != "clip" else "model.clip_init"
        break
    raise _field_error(field, str(e)) from None


def members_of(cfg) -> List[Dict[str, Any]]:
  """The members of a sweep: every (lambda, seed) pair, lambda-major.

  Args:
    cfg: a sweep config (dict or ConfigDict) with ``sweep.lambdas`` and ``sweep.seeds``.

  Returns:
    A list of ``len(lambdas) * len(seeds)`` dicts ``{'lam': float, 'seed': int}``, the seeds of
    the first lambda first.
  """
  return [{"lam": float(l), "seed": int(s)} for l in cfg["sweep"]["lambdas"]
          for s in cfg["sweep"]["seeds"]]


def resolve_method(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config a method actually trains with (a copy; the given config is not modified).

  * ``joint``: unchanged.
  * ``mixprec``: ``model.w_precisions`` without 0 (default (2, 4, 8)), channel-wise.
  * ``layerwise``: the same precisions, ``model.granularity = 'layer'`` (one logit vector per
    sharing group, EdMIPS-like).
  * ``fixed``: ``w_precisions = (X,)``, ``a_precisions = (Y,)`` from ``fixed_bits = (X, Y)`` (the
    input quantizer too, unless ``model.input_precisions`` is set); the search phase is then plain
    quantization-aware training (one option, theta = 1, a constant cost), so lambda is irrelevant:
    ``sweep.lambdas`` becomes ``(0.0,)``. The fine-tuning would repeat the same training of the
    same fixed architecture with a fresh optimizer, so it is skipped (``finetune.epochs = 0``;
    the QAT budget is ``search.epochs``).
  * ``pit``: the model's weight set becomes ``(0, max(P))`` (used only by the layer table to cost
    pruning); the ``search``/``finetune`` sections are unused, ``pit.search``/``pit.finetune`` run.
  * ``pit_mixprec``: ``(0,) + P`` without 0, with the 0-bit option pinned by PIT's masks
    (:func:`jpq_jax.pit.pin_logits`), channel-wise.

  Args:
    cfg: a sweep config.

  Returns:
    The resolved copy.
  """
  c = ml_collections.ConfigDict(cfg.to_dict())
  method = c.get("method", "joint")
  w = tuple(int(p) for p in c.model.w_precisions)
  nonzero = tuple(p for p in w if p != 0)
  if method in ("mixprec", "layerwise"):
    c.model.w_precisions = nonzero
    c.model.granularity = "layer" if method == "layerwise" else "channel"
  elif method == "fixed":
    wb, ab = (int(b) for b in c.fixed_bits)
    c.model.w_precisions = (wb,)
    c.model.a_precisions = (ab,)
    c.sweep.lambdas = (0.0,)
    c.finetune.epochs = 0
  elif method == "pit":
    c.model.w_precisions = (0, max(nonzero)) if nonzero else (0, 8)
    c.model.granularity = "channel"
  elif method == "pit_mixprec":
    c.model.w_precisions = (0,) + nonzero
    c.model.granularity = "channel"
  return c


def _validate_method(cfg) -> None:
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
  from jpq_jax.models import MODELS  # pylint: disable=import-outside-toplevel
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
  if s.pareto_metric not in ("test_acc", "val_acc"):
    raise _field_error("sweep.pareto_metric", "use 'test_acc' or 'val_acc'")
  if cfg.model.name not in MODELS:
    raise _field_error("model.name", f"unknown model {cfg.model.name!r}; available: {sorted(MODELS)}")
  _space(resolve_method(cfg) if "method" in cfg else cfg)
  if cfg.train.get("remat", "none") not in T.REMAT_POLICIES:
    raise _field_error("train.remat", f"unknown policy {cfg.train.remat!r}; use one of "
                       f"{T.REMAT_POLICIES}")
  if cfg.train.monitor not in ("acc", "loss"):
    raise _field_error("train.monitor", f"use 'acc' or 'loss', got {cfg.train.monitor!r}")
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
      old = _fill_defaults(old, json.loads(base_config().to_json_best_effort()))
      new = json.loads(cfg.to_json_best_effort())
      # ``distributed`` describes how a run is launched, not what it computes (process_id even
      # differs between the processes of one run); the strategy, the data axis of the mesh, the
      # evaluation batch, rematerialisation, the XLA options and the form of the activation
      # mixture change only float32 rounding, and a preempted run may resume on other devices
      # (its member padding is rebuilt) with its data mounted elsewhere.
      diff = _first_diff(old, new, ignore=RESUME_MAY_CHANGE)
      if diff is not None:
        was, now = _at(old, diff), _at(new, diff)
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
                     "distributed")


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


# ---- data and model --------------------------------------------------------------------------------------
def load_dataset(cfg):
  """The dataset of ``cfg`` through :func:`jpq_jax.data.load`.

  Args:
    cfg: a sweep config (dict or ConfigDict): ``data.name``, ``data.data_dir`` (empty: None),
      ``data.options`` (keyword options of the dataset) and ``seed`` (split and subset seed).

  Returns:
    The :class:`jpq_jax.data.Dataset`.

  Raises:
    ValueError: unknown dataset name.
    ConfigError: an option (``data.options``) the dataset does not take.
    jpq_jax.data.DatasetNotFoundError: the data is not present; the message says how to get it.
    jpq_jax.data.DataError: malformed data.
  """
  # Imported lazily: the data package pulls in tensorflow-datasets, which the library does not need.
  from jpq_jax import data as data_lib  # pylint: disable=import-outside-toplevel
  opts = dict(cfg["data"].get("options") or {})
  data_dir = cfg["data"].get("data_dir") or None
  if data_dir and not os.path.exists(os.path.expanduser(str(data_dir))):
    # Before TFDS looks into it (and logs its own warnings about a missing folder).
    raise data_lib.DatasetNotFoundError(
        f"data.data_dir={data_dir!r} does not exist (dataset {cfg['data']['name']!r}); give the "
        f"path of the data, e.g. `jpq sweep ... data.data_dir=/path/to/cifar10-jpeg.zip` or "
        f"data_dir= in the config file")
  try:
    return data_lib.load(cfg["data"]["name"], data_dir=data_dir, seed=int(cfg["seed"]), **opts)
  except TypeError as e:
    if "does not take option" not in str(e):
      raise
    raise _field_error("data.options", str(e)) from None
  except data_lib.DatasetNotFoundError as e:
    # The data layer speaks Python (load(..., data_dir=...)); a sweep is configured by fields.
    raise data_lib.DatasetNotFoundError(
        f"{e}\n  (in a sweep config these are data.name={cfg['data']['name']!r} and "
        f"data.data_dir={data_dir!r}; from the command line: `jpq sweep ... "
        f"data.data_dir=PATH`)") from None


def _loader_cls():
  from jpq_jax import data as data_lib  # pylint: disable=import-outside-toplevel
  return data_lib.Loader


def run_config(workdir: str) -> Dict[str, Any]:
  """The config a sweep in ``workdir`` trained with (its method resolved), from ``config.json``.

  The model of a member must be built from this one, not from the config as given: a method
  rewrites the search space (``fixed`` sets the weight and activation precisions from
  ``fixed_bits``, ``mixprec`` drops the 0 bit, ...; see :func:`resolve_method`).

  Args:
    workdir: the sweep's work directory.

  Returns:
    The resolved config as a dict (``resolved_config`` of ``config.json``; for a work directory
    written before that was recorded, :func:`resolve_method` of its ``config``).

  Raises:
    FileNotFoundError: ``workdir`` holds no ``config.json``.
    ValueError: ``config.json`` is not valid JSON or holds no config.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{workdir!r} holds no config.json: not a sweep work directory")
  try:
    with open(path) as f:
      saved = json.load(f)
  except ValueError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from None
  if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
    raise ValueError(f"{path}: holds no sweep config")
  if isinstance(saved.get("resolved_config"), dict):
    return saved["resolved_config"]
  return resolve_method(ml_collections.ConfigDict(saved["config"])).to_dict()


def build_model_from_config(cfg, num_classes: int, input_shape: Sequence[int]):
  """The model, its layer table and a sample input (batch 1) of a sweep config (dict or ConfigDict).

  Args:
    cfg: a sweep config; its ``model`` section gives the model name and the search space.
    num_classes: classifier outputs.
    input_shape: shape of one input example, without the batch axis.

  Returns:
    ``(model, table, sample)``: the Flax module, its :class:`jpq_jax.table.LayerTable` and a
    float32 array of zeros of shape ``(1, *input_shape)``.

  Raises:
    ConfigError: an invalid search space in the ``model`` section (names the field).
    ValueError: unknown model name.
  """
  from jpq_jax.models import get_model  # pylint: disable=import-outside-toplevel
  model = get_model(cfg["model"]["name"], _space(cfg), int(num_classes))
  sample = jnp.zeros((1,) + tuple(input_shape), jnp.float32)
  return model, trace_table(model, sample), sample


def fixed_variables_template(model, sample, n_members: int):
  """Abstract ``{'params', 'precision'}`` of ``n_members`` stacked fixed-mode members.

  Args:
    model: the Flax model.
    sample: an input batch for the model (e.g. the ``sample`` of :func:`build_model_from_config`).
    n_members: number of stacked members (size of the leading axis).

  Returns:
    A ``{'params', 'precision'}`` tree of ``jax.ShapeDtypeStruct`` (nothing is computed), each
    leaf with a leading ``(n_members,)`` axis.
  """
  v = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, Ctx.fixed()), sample)
  v = {k: v[k] for k in ("params", "precision")}
  return jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct((n_members,) + s.shape, s.dtype), v)


def library_versions() -> Dict[str, str]:
  """Versions of the libraries that determine the numbers."""
  out = {"python": platform.python_version(), "platform": platform.platform()}
  for mod in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "numpy", "ml_collections"):
    try:
      m = __import__(mod, fromlist=["__version__"])
      out[mod] = getattr(m, "__version__", "?")
    except ImportError:
      pass
  try:
    import jpq_jax  # pylint: disable=import-outside-toplevel
    out["jpq_jax"] = getattr(jpq_jax, "__version__", "?")
  except ImportError:
    pass
  out["backend"] = jax.default_backend()
  out["devices"] = str([d.device_kind for d in jax.devices()][:4])
  out["device_count"] = str(jax.device_count())
  return out


# ---- executors ------------------------------------------------------------------------------------------
def _stack(states: Sequence[Any]) -> Any:
  return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *states)


def _concat(trees: Sequence[Any]) -> Any:
  """Stacked pytrees (leading member axis) joined along that axis."""
  return jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *trees)


def _vmapped(step: Callable, evaluate: Callable, end: Callable):
  """The phase functions vmapped over the member axis (states, lambdas, poison and metrics carry
  it; the batch and the learning-rate factor are shared)."""
  return (jax.vmap(step, in_axes=(0, None, None, 0, None, 0)),
          jax.vmap(evaluate, in_axes=(0, 0, 0, None, None, None)),
          jax.vmap(end, in_axes=(0, 0)))


def _unstack(stacked: Any, n: int) -> List[Any]:
  return [jax.tree_util.tree_map(lambda x: x[k], stacked) for k in range(n)]


def _is_global(a) -> bool:
  """Whether ``a`` is a ``jax.Array`` spread over several processes (multi-host ``sharded``)."""
  return isinstance(a, jax.Array) and not a.is_fully_addressable


def _saveable(state):
  """``state`` as Orbax may write it while training goes on: process-local arrays as host numpy,
  arrays spread over processes as a device copy (the executors donate their buffers to the next
  step while an asynchronous write may still read them)."""
  return jax.tree_util.tree_map(
      lambda a: jnp.copy(a) if _is_global(a) else np.asarray(jax.device_get(a)), state)


def _host(a) -> np.ndarray:
  """The whole value of ``a`` as numpy on this process.

  An array spread over processes is all-gathered: that is a collective, so every process must call
  this at the same point (the driver's code paths are identical on every process for that reason).
  """
  if _is_global(a):
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    return np.asarray(multihost_utils.process_allgather(a, tiled=True))
  return np.asarray(jax.device_get(a))


def _host_tree(tree: Any) -> Any:
  return jax.tree_util.tree_map(_host, tree)


def _put_global(a, sharding):
  """``a`` (the same whole value on every process) placed with ``sharding`` over the global mesh.

  ``jax.device_put`` cannot address another process's devices, so with several processes every
  process builds its own shards from its copy of the value.
  """
  if jax.process_count() == 1 or _is_global(a):
    return jax.device_put(a, sharding)
  a = np.asarray(jax.device_get(a))
  return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])


def _barrier(name: str) -> None:
  """Wait for every process (no-op with one)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(name)


class _Executor:
  """Runs per-member pure functions over all members; states live on device."""

  name = "?"
  # Whether train_step takes this process's slice of the global batch (the Loader's process
  # sharding) instead of the whole batch; only a mesh whose data axis spans the processes does.
  local_batch = False

  def __init__(self, step: Callable, evaluate: Callable, end: Callable, n: int,
               compiler_options: Optional[Dict[str, Any]] = None):
    self.n = n
    self._step, self._eval, self._end = step, evaluate, end
    # XLA options of the step / evaluation / end-of-epoch programs (jpq_jax.compiler).
    self._jit = functools.partial(jax.jit, compiler_options=compiler_options)

  def splits_batch(self, global_batch: int) -> bool:
    """Whether this process's devices need exactly its Loader slice of a global batch."""
    del global_batch
    return False

  # Subclasses implement: set_states(stacked), stacked(), train_step, evaluate, end_epoch, map.


class LoopExecutor(_Executor):
  """One jitted single-member step called per member from Python (fastest on XLA:CPU)."""

  name = "loop"

  def __init__(self, step, evaluate, end, n, compiler_options=None):
    super().__init__(step, evaluate, end, n, compiler_options)
    self.step_fn = self._jit(step, donate_argnums=0)
    self.eval_fn = self._jit(evaluate)
    self.end_fn = self._jit(end, donate_argnums=0)
    self.states: List[Any] = []

  def set_states(self, stacked):
    self.states = _unstack(stacked, self.n)

  def stacked(self):
    return _stack(self.states)

  def train_step(self, x, y, lam_e, lr_scale, poison):
    ms = []
    for k in range(self.n):
      self.states[k], m = self.step_fn(self.states[k], x, y, lam_e[k], lr_scale, poison[k])
      ms.append(m)
    return ms

  def evaluate(self, x, y, mask, params_of=lambda s: (s.params, s.extra, s.temperature)):
    return [self.eval_fn(*params_of(s), x, y, mask) for s in self.states]

  def end_epoch(self, metric):
    self.states = [self.end_fn(s, metric[k]) for k, s in enumerate(self.states)]

  def map(self, fn):
    f = jax.jit(fn)
    self.states = [f(s) for s in self.states]

  def host_field(self, field: str) -> np.ndarray:
    """``(n,)`` numpy values of a state field (e.g. ``failed``) of every member."""
    return np.stack([np.asarray(jax.device_get(getattr(s, field))) for s in self.states])


class ChunkedExecutor(_Executor):
  """The members in chunks of ``chunk``: one vmapped program over a chunk, called per chunk.

  Between ``loop`` (chunk 1) and ``vmap`` (chunk n): the activations of only ``chunk`` members
  are alive at a time, so a sweep whose members do not all fit in the device's memory at once
  still runs them ``chunk`` at a time in one vmapped program (``sweep.member_chunk``). A last,
  smaller chunk compiles its own program once. (A ``lax.map`` over chunks inside one program
  would hold the same memory, but XLA:CPU runs convolutions inside a loop body about 10x slower,
  measured: chunks are called from Python.)
  """

  name = "vmap"

  def __init__(self, step, evaluate, end, n, chunk, compiler_options=None):
    super().__init__(step, evaluate, end, n, compiler_options)
    if int(chunk) < 1:
      raise ValueError(f"member chunk must be >= 1, got {chunk}")
    self.chunk = int(chunk)
    self.bounds = [(a, min(a + self.chunk, n)) for a in range(0, n, self.chunk)]
    vstep, veval, vend = _vmapped(step, evaluate, end)
    self.step_fn = self._jit(vstep, donate_argnums=0)
    self.eval_fn = self._jit(veval)
    self.end_fn = self._jit(vend, donate_argnums=0)
    self.states: List[Any] = []

  def set_states(self, stacked):
    self.states = [jax.tree_util.tree_map(lambda x, a=a, b=b: x[a:b], stacked)
                   for a, b in self.bounds]

  def stacked(self):
    return _concat(self.states)

  def train_step(self, x, y, lam_e, lr_scale, poison):
    ms = []
    for k, (a, b) in enumerate(self.bounds):
      self.states[k], m = self.step_fn(self.states[k], x, y, lam_e[a:b], lr_scale, poison[a:b])
      ms.append(m)
    return _concat(ms)

  def evaluate(self, x, y, mask, params_of=lambda s: (s.params, s.extra, s.temperature)):
    return _concat([self.eval_fn(*params_of(s), x, y, mask) for s in self.states])

  def end_epoch(self, metric):
    self.states = [self.end_fn(s, metric[a:b]) for s, (a, b) in zip(self.states, self.bounds)]

  def map(self, fn):
    f = jax.jit(jax.vmap(fn))
    self.states = [f(s) for s in self.states]

  def host_field(self, field: str) -> np.ndarray:
    """``(n,)`` numpy values of a state field of every member."""
    return np.concatenate([np.asarray(jax.device_get(getattr(s, field))) for s in self.states])


class VmapExecutor(_Executor):
  """``jax.vmap`` of the single-member step over the stacked member axis.

  With ``mesh`` (strategy ``sharded``) the member axis is spread over the mesh's ``member`` axis and
  the batch over its ``data`` axis; XLA inserts the gradient all-reduce over ``data``. The mesh may
  span several processes (``jax.distributed``): the states, lambdas and metrics are then global
  arrays, each process holding the members (and batch rows) of its own devices.
  """

  name = "vmap"

  def __init__(self, step, evaluate, end, n, mesh=None, compiler_options=None):
    super().__init__(step, evaluate, end, n, compiler_options)
    self.mesh = mesh
    vstep, veval, vend = _vmapped(step, evaluate, end)
    if mesh is None:
      self.step_fn = self._jit(vstep, donate_argnums=0)
      self.eval_fn = self._jit(veval)
      self.end_fn = self._jit(vend, donate_argnums=0)
    else:
      from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=import-outside-toplevel
      self.name = "sharded"
      self.member_sh = NamedSharding(mesh, P("member"))
      self.data_sh = NamedSharding(mesh, P("data"))
      self.repl = NamedSharding(mesh, P())
      self.step_fn = self._jit(vstep, donate_argnums=0,
                               out_shardings=(self.member_sh, self.member_sh))
      self.eval_fn = self._jit(veval, out_shardings=self.member_sh)
      self.end_fn = self._jit(vend, donate_argnums=0, out_shardings=self.member_sh)
    self.state = None

  def splits_batch(self, global_batch: int) -> bool:
    # True when the data axis spans the processes so that process p's devices hold rows
    # [p*b, (p+1)*b) of the batch: exactly the slice the Loader gives process p. Otherwise (e.g.
    # members spread over processes, data axis inside one process) every process needs every row.
    pc = jax.process_count()
    if self.mesh is None or pc == 1 or global_batch % pc:
      return False
    b, p = global_batch // pc, jax.process_index()
    rows = set()
    for idx in self.data_sh.addressable_devices_indices_map((global_batch,)).values():
      rows.update(range(*idx[0].indices(global_batch)))
    return rows == set(range(p * b, (p + 1) * b))

  def _put(self, x, sh):
    return x if self.mesh is None else _put_global(x, sh)

  def _put_batch(self, x):
    if self.local_batch:
      shape = (x.shape[0] * jax.process_count(),) + x.shape[1:]
      return jax.make_array_from_process_local_data(self.data_sh, x, shape)
    return self._put(x, self.data_sh)

  def set_states(self, stacked):
    if self.mesh is not None:
      stacked = jax.tree_util.tree_map(lambda a: _put_global(a, self.member_sh), stacked)
    self.state = stacked

  def stacked(self):
    return self.state

  def train_step(self, x, y, lam_e, lr_scale, poison):
    if self.mesh is not None:
      x, y = self._put_batch(x), self._put_batch(y)
      lam_e, poison = self._put(lam_e, self.member_sh), self._put(poison, self.member_sh)
      lr_scale = self._put(np.float32(lr_scale), self.repl)
    self.state, m = self.step_fn(self.state, x, y, lam_e, lr_scale, poison)
    return m

  def evaluate(self, x, y, mask, params_of=lambda s: (s.params, s.extra, s.temperature)):
    if self.mesh is not None:
      # Evaluation batches are whole global batches on every process (see _padded_batches).
      x, y, mask = (self._put(a, self.data_sh) for a in (x, y, mask))
    return self.eval_fn(*params_of(self.state), x, y, mask)

  def end_epoch(self, metric):
    if self.mesh is not None:
      metric = self._put(metric, self.member_sh)
    self.state = self.end_fn(self.state, metric)

  def map(self, fn):
    self.state = jax.jit(jax.vmap(fn))(self.state)

  def host_field(self, field: str) -> np.ndarray:
    """``(n,)`` numpy values of a state field of every member (gathered over processes)."""
    return _host(getattr(self.state, field))


def _to_host(ms) -> Dict[str, np.ndarray]:
  """Per-member metrics (list of dicts or dict of stacked arrays) -> dict of (M,) numpy arrays."""
  if isinstance(ms, list):
    ms = jax.device_get(ms)
    return {k: np.stack([np.asarray(m[k]) for m in ms]) for k in ms[0]}
  return {k: _host(v) for k, v in ms.items()}


def choose_strategy(requested: str, n_devices: Optional[int] = None,
                    backend: Optional[str] = None, process_count: Optional[int] = None) -> str:
  """The strategy ``auto`` stands for on this backend (see the module docstring).

  Args:
    requested: a strategy name.
    n_devices: devices (default ``jax.device_count()``).
    backend: ``jax.default_backend()`` by default.
    process_count: processes (default ``jax.process_count()``).

  Returns:
    ``loop``, ``vmap``, ``sharded`` or ``measure`` (resolved later by timing).
  """
  process_count = jax.process_count() if process_count is None else process_count
  if process_count > 1 and requested in ("auto", "measure"):
    # Several processes: only ``sharded`` divides the members among them (``loop``/``vmap`` would
    # repeat every member on every process). ``measure`` is not used either: each process would time
    # on its own and might pick differently, and processes running different programs deadlock.
    return "sharded"
  if requested != "auto":
    return requested
  backend = backend or jax.default_backend()
  n_devices = jax.device_count() if n_devices is None else n_devices
  if backend == "cpu":
    # benchmarks/sweep.py: on XLA:CPU the vmapped step (grouped convs) is slower per member than a
    # Python loop of single-member steps for every N measured; multiple host "devices" share the
    # same cores, so sharding does not help either.
    return "loop"
  return "sharded" if n_devices > 1 else "vmap"


def make_mesh(n_members: int, data_devices: int = 1):
  """A ``('member', 'data')`` mesh over every device.

  Args:
    n_members: number of members (not used: the mesh spans every device whatever the count).
    data_devices: size of the ``data`` axis; the ``member`` axis gets the other factor of the
      device count.

  Returns:
    A ``jax.sharding.Mesh`` of shape ``(device_count // data_devices, data_devices)``.

  Raises:
    ValueError: the device count is not a multiple of ``data_devices`` (from the reshape).
  """
  devs = np.asarray(jax.devices())
  return jax.sharding.Mesh(devs.reshape(len(devs) // data_devices, data_devices),
                           ("member", "data"))


def make_executor(strategy: str, step, evaluate, end, n: int, data_devices: int = 1,
                  compiler_options: Optional[Dict[str, Any]] = None, member_chunk: int = 0):
  """An executor of ``strategy`` (``loop``, ``vmap`` or ``sharded``) for ``n`` members.

  Args:
    strategy: ``loop``, ``vmap`` or ``sharded``.
    step, evaluate, end: the single-member phase functions (:mod:`jpq_jax.train`).
    n: number of members.
    data_devices: size of the mesh's ``data`` axis (``sharded``).
    compiler_options: XLA options of the compiled programs (:func:`jpq_jax.compiler.compiler_options`).
    member_chunk: ``vmap`` only: run the members in chunks of this many (:class:`ChunkedExecutor`,
      to bound the memory of the activations); 0 or >= ``n``: all in one program.

  Returns:
    The executor.

  Raises:
    ValueError: an unknown strategy, or ``member_chunk`` with ``sharded``.
  """
  kw = dict(compiler_options=compiler_options)
  if member_chunk and strategy == "sharded":
    raise ValueError("sweep.member_chunk works with strategy 'vmap' (one device); with 'sharded' "
                     "spread the members over more devices instead")
  if strategy == "loop":
    return LoopExecutor(step, evaluate, end, n, **kw)
  if strategy == "vmap":
    if member_chunk and int(member_chunk) < n:
      return ChunkedExecutor(step, evaluate, end, n, int(member_chunk), **kw)
    return VmapExecutor(step, evaluate, end, n, **kw)
  if strategy == "sharded":
    return VmapExecutor(step, evaluate, end, n, mesh=make_mesh(n, data_devices), **kw)
  raise ValueError(f"unknown strategy {strategy!r}")


# ---- the driver -----------------------------------------------------------------------------------------
KILL_WHEN = ("before_save", "during_save", "after_save")


def kill_point(cfg, phase: str, epoch: int, when: str) -> None:
  """SIGKILL this process when ``cfg.debug.kill_at`` is ``<phase>:<epoch>:<when>`` (tests only).

  A real kill at a precise point, for the preemption tests (``tests/test_reliability.py``). At a
  checkpoint, ``phase`` is the one in the checkpoint's metadata (``warmup``, ``search``,
  ``finetune``, ``done``), ``epoch`` the epochs of that phase it has finished (0: the phase's
  initial state), ``when`` one of :data:`KILL_WHEN` (``during_save``: the asynchronous write has
  started and is not committed yet). ``<phase>:<e>:step<i>`` kills before training step ``i`` of
  epoch ``e`` (both 0-based).

  Args:
    cfg: the sweep config (a ConfigDict); ``cfg.debug.kill_at`` empty or unset: never kill.
    phase: the current phase.
    epoch: the epoch count (see above).
    when: one of :data:`KILL_WHEN`, or ``step<i>``.
  """
  want = str(cfg.debug.get("kill_at", "") or "")
  if want and want == f"{phase}:{epoch}:{when}":
    sys.stdout.flush()
    sys.stderr.flush()
    # SIGKILL and not an exception: nothing (no finally, no atexit, no Orbax cleanup) may run,
    # exactly as when a scheduler preempts the job.
    os.kill(os.getpid(), signal.SIGKILL)


# Signals that stop a sweep cleanly at the next training step (SIGTERM: what schedulers of
# preemptible machines send before they kill; SIGINT: Ctrl-C).
STOP_SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}


def signal_point(cfg, phase: str, epoch: int, step: int) -> None:
  """Send this process ``cfg.debug.signal_at``'s signal before training step ``step`` (tests only).

  The signal goes through the sweep's real handler, as one from a terminal or a scheduler would;
  ``signal_at`` is ``<phase>:<epoch>:step<i>:<SIGINT|SIGTERM>``.

  Args:
    cfg: the sweep config; ``cfg.debug.signal_at`` empty or unset: never.
    phase: the current phase.
    epoch: the epoch of that phase (0-based).
    step: the training step about to run (0-based).
  """
  want = str(cfg.debug.get("signal_at", "") or "")
  if want and want.rsplit(":", 1)[0] == f"{phase}:{epoch}:step{step}":
    os.kill(os.getpid(), STOP_SIGNALS[want.rsplit(":", 1)[1]])


class _StopRequest:
  """SIGINT / SIGTERM handlers that ask the sweep to stop at the next step boundary.

  The first signal only sets :attr:`signum` (the training loop checks it before every step and
  saves a checkpoint there); a second SIGINT raises ``KeyboardInterrupt`` at once, for a user
  who does not want to wait. Installed only in the main thread of a single-process run (Python
  delivers signals to the main thread). With several processes no handler is installed (a signal
  that reaches one process only could not stop them all at the same step): SIGTERM is left to
  JAX's preemption notifier, and the processes agree on the stopping step through
  ``multihost_utils.reached_preemption_sync_point``.
  """

  def __init__(self, is_main: bool):
    self.signum: Optional[int] = None
    self.is_main = is_main
    self._previous: Dict[int, Any] = {}
    self._multi = jax.process_count() > 1
    self._steps = 0

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    if self.signum is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signum = signum
    if self.is_main:
      print(f"\njpq sweep: {signal.Signals(signum).name} received: stopping at the next training "
            "step (saving a checkpoint there; press Ctrl-C again to abort without saving)",
            file=sys.stderr, flush=True)

  def __enter__(self):
    import threading  # pylint: disable=import-outside-toplevel
    if threading.current_thread() is threading.main_thread():
      wanted = () if self._multi else (signal.SIGINT, signal.SIGTERM)
      for s in wanted:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, h in self._previous.items():
      signal.signal(s, h)
    self._previous = {}
    return False

  def requested(self) -> bool:
    """Whether to stop before the next step (the same answer on every process)."""
    if not self._multi:
      return self.signum is not None
    self._steps += 1
    try:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      if multihost_utils.reached_preemption_sync_point(self._steps):
        self.signum = self.signum or signal.SIGTERM
        return True
    except RuntimeError:  # no preemption service (jax.distributed without it): never
      pass
    return False


class _Log:
  """``metrics.jsonl`` and TensorBoard scalars; written by process 0 only.

  TensorBoard (tensorboardX, under ``<workdir>/tensorboard``): one run per member
  (``m00_lam1e-05_seed14``) and one for the shared warm-up (``warmup``), so TensorBoard overlays the
  members on one chart per tag. Tags are ``<phase>/<metric>`` with the metrics of
  ``metrics.jsonl``: ``train_loss``, ``train_task``, ``train_acc``, ``val_acc``, ``val_loss``,
  ``temperature``, ``lambda``, ``lr_factor``, ``best_epoch`` and, in the search,
  ``cost_soft_<cost>`` / ``cost_argmax_<cost>``; plus ``final/<split>_acc`` and
  ``final/cost_<cost>`` of the finished member. The step is the checkpoint step (epochs done over
  all phases), which only grows across phases; on resume, events after the restored checkpoint are
  purged, as the lines of ``metrics.jsonl`` are.
  """

  def __init__(self, workdir: str, keep_until: Optional[int], enabled: bool,
               members: Sequence[Mapping[str, Any]] = (), cost: str = ""):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.tb_dir = os.path.join(workdir, "tensorboard")
    self.members = list(members)
    self.cost = cost
    self.purge_step = (keep_until if keep_until is not None else -1) + 1
    self._writers: Dict[str, Any] = {}
    self._writer_cls = None
    if not enabled:
      return
    if os.path.exists(self.path):
      # Resume: drop the lines of epochs that ran after the restored checkpoint.
      # A line that does not parse (the torn last line a kill during its write leaves) is
      # dropped with a warning: its epoch is after the restored checkpoint and is trained again.
      keep, torn = [], []
      with open(self.path) as f:
        for n, line in enumerate(f, 1):
          if not line.strip():
            continue
          try:
            rec = json.loads(line)
          except ValueError:
            torn.append(n)
            continue
          if keep_until is not None and rec.get("ckpt", -1) <= keep_until:
            keep.append(line if line.endswith("\n") else line + "\n")
      if torn:
        print(f"jpq sweep: {self.path}: dropped {len(torn)} unreadable line(s) (line "
              f"{', '.join(map(str, torn))}: a write cut short); their epochs are trained again "
              "from the checkpoint", file=sys.stderr)
      tmp = self.path + ".tmp"
      with open(tmp, "w") as f:
        f.writelines(keep)
      os.replace(tmp, self.path)
    try:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._writer_cls = SummaryWriter
    except ImportError:
      # tensorboardX is a dependency; tolerate its absence (metrics.jsonl has everything).
      import warnings  # pylint: disable=import-outside-toplevel
      warnings.warn("tensorboardX is not installed: no TensorBoard summaries (metrics.jsonl only)")

  def run_name(self, k: Optional[int]) -> str:
    """The TensorBoard run of member ``k`` (None: the shared warm-up)."""
    if k is None:
      return "warmup"
    m = self.members[k]
    return f"m{k:02d}_lam{m['lam']:g}_seed{m['seed']}"

  def _writer(self, run: str):
    if run not in self._writers:
      self._writers[run] = self._writer_cls(os.path.join(self.tb_dir, run),
                                            purge_step=self.purge_step, flush_secs=30)
    return self._writers[run]

  def _scalars(self, k: Optional[int], values: Mapping[str, Any], step: int):
    w = self._writer(self.run_name(k))
    for tag, v in values.items():
      if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        w.add_scalar(tag, float(v), step)

  def write(self, rec: Mapping):
    if not self.enabled:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps(rec) + "\n")
    if self._writer_cls is None:
      return
    phase, step = rec["phase"], int(rec["ckpt"])
    per_member = {k: v for k, v in rec.items() if isinstance(v, list)}
    shared = {k: v for k, v in rec.items()
              if k not in per_member and k not in ("phase", "epoch", "ckpt")}
    n = len(next(iter(per_member.values()))) if per_member else 0
    for k in range(n):
      vals = {f"{phase}/{key}": v for key, v in shared.items()}
      for key, v in per_member.items():
        if key in ("failed", "stopped"):
          continue
        tag = f"{key}_{self.cost}" if key.startswith("cost_") else key
        vals[f"{phase}/{tag}"] = v[k]
      self._scalars(None if phase == "warmup" else k, vals, step)

  def write_final(self, results: Mapping, step: int):
    """Final accuracy and argmax costs of every member (tags ``final/...``)."""
    if not self.enabled or self._writer_cls is None:
      return
    for k, m in enumerate(results["members"]):
      vals = {f"final/{key}": v for key, v in m.items() if key.endswith("_acc")}
      vals.update({f"final/cost_{c}": v for c, v in m["costs_argmax"].items()})
      self._scalars(k, vals, step)

  def close(self):
    for w in self._writers.values():
      w.close()
    self._writers = {}


def _finite(v) -> Optional[float]:
  v = float(v)
  return v if math.isfinite(v) else None


def _padded_batches(split, bs: int, loader_cls):
  loader = loader_cls(split, bs, seed=0, shuffle=False, augment=None, drop_remainder=False,
                      process_index=0, process_count=1, prefetch=0)
  for x, y in loader.epoch(0):
    n = len(y)
    mask = np.ones((bs,), np.float32)
    if n < bs:
      x = np.concatenate([x, np.zeros((bs - n,) + x.shape[1:], x.dtype)])
      y = np.concatenate([y, np.zeros((bs - n,), y.dtype)])
      mask[n:] = 0
    yield x, y, mask


def _evaluate(ex, split, bs, loader_cls, n, params_of=None) -> Dict[str, np.ndarray]:
  tot = None
  for x, y, mask in _padded_batches(split, bs, loader_cls):
    out = ex.evaluate(x, y, mask) if params_of is None else ex.evaluate(x, y, mask, params_of)
    tot = out if tot is None else jax.tree_util.tree_map(jnp.add, tot, out)
  h = _to_host(tot)
  return {"acc": h["correct"] / np.maximum(h["count"], 1),
          "loss": h["loss_sum"] / np.maximum(h["weight_sum"], 1e-12)}


def _cost_text(name: str, values) -> str:
  """``size 35.7-77.4 kB``: a cost's range over the members, in the unit a user reads."""
  from jpq_jax import costs as creg  # pylint: disable=import-outside-toplevel
  v = np.asarray(values, np.float64)
  v = v[np.isfinite(v)]
  if not len(v):
    return f"{name} -"
  unit = creg.cost_unit(name)
  if unit == "bits":
    v, unit = v / 8000.0, "kB"
  lo, hi = float(v.min()), float(v.max())
  rng = f"{lo:.4g}" if lo == hi else f"{lo:.4g}-{hi:.4g}"
  return f"{name} {rng}{' ' + unit if unit else ''}"


class _PhaseProgress:
  """Progress of one phase: a tqdm bar on a terminal, one line per epoch otherwise (logs).

  The first training step of a phase compiles it (seconds to minutes): the bar says
  ``compiling...`` then, and its clock restarts after that step, so the ETA is that of the steps,
  not of the compilation.

  Args:
    phase: the phase name.
    epochs: the phase's epochs; ``start_epoch`` / ``start_step``: where this invocation starts.
    steps: training steps per epoch.
    enabled: whether to show anything (process 0, ``progress=True``).
    stream: where to write (default ``sys.stderr``).
  """

  def __init__(self, phase: str, epochs: int, start_epoch: int, steps: int, start_step: int,
               enabled: bool, stream=None):
    self.phase, self.epochs, self.enabled = phase, epochs, enabled
    self.stream = stream if stream is not None else sys.stderr
    self.total = max((epochs - start_epoch) * steps - start_step, 0)
    self.bar = None
    self.compiled = False
    self.t_epoch = time.perf_counter()
    if not enabled:
      return
    isatty = getattr(self.stream, "isatty", None)
    if isatty is not None and isatty():
      try:
        from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
        self.bar = tqdm(total=self.total, desc=f"{phase:8s}", dynamic_ncols=True, leave=True,
                        file=self.stream, unit="step")
      except ImportError:
        self.bar = None

  def before_step(self) -> None:
    """Call before every training step (the first one compiles)."""
    if not self.enabled or self.compiled:
      return
    self._t_compile = time.perf_counter()
    if self.bar is not None:
      self.bar.set_postfix_str("compiling...")
    else:
      print(f"{self.phase}: compiling the training step...", file=self.stream, flush=True)

  def after_step(self) -> None:
    """Call after every training step."""
    if not self.enabled:
      return
    if not self.compiled:
      self.compiled = True
      took = time.perf_counter() - self._t_compile
      if self.bar is not None:
        self.bar.reset(total=self.total)  # the rate (and ETA) of the steps, not of the compile
        self.bar.set_postfix_str(f"compiled in {took:.0f} s")
      else:
        print(f"{self.phase}: compiled ({took:.1f} s, first step included)", file=self.stream,
              flush=True)
    if self.bar is not None:
      self.bar.update(1)

  def epoch(self, epoch: int, text: str) -> None:
    """Call at the end of an epoch with its summary (units included)."""
    if not self.enabled:
      return
    now = time.perf_counter()
    if self.bar is not None:
      self.bar.set_postfix_str(text)
    else:
      print(f"{self.phase} epoch {epoch + 1}/{self.epochs} ({now - self.t_epoch:.1f} s): {text}",
            file=self.stream, flush=True)
    self.t_epoch = now

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
      self.bar = None


class Sweep:
  """One sweep run in a work directory (see :func:`run_sweep`)."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, *, dataset=None,
               progress: bool = True):
    # The config as given (config.json, resume check) and as trained (the method's search space).
    self.raw_cfg = config
    self.cfg = resolve_method(config) if "method" in config else config
    self.method = self.cfg.get("method", "joint")
    self.workdir = os.path.abspath(workdir)
    self.progress = progress
    self.is_main = jax.process_index() == 0
    self.members = members_of(self.cfg)
    self.n = len(self.members)
    self.dataset = dataset
    self._given_dataset = dataset is not None
    self._stop = _StopRequest(self.is_main)
    # Set when this invocation resumes a run interrupted mid-epoch (see _find_interrupt).
    self._resume_point: Optional[Dict[str, Any]] = None
    self._interrupt_ck: Optional[Tuple[Any, int]] = None

  # -- setup --
  def _setup(self):
    cfg = self.cfg
    if self.dataset is None:
      self.dataset = load_dataset(cfg)
    ds = self.dataset
    self.loader_cls = _loader_cls()
    self.model, self.table, self.sample = build_model_from_config(cfg, ds.num_classes,
                                                                  ds.input_shape)
    T.get_cost_fn(cfg.search.cost)  # fail on a cost model that cannot cost this table
    reg = T._registry()  # pylint: disable=protected-access
    bad = []
    for name in T.cost_names():
      try:
        reg.validate_cost(name, self.table)
      except (ValueError, KeyError):
        bad.append(name)
    if cfg.search.cost in bad:
      reg.validate_cost(cfg.search.cost, self.table)  # re-raise with the registry's message
    if cfg.sweep.pareto_cost in bad:
      # The front would be empty after the whole sweep: refuse before training.
      try:
        reg.validate_cost(cfg.sweep.pareto_cost, self.table)
      except (ValueError, KeyError) as e:
        raise _field_error("sweep.pareto_cost", f"{cfg.sweep.pareto_cost!r} cannot cost this "
                           f"model: {e}") from None
    self.report_costs = tuple(c for c in T.cost_names() if c not in bad)
    self.cw = ds.class_weights if cfg.train.class_weights else None
    # train.batch_size is the *global* batch, whatever the number of processes, so a run's numbers do
    # not depend on how many processes run it. This loader yields whole global batches (the same on
    # every process); _train_loader picks the process-sharded one where the mesh splits the batch.
    if len(ds.train) < int(cfg.train.batch_size):
      raise _field_error("train.batch_size", f"{cfg.train.batch_size} is larger than the training "
                         f"split ({len(ds.train)} examples): lower it")
    self.train_loader = self._make_train_loader(local=False)
    self.steps = self.train_loader.steps_per_epoch
    if cfg.debug.max_steps_per_epoch:
      self.steps = min(self.steps, int(cfg.debug.max_steps_per_epoch))
    requested = cfg.sweep.strategy
    self.strategy = choose_strategy(requested)
    if self.n == 1 and self.strategy == "measure":
      self.strategy = "loop"
    if int(cfg.sweep.get("member_chunk", 0)) and self.strategy == "sharded":
      raise _field_error("sweep.member_chunk", f"strategy {requested!r} means 'sharded' with "
                         f"{jax.device_count()} devices, which spreads the members over them; "
                         "member chunks work with strategy 'vmap' (set sweep.strategy=vmap)")
    self.ckpt = ckpt_lib.SweepCheckpointer(os.path.join(self.workdir, "checkpoints"),
                                           keep=int(cfg.sweep.checkpoint_keep),
                                           async_save=bool(cfg.sweep.async_checkpoint))
    self.n_pad = self._padded(self.n)

  def _padded(self, n: int) -> int:
    if self.strategy == "sharded" or (self.strategy == "measure" and jax.device_count() > 1):
      # max(1, .): fewer devices than sweep.data_devices is reported by the executor's mesh check.
      md = max(1, jax.device_count() // int(self.cfg.sweep.data_devices))
      return -(-n // md) * md  # pad members to fill every device of the member axis
    return n

  def _resume_strategy(self) -> None:
    """The strategy of a resumed run: this invocation's, except ``measure`` (not measured twice).

    ``auto`` is resolved for the devices this invocation has (a run preempted on CPUs may resume
    on an accelerator); on the same machine it resolves as before, so a resume stays bit for bit.
    The member padding follows the strategy and the device count, which may differ from the
    saved run's: :meth:`_restore_members` re-pads the restored states.
    """
    if self.cfg.sweep.strategy == "measure":
      self.strategy = self._meta.get("strategy", self.strategy)
    self.n_pad = self._padded(self.n)

  def _restore_members(self, step: int, template: Any) -> Any:
    """The stacked member states saved as ``step``, with this run's member padding.

    The sharded strategy pads the member axis to a multiple of the member-axis device count, with
    copies of member 0 marked failed (:meth:`_pad`). A run saved on 4 devices and resumed on 2 (or
    on 1, or with 3 members on 2 devices then on 3) has another padding: the real members (always
    the first ``self.n``) are restored as saved and the padding is rebuilt, so a preempted sweep
    can resume on whatever devices it gets.

    Args:
      step: the committed checkpoint step.
      template: the abstract stacked state with this run's padded member count ``self.n_pad``.

    Returns:
      The stacked states, ``self.n_pad`` members, host-local arrays.

    Raises:
      CheckpointMismatchError: the saved structure differs other than by its member padding, or it
        holds fewer members than this run has.
    """
    ck = self.ckpt
    if self._interrupt_ck is not None:  # resumed mid-epoch: the state saved at the interruption
      ck, step = self._interrupt_ck
      self._interrupt_ck = None
    try:
      return self._restore_from(ck, step, template)
    finally:
      if ck is not self.ckpt:
        ck.close()

  def _restore_from(self, ck, step, template):
    sig = ck.saved_signature(step)
    lead = {tuple(v[0][:1]) for v in (sig or {}).values()}
    saved_n = lead.pop()[0] if len(lead) == 1 and () not in lead else None
    if saved_n is None or saved_n == self.n_pad or saved_n < self.n:
      return ck.restore(step, template)  # equal, or refused with the mismatch named
    target = jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct((saved_n,) + tuple(s.shape[1:]), s.dtype), template)
    saved = ck.restore(step, target)  # still checks everything but the member count
    real = _unstack(_host_tree(saved), self.n)
    if self.is_main:
      print(f"jpq sweep: resuming {self.n} members saved with the member axis padded to "
            f"{saved_n}; padded to {self.n_pad} for {jax.device_count()} device(s)",
            file=sys.stderr)
    return _stack(self._pad(real))

  def _phase_cfg(self, phase: str):
    """The config section of a phase (``pit_search`` -> ``pit.search``)."""
    if phase.startswith("pit_"):
      return self.cfg.pit[phase[len("pit_"):]]
    return self.cfg[phase]

  def _make_train_loader(self, local: bool, split=None):
    cfg, ds = self.cfg, self.dataset
    split = ds.train if split is None else split
    bs, pc = int(cfg.train.batch_size), jax.process_count()
    if local:  # this process's slice of every global batch (Loader's process sharding)
      return self.loader_cls(split, bs // pc, seed=int(cfg.seed), shuffle=True,
                             augment=ds.augment, drop_remainder=True)
    return self.loader_cls(split, bs, seed=int(cfg.seed), shuffle=True, augment=ds.augment,
                           drop_remainder=True, process_index=0, process_count=1)

  def _train_loader(self, ex):
    """The loader feeding ``ex``: local slices where its mesh splits the batch over processes."""
    ex.local_batch = ex.splits_batch(int(self.cfg.train.batch_size))
    if not ex.local_batch:
      return self.train_loader
    if getattr(self, "_local_loader", None) is None:
      self._local_loader = self._make_train_loader(local=True)
      assert self._local_loader.steps_per_epoch == self.train_loader.steps_per_epoch
    return self._local_loader

  def _phase_fns(self, phase: str):
    cfg = self.cfg
    pc = self._phase_cfg(phase)
    if phase.startswith("pit_"):
      from jpq_jax import pit  # pylint: disable=import-outside-toplevel
      search = phase == "pit_search"
      tx = T.make_optimizer(pc.optimizer.to_dict(), pc.arch_optimizer.to_dict() if search else None)
      make = pit.make_search_step if search else pit.make_finetune_step
      step = make(self.model, self.table, tx, class_weights=self.cw,
                  label_smoothing=float(cfg.train.label_smoothing))
      evaluate = pit.make_eval_step(self.model, self.table, phase, class_weights=self.cw)
      start = T.earlystop_start(int(pc.epochs), int(cfg.train.earlystop_start))
      patience = int(cfg.train.patience)
      end = lambda s, m: T.end_epoch(s, m, start=start, patience=patience)
      return tx, step, evaluate, end
    tx = T.make_optimizer(pc.optimizer.to_dict(),
                          pc.arch_optimizer.to_dict() if phase == "search" else None)
    step = T.make_train_step(self.model, self.table, phase, tx, cost=cfg.search.cost,
                             sampling=cfg.search.sampling, class_weights=self.cw,
                             label_smoothing=float(cfg.train.label_smoothing),
                             remat=str(cfg.train.get("remat", "none")))
    evaluate = T.make_eval_step(self.model, phase, class_weights=self.cw)
    start = T.earlystop_start(int(pc.epochs), int(cfg.train.earlystop_start))
    decay = temperature_decay_of(cfg) if phase == "search" else 0.0
    patience = int(cfg.train.patience)
    end = lambda s, m: T.end_epoch(s, m, start=start, patience=patience, temperature_decay=decay)
    return tx, step, evaluate, end

  def _member_keys(self, phase_tag: int):
    # A member's key depends on its seed only (not on its index), so a member of a sweep follows
    # the same trajectory as the same (lambda, seed) trained alone.
    return [jax.random.fold_in(jax.random.PRNGKey(m["seed"]), phase_tag) for m in self.members]

  def _pad(self, states: List[Any]) -> List[Any]:
    # Padding members (sharded strategy) copy member 0 and are marked failed: they never update.
    pads = [s.replace(failed=jnp.asarray(True)) for s in states[:1]] * (self.n_pad - self.n)
    return list(states) + pads

  # -- phases --
  def _initial_states(self, phase: str, tx, variables_per_member, temperature=1.0):
    keys = self._member_keys(PHASE_TAGS[phase])
    # PIT's alpha is trained like the search logits ('arch'); its fine-tuning like a fine-tuning.
    kind = {"pit_search": "search", "pit_finetune": "finetune"}.get(phase, phase)
    states = [T.init_state(kind, v, tx, key=k, lam=m["lam"], temperature=temperature)
              for v, k, m in zip(variables_per_member, keys, self.members)]
    return _stack(self._pad(states))

  def _make_ex(self, phase, n, strategy=None):
    tx, step, evaluate, end = self._phase_fns(phase)
    xla = compiler_options(self.cfg.sweep.get("xla_options", "auto"))
    return tx, make_executor(strategy or self.strategy, step, evaluate, end, n,
                             int(self.cfg.sweep.data_devices), compiler_options=xla,
                             member_chunk=int(self.cfg.sweep.get("member_chunk", 0)))

  def _measure(self, phase, stacked):
    """Time a few steps of loop and vmap/sharded on copies of the states; keep the faster."""
    cands = ["loop", "sharded" if jax.device_count() > 1 else "vmap"]
    x, y = next(iter(self.train_loader.epoch(0)))
    lam = np.asarray([m["lam"] for m in self.members] + [0.0] * (self.n_pad - self.n), np.float32)
    zeros = np.zeros((self.n_pad,), np.float32)
    best, times = None, {}
    for c in cands:
      _, ex = self._make_ex(phase, self.n_pad, c)
      ex.set_states(jax.tree_util.tree_map(jnp.copy, stacked))
      jax.block_until_ready(ex.train_step(x, y, lam, np.float32(1.0), zeros))
      t0 = time.perf_counter()
      for _ in range(3):
        out = ex.train_step(x, y, lam, np.float32(1.0), zeros)
      jax.block_until_ready(out)
      times[c] = (time.perf_counter() - t0) / 3
      if best is None or times[c] < times[best]:
        best = c
    self.measured = times
    return best

  def _run_phase(self, phase: str, ex, start_epoch: int, ckpt_base: int, meta: Dict[str, Any],
                 log: _Log, save: bool = True) -> int:
    cfg = self.cfg
    pc = self._phase_cfg(phase)
    epochs = int(pc.epochs)
    n = ex.n
    lams = [m["lam"] for m in self.members] + [0.0] * (n - self.n)
    monitor = cfg.train.monitor
    cost_fn = None
    if phase == "search":
      cost_jit = jax.jit(jax.vmap(T.make_cost_fn(self.table, (cfg.search.cost,))))
      cost_fn = lambda st: cost_jit(st.params["arch"], st.temperature)
    loader = self._train_loader(ex)
    # A run interrupted mid-epoch continues at the step it stopped before, with the sums of the
    # epoch's training metrics so far (so the epoch's records are those of an uninterrupted run).
    start_step, sums = 0, None
    point = self._resume_point
    if point is not None and point["phase"] == phase and point["epoch"] == start_epoch:
      start_step = int(point["step"])
      sums = {k: jnp.asarray(np.asarray(v, np.float32)) for k, v in point["sums"].items()}
      self._resume_point = None
    bar = _PhaseProgress(phase, epochs, start_epoch, self.steps, start_step,
                         self.progress and self.is_main)
    t_phase = time.perf_counter()
    e = start_epoch
    for e in range(start_epoch, epochs):
      st = _host_flags(ex)
      if np.all(st["failed"][:self.n] | st["stopped"][:self.n]):
        break
      lr = np.float32(T.lr_factor(pc.schedule, e, epochs))
      lam_e = (T.strength_at(lams, e, epochs, bool(cfg.search.incremental_strength))
               if phase == "search" else np.asarray(lams, np.float32) if phase == "pit_search"
               else np.zeros((n,), np.float32))
      first = start_step if e == start_epoch else 0
      if e != start_epoch:
        sums = None
      for i, (x, y) in enumerate(loader.epoch(e, start=first), start=first):
        if i >= self.steps:
          break
        kill_point(cfg, phase, e, f"step{i}")
        signal_point(cfg, phase, e, i)
        if self._stop.requested():
          bar.close()
          self._interrupt(phase, ex, e, i, sums, ckpt_base, meta, t_phase, save)
        poison = np.zeros((n,), np.float32)
        if (phase == "search" and cfg.debug.nan_member >= 0 and e == int(cfg.debug.nan_epoch)
            and i == 0):
          poison[int(cfg.debug.nan_member)] = np.nan
        bar.before_step()
        m = ex.train_step(x, y, lam_e, lr, poison)
        m = _stack(m) if isinstance(m, list) else m
        sums = m if sums is None else jax.tree_util.tree_map(jnp.add, sums, m)
        bar.after_step()
      train = {k: v / self.steps for k, v in _to_host(sums).items()}
      val = _evaluate(ex, self.dataset.val, int(cfg.train.eval_batch_size), self.loader_cls, n)
      hard_cost = None
      if phase == "search":
        stacked = ex.stacked()
        hard_cost = _host(cost_fn(stacked)["hard"][cfg.search.cost])
      if monitor == "acc":
        metric = val["acc"]
      else:
        loss = val["loss"] + (lam_e * hard_cost if hard_cost is not None else 0.0)
        metric = -loss
      metric = np.where(np.isfinite(metric), metric, -np.inf).astype(np.float32)
      ex.end_epoch(metric)
      flags = _host_flags(ex)
      ck = ckpt_base + e + 1
      rec = {"phase": phase, "epoch": e, "ckpt": ck, "lr_factor": float(lr),
             "temperature": [float(t) for t in flags["temperature"][:self.n]],
             "lambda": [float(l) for l in lam_e[:self.n]],
             "train_loss": [_finite(v) for v in train["loss"][:self.n]],
             "train_task": [_finite(v) for v in train["task"][:self.n]],
             "train_acc": [_finite(v) for v in train["acc"][:self.n]],
             "val_acc": [_finite(v) for v in val["acc"][:self.n]],
             "val_loss": [_finite(v) for v in val["loss"][:self.n]],
             "failed": [bool(v) for v in flags["failed"][:self.n]],
             "stopped": [bool(v) for v in flags["stopped"][:self.n]],
             "best_epoch": [int(v) for v in flags["best_epoch"][:self.n]]}
      if hard_cost is not None or phase == "pit_search":
        rec["cost_soft"] = [_finite(v) for v in train["cost"][:self.n]]
      if hard_cost is not None:
        rec["cost_argmax"] = [_finite(v) for v in hard_cost[:self.n]]
      if self.is_main:
        log.write(rec)
      if bar.enabled:
        bar.epoch(e, self._epoch_text(phase, train, val, hard_cost, flags))
      meta = dict(meta, phase=phase, epoch=e + 1,
                  times=dict(meta.get("times", {}),
                             **{phase: meta.get("times", {}).get(phase, 0.0)
                                + time.perf_counter() - t_phase}))
      t_phase = time.perf_counter()
      if save:
        self._save(ck, ex.stacked(), meta)
      self._meta = meta
    bar.close()
    return ckpt_base + epochs

  def _epoch_text(self, phase, train, val, hard_cost, flags) -> str:
    """One epoch's summary over the members: ranges, with units."""
    n = self.n
    ok = ~flags["failed"][:n]

    def rng(v, fmt):
      v = np.asarray(v, np.float64)[:n][ok]
      v = v[np.isfinite(v)]
      if not len(v):
        return "-"
      lo, hi = fmt(v.min()), fmt(v.max())
      return lo if lo == hi else f"{lo}-{hi}"

    parts = [f"train_loss {rng(train['loss'], lambda x: f'{x:.3f}')}",
             f"val_acc {rng(100 * np.asarray(val['acc']), lambda x: f'{x:.1f}')}%"]
    if hard_cost is not None:
      parts.append(_cost_text(self.cfg.search.cost, np.asarray(hard_cost)[:n][ok]))
    if phase == "search":
      parts.append(f"T {float(np.max(flags['temperature'][:n])):.3g}")
    parts.append(f"{int((~ok).sum())}/{n} failed" if n > 1 else ("failed" if not ok[0] else "ok"))
    return ", ".join(parts)

  # -- main --
  def run(self) -> Dict[str, Any]:
    """Run (or resume) the sweep; returns the results (also written to ``results.json``)."""
    cfg = self.cfg
    validate_config(self.raw_cfg, self.workdir)
    os.makedirs(self.workdir, exist_ok=True)
    if not _writable(self.workdir):
      return self._read_only_results()
    self._setup()
    # Every process has read the work directory (validate_config, checkpoints) before process 0
    # rewrites config.json.
    _barrier("jpq_sweep_start")
    if self.is_main:
      self._write_run_record()
      if self.progress:
        print(self._header_text(), file=sys.stderr, flush=True)
    step = self.ckpt.latest_step()
    meta = self.ckpt.meta(step) if step is not None else None
    log = _Log(self.workdir, step if step is not None else -1, self.is_main, self.members,
               cfg.search.cost)
    self._meta = meta or {"times": {}}
    e_w, e_s, e_f = int(cfg.warmup.epochs), int(cfg.search.epochs), int(cfg.finetune.epochs)
    phase = meta["phase"] if meta else "warmup"
    epoch = meta["epoch"] if meta else 0
    self._find_interrupt(step, meta)
    if self.is_main and (step is not None or self._resume_point) and phase != "done":
      where = f"{phase} epoch {epoch}"
      if self._resume_point:
        where += f" step {self._resume_point['step']} (saved when it was interrupted)"
      print(f"jpq sweep: resuming {self.workdir} at {where}"
            + (f", from checkpoint step {step}" if step is not None else ""), file=sys.stderr)
    try:
      with self._stop:
        results = self._phases(step, phase, epoch, log, e_w, e_s, e_f)
    finally:
      self.ckpt.close()
      log.close()
    if self.is_main:
      from jpq_jax import pareto  # pylint: disable=import-outside-toplevel
      # The metric that chooses the front changes no training: a rerun may choose it anew (runs of
      # jpq before 2026-12-01 chose on test accuracy by default; their rerun chooses on validation).
      results["pareto_metric"] = str(cfg.sweep.pareto_metric)
      annotate_status(results, os.path.join(self.workdir, "metrics.jsonl"))
      pareto.write_results(self.workdir, results)
    return results

  def _phases(self, step, phase, epoch, log, e_w, e_s, e_f) -> Dict[str, Any]:
    """The protocol from where the work directory stands: warm-up, search, fine-tune, results."""
    cfg = self.cfg
    # ---- warm-up (one shared float model) ----
    warm_dir = os.path.join(self.workdir, "warmup")
    float_vars = None
    if phase == "warmup":
      # This run's own warmup/ is reused only without a warm-up checkpoint: with one (killed after
      # writing warmup/, before the search's first checkpoint) the warm-up resumes from it with
      # nothing left to train, which also restores its metadata (best epoch) for the results.
      reuse = cfg.warmup.checkpoint or (warm_dir if os.path.exists(warm_dir) and step is None
                                        else "")
      if reuse:
        float_vars = ckpt_lib.load_tree(reuse, self._float_template())
      else:
        float_vars = self._warmup(epoch, step, log)
        # Every process calls Orbax (it synchronises them); process 0 writes the host arrays.
        ckpt_lib.save_tree(warm_dir, float_vars)
      phase, epoch = "search_init", 0
    # ---- PIT alone: search, export, fine-tune of the pruned float network ----
    if self.method == "pit" and phase == "search_init":
      if float_vars is None:
        float_vars = ckpt_lib.load_tree(warm_dir, self._float_template())
      results = self._run_pit(float_vars, log)
      phase = "pit_done"
    # ---- search ----
    # Checkpoint steps: warm-up epochs 1..e_w, search start e_w+1, search epochs up to
    # e_w+1+e_s, fine-tune start e_w+e_s+2, fine-tune epochs, then "done".
    base_s = e_w + 1
    if phase in ("search_init", "search"):
      tx, ex = None, None
      if phase == "search_init":
        if float_vars is None:
          float_vars = ckpt_lib.load_tree(warm_dir, self._float_template())
        from jpq_jax.fold import to_search  # pylint: disable=import-outside-toplevel
        if self.method == "pit_mixprec":
          # The PIT-pruned, fine-tuned float network replaces the warm-up model (§7.2); no
          # weight compensation (kept channels have theta_0 = 0 exactly), 0 bit pinned.
          from jpq_jax import pit  # pylint: disable=import-outside-toplevel
          float_vars, masks = self._pit_for_mixprec(float_vars, log)
          svars = to_search(self.model, float_vars, self.sample, table=self.table,
                            compensate=False)
          svars["arch"] = pit.pin_logits(svars["arch"], self.table, masks)
        else:
          svars = to_search(self.model, float_vars, self.sample, table=self.table)
        tx, _, _, _ = self._phase_fns("search")
        stacked = self._initial_states("search", tx, [svars] * self.n,
                                       float(cfg.search.temperature))
        if self.strategy == "measure" and self.n > 1:
          self.strategy = self._measure("search", stacked)
        epoch = 0
        self._meta = dict(self._meta, phase="search", epoch=0, strategy=self.strategy)
        self._save(base_s, stacked, self._meta)
      else:
        self._resume_strategy()
        stacked = self._restore_members(step, self._search_template())
      _, ex = self._make_ex("search", self.n_pad)
      ex.set_states(stacked)
      self._run_phase("search", ex, epoch, base_s, self._meta, log)
      ex.map(T.restore_best)
      search_final = ex.stacked()
      costs = self._costs(search_final)
      failed = _host(search_final.failed)
      self._meta = dict(self._meta, search_costs=costs,
                        search_best_epoch=[int(v) for v in
                                           _host(search_final.best_epoch)[:self.n]],
                        search_failed=[bool(v) for v in failed[:self.n]],
                        final_temperature=[float(v) for v in
                                           _host(search_final.temperature)[:self.n]])
      # ---- conversion to fine-tuning: frozen argmax architecture ----
      tx, _, _, _ = self._phase_fns("finetune")
      fz = jax.jit(jax.vmap(lambda p: T.finetune_variables(p, self.table)))(search_final.params)
      # On the host: the new states are built per member, as process-local arrays.
      per = _unstack(_host_tree(fz), self.n_pad)[:self.n]
      stacked = self._initial_states("finetune", tx, per)
      stacked = stacked.replace(failed=jnp.asarray(failed))
      phase, epoch = "finetune", 0
      self._meta = dict(self._meta, phase="finetune", epoch=0)
      self._save(e_w + e_s + 2, stacked, self._meta)
      restored = None
    else:
      restored = step
    # ---- fine-tune ----
    base_f = e_w + e_s + 2
    if phase == "finetune":
      if restored is not None:
        self._resume_strategy()
        stacked = self._restore_members(restored, self._finetune_template())
      _, ex = self._make_ex("finetune", self.n_pad)
      ex.set_states(stacked)
      self._run_phase("finetune", ex, epoch, base_f, self._meta, log)
      ex.map(T.restore_best)
      final = ex.stacked()
      results = self._results(ex, final)
      self._write_final(final)
      log.write_final(results, base_f + e_f + 1)
      self._meta = dict(self._meta, phase="done", epoch=0)
      self._save(base_f + e_f + 1, final, self._meta)
    elif phase != "pit_done":  # already done: the results from the files
      results = self._read_results()
      final, ex = None, None
      if results is None:  # missing or damaged: evaluate the final checkpoint again
        self._resume_strategy()
        final = self._restore_members(step, self._finetune_template())
        _, ex = self._make_ex("finetune", self.n_pad)
        ex.set_states(final)
        results = self._results(ex, final)
      why = self._final_damage()
      if why is not None:  # final/ missing or damaged: rebuilt from the "done" checkpoint
        if self.is_main:
          print(f"jpq sweep: {why}: rebuilding it from checkpoint step {step}", file=sys.stderr)
        if final is None:
          self._resume_strategy()
          final = self._restore_members(step, self._finetune_template())
        self._write_final(final)
    return results

  # -- pieces --
  def _read_only_results(self) -> Dict[str, Any]:
    """A finished run in a work directory this process cannot write: its results, read back."""
    from jpq_jax import pareto  # pylint: disable=import-outside-toplevel
    try:
      results = pareto.load_results(self.workdir)
    except (FileNotFoundError, ValueError) as e:
      raise OSError(30, f"the work directory {self.workdir} is read-only and holds no readable "
                    f"finished run ({str(e).split(';')[0]}); copy it to a writable place to resume "
                    "it there") from None
    if self.is_main:
      print(f"jpq sweep: {self.workdir} is read-only: the finished run's results are read back, "
            "nothing is written", file=sys.stderr)
    return results

  def _write_final(self, final) -> None:
    """``final/``: the fine-tuned members' weights and precisions (what restore_member reads)."""
    fin = {"params": final.params["params"], "precision": final.extra["precision"]}
    fin = jax.tree_util.tree_map(lambda a: _host(a)[:self.n], fin)
    ckpt_lib.save_tree(os.path.join(self.workdir, "final"), fin)  # on every process (Orbax)

  def _final_damage(self) -> Optional[str]:
    """Why ``final/`` cannot be trusted (missing, no manifest, damaged), or None when it can."""
    d = os.path.join(self.workdir, "final")
    if not os.path.isdir(d):
      return f"{d} is missing"
    try:
      if ckpt_lib.verify_manifest(d) is None:
        return f"{d} has no manifest (unverifiable)"
    except ckpt_lib.CheckpointCorruptError as e:
      return f"{d} is damaged ({str(e).replace(d + ': ', '')})"
    return None

  def _write_run_record(self) -> None:
    """Write ``config.json``: the run's config, versions and command; a resume appends to it.

    A fresh run writes its config (as given and resolved), library versions, strategy, command line
    and start time. A run resumed in a work directory that holds its trained state keeps that
    record (what the run was started with and by which versions) and appends this invocation's
    time, command, versions and strategy to ``resumed``: rerunning a finished sweep to read its
    results, or resuming it with a newer jpq, never rewrites its provenance.
    """
    from jpq_jax import pareto  # pylint: disable=import-outside-toplevel
    path = os.path.join(self.workdir, "config.json")
    now = time.strftime("%Y-%m-%d %H:%M:%S")
    this = {"time": now, "argv": sys.argv, "versions": library_versions(),
            "strategy": self.strategy}
    record = None
    if os.path.exists(path) and _holds_work(self.workdir):
      try:
        with open(path) as f:
          record = json.load(f)
      except (OSError, ValueError):
        record = None  # unreadable: written afresh below (validate_config has read what it could)
    if not isinstance(record, dict) or "config" not in record:
      record = {"config": json.loads(self.raw_cfg.to_json_best_effort()),
                "resolved_config": json.loads(self.cfg.to_json_best_effort()),
                "versions": this["versions"], "strategy": self.strategy, "argv": sys.argv,
                "started": now}
    else:
      record.setdefault("resumed", []).append(this)
    pareto.write_json_atomic(path, record)

  def _read_results(self) -> Optional[Dict[str, Any]]:
    """``results.json`` of a finished sweep, or None (with a note) when missing or damaged."""
    from jpq_jax import pareto  # pylint: disable=import-outside-toplevel
    try:
      return pareto.load_results(self.workdir)
    except FileNotFoundError:
      why = f"{os.path.join(self.workdir, 'results.json')} is missing"
    except ValueError as e:  # not JSON, or not a sweep's results
      why = str(e).split(";")[0]
    if self.is_main:
      print(f"jpq sweep: {why}: rebuilding it from the final checkpoint", file=sys.stderr)
    return None

  def _save(self, step, state, meta):
    # The executors donate their state to the next step while the async write may still be reading
    # it: hand Orbax copies. Process-local arrays become host numpy (with several processes they
    # hold the same values everywhere, and Orbax writes numpy from process 0 only); arrays spread
    # over processes get a device copy, of which every process writes its own shards.
    state = _saveable(state)
    point = (self.cfg, meta.get("phase"), meta.get("epoch"))
    kill_point(*point, "before_save")
    self.ckpt.save(step, state, meta)
    self._drop_interrupt()  # a mid-epoch state older than this step is of no further use
    kill_point(*point, "during_save")
    if str(self.cfg.debug.get("kill_at", "")).endswith(":after_save"):
      self.ckpt.wait()  # only when a kill is requested: "after" means committed
    kill_point(*point, "after_save")

  def _header_text(self) -> str:
    """What this invocation will run, printed before anything compiles."""
    cfg, ds = self.cfg, self.dataset
    shape = "x".join(str(d) for d in ds.input_shape)
    sizes = "/".join(str(len(sp)) if sp is not None else "-" for sp in (ds.train, ds.val, ds.test))
    lams = ", ".join(f"{m['lam']:.3g}" for m in self.members)
    seeds = sorted({int(m["seed"]) for m in self.members})
    dev = jax.devices()
    phases = [("warm-up", cfg.warmup.epochs), ("search", cfg.search.epochs),
              ("fine-tune", cfg.finetune.epochs)]
    if self.method == "fixed":
      phases = [("warm-up", cfg.warmup.epochs), ("QAT", cfg.search.epochs)]
    if cfg.warmup.get("checkpoint"):
      phases[0] = ("warm-up", f"from {cfg.warmup.checkpoint}")
    return "\n".join([
        f"jpq sweep: {cfg.get('name', 'sweep')}: method {self.method}, model {cfg.model.name}, "
        f"dataset {cfg.data.name} ({sizes} train/val/test examples, {shape}, "
        f"{ds.num_classes} classes)",
        f"  {self.n} member{'s' if self.n != 1 else ''}: lambda {lams} "
        f"(seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}), "
        f"cost {cfg.search.cost}",
        f"  strategy {self.strategy} on {len(dev)} {dev[0].platform} device(s), "
        f"{jax.process_count()} process(es)",
        "  epochs: " + ", ".join(f"{k} {v}" for k, v in phases)
        + f"; {self.steps} steps of batch {cfg.train.batch_size} per epoch",
        f"  work directory: {self.workdir}"])

  # -- interruption (SIGINT / SIGTERM) --
  def _interrupt_dir(self) -> str:
    return os.path.join(self.workdir, "checkpoints_interrupted")

  def _drop_interrupt(self) -> None:
    import shutil  # pylint: disable=import-outside-toplevel
    d = self._interrupt_dir()
    if self.is_main and self._interrupt_ck is None and os.path.isdir(d):
      shutil.rmtree(d, ignore_errors=True)

  def _interrupt(self, phase, ex, epoch, step, sums, ckpt_base, meta, t_phase, save):
    """Save the state before training step ``step`` of ``epoch``, then raise SweepInterrupted.

    The state goes to ``checkpoints_interrupted/`` (not among the epoch checkpoints, whose steps
    count epochs), with the epoch checkpoint it continues from, the step, and the sums of the
    epoch's training metrics so far; the epoch checkpoints are untouched, so a kill during this
    save loses only the partial epoch. At step 0 the state is the last epoch checkpoint's and
    nothing more is saved.

    Raises:
      SweepInterrupted: always.
    """
    signum = self._stop.signum or signal.SIGTERM
    if save and step > 0:
      self.ckpt.wait()  # the epoch checkpoint this state continues from is committed first
      times = dict(meta.get("times", {}))
      times[phase] = times.get(phase, 0.0) + time.perf_counter() - t_phase
      host = _to_host(sums) if sums is not None else {}
      info = {"phase": phase, "epoch": int(epoch), "step": int(step),
              "resume_from": self.ckpt.latest_step(),
              # float32 bytes, not JSON numbers: exact, and NaN/inf (a failed member) survive.
              "sums": {k: [np.asarray(v, np.float32).tobytes().hex(), list(np.shape(v))]
                       for k, v in host.items()}}
      self._drop_interrupt()
      _barrier("jpq_interrupt_save")
      ick = ckpt_lib.SweepCheckpointer(self._interrupt_dir(), keep=1, async_save=False)
      try:
        ick.save(int(step), _saveable(ex.stacked()), dict(meta, times=times, interrupted=info))
      finally:
        ick.close()
    raise SweepInterrupted(phase, epoch, step, signum, saved=bool(save))

  def _find_interrupt(self, step: Optional[int], meta: Optional[Dict[str, Any]]):
    """The mid-epoch state of an interrupted run that continues epoch checkpoint ``step``, if any.

    Sets ``_resume_point`` (phase, epoch, step, metric sums) and ``_interrupt_ck``; a stale or
    damaged one (the run went on past it, or a kill during its save) is ignored with a note.
    """
    d = self._interrupt_dir()
    if not os.path.isdir(d):
      return
    try:
      ick = ckpt_lib.SweepCheckpointer(d, keep=1, async_save=False)
    except ckpt_lib.CheckpointCorruptError as e:
      if self.is_main:
        print(f"jpq sweep: ignoring the damaged mid-epoch checkpoint ({e}); resuming from the "
              "last epoch checkpoint", file=sys.stderr)
      return
    ist = ick.latest_step()
    info = (ick.meta(ist) or {}).get("interrupted") if ist is not None else None
    phase = (meta or {}).get("phase", "warmup")
    if (not info or info.get("resume_from") != step or info.get("phase") != phase
        or info.get("epoch") != int((meta or {}).get("epoch", 0))):
      ick.close()
      return
    sums = {k: np.frombuffer(bytes.fromhex(h), np.float32).reshape(shape)
            for k, (h, shape) in info["sums"].items()}
    self._resume_point = dict(info, sums=sums)
    self._interrupt_ck = (ick, ist)
    self._meta = dict(self._meta, times=ick.meta(ist).get("times", self._meta.get("times", {})))

  def _float_template(self):
    v = jax.eval_shape(lambda x: self.model.init(jax.random.PRNGKey(0), x, Ctx.float()),
                       self.sample)
    return {k: v[k] for k in v if k in ("params", "batch_stats")}

  def _template(self, phase, variables):
    tx, _, _, _ = self._phase_fns(phase)
    one = jax.eval_shape(lambda v: T.init_state(phase, v, tx, key=jax.random.PRNGKey(0)), variables)
    return jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct((self.n_pad,) + s.shape, s.dtype),
                                  one)

  def _search_template(self):
    v = jax.eval_shape(lambda x: self.model.init(jax.random.PRNGKey(0), x, Ctx.search()),
                       self.sample)
    return self._template("search", {k: v[k] for k in ("params", "arch")})

  def _finetune_template(self):
    v = jax.eval_shape(lambda x: self.model.init(jax.random.PRNGKey(0), x, Ctx.fixed()),
                       self.sample)
    return self._template("finetune", {k: v[k] for k in ("params", "precision")})

  def _warmup(self, start_epoch, step, log) -> Dict[str, Any]:
    cfg = self.cfg
    tx, _, _, _ = self._phase_fns("warmup")
    key = jax.random.PRNGKey(int(cfg.seed))
    k_init, k_train = jax.random.split(key)
    template_states = None
    if self._interrupt_ck is not None:  # interrupted mid-epoch
      ick, ist = self._interrupt_ck
      self._interrupt_ck = None
      try:
        template_states = ick.restore(ist, self._template_warmup(tx))
      finally:
        ick.close()
    elif start_epoch > 0 and step is not None:
      template_states = self.ckpt.restore(step, self._template_warmup(tx))
    else:
      v = jax.jit(lambda x: self.model.init(k_init, x, Ctx.float()))(self.sample)
      v = {k: v[k] for k in ("params", "batch_stats")}
      template_states = _stack([T.init_state("warmup", v, tx, key=k_train)])
    _, ex = self._make_ex("warmup", 1, "loop")
    ex.set_states(template_states)
    n_real, self.n = self.n, 1
    loader_real, steps_real = self.train_loader, self.steps
    try:
      if int(cfg.warmup.epochs) > 0:
        if int(cfg.warmup.get("train_size", 0) or 0):
          self.train_loader = self._warmup_loader()
          self.steps = self.train_loader.steps_per_epoch
          if cfg.debug.max_steps_per_epoch:
            self.steps = min(self.steps, int(cfg.debug.max_steps_per_epoch))
        self._run_phase("warmup", ex, start_epoch, 0, self._meta, log)
    finally:
      self.n = n_real
      self.train_loader, self.steps = loader_real, steps_real
    ex.map(T.restore_best)
    st = ex.states[0]
    self._meta = dict(self._meta, warmup_best_epoch=int(st.best_epoch))
    return {**st.params, **st.extra}

  def _warmup_loader(self):
    """The warm-up's loader with ``warmup.train_size``: a seeded subset of the whole training split.

    The dataset is loaded again without ``data.options.train_size``; the subset uses the same
    seed and tag as the data options' one, and both take a prefix of one seeded permutation of
    the split, so the other phases' (smaller) training subset is a subset of the warm-up's.
    """
    cfg = self.cfg
    if self._given_dataset:
      raise _field_error("warmup.train_size", "needs the dataset loaded by the sweep (data.name, "
                         "data.options); with a dataset passed to run_sweep, give the warm-up "
                         "split yourself and leave warmup.train_size at 0")
    from jpq_jax.data.core import subset  # pylint: disable=import-outside-toplevel
    full_cfg = copy.deepcopy(cfg.to_dict()) if hasattr(cfg, "to_dict") else copy.deepcopy(cfg)
    full_cfg["data"]["options"] = {k: v for k, v in dict(full_cfg["data"].get("options") or {}).items()
                                   if k != "train_size"}
    full = load_dataset(full_cfg).train
    n = int(cfg.warmup.train_size)
    train = subset(full, n, int(cfg.seed), tag=1) if n < len(full) else full
    if len(train) < int(cfg.train.batch_size):
      raise _field_error("warmup.train_size", f"{n} examples is less than a batch "
                         f"({cfg.train.batch_size})")
    return self._make_train_loader(local=False, split=train)

  def _template_warmup(self, tx):
    v = self._float_template()
    one = jax.eval_shape(lambda v: T.init_state("warmup", v, tx, key=jax.random.PRNGKey(0)), v)
    return jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct((1,) + s.shape, s.dtype), one)

  # -- PIT (METHOD.md §7) --
  def _pit_stage(self, float_vars, log, members):
    """PIT search then fine-tuning of the exported networks, for ``members`` (lambda = strength).

    Not checkpointed per epoch: an interrupted PIT stage restarts from the warm-up model.

    Returns:
      ``(ex, final, masks, soft_params, search_failed)``: the fine-tuning executor and its final
      stacked states, the binary masks of every member (``{group: (C,) numpy}``), the soft
      effective weight count at the selected search epoch, the search's failed flags.
    """
    from jpq_jax import pit  # pylint: disable=import-outside-toplevel
    saved = (self.members, self.n, self.n_pad)
    self.members, self.n = list(members), len(members)
    self.n_pad = self._padded(self.n)
    # PIT states never meet the search states: loop/vmap/sharded as chosen, measure -> loop.
    strat = self.strategy if self.strategy in ("loop", "vmap", "sharded") else "loop"
    e_w = int(self.cfg.warmup.epochs)
    try:
      tx, _, _, _ = self._phase_fns("pit_search")
      v = {"params": float_vars["params"], "arch": pit.init_alpha(self.table),
           "batch_stats": float_vars["batch_stats"]}
      _, ex = self._make_ex("pit_search", self.n_pad, strat)
      ex.set_states(self._initial_states("pit_search", tx, [v] * self.n))
      self._run_phase("pit_search", ex, 0, e_w, self._meta, log, save=False)
      ex.map(T.restore_best)
      sf = _host_tree(ex.stacked())
      per, masks_all, soft = [], [], []
      for k in range(self.n):
        mk = jax.tree_util.tree_map(lambda a: a[k], sf)
        masks = pit.masks_of(mk.params["arch"], self.table)
        soft.append(_finite(pit.params_cost(self.table,
                                             pit.pit_theta(mk.params["arch"], self.table))))
        ev = pit.export_float(mk.params["params"], mk.extra["batch_stats"], self.table, masks)
        per.append({**ev, "pit_mask": {g: jnp.asarray(m) for g, m in masks.items()}})
        masks_all.append(masks)
      failed = np.asarray(sf.failed)
      tx, _, _, _ = self._phase_fns("pit_finetune")
      stacked = self._initial_states("pit_finetune", tx, per).replace(failed=jnp.asarray(failed))
      _, ex = self._make_ex("pit_finetune", self.n_pad, strat)
      ex.set_states(stacked)
      self._run_phase("pit_finetune", ex, 0, e_w, self._meta, log, save=False)
      ex.map(T.restore_best)
      return ex, ex.stacked(), masks_all, soft, [bool(f) for f in failed[:self.n]]
    finally:
      self.members, self.n, self.n_pad = saved

  def _pit_for_mixprec(self, float_vars, log):
    """The PIT stage of ``pit_mixprec`` (strength ``pit.strength``; reused from ``pit/`` if done).

    Returns:
      ``(float variables of the pruned network with the masks baked in, masks)``.
    """
    from jpq_jax import pit  # pylint: disable=import-outside-toplevel
    pit_dir = os.path.join(self.workdir, "pit")
    info_path = os.path.join(self.workdir, "pit.json")
    mask_tpl = pit.mask_tree(self.table, {g.name: jax.ShapeDtypeStruct((g.channels,), jnp.float32)
                                          for g in self.table.groups})
    if os.path.exists(info_path):
      tree = ckpt_lib.load_tree(pit_dir, {**self._float_template(), "pit_mask": mask_tpl})
      masks = {k: np.asarray(v) for k, v in pit.masks_from_tree(tree["pit_mask"], self.table).items()}
      with open(info_path) as f:
        info = json.load(f)
      self._meta = dict(self._meta, times=dict(self._meta.get("times", {}), **info["times"]),
                        pit=info["pit"])
      return {"params": tree["params"], "batch_stats": tree["batch_stats"]}, masks
    member = {"lam": float(self.cfg.pit.strength), "seed": int(self.cfg.sweep.seeds[0])}
    ex, final, masks_all, soft, failed = self._pit_stage(float_vars, log, [member])
    del ex
    if failed[0]:
      raise FloatingPointError("pit_mixprec: the PIT search diverged (non-finite loss); lower "
                               "pit.strength or the learning rates")
    masks = masks_all[0]
    one = jax.tree_util.tree_map(lambda a: _host(a)[0], final)
    fv = {"params": pit.bake_masks(one.params["params"], self.table, masks),
          "batch_stats": one.extra["batch_stats"]}
    fv = jax.tree_util.tree_map(np.asarray, fv)
    mtree = pit.mask_tree(self.table, {k: np.asarray(v, np.float32) for k, v in masks.items()})
    ckpt_lib.save_tree(pit_dir, {**fv, "pit_mask": mtree})
    times = self._meta.get("times", {})
    info = {"times": {k: times[k] for k in ("pit_search", "pit_finetune") if k in times},
            "pit": {"strength": member["lam"], "kept": pit.kept_summary(masks, self.table),
                    "params_soft": soft[0],
                    "params": _finite(T.get_cost_fn("params")(
                        self.table, pit.as_precision_theta(
                            {k: jnp.asarray(v) for k, v in masks.items()}, self.table)))}}
    if self.is_main:
      with open(info_path, "w") as f:
        json.dump(info, f, indent=2)
    self._meta = dict(self._meta, pit=info["pit"])
    return fv, masks

  def _run_pit(self, float_vars, log) -> Dict[str, Any]:
    """The ``pit`` method: PIT search + fine-tuning of every member; its results (float sizes)."""
    from jpq_jax import pit  # pylint: disable=import-outside-toplevel
    ex, final, masks_all, soft, failed_s = self._pit_stage(float_vars, log, self.members)
    ds, bs = self.dataset, int(self.cfg.train.eval_batch_size)
    evals = {"val": _evaluate(ex, ds.val, bs, self.loader_cls, ex.n),
             "test": _evaluate(ex, ds.test, bs, self.loader_cls, ex.n)}
    for name, split in (ds.extra_tests or {}).items():
      evals[f"test_{name}"] = _evaluate(ex, split, bs, self.loader_cls, ex.n)
    flags = _host_flags(ex)
    reg = T._registry()  # pylint: disable=protected-access
    members = []
    for k, m in enumerate(self.members):
      masks = masks_all[k]
      th = pit.as_precision_theta({g: jnp.asarray(v) for g, v in masks.items()}, self.table)
      base = {n: _finite(v) for n, v in reg.all_costs(self.table, th, ("params", "macs")).items()}
      # A float network: 32-bit weights and activations; no hardware model covers it.
      costs = {n: None for n in self.report_costs}
      costs.update(base)
      for n in ("size", "size_nodetach"):
        if n in costs:
          costs[n] = 32.0 * base["params"]
      if "bitops" in costs:
        costs["bitops"] = 32.0 * 32.0 * base["macs"]
      kept = pit.kept_summary(masks, self.table)
      layers = {}
      for l in self.table.layers:
        kk = kept[l.w_group]["kept"]
        layers[l.name] = {"group": l.w_group, "cout": l.cout, "kept": kk,
                          "w_bits_hist": {"0": l.cout - kk, "32": kk},
                          "mean_w_bits": 32.0 if kk else 0.0, "a_bits": 32}
      failed = bool(flags["failed"][k]) or failed_s[k]
      rec = {"member": k, "lambda": m["lam"], "seed": m["seed"], "failed": failed,
             "status": "failed (non-finite loss)" if failed else "ok",
             "warmup_best_epoch": self._meta.get("warmup_best_epoch"),
             "finetune_best_epoch": int(flags["best_epoch"][k]),
             "costs_soft": {"params": soft[k]}, "costs_argmax": costs, "layers": layers,
             "groups": {g: dict(v, w_bits_hist={"0": v["channels"] - v["kept"], "32": v["kept"]})
                        for g, v in kept.items()}}
      for split, ev in evals.items():
        rec[f"{split}_acc"] = None if failed else _finite(ev["acc"][k])
        rec[f"{split}_loss"] = None if failed else _finite(ev["loss"][k])
      members.append(rec)
    results = self._header(members)
    for rec in members:
      rec["train_time_s"] = results["train_time_s"] / max(self.n, 1)
      rec["sweep_time_s"] = results["train_time_s"]
    # The fine-tuned (masked, full-width) float members and their masks.
    mtree = pit.mask_tree(self.table, {g.name: np.stack([ma[g.name] for ma in masks_all])
                                       for g in self.table.groups if g.kind != "input"})
    fin = {"params": final.params["params"], "batch_stats": final.extra["batch_stats"]}
    fin = jax.tree_util.tree_map(lambda a: _host(a)[:self.n], fin)
    ckpt_lib.save_tree(os.path.join(self.workdir, "final"), {**fin, "pit_mask": mtree})
    log.write_final(results, int(self.cfg.warmup.epochs) + 1)
    self._meta = dict(self._meta, phase="done", epoch=0)
    self._save(int(self.cfg.warmup.epochs) + 1, {"done": np.zeros((), np.int32)}, self._meta)
    return results

  def _header(self, members) -> Dict[str, Any]:
    """The run-level fields of results.json."""
    from jpq_jax.costs import registry as creg  # pylint: disable=import-outside-toplevel
    cfg, ds = self.cfg, self.dataset
    times = self._meta.get("times", {})
    out = {"name": cfg.name, "method": self.method, "dataset": ds.name, "model": cfg.model.name,
           "num_classes": int(ds.num_classes), "input_shape": list(ds.input_shape),
           "search_cost": "params" if self.method == "pit" else cfg.search.cost,
           "pareto_cost": cfg.sweep.pareto_cost or ("size" if self.method == "pit"
                                                    else cfg.search.cost),
           "pareto_metric": cfg.sweep.pareto_metric,
           "w_precisions": list(cfg.model.w_precisions), "a_precisions": list(cfg.model.a_precisions),
           "granularity": cfg.model.granularity,
           "cost_units": {n: creg.cost_unit(n) for n in self.report_costs},
           "strategy": self.strategy, "measured_step_s": getattr(self, "measured", None),
           "times_s": times,
           # Training time of the method (the warm-up is shared by every method, METHOD.md §7.2).
           "train_time_s": float(sum(v for p, v in times.items() if p != "warmup" and v)),
           "versions": library_versions(), "members": members}
    if self.method == "fixed":
      out["fixed_bits"] = [int(b) for b in cfg.fixed_bits]
    if self.method == "pit_mixprec":
      out["pit"] = self._meta.get("pit")
      out["train_time_s_stages"] = {
          "pit": float(sum(times.get(p, 0.0) for p in ("pit_search", "pit_finetune"))),
          "mixprec": float(sum(times.get(p, 0.0) for p in ("search", "finetune")))}
    return out

  def _costs(self, stacked) -> Dict[str, Any]:
    fn = jax.jit(jax.vmap(T.make_cost_fn(self.table, self.report_costs)))
    out = _host_tree(fn(stacked.params["arch"], stacked.temperature))
    return {kind: {name: [_finite(v) for v in np.asarray(vals)[:self.n]]
                   for name, vals in out[kind].items()} for kind in ("soft", "hard")}

  def _results(self, ex, final) -> Dict[str, Any]:
    from jpq_jax.arch import precision_summary  # pylint: disable=import-outside-toplevel
    cfg = self.cfg
    ds = self.dataset
    bs = int(cfg.train.eval_batch_size)
    evals = {"val": _evaluate(ex, ds.val, bs, self.loader_cls, ex.n),
             "test": _evaluate(ex, ds.test, bs, self.loader_cls, ex.n)}
    for name, split in (ds.extra_tests or {}).items():
      evals[f"test_{name}"] = _evaluate(ex, split, bs, self.loader_cls, ex.n)
    # Fixed-mode costs: the one-hot theta of the frozen precision (equals the argmax of the search).
    from jpq_jax.arch import thetas  # pylint: disable=import-outside-toplevel
    reg = T._registry()  # pylint: disable=protected-access
    fixed_costs = jax.jit(jax.vmap(lambda prec: reg.all_costs(
        self.table, thetas({"precision": prec}, self.table, Ctx.fixed()), self.report_costs)))(
            final.extra["precision"])
    fixed_costs = _host_tree(fixed_costs)
    precision = _host_tree(final.extra["precision"])
    sc = self._meta.get("search_costs", {"soft": {}, "hard": {}})
    times = self._meta.get("times", {})
    total = sum(times.get(p, 0.0) for p in ("search", "finetune"))
    # pit_mixprec: every member's pipeline includes the (shared, single) PIT stage in full.
    pit_total = sum(times.get(p, 0.0) for p in ("pit_search", "pit_finetune"))
    flags = _host_flags(ex)
    members = []
    for k, m in enumerate(self.members):
      prec = jax.tree_util.tree_map(lambda a: a[k], precision)
      groups = precision_summary(prec, self.table)
      layers = {}
      for l in self.table.layers:
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
             "warmup_best_epoch": self._meta.get("warmup_best_epoch"),
             "search_best_epoch": self._meta.get("search_best_epoch", [None] * self.n)[k],
             "finetune_best_epoch": int(flags["best_epoch"][k]),
             "final_temperature": self._meta.get("final_temperature", [None] * self.n)[k],
             "costs_soft": {n: v[k] for n, v in sc.get("soft", {}).items()},
             "costs_argmax": {n: _finite(np.asarray(v)[k]) for n, v in fixed_costs.items()},
             "layers": layers,
             "groups": {g: {kk: (({str(b): c for b, c in vv.items()}) if isinstance(vv, dict) else vv)
                            for kk, vv in rec_.items()} for g, rec_ in groups.items()},
             "train_time_s": pit_total + total / max(self.n, 1),
             "sweep_time_s": pit_total + total}
      for split, ev in evals.items():
        rec[f"{split}_acc"] = None if failed else _finite(ev["acc"][k])
        rec[f"{split}_loss"] = None if failed else _finite(ev["loss"][k])
      members.append(rec)
    return self._header(members)


def annotate_status(results: Dict[str, Any], metrics_path: Optional[str] = None) -> None:
  """Give every member of ``results`` a ``status`` that says what went wrong, in place.

  ``failed: non-finite loss at search epoch 3`` (the first epoch whose ``metrics.jsonl`` record
  marks the member failed), ``degenerate: all channels of group g_a pruned (layers conv_a)``, or
  ``degenerate: non-finite cost ...``; ``ok`` otherwise. Also sets ``failed_at`` (``'<phase> epoch
  <e>'`` or None), ``degenerate_groups`` and ``nonfinite_costs`` (cost names whose value is not
  finite, written as null in ``costs_soft`` / ``costs_argmax``). Idempotent.

  Args:
    results: the results of a sweep (``members`` records with ``failed``, ``groups``, costs).
    metrics_path: the run's ``metrics.jsonl`` (for the failure epoch; optional).
  """
  members = results["members"]
  n = len(members)
  failed_at: List[Optional[str]] = [None] * n
  if metrics_path and os.path.exists(metrics_path):
    with open(metrics_path) as f:
      for line in f:
        try:
          rec = json.loads(line)
        except ValueError:
          continue
        flags = rec.get("failed")
        if not isinstance(flags, list) or len(flags) != n or rec.get("phase") == "warmup":
          continue  # (the shared warm-up and PIT's single-member stage have other member axes)
        for k, bad in enumerate(flags):
          if bad and failed_at[k] is None:
            failed_at[k] = f"{rec['phase']} epoch {rec['epoch']}"
  # PIT members are float networks: their hardware costs are null by design, not non-finite.
  float_costs = results.get("method") == "pit"
  for k, m in enumerate(members):
    gone = sorted(g for g, v in (m.get("groups") or {}).items()
                  if isinstance(v, dict) and v.get("kept") == 0)
    layers = [l for l, v in (m.get("layers") or {}).items() if v.get("group") in gone]
    bad_costs = {} if float_costs else {
        kind: sorted(c for c, v in (m.get(f"costs_{kind}") or {}).items() if v is None)
        for kind in ("soft", "argmax")}
    bad_costs = {kind: v for kind, v in bad_costs.items() if v}
    m["failed_at"] = failed_at[k] or m.get("failed_at")
    m["degenerate_groups"] = gone
    m["nonfinite_costs"] = bad_costs
    notes = []
    if gone:
      notes.append(f"all channels of group{'s' if len(gone) > 1 else ''} {', '.join(gone)} pruned"
                   f" (layers {', '.join(layers)})")
    if bad_costs:
      notes.append("non-finite cost " + ", ".join(f"{', '.join(v)} ({kind})"
                                                 for kind, v in bad_costs.items()))
    if m.get("failed"):
      head = "failed: non-finite loss" + (f" at {m['failed_at']}" if m["failed_at"] else "")
    elif notes:
      head = "degenerate: " + notes.pop(0)
    else:
      head = "ok"
    m["status"] = "; ".join([head] + notes)


PHASE_TAGS = {"warmup": 0, "search": 1, "finetune": 2, "pit_search": 3, "pit_finetune": 4}


def _host_flags(ex) -> Dict[str, np.ndarray]:
  return {f: ex.host_field(f) for f in ("failed", "stopped", "best_epoch", "temperature")}


def init_distributed(config: ml_collections.ConfigDict) -> None:
  """``jax.distributed.initialize`` from the ``distributed`` section (once per process).

  Must run before anything touches a JAX backend (``jax.devices()``, ``jax.process_count()``, any
  computation): that is why the check below is ``is_initialized`` and not ``process_count``. Empty
  or zero fields are left to JAX's auto-detection (SLURM, Cloud TPU, ...).

  Args:
    config: a sweep config; its ``distributed`` section gives ``coordinator_address``,
      ``num_processes``, ``process_id`` and (optional) ``coordinator_bind_address``.

  Raises:
    ConfigError: ``process_id`` outside ``[0, num_processes)``.
  """
  d = config.distributed
  num, pid = int(d.num_processes), int(d.process_id)
  if num > 0 and not 0 <= pid < num:
    raise _field_error("distributed.process_id", f"must be in [0, {num}), got {pid}")
  if jax.distributed.is_initialized():
    return
  # CPU processes exchange collectives through gloo (the default in recent JAX; older ones had no
  # CPU collectives unless asked, and a multi-process CPU computation then fails).
  if jax.config.jax_cpu_collectives_implementation in (None, "none"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=d.coordinator_address or None,
                             num_processes=num or None,
                             process_id=pid if num else None,
                             coordinator_bind_address=d.get("coordinator_bind_address") or None)


def run_sweep(config: ml_collections.ConfigDict, workdir: str, *, dataset=None,
              progress: bool = True) -> Dict[str, Any]:
  """Run (or resume) a sweep in ``workdir``.

  Args:
    config: a sweep config (see :func:`base_config`); validated first (:func:`validate_config`).
    workdir: the run's directory; an interrupted run there is resumed from its last checkpoint.
    dataset: optional :class:`jpq_jax.data.Dataset` (default: loaded from ``config.data``).
    progress: show tqdm progress bars.

  Returns:
    The results (``members``: accuracy, costs, per-layer bits, ...), also in ``results.json``.

  Raises:
    ConfigError: invalid config (before anything is compiled).
    SweepInterrupted: SIGINT (Ctrl-C) or SIGTERM arrived; the sweep stopped at the next training
      step and saved it there (the same call resumes it, bit for bit).
  """
  if config.distributed.enabled:
    init_distributed(config)
  # The config alone here (Sweep() resolves the method); Sweep.run checks it against the work
  # directory's run first thing, once (reading config.json and printing resume notes once).
  validate_config(config)
  return Sweep(config, workdir, dataset=dataset, progress=progress).run()
