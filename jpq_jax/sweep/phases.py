"""The training phases of a sweep, all of one shape (METHOD.md §6.4, §7.1).

A phase is

* **data**: the training split's loader and the steps per epoch (:class:`Phase`);
* **a step**: the pure single-member training step, its evaluation and end-of-epoch functions
  (:func:`phase_fns`: :func:`jpq_jax.train.make_train_step` or its PIT counterpart), run over the
  members by an executor (:mod:`jpq_jax.sweep.executors`);
* **per-epoch rules**: the learning-rate factor of its schedule, the members' lambdas
  (:meth:`Phase.strengths`: the search's, ramped with ``search.incremental_strength``; PIT's
  strengths; 0 elsewhere);
* **a selection**: the validation metric of the task (:mod:`jpq_jax.tasks`) each member's best
  epoch is chosen on (:meth:`Phase.selection`: ``train.monitor``, by default the task's own, e.g.
  the accuracy; the loss with lambda times the argmax cost in the search), which the end-of-epoch
  function tracks with early stopping; at the end of the phase the driver reloads every member's
  best epoch (``ex.map(train.restore_best)``).

:func:`run_phase` runs any phase's epochs: the warm-up (one float member), the search, the
fine-tuning and PIT's two stages. It writes one ``metrics.jsonl`` record per epoch and, where the
phase is checkpointed, an epoch checkpoint.
"""

from __future__ import annotations

# The functions here are the Sweep's own parts: they read and set its private state (_meta,
# _mid, _stop, _save).
# pylint: disable=protected-access

import dataclasses
import time
from typing import Any, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jpq_jax import train as T
from jpq_jax.compiler import compiler_options
from jpq_jax.sweep.build import monitor_of
from jpq_jax.sweep.config import temperature_decay_of
from jpq_jax.sweep.distributed import _host
from jpq_jax.sweep.executors import _host_flags, _stack, _to_host, make_executor
from jpq_jax.sweep.interrupt import kill_point, signal_point
from jpq_jax.sweep.progress import _PhaseProgress, epoch_text
from jpq_jax.sweep.records import _finite, _Log

# Folded into each member's key per phase (jpq_jax.sweep.states.initial_states): a new stream of
# randomness per phase, the same whatever phases ran before.
PHASE_TAGS = {"warmup": 0, "search": 1, "finetune": 2, "pit_search": 3, "pit_finetune": 4}


def phase_cfg(cfg, phase: str):
  """The config section of a phase (``pit_search`` -> ``pit.search``)."""
  if phase.startswith("pit_"):
    return cfg.pit[phase[len("pit_"):]]
  return cfg[phase]


@dataclasses.dataclass
class Phase:
  """The data and per-epoch rules of one phase (see the module docstring).

  Attributes:
    name: ``warmup``, ``search``, ``finetune``, ``pit_search`` or ``pit_finetune``.
    epochs: the phase's epochs; ``schedule``: its learning-rate schedule (config section).
    loader: the training split's loader (whole global batches); ``steps``: steps per epoch.
    n: the real members (the first ``n`` of the executor's, possibly padded, member axis).
    lams: the real members' lambdas, padded with 0 to the executor's member axis.
    incremental: ``search.incremental_strength`` (the search's lambdas ramp up, METHOD.md §6.1).
    monitor: the task's metric :meth:`selection` measures (``train.monitor`` resolved).
    checkpointed: whether each epoch is checkpointed (the PIT stages are not).
    higher_is_better: the direction of ``monitor``.
  """
  name: str
  epochs: int
  schedule: Any
  loader: Any
  steps: int
  n: int
  lams: List[float]
  incremental: bool
  monitor: str
  checkpointed: bool = True
  higher_is_better: bool = True

  def strengths(self, e: int) -> np.ndarray:
    """The lambda of every member at epoch ``e`` (``(n_exec,)`` float32)."""
    if self.name == "search":
      return T.strength_at(self.lams, e, self.epochs, self.incremental)
    if self.name == "pit_search":
      return np.asarray(self.lams, np.float32)
    return np.zeros((len(self.lams),), np.float32)

  def selection(self, val: Dict[str, np.ndarray], lam_e: np.ndarray,
                hard_cost: Optional[np.ndarray]) -> np.ndarray:
    """The metric (larger is better) each member's best epoch is chosen on; -inf where not finite.

    ``loss``: minus the validation loss, plus lambda times the argmax cost in the search (the
    search's objective); another metric: its value, negated where lower is better.

    Args:
      val: the epoch's validation metrics of the task per member (argmax mode).
      lam_e: the members' lambdas this epoch.
      hard_cost: the search's argmax cost per member (None in other phases).
    """
    if self.monitor == "loss":
      loss = val["loss"] + (lam_e * hard_cost if hard_cost is not None else 0.0)
      metric = -loss
    else:
      metric = val[self.monitor] if self.higher_is_better else -val[self.monitor]
    return np.where(np.isfinite(metric), metric, -np.inf).astype(np.float32)


