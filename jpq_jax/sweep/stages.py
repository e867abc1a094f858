"""The protocol's stages around the phases: the shared warm-up, the conversions between phases,
and PIT's stages (METHOD.md §6.4, §7).

* :func:`warmup`: the one float member (BatchNorm), trained once and shared by every member
  (DESIGN.md principle 7);
* :func:`search_variables`: the warm-up model converted to search form (BatchNorm folded,
  weights compensated); for ``pit_mixprec`` the PIT-pruned network with its 0 bits pinned;
* :func:`finetune_states`: the search's selected members frozen to their argmax architecture;
* :func:`pit_stage`, :func:`pit_for_mixprec`, :func:`run_pit`: PIT's search and fine-tuning of
  the exported float networks (not checkpointed per epoch: an interrupted PIT stage restarts from
  the warm-up model);
* :func:`finished`: a finished run's results, read back (or rebuilt from its last checkpoint).

Every function takes the set-up :class:`~jpq_jax.sweep.driver.Sweep` ``sw``.
"""

from __future__ import annotations

# The functions here are the Sweep's own parts: they read and set its private state (_meta,
# _mid, _stop, _save).
# pylint: disable=protected-access

import copy
import json
import os
import sys
from typing import Any, Dict

import jax
import jax.numpy as jnp
import numpy as np

from jpq_jax import checkpoint as ckpt_lib
from jpq_jax import train as T
from jpq_jax.ctx import Ctx
from jpq_jax.sweep.build import load_dataset
from jpq_jax.sweep.config import _field_error
from jpq_jax.sweep.distributed import _host, _host_tree
from jpq_jax.sweep.executors import _stack, _unstack
from jpq_jax.sweep.phases import make_ex, make_phase, make_train_loader, phase_fns, run_phase
from jpq_jax.sweep.records import _finite, final_damage, read_results, write_final
from jpq_jax.sweep.results import member_results, pit_results
from jpq_jax.sweep.states import (finetune_template, float_template, initial_states, padded,
                                  restore_members, resume_strategy, warmup_template)


def warmup(sw, start_epoch, step, log) -> Dict[str, Any]:
  """Train (or resume) the shared float warm-up; its best epoch's variables.

  Args:
    sw: the set-up sweep.
    start_epoch: the warm-up epochs already done.
    step: the checkpoint step to resume from (None: a fresh start).
    log: the metrics log.

  Returns:
    ``{'params', 'batch_stats'}`` of the best epoch; ``sw._meta['warmup_best_epoch']`` is set.
  """
  cfg = sw.cfg
  tx, _, _, _ = phase_fns(sw, "warmup")
  key = jax.random.PRNGKey(int(cfg.seed))
  k_init, k_train = jax.random.split(key)
  mid = sw._mid.take_checkpoint()
  if mid is not None:  # interrupted mid-epoch
    ick, ist = mid
    try:
      template_states = ick.restore(ist, warmup_template(sw))
    finally:
      ick.close()
  elif start_epoch > 0 and step is not None:
    template_states = sw.ckpt.restore(step, warmup_template(sw))
  else:
    v = jax.jit(lambda x: sw.model.init(k_init, x, Ctx.float()))(sw.sample)
    v = {k: v[k] for k in ("params", "batch_stats")}
    template_states = _stack([T.init_state("warmup", v, tx, key=k_train)])
  _, ex = make_ex(sw, "warmup", 1, "loop")
  ex.set_states(template_states)
  if int(cfg.warmup.epochs) > 0:
    loader, steps = sw.train_loader, sw.steps
    if int(cfg.warmup.get("train_size", 0) or 0):
      loader = warmup_loader(sw)
      steps = loader.steps_per_epoch
      if cfg.debug.max_steps_per_epoch:
        steps = min(steps, int(cfg.debug.max_steps_per_epoch))
    run_phase(sw, make_phase(sw, "warmup", 1, loader=loader, steps=steps, n=1), ex, start_epoch,
              0, sw._meta, log)
  ex.map(T.restore_best)
  st = ex.states[0]
  sw._meta = dict(sw._meta, warmup_best_epoch=int(st.best_epoch))
  return {**st.params, **st.extra}


def warmup_loader(sw):
  """The warm-up's loader with ``warmup.train_size``: a seeded subset of the whole training split.

  The dataset is loaded again without ``data.options.train_size``; the subset uses the same
  seed and tag as the data options' one, and both take a prefix of one seeded permutation of
  the split, so the other phases' (smaller) training subset is a subset of the warm-up's.

  Raises:
    ConfigError: the dataset was passed to run_sweep, or the subset is smaller than a batch.
  """
  cfg = sw.cfg
  if sw._given_dataset:
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
  return make_train_loader(sw, local=False, split=train)


