"""A sweep's config: every field with its defaults, the demo preset, what a method resolves to.

This module needs no JAX (the ``jpq`` command's light paths read :data:`FREE_FORM_GROUPS` from it);
the checks of a config against the registries and the work directory are in
:mod:`jpq_jax.sweep.validation`.
"""

from __future__ import annotations

import math
import signal
import sys
from typing import Any, Dict, List

import ml_collections

STRATEGIES = ("auto", "measure", "loop", "vmap", "sharded")
# data.loader (jpq_jax.data.make_loader) and data.worker_type (jpq_jax.data.GrainLoader); kept here,
# without importing the data package, so that the config needs neither grain nor numpy.
DATA_LOADERS = ("auto", "numpy", "grain")
DATA_WORKER_TYPES = ("threads", "processes")
# The joint method and the paper's baselines (METHOD.md §7, §10), selected by ``config.method``.
METHODS = ("joint", "mixprec", "layerwise", "fixed", "pit", "pit_mixprec")
# Groups whose keys are free-form (a dataset's / a user model's keyword options): not checked against the schema,
# and an override may add a key to them (jpq_jax.cli.FREE_FORM is this tuple).
FREE_FORM_GROUPS = ("data.options", "task.options", "model.kwargs")
# Learning-rate schedules: their fields depend on the kind (train.lr_factor), so they are checked
# per kind (validation._check_schedules) instead of against base_config's (exp) schedule.
SCHEDULE_FIELDS = {"constant": (), "exp": ("gamma",), "multistep": ("milestones", "factors"),
                   "step": ("step_size", "gamma"), "cosine": ()}
SCHEDULE_GROUPS = ("warmup.schedule", "search.schedule", "finetune.schedule",
                   "pit.search.schedule", "pit.finetune.schedule")
# When debug.kill_at may kill at a checkpoint (jpq_jax.sweep.interrupt.kill_point).
KILL_WHEN = ("before_save", "during_save", "after_save")
# Signals that stop a sweep cleanly at the next training step (SIGTERM: what schedulers of
# preemptible machines send before they kill; SIGINT: Ctrl-C).
STOP_SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM}


class ConfigError(ValueError):
  """An invalid sweep configuration (raised before anything is compiled); names the field."""


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
    data: ``name`` (``demo``, ``cifar10``, ``gsc``, ``tiny_imagenet``, ``folder:<path>``, or any
      TFDS dataset prepared as array_record, ``tfds:<builder>[/<config>]``, streamed), ``data_dir``,
      ``options`` (passed to :func:`jpq_jax.data.load`), ``loader`` (``auto``: today's numpy
      loader for in-memory splits, the grain loader for streamed ones and for a user
      augmentation callable; ``numpy``; ``grain``; both give the same batches bit for bit, see
      :func:`jpq_jax.data.make_loader`), ``workers`` (the grain loader's parallel batches, 0 = a
      background thread) and ``worker_type`` (``threads`` or ``processes``).
    model: ``name`` (built-in, a :func:`jpq_jax.register_model` name, or an import path
      ``"pkg.module:Class"`` of a plain Flax model, converted with :func:`jpq_jax.searchable`),
      ``kwargs`` (the user model's keyword arguments) and the :class:`~jpq_jax.SearchSpace` fields.
    task: the loss and the metrics (:mod:`jpq_jax.tasks`): ``name`` (``classification``, the
      default; ``regression``; ``reconstruction``; or an import path ``"my_pkg.tasks:MyTask"``)
      and ``options`` (keyword options of the task, free-form: classification's
      ``label_smoothing`` and ``class_weights``, regression's ``target``).
    train: ``batch_size``, ``eval_batch_size``, ``monitor`` (the validation metric each phase
      selects its best epoch on: ``auto``, the task's own (classification: ``acc``, the accuracy,
      maximised; regression/reconstruction: ``loss``); ``loss``: val loss min, including lambda *
      argmax cost in the search; or another metric of the task, in its direction), ``patience``,
      ``earlystop_start`` (epochs <= it never count, when the phase has more epochs than it),
      ``class_weights``, ``label_smoothing`` (classification's options as fields of older
      configs; ``task.options`` may give them instead), ``remat`` (``none``; ``dots``: keep only
      convolution/matmul outputs
      for the backward and recompute the rest, less memory per member on accelerators, see
      :func:`jpq_jax.train.make_train_step`).
    warmup / search / finetune: ``epochs``, ``optimizer`` (``adam``/``sgd``, lr, wd, momentum,
      nesterov), ``schedule`` (see :func:`jpq_jax.train.lr_factor`); warm-up ``checkpoint`` (a
      ``warmup/`` directory of an earlier run to reuse), ``user_checkpoint`` (the trained
      variables of the user's own plain Flax model, ``model.name = "pkg.module:Class"``, saved with
      :func:`jpq_jax.checkpoint.save_tree`: converted with :func:`jpq_jax.convert_variables`,
      they are the warm-up, which is then not trained) and ``train_size`` (jpq's option, 0 = off:
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
      metric that chooses the front's points, ``<split>_<task metric>``: ``auto``, the default,
      is the validation split's task metric (classification: ``val_acc``; regression:
      ``val_loss``); ``test_acc`` is the explicit choice that lets the test set pick them; the
      test metric is reported either way),
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
  c.data = ml_collections.ConfigDict(dict(name="cifar10", data_dir="", options={}, loader="auto",
                                          workers=0, worker_type="threads"))
  c.data.options = ml_collections.ConfigDict()
  c.model = ml_collections.ConfigDict(dict(
      name="resnet8", w_precisions=(0, 2, 4, 8), a_precisions=(8,), input_precisions=(),
      granularity="channel", clip_init=6.0, input_clip_init=1.0, input_signed=False,
      input_signed_clips=(-6.0, 6.0), activation_mixture="fused", keep_alive=0, kwargs={}))
  c.task = ml_collections.ConfigDict(dict(name="classification", options={}))
  c.task.options = ml_collections.ConfigDict()
  c.train = ml_collections.ConfigDict(dict(
      batch_size=32, eval_batch_size=256, monitor="auto", patience=50, earlystop_start=20,
      class_weights=False, label_smoothing=0.0, remat="none"))
  c.warmup = ml_collections.ConfigDict(dict(
      epochs=500, optimizer=_opt(), schedule=ml_collections.ConfigDict(dict(kind="exp", gamma=0.99)),
      checkpoint="", user_checkpoint="", train_size=0))
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
      async_checkpoint=True, pareto_cost="", pareto_metric="auto", xla_options="auto",
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


def _field_error(field: str, msg: str) -> ConfigError:
  """A :class:`ConfigError` that names ``field``."""
  return ConfigError(f"config field {field!r}: {msg}")


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
  models = sys.modules.get("jpq_jax.models")  # only a loaded registry can hold registered names
  if models is not None:
    # A jpq_jax.register_model name becomes its import path: config.json's resolved config then
    # rebuilds the model in a fresh process (restore_member, jpq export, a resume).
    c.model.name = models.canonical_name(c.model.name)
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