def make_phase(sw, name: str, n_exec: int, loader=None, steps: Optional[int] = None,
               n: Optional[int] = None, checkpointed: bool = True) -> Phase:
  """The :class:`Phase` ``name`` of the sweep ``sw`` for an executor of ``n_exec`` members.

  Args:
    sw: the set-up :class:`~jpq_jax.sweep.driver.Sweep`.
    name: the phase.
    n_exec: the executor's member axis (padded members included).
    loader, steps: the training data (default: the run's training loader and steps per epoch).
    n: the real members (default ``sw.n``).
    checkpointed: whether each epoch is checkpointed.

  Returns:
    The phase.
  """
  cfg = sw.cfg
  pc = phase_cfg(cfg, name)
  n = sw.n if n is None else n
  monitor = monitor_of(cfg, sw.task)
  return Phase(name=name, epochs=int(pc.epochs), schedule=pc.schedule,
               loader=sw.train_loader if loader is None else loader,
               steps=sw.steps if steps is None else steps, n=n,
               lams=[m["lam"] for m in sw.members[:n]] + [0.0] * (n_exec - n),
               incremental=bool(cfg.search.incremental_strength), monitor=monitor,
               checkpointed=checkpointed,
               higher_is_better=bool(sw.task.metrics[monitor].higher_is_better))


def phase_fns(sw, phase: str):
  """The optimizer and the single-member step, evaluation and end-of-epoch functions of a phase.

  Args:
    sw: the set-up sweep (its model, layer table, config and task).
    phase: the phase.

  Returns:
    ``(tx, step, evaluate, end)`` (see :mod:`jpq_jax.train` and :mod:`jpq_jax.pit`).
  """
  cfg = sw.cfg
  pc = phase_cfg(cfg, phase)
  if phase.startswith("pit_"):
    from jpq_jax import pit  # pylint: disable=import-outside-toplevel
    search = phase == "pit_search"
    tx = T.make_optimizer(pc.optimizer.to_dict(), pc.arch_optimizer.to_dict() if search else None)
    make = pit.make_search_step if search else pit.make_finetune_step
    step = make(sw.model, sw.table, tx, task=sw.task)
    evaluate = pit.make_eval_step(sw.model, sw.table, phase, task=sw.task)
    start = T.earlystop_start(int(pc.epochs), int(cfg.train.earlystop_start))
    patience = int(cfg.train.patience)
    end = lambda s, m: T.end_epoch(s, m, start=start, patience=patience)
    return tx, step, evaluate, end
  tx = T.make_optimizer(pc.optimizer.to_dict(),
                        pc.arch_optimizer.to_dict() if phase == "search" else None)
  step = T.make_train_step(sw.model, sw.table, phase, tx, cost=cfg.search.cost,
                           sampling=cfg.search.sampling, task=sw.task,
                           remat=str(cfg.train.get("remat", "none")))
  evaluate = T.make_eval_step(sw.model, phase, task=sw.task)
  start = T.earlystop_start(int(pc.epochs), int(cfg.train.earlystop_start))
  decay = temperature_decay_of(cfg) if phase == "search" else 0.0
  patience = int(cfg.train.patience)
  end = lambda s, m: T.end_epoch(s, m, start=start, patience=patience, temperature_decay=decay)
  return tx, step, evaluate, end


def make_ex(sw, phase: str, n: int, strategy: Optional[str] = None):
  """``(tx, executor)`` of a phase for ``n`` members with ``strategy`` (default the run's)."""
  tx, step, evaluate, end = phase_fns(sw, phase)
  xla = compiler_options(sw.cfg.sweep.get("xla_options", "auto"))
  return tx, make_executor(strategy or sw.strategy, step, evaluate, end, n,
                           int(sw.cfg.sweep.data_devices), compiler_options=xla,
                           member_chunk=int(sw.cfg.sweep.get("member_chunk", 0)))