def search_variables(sw, float_vars, log) -> Dict[str, Any]:
  """The search's starting variables (``params``, ``arch``) from the warm-up model.

  BatchNorm folded and the weights compensated (METHOD.md §2.8); for ``pit_mixprec`` the
  PIT-pruned, fine-tuned float network replaces the warm-up model (§7.2), without compensation
  (kept channels have theta_0 = 0 exactly), its pruned channels' 0 bit pinned.
  """
  from jpq_jax.fold import to_search  # pylint: disable=import-outside-toplevel
  if sw.method == "pit_mixprec":
    from jpq_jax import pit  # pylint: disable=import-outside-toplevel
    float_vars, masks = pit_for_mixprec(sw, float_vars, log)
    svars = to_search(sw.model, float_vars, sw.sample, table=sw.table, compensate=False)
    svars["arch"] = pit.pin_logits(svars["arch"], sw.table, masks)
    return svars
  return to_search(sw.model, float_vars, sw.sample, table=sw.table)


def finetune_states(sw, search_final, failed):
  """The fine-tuning's initial stacked states: every member's argmax architecture, frozen.

  Args:
    sw: the set-up sweep.
    search_final: the search's stacked states at each member's selected epoch.
    failed: the search's failed flags (host array of the padded member axis).

  Returns:
    The stacked fine-tuning states (a member failed in the search stays failed).
  """
  tx, _, _, _ = phase_fns(sw, "finetune")
  fz = jax.jit(jax.vmap(lambda p: T.finetune_variables(p, sw.table)))(search_final.params)
  # On the host: the new states are built per member, as process-local arrays.
  per = _unstack(_host_tree(fz), sw.n_pad)[:sw.n]
  stacked = initial_states(sw, "finetune", tx, per)
  return stacked.replace(failed=jnp.asarray(failed))


def pit_stage(sw, float_vars, log, members):
  """PIT search then fine-tuning of the exported networks, for ``members`` (lambda = strength).

  Not checkpointed per epoch: an interrupted PIT stage restarts from the warm-up model.

  Returns:
    ``(ex, final, masks, soft_params, search_failed)``: the fine-tuning executor and its final
    stacked states, the binary masks of every member (``{group: (C,) numpy}``), the soft
    effective weight count at the selected search epoch, the search's failed flags.
  """
  from jpq_jax import pit  # pylint: disable=import-outside-toplevel
  # The stage's members replace the run's while it runs (the states, padding and phases follow).
  saved = (sw.members, sw.n, sw.n_pad)
  sw.members, sw.n = list(members), len(members)
  sw.n_pad = padded(sw, sw.n)
  # PIT states never meet the search states: loop/vmap/sharded as chosen, measure -> loop.
  strat = sw.strategy if sw.strategy in ("loop", "vmap", "sharded") else "loop"
  e_w = int(sw.cfg.warmup.epochs)
  try:
    tx, _, _, _ = phase_fns(sw, "pit_search")
    v = {"params": float_vars["params"], "arch": pit.init_alpha(sw.table),
         "batch_stats": float_vars["batch_stats"]}
    _, ex = make_ex(sw, "pit_search", sw.n_pad, strat)
    ex.set_states(initial_states(sw, "pit_search", tx, [v] * sw.n))
    run_phase(sw, make_phase(sw, "pit_search", ex.n, checkpointed=False), ex, 0, e_w, sw._meta,
              log)
    ex.map(T.restore_best)
    sf = _host_tree(ex.stacked())
    per, masks_all, soft = [], [], []
    for k in range(sw.n):
      mk = jax.tree_util.tree_map(lambda a: a[k], sf)
      masks = pit.masks_of(mk.params["arch"], sw.table)
      soft.append(_finite(pit.params_cost(sw.table, pit.pit_theta(mk.params["arch"], sw.table))))
      ev = pit.export_float(mk.params["params"], mk.extra["batch_stats"], sw.table, masks)
      per.append({**ev, "pit_mask": {g: jnp.asarray(m) for g, m in masks.items()}})
      masks_all.append(masks)
    failed = np.asarray(sf.failed)
    tx, _, _, _ = phase_fns(sw, "pit_finetune")
    stacked = initial_states(sw, "pit_finetune", tx, per).replace(failed=jnp.asarray(failed))
    _, ex = make_ex(sw, "pit_finetune", sw.n_pad, strat)
    ex.set_states(stacked)
    run_phase(sw, make_phase(sw, "pit_finetune", ex.n, checkpointed=False), ex, 0, e_w, sw._meta,
              log)
    ex.map(T.restore_best)
    return ex, ex.stacked(), masks_all, soft, [bool(f) for f in failed[:sw.n]]
  finally:
    sw.members, sw.n, sw.n_pad = saved


