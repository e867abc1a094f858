"""The members' stacked train states: initial states, padding, templates, restore.

A sweep's states are one pytree of :class:`jpq_jax.train.TrainState` with a leading member axis
(DESIGN.md principle 6). The sharded strategy pads that axis to a multiple of the member-axis
device count with copies of member 0 marked failed (they never update); the real members are
always the first ``sw.n``. A restored run rebuilds the padding for the devices it has.

Every function takes the set-up :class:`~jpq_jax.sweep.driver.Sweep` ``sw`` (its model, sample
input, members, strategy, ``n_pad`` and checkpointer).
"""

from __future__ import annotations

# The functions here are the Sweep's own parts: they read and set its private state (_meta,
# _mid, _stop, _save).
# pylint: disable=protected-access

import sys
from typing import Any, List

import jax
import jax.numpy as jnp

from jpq_jax import train as T
from jpq_jax.ctx import Ctx
from jpq_jax.sweep.distributed import _host_tree
from jpq_jax.sweep.executors import _stack, _unstack
from jpq_jax.sweep.phases import PHASE_TAGS, phase_fns


def padded(sw, n: int) -> int:
  """The member axis of ``n`` members under the run's strategy (a multiple of the member-axis
  devices for ``sharded``; ``n`` otherwise)."""
  if sw.strategy == "sharded" or (sw.strategy == "measure" and jax.device_count() > 1):
    # max(1, .): fewer devices than sweep.data_devices is reported by the executor's mesh check.
    md = max(1, jax.device_count() // int(sw.cfg.sweep.data_devices))
    return -(-n // md) * md  # pad members to fill every device of the member axis
  return n


def pad(sw, states: List[Any]) -> List[Any]:
  """``states`` (the real members) followed by the padding members up to ``sw.n_pad``."""
  # Padding members (sharded strategy) copy member 0 and are marked failed: they never update.
  pads = [s.replace(failed=jnp.asarray(True)) for s in states[:1]] * (sw.n_pad - sw.n)
  return list(states) + pads


def initial_states(sw, phase: str, tx, variables_per_member, temperature=1.0):
  """The stacked initial states of a phase, one per member of ``sw.members``, padded.

  Args:
    sw: the set-up sweep.
    phase: the phase (its tag seeds the members' keys, :data:`~jpq_jax.sweep.phases.PHASE_TAGS`).
    tx: the phase's optimizer.
    variables_per_member: the model variables each member starts from.
    temperature: the initial softmax temperature.
  """
  # A member's key depends on its seed only (not on its index), so a member of a sweep follows
  # the same trajectory as the same (lambda, seed) trained alone.
  keys = [jax.random.fold_in(jax.random.PRNGKey(m["seed"]), PHASE_TAGS[phase])
          for m in sw.members]
  # PIT's alpha is trained like the search logits ('arch'); its fine-tuning like a fine-tuning.
  kind = {"pit_search": "search", "pit_finetune": "finetune"}.get(phase, phase)
  states = [T.init_state(kind, v, tx, key=k, lam=m["lam"], temperature=temperature)
            for v, k, m in zip(variables_per_member, keys, sw.members)]
  return _stack(pad(sw, states))


def float_template(sw):
  """Abstract ``{'params', 'batch_stats'}`` of the float (warm-up) model."""
  v = jax.eval_shape(lambda x: sw.model.init(jax.random.PRNGKey(0), x, Ctx.float()), sw.sample)
  return {k: v[k] for k in v if k in ("params", "batch_stats")}


def _template(sw, phase, variables, n: int):
  tx, _, _, _ = phase_fns(sw, phase)
  one = jax.eval_shape(lambda v: T.init_state(phase, v, tx, key=jax.random.PRNGKey(0)), variables)
  return jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct((n,) + s.shape, s.dtype), one)


def warmup_template(sw):
  """Abstract stacked state of the warm-up (one member)."""
  return _template(sw, "warmup", float_template(sw), 1)


def search_template(sw):
  """Abstract stacked search states of ``sw.n_pad`` members."""
  v = jax.eval_shape(lambda x: sw.model.init(jax.random.PRNGKey(0), x, Ctx.search()), sw.sample)
  return _template(sw, "search", {k: v[k] for k in ("params", "arch")}, sw.n_pad)


def finetune_template(sw):
  """Abstract stacked fine-tuning states of ``sw.n_pad`` members."""
  v = jax.eval_shape(lambda x: sw.model.init(jax.random.PRNGKey(0), x, Ctx.fixed()), sw.sample)
  return _template(sw, "finetune", {k: v[k] for k in ("params", "precision")}, sw.n_pad)


def resume_strategy(sw) -> None:
  """The strategy of a resumed run: this invocation's, except ``measure`` (not measured twice).

  ``auto`` is resolved for the devices this invocation has (a run preempted on CPUs may resume
  on an accelerator); on the same machine it resolves as before, so a resume stays bit for bit.
  The member padding follows the strategy and the device count, which may differ from the
  saved run's: :func:`restore_members` re-pads the restored states.
  """
  if sw.cfg.sweep.strategy == "measure":
    sw.strategy = sw._meta.get("strategy", sw.strategy)
  sw.n_pad = padded(sw, sw.n)


def restore_members(sw, step: int, template: Any) -> Any:
  """The stacked member states saved as ``step``, with this run's member padding.

  A run saved on 4 devices and resumed on 2 (or on 1, or with 3 members on 2 devices then on 3)
  has another padding: the real members are restored as saved and the padding is rebuilt, so a
  preempted sweep can resume on whatever devices it gets. A run resumed mid-epoch restores the
  state saved at the interruption instead (once).

  Args:
    sw: the set-up sweep.
    step: the committed checkpoint step.
    template: the abstract stacked state with this run's padded member count ``sw.n_pad``.

  Returns:
    The stacked states, ``sw.n_pad`` members, host-local arrays.

  Raises:
    CheckpointMismatchError: the saved structure differs other than by its member padding, or it
      holds fewer members than this run has.
  """
  ck = sw.ckpt
  mid = sw._mid.take_checkpoint()
  if mid is not None:  # resumed mid-epoch: the state saved at the interruption
    ck, step = mid
  try:
    return _restore_from(sw, ck, step, template)
  finally:
    if ck is not sw.ckpt:
      ck.close()


def _restore_from(sw, ck, step, template):
  sig = ck.saved_signature(step)
  lead = {tuple(v[0][:1]) for v in (sig or {}).values()}
  saved_n = lead.pop()[0] if len(lead) == 1 and () not in lead else None
  if saved_n is None or saved_n == sw.n_pad or saved_n < sw.n:
    return ck.restore(step, template)  # equal, or refused with the mismatch named
  target = jax.tree_util.tree_map(
      lambda s: jax.ShapeDtypeStruct((saved_n,) + tuple(s.shape[1:]), s.dtype), template)
  saved = ck.restore(step, target)  # still checks everything but the member count
  real = _unstack(_host_tree(saved), sw.n)
  if sw.is_main:
    print(f"jpq sweep: resuming {sw.n} members saved with the member axis padded to "
          f"{saved_n}; padded to {sw.n_pad} for {jax.device_count()} device(s)",
          file=sys.stderr)
  return _stack(pad(sw, real))
