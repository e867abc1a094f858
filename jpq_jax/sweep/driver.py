"""The sweep driver: the protocol of METHOD.md §6, top to bottom (:class:`Sweep`, :func:`run_sweep`).

A float warm-up shared by every member (reused from its checkpoint when present), conversion to
search form (BatchNorm folded, weights compensated), the joint search (loss = CE + lambda * cost),
then fine-tuning of the argmax architecture; results, then the Pareto front. Each phase selects,
per member, the best epoch on the validation metric measured in eval (argmax) mode, and reloads it
(with its optimizer state) at the end of the phase. The ``pit`` method runs PIT's two stages
instead of the search and fine-tuning; ``pit_mixprec`` runs PIT's stages before the search.

The run resumes from where its work directory stands: every epoch and phase boundary is a
checkpoint (the checkpoint step counts epochs over all phases: warm-up epochs ``1..e_w``, search
start ``e_w + 1``, search epochs, fine-tune start ``e_w + e_s + 2``, fine-tune epochs, ``done``).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Dict, Optional

import jax
import ml_collections

from jpq_jax import checkpoint as ckpt_lib
from jpq_jax import train as T
from jpq_jax.sweep import stages
from jpq_jax.sweep.build import (_loader_cls, build_model_from_config, build_task, load_dataset,
                                 pareto_metric_of, user_float_variables)
from jpq_jax.sweep.config import _field_error, members_of, resolve_method
from jpq_jax.sweep.distributed import _barrier, _host, _saveable, init_distributed
from jpq_jax.sweep.executors import choose_strategy
from jpq_jax.sweep.interrupt import MidEpoch, _StopRequest, kill_point
from jpq_jax.sweep.phases import (make_ex, make_phase, make_train_loader, measure, phase_fns,
                                  run_phase)
from jpq_jax.sweep.progress import header_text
from jpq_jax.sweep.records import (_Log, annotate_status, read_only_results, write_final,
                                   write_run_record)
from jpq_jax.sweep.results import member_results, search_costs
from jpq_jax.sweep.states import (finetune_template, float_template, initial_states, padded,
                                  restore_members, resume_strategy, search_template)
from jpq_jax.sweep.validation import reported_costs, validate_config


class Sweep:
  """One sweep run in a work directory (see :func:`run_sweep`).

  The parts in the package's other modules take the sweep (``sw``) and read its state:

  Attributes:
    raw_cfg, cfg: the config as given (``config.json``, the resume check) and as trained (its
      method resolved, :func:`~jpq_jax.sweep.config.resolve_method`).
    method, workdir, is_main (process 0), progress (print progress).
    members: ``{'lam', 'seed'}`` per member, lambda-major; ``n`` of them; ``n_pad``: the member
      axis (padded for ``sharded``, :mod:`jpq_jax.sweep.states`).
    dataset, loader_cls, train_loader, steps: the data and the training steps per epoch.
    model, table, sample: the model, its layer table, a batch-1 input.
    task: the :class:`jpq_jax.tasks.Task` (loss, metrics, selection) bound to the dataset;
      cw: class weights (None unless ``train.class_weights``); report_costs: the cost models that
      can cost the model.
    strategy: how the member axis runs (:mod:`jpq_jax.sweep.executors`); ckpt: the epoch
      checkpointer.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, *, dataset=None,
               progress: bool = True):
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
    self._mid = MidEpoch(self.workdir, self.is_main)  # a run interrupted mid-epoch resumes there
    self._meta: Dict[str, Any] = {"times": {}}  # the checkpoint metadata of the run so far

  def _setup(self):
    """Load the data, build the model and its table, choose the strategy, open the checkpoints."""
    cfg = self.cfg
    if self.dataset is None:
      self.dataset = load_dataset(cfg)
    ds = self.dataset
    self.loader_cls = _loader_cls(cfg)
    self.model, self.table, self.sample = build_model_from_config(cfg, ds.num_classes,
                                                                  ds.input_shape)
    self.report_costs = reported_costs(cfg, self.table)
    self.cw = ds.class_weights if cfg.train.class_weights else None
    self.task = build_task(cfg, ds)
    # train.batch_size is the *global* batch, whatever the number of processes, so a run's numbers do
    # not depend on how many processes run it. This loader yields whole global batches (the same on
    # every process); run_phase picks the process-sharded one where the mesh splits the batch.
    if len(ds.train) < int(cfg.train.batch_size):
      raise _field_error("train.batch_size", f"{cfg.train.batch_size} is larger than the training "
                         f"split ({len(ds.train)} examples): lower it")
    self.train_loader = make_train_loader(self, local=False)
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
    self.n_pad = padded(self, self.n)

  def run(self) -> Dict[str, Any]:
    """Run (or resume) the sweep; returns the results (also written to ``results.json``)."""
    cfg = self.cfg
    validate_config(self.raw_cfg, self.workdir)
    os.makedirs(self.workdir, exist_ok=True)
    # Looked up on the package, where tests replace it to simulate a read-only directory.
    if not sys.modules[__package__]._writable(self.workdir):  # pylint: disable=protected-access
      return read_only_results(self.workdir, self.is_main)
    self._setup()
    # Every process has read the work directory (validate_config, checkpoints) before process 0
    # rewrites config.json.
    _barrier("jpq_sweep_start")
    if self.is_main:
      write_run_record(self.workdir, self.raw_cfg, self.cfg, self.strategy)
      if self.progress:
        print(header_text(self), file=sys.stderr, flush=True)
    step = self.ckpt.latest_step()
    meta = self.ckpt.meta(step) if step is not None else None
    log = _Log(self.workdir, step if step is not None else -1, self.is_main, self.members,
               cfg.search.cost)
    self._meta = meta or {"times": {}}
    phase = meta["phase"] if meta else "warmup"
    epoch = meta["epoch"] if meta else 0
    times = self._mid.find(step, meta, self._meta.get("times", {}))
    if times is not None:
      self._meta = dict(self._meta, times=times)
    if self.is_main and (step is not None or self._mid.point) and phase != "done":
      where = f"{phase} epoch {epoch}"
      if self._mid.point:
        where += f" step {self._mid.point['step']} (saved when it was interrupted)"
      print(f"jpq sweep: resuming {self.workdir} at {where}"
            + (f", from checkpoint step {step}" if step is not None else ""), file=sys.stderr)
    try:
      with self._stop:
        results = self._protocol(step, phase, epoch, log)
    finally:
      self.ckpt.close()
      log.close()
    if self.is_main:
      from jpq_jax import pareto  # pylint: disable=import-outside-toplevel
      # The metric that chooses the front changes no training: a rerun may choose it anew (runs of
      # jpq before 2026-12-01 chose on test accuracy by default; their rerun chooses on validation).
      results["pareto_metric"] = pareto_metric_of(cfg, self.task)
      annotate_status(results, os.path.join(self.workdir, "metrics.jsonl"))
      pareto.write_results(self.workdir, results)
    return results

  def _protocol(self, step, phase, epoch, log) -> Dict[str, Any]:
    """The protocol from where the work directory stands (checkpoint ``step``, in ``phase`` after
    ``epoch`` of its epochs): warm-up, search, fine-tune, results."""
    float_vars = None
    if phase == "warmup":
      float_vars = self._warmup_stage(step, epoch, log)
      phase, epoch = "search_init", 0
    if self.method == "pit" and phase == "search_init":  # PIT alone: its stages replace the rest
      return stages.run_pit(self, self._float_vars(float_vars), log)
    restored = step
    if phase in ("search_init", "search"):
      stacked = self._search_stage(step, phase, epoch, float_vars, log)
      phase, epoch, restored = "finetune", 0, None
    if phase == "finetune":
      if restored is not None:
        resume_strategy(self)
        stacked = restore_members(self, restored, finetune_template(self))
      return self._finetune_stage(stacked, epoch, log)
    return stages.finished(self, step)  # done before: its results from the files

  def _warmup_stage(self, step, epoch, log):
    """The float warm-up's variables: reused (``warmup.checkpoint``, this run's ``warmup/``), or
    trained (resumed from ``step``) and written to ``warmup/``."""
    warm_dir = os.path.join(self.workdir, "warmup")
    # This run's own warmup/ is reused only without a warm-up checkpoint: with one (killed after
    # writing warmup/, before the search's first checkpoint) the warm-up resumes from it with
    # nothing left to train, which also restores its metadata (best epoch) for the results.
    user = self.cfg.warmup.get("user_checkpoint") or ""
    if user and not os.path.exists(warm_dir):
      # The user's own trained model is the warm-up: its variables, converted once (issue 18).
      ckpt_lib.save_tree(warm_dir, user_float_variables(self.model, user))
    reuse = self.cfg.warmup.checkpoint or (warm_dir if os.path.exists(warm_dir)
                                           and (step is None or user) else "")
    if reuse:
      return ckpt_lib.load_tree(reuse, float_template(self))
    float_vars = stages.warmup(self, epoch, step, log)
    # Every process calls Orbax (it synchronises them); process 0 writes the host arrays.
    ckpt_lib.save_tree(warm_dir, float_vars)
    return float_vars

  def _float_vars(self, float_vars):
    """``float_vars``, or the warm-up model of ``warmup/`` when this invocation did not train it."""
    if float_vars is None:
      float_vars = ckpt_lib.load_tree(os.path.join(self.workdir, "warmup"), float_template(self))
    return float_vars

  def _search_stage(self, step, phase, epoch, float_vars, log):
    """The search (started from the warm-up model, or resumed from ``step``); the fine-tuning's
    initial states, saved as its first checkpoint."""
    cfg = self.cfg
    e_w, e_s = int(cfg.warmup.epochs), int(cfg.search.epochs)
    if phase == "search_init":
      svars = stages.search_variables(self, self._float_vars(float_vars), log)
      tx, _, _, _ = phase_fns(self, "search")
      stacked = initial_states(self, "search", tx, [svars] * self.n, float(cfg.search.temperature))
      if self.strategy == "measure" and self.n > 1:
        self.strategy = measure(self, "search", stacked)
      epoch = 0
      self._meta = dict(self._meta, phase="search", epoch=0, strategy=self.strategy)
      self._save(e_w + 1, stacked, self._meta)
    else:
      resume_strategy(self)
      stacked = restore_members(self, step, search_template(self))
    _, ex = make_ex(self, "search", self.n_pad)
    ex.set_states(stacked)
    run_phase(self, make_phase(self, "search", ex.n), ex, epoch, e_w + 1, self._meta, log)
    ex.map(T.restore_best)
    search_final = ex.stacked()
    costs = search_costs(self, search_final)
    failed = _host(search_final.failed)
    self._meta = dict(self._meta, search_costs=costs,
                      search_best_epoch=[int(v) for v in _host(search_final.best_epoch)[:self.n]],
                      search_failed=[bool(v) for v in failed[:self.n]],
                      final_temperature=[float(v) for v in
                                         _host(search_final.temperature)[:self.n]])
    stacked = stages.finetune_states(self, search_final, failed)
    self._meta = dict(self._meta, phase="finetune", epoch=0)
    self._save(e_w + e_s + 2, stacked, self._meta)
    return stacked

  def _finetune_stage(self, stacked, epoch, log) -> Dict[str, Any]:
    """Fine-tune the frozen architectures from ``epoch``; the results, ``final/`` and ``done``."""
    cfg = self.cfg
    base_f = int(cfg.warmup.epochs) + int(cfg.search.epochs) + 2
    _, ex = make_ex(self, "finetune", self.n_pad)
    ex.set_states(stacked)
    run_phase(self, make_phase(self, "finetune", ex.n), ex, epoch, base_f, self._meta, log)
    ex.map(T.restore_best)
    final = ex.stacked()
    results = member_results(self, ex, final)
    write_final(self.workdir, final, self.n)
    done = base_f + int(cfg.finetune.epochs) + 1
    log.write_final(results, done)
    self._meta = dict(self._meta, phase="done", epoch=0)
    self._save(done, final, self._meta)
    return results

  def _save(self, step, state, meta):
    """Checkpoint ``state`` as ``step`` with ``meta`` (with the tests' kill points around it)."""
    # The executors donate their state to the next step while the async write may still be reading
    # it: hand Orbax copies. Process-local arrays become host numpy (with several processes they
    # hold the same values everywhere, and Orbax writes numpy from process 0 only); arrays spread
    # over processes get a device copy, of which every process writes its own shards.
    state = _saveable(state)
    point = (self.cfg, meta.get("phase"), meta.get("epoch"))
    kill_point(*point, "before_save")
    self.ckpt.save(step, state, meta)
    self._mid.drop()  # a mid-epoch state older than this step is of no further use
    kill_point(*point, "during_save")
    if str(self.cfg.debug.get("kill_at", "")).endswith(":after_save"):
      self.ckpt.wait()  # only when a kill is requested: "after" means committed
    kill_point(*point, "after_save")

  # The parts as methods, for benchmarks/ and tests/ that drive a sweep piece by piece.
  def _phase_fns(self, phase: str):
    return phase_fns(self, phase)

  def _initial_states(self, phase: str, tx, variables_per_member, temperature=1.0):
    return initial_states(self, phase, tx, variables_per_member, temperature)

  def _make_ex(self, phase: str, n: int, strategy: Optional[str] = None):
    return make_ex(self, phase, n, strategy)

  def _warmup(self, start_epoch, step, log) -> Dict[str, Any]:
    return stages.warmup(self, start_epoch, step, log)

  def _search_template(self):
    return search_template(self)


def run_sweep(config: ml_collections.ConfigDict, workdir: str, *, dataset=None,
              progress: bool = True) -> Dict[str, Any]:
  """Run (or resume) a sweep in ``workdir``.

  Args:
    config: a sweep config (see :func:`~jpq_jax.sweep.config.base_config`); validated first
      (:func:`~jpq_jax.sweep.validation.validate_config`).
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