def pit_for_mixprec(sw, float_vars, log):
  """The PIT stage of ``pit_mixprec`` (strength ``pit.strength``; reused from ``pit/`` if done).

  Returns:
    ``(float variables of the pruned network with the masks baked in, masks)``.

  Raises:
    FloatingPointError: the PIT search diverged.
  """
  from jpq_jax import pit  # pylint: disable=import-outside-toplevel
  pit_dir = os.path.join(sw.workdir, "pit")
  info_path = os.path.join(sw.workdir, "pit.json")
  mask_tpl = pit.mask_tree(sw.table, {g.name: jax.ShapeDtypeStruct((g.channels,), jnp.float32)
                                      for g in sw.table.groups})
  if os.path.exists(info_path):
    tree = ckpt_lib.load_tree(pit_dir, {**float_template(sw), "pit_mask": mask_tpl})
    masks = {k: np.asarray(v) for k, v in pit.masks_from_tree(tree["pit_mask"], sw.table).items()}
    with open(info_path) as f:
      info = json.load(f)
    sw._meta = dict(sw._meta, times=dict(sw._meta.get("times", {}), **info["times"]),
                    pit=info["pit"])
    return {"params": tree["params"], "batch_stats": tree["batch_stats"]}, masks
  member = {"lam": float(sw.cfg.pit.strength), "seed": int(sw.cfg.sweep.seeds[0])}
  ex, final, masks_all, soft, failed = pit_stage(sw, float_vars, log, [member])
  del ex
  if failed[0]:
    raise FloatingPointError("pit_mixprec: the PIT search diverged (non-finite loss); lower "
                             "pit.strength or the learning rates")
  masks = masks_all[0]
  one = jax.tree_util.tree_map(lambda a: _host(a)[0], final)
  fv = {"params": pit.bake_masks(one.params["params"], sw.table, masks),
        "batch_stats": one.extra["batch_stats"]}
  fv = jax.tree_util.tree_map(np.asarray, fv)
  mtree = pit.mask_tree(sw.table, {k: np.asarray(v, np.float32) for k, v in masks.items()})
  ckpt_lib.save_tree(pit_dir, {**fv, "pit_mask": mtree})
  times = sw._meta.get("times", {})
  info = {"times": {k: times[k] for k in ("pit_search", "pit_finetune") if k in times},
          "pit": {"strength": member["lam"], "kept": pit.kept_summary(masks, sw.table),
                  "params_soft": soft[0],
                  "params": _finite(T.get_cost_fn("params")(
                      sw.table, pit.as_precision_theta(
                          {k: jnp.asarray(v) for k, v in masks.items()}, sw.table)))}}
  if sw.is_main:
    with open(info_path, "w") as f:
      json.dump(info, f, indent=2)
  sw._meta = dict(sw._meta, pit=info["pit"])
  return fv, masks


def run_pit(sw, float_vars, log) -> Dict[str, Any]:
  """The ``pit`` method: PIT search + fine-tuning of every member; its results (float sizes).

  Writes ``final/`` (the masked full-width float members and their masks) and the ``done``
  checkpoint.
  """
  from jpq_jax import pit  # pylint: disable=import-outside-toplevel
  ex, final, masks_all, soft, failed_s = pit_stage(sw, float_vars, log, sw.members)
  results = pit_results(sw, ex, masks_all, soft, failed_s)
  # The fine-tuned (masked, full-width) float members and their masks.
  mtree = pit.mask_tree(sw.table, {g.name: np.stack([ma[g.name] for ma in masks_all])
                                   for g in sw.table.groups if g.kind != "input"})
  fin = {"params": final.params["params"], "batch_stats": final.extra["batch_stats"]}
  fin = jax.tree_util.tree_map(lambda a: _host(a)[:sw.n], fin)
  ckpt_lib.save_tree(os.path.join(sw.workdir, "final"), {**fin, "pit_mask": mtree})
  log.write_final(results, int(sw.cfg.warmup.epochs) + 1)
  sw._meta = dict(sw._meta, phase="done", epoch=0)
  sw._save(int(sw.cfg.warmup.epochs) + 1, {"done": np.zeros((), np.int32)}, sw._meta)
  return results


def finished(sw, step) -> Dict[str, Any]:
  """A finished run's results from its files.

  A missing or damaged ``results.json`` is rebuilt by evaluating the ``done`` checkpoint ``step``
  again, a missing or damaged ``final/`` by writing it from that checkpoint.

  Args:
    sw: the set-up sweep.
    step: the ``done`` checkpoint step.

  Returns:
    The results.
  """
  results = read_results(sw.workdir, sw.is_main)
  final = None
  if results is None:  # missing or damaged: evaluate the final checkpoint again
    resume_strategy(sw)
    final = restore_members(sw, step, finetune_template(sw))
    _, ex = make_ex(sw, "finetune", sw.n_pad)
    ex.set_states(final)
    results = member_results(sw, ex, final)
  why = final_damage(sw.workdir)
  if why is not None:  # final/ missing or damaged: rebuilt from the "done" checkpoint
    if sw.is_main:
      print(f"jpq sweep: {why}: rebuilding it from checkpoint step {step}", file=sys.stderr)
    if final is None:
      resume_strategy(sw)
      final = restore_members(sw, step, finetune_template(sw))
    write_final(sw.workdir, final, sw.n)
  return results