def make_train_loader(sw, local: bool, split=None):
  """A shuffled training loader of ``split`` (default the training split).

  Args:
    sw: the set-up sweep (config, dataset, loader class).
    local: this process's slice of every global batch (the Loader's process sharding) instead
      of whole global batches (the same on every process).
    split: the examples (default ``sw.dataset.train``).
  """
  cfg, ds = sw.cfg, sw.dataset
  split = ds.train if split is None else split
  bs, pc = int(cfg.train.batch_size), jax.process_count()
  if local:  # this process's slice of every global batch (Loader's process sharding)
    return sw.loader_cls(split, bs // pc, seed=int(cfg.seed), shuffle=True,
                         augment=ds.augment, drop_remainder=True)
  return sw.loader_cls(split, bs, seed=int(cfg.seed), shuffle=True, augment=ds.augment,
                       drop_remainder=True, process_index=0, process_count=1)


def _train_loader(sw, ex, loader):
  """The loader feeding ``ex``: local slices where its mesh splits the batch over processes."""
  ex.local_batch = ex.splits_batch(int(sw.cfg.train.batch_size))
  if not ex.local_batch:
    return loader
  if getattr(sw, "_local_loader", None) is None:
    sw._local_loader = make_train_loader(sw, local=True)
    assert sw._local_loader.steps_per_epoch == sw.train_loader.steps_per_epoch
  return sw._local_loader


def _padded_batches(split, bs: int, loader_cls):
  """Batches of ``split`` in order, the last padded to ``bs`` with a mask of its real rows."""
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


def _evaluate(ex, split, bs, loader_cls, n, task, params_of=None) -> Dict[str, np.ndarray]:
  """The task's metrics of every member of ``ex`` on ``split`` (evaluation mode: argmax theta).

  Returns:
    ``{metric: (n_exec,) host array}`` for every metric of ``task`` (classification: ``acc``,
    ``loss``).
  """
  tot = None
  for x, y, mask in _padded_batches(split, bs, loader_cls):
    out = ex.evaluate(x, y, mask) if params_of is None else ex.evaluate(x, y, mask, params_of)
    tot = out if tot is None else jax.tree_util.tree_map(jnp.add, tot, out)
  return task.finish(_to_host(tot))


def measure(sw, phase: str, stacked) -> str:
  """Time a few steps of loop and vmap/sharded on copies of the states; the faster's name.

  The step times go to ``sw.measured`` (reported in ``results.json``).
  """
  cands = ["loop", "sharded" if jax.device_count() > 1 else "vmap"]
  x, y = next(iter(sw.train_loader.epoch(0)))
  lam = np.asarray([m["lam"] for m in sw.members] + [0.0] * (sw.n_pad - sw.n), np.float32)
  zeros = np.zeros((sw.n_pad,), np.float32)
  best, times = None, {}
  for c in cands:
    _, ex = make_ex(sw, phase, sw.n_pad, c)
    ex.set_states(jax.tree_util.tree_map(jnp.copy, stacked))
    jax.block_until_ready(ex.train_step(x, y, lam, np.float32(1.0), zeros))
    t0 = time.perf_counter()
    for _ in range(3):
      out = ex.train_step(x, y, lam, np.float32(1.0), zeros)
    jax.block_until_ready(out)
    times[c] = (time.perf_counter() - t0) / 3
    if best is None or times[c] < times[best]:
      best = c
  sw.measured = times
  return best


def _epoch_record(ph: Phase, e: int, ck: int, lr, lam_e, train, val, hard_cost, flags):
  """The ``metrics.jsonl`` record of epoch ``e`` (the real members only): ``train_loss``,
  ``train_task``, ``train_<m>`` for the task's training metrics, ``val_<m>`` for its metrics."""
  n = ph.n
  rec = {"phase": ph.name, "epoch": e, "ckpt": ck, "lr_factor": float(lr),
         "temperature": [float(t) for t in flags["temperature"][:n]],
         "lambda": [float(l) for l in lam_e[:n]],
         "train_loss": [_finite(v) for v in train["loss"][:n]],
         "train_task": [_finite(v) for v in train["task"][:n]]}
  for k in sorted(set(train) - {"loss", "task", "cost", "ok"}):
    rec[f"train_{k}"] = [_finite(v) for v in train[k][:n]]
  for k in val:
    rec[f"val_{k}"] = [_finite(v) for v in val[k][:n]]
  rec.update({"failed": [bool(v) for v in flags["failed"][:n]],
              "stopped": [bool(v) for v in flags["stopped"][:n]],
              "best_epoch": [int(v) for v in flags["best_epoch"][:n]]})
  if hard_cost is not None or ph.name == "pit_search":
    rec["cost_soft"] = [_finite(v) for v in train["cost"][:n]]
  if hard_cost is not None:
    rec["cost_argmax"] = [_finite(v) for v in hard_cost[:n]]
  return rec


def run_phase(sw, ph: Phase, ex, start_epoch: int, ckpt_base: int, meta: Dict[str, Any],
              log: _Log) -> None:
  """Train the members of ``ex`` through the epochs of ``ph`` from ``start_epoch``.

  Stops early when every real member has failed or early-stopped. After every epoch: the record
  in ``metrics.jsonl``, the progress line, and (``ph.checkpointed``) the checkpoint of step
  ``ckpt_base + epoch + 1`` through ``sw._save``; ``sw._meta`` is the phase's metadata so far.
  A stop request (SIGINT/SIGTERM) saves the state before the next step and raises
  :class:`~jpq_jax.sweep.interrupt.SweepInterrupted`.

  Args:
    sw: the set-up sweep.
    ph: the phase.
    ex: its executor, holding the members' states.
    start_epoch: the first epoch to run (a resumed phase continues).
    ckpt_base: the checkpoint step before the phase's first epoch.
    meta: the checkpoint metadata so far.
    log: the metrics log.
  """
  cfg, phase, n = sw.cfg, ph.name, ex.n
  cost_fn = None
  if phase == "search":
    cost_jit = jax.jit(jax.vmap(T.make_cost_fn(sw.table, (cfg.search.cost,))))
    cost_fn = lambda st: cost_jit(st.params["arch"], st.temperature)
  loader = _train_loader(sw, ex, ph.loader)
  # A run interrupted mid-epoch continues at the step it stopped before, with the sums of the
  # epoch's training metrics so far (so the epoch's records are those of an uninterrupted run).
  start_step, sums = 0, None
  point = sw._mid.take_point(phase, start_epoch)
  if point is not None:
    start_step = int(point["step"])
    sums = {k: jnp.asarray(np.asarray(v, np.float32)) for k, v in point["sums"].items()}
  bar = _PhaseProgress(phase, ph.epochs, start_epoch, ph.steps, start_step,
                       sw.progress and sw.is_main)
  t_phase = time.perf_counter()
  for e in range(start_epoch, ph.epochs):
    st = _host_flags(ex)
    if np.all(st["failed"][:ph.n] | st["stopped"][:ph.n]):
      break
    lr = np.float32(T.lr_factor(ph.schedule, e, ph.epochs))
    lam_e = ph.strengths(e)
    first = start_step if e == start_epoch else 0
    if e != start_epoch:
      sums = None
    for i, (x, y) in enumerate(loader.epoch(e, start=first), start=first):
      if i >= ph.steps:
        break
      kill_point(cfg, phase, e, f"step{i}")
      signal_point(cfg, phase, e, i)
      if sw._stop.requested():
        bar.close()
        sw._mid.save_and_raise(sw._stop, sw.ckpt, phase, ex, e, i, sums, meta,
                               t_phase, ph.checkpointed)
      poison = np.zeros((n,), np.float32)
      if (phase == "search" and cfg.debug.nan_member >= 0 and e == int(cfg.debug.nan_epoch)
          and i == 0):
        poison[int(cfg.debug.nan_member)] = np.nan
      bar.before_step()
      m = ex.train_step(x, y, lam_e, lr, poison)
      m = _stack(m) if isinstance(m, list) else m
      sums = m if sums is None else jax.tree_util.tree_map(jnp.add, sums, m)
      bar.after_step()
    train = {k: v / ph.steps for k, v in _to_host(sums).items()}
    val = _evaluate(ex, sw.dataset.val, int(cfg.train.eval_batch_size), sw.loader_cls, n,
                    sw.task)
    hard_cost = None
    if phase == "search":
      stacked = ex.stacked()
      hard_cost = _host(cost_fn(stacked)["hard"][cfg.search.cost])
    ex.end_epoch(ph.selection(val, lam_e, hard_cost))
    flags = _host_flags(ex)
    ck = ckpt_base + e + 1
    if sw.is_main:
      log.write(_epoch_record(ph, e, ck, lr, lam_e, train, val, hard_cost, flags))
    if bar.enabled:
      bar.epoch(e, epoch_text(phase, train, val, hard_cost, flags, ph.n, cfg.search.cost,
                              sw.task.metrics, sw.task.selection))
    meta = dict(meta, phase=phase, epoch=e + 1,
                times=dict(meta.get("times", {}),
                           **{phase: meta.get("times", {}).get(phase, 0.0)
                              + time.perf_counter() - t_phase}))
    t_phase = time.perf_counter()
    if ph.checkpointed:
      sw._save(ck, ex.stacked(), meta)
    sw._meta = meta
  bar.close()
