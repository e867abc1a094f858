"""Orbax checkpoints of a whole sweep, and restoring one member as a standalone model.

A sweep checkpoint is one Orbax step holding two items:

* ``state``: the pytree of the phase (the warm-up :class:`~jpq_jax.train.TrainState`, or the
  members' states stacked on a leading member axis), saved with ``StandardSave`` and restored with an
  *abstract target* (``jax.ShapeDtypeStruct`` leaves in the same pytree) so that optax states come
  back as their NamedTuple types;
* ``meta``: JSON (phase, epochs done, member list, timings, which tells how to build that target).

Steps are numbered by the total number of finished epochs over all phases, so they only grow. Saves
are asynchronous (training continues while the previous epoch is written); :meth:`SweepCheckpointer.close`
waits for them.

The finished sweep also writes ``final/`` (the fine-tuned members, stacked) that
:func:`restore_member` reads: ``model, variables, table = jpq_jax.restore_member(workdir, k)``.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Mapping, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["SweepCheckpointer", "save_tree", "load_tree", "restore_member", "abstract_like"]


def abstract_like(tree: Any) -> Any:
  """The abstract restore target (shapes, dtypes, no data) of a pytree of arrays.

  Leaves without a sharding are restored whole onto this process's first device: with several
  processes (``jax.distributed``) every process then reads the full value, and the sweep driver
  spreads it over the global mesh itself; Orbax's default device (``jax.devices()[0]``) would belong
  to process 0 only.
  """
  local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def leaf(x):
    if isinstance(x, jax.ShapeDtypeStruct):
      return x if x.sharding is not None else jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=local)
    return jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=local)

  return jax.tree_util.tree_map(leaf, tree)


def _for_save(tree: Any) -> Any:
  # Process-local arrays go to Orbax as host numpy, which it writes from process 0 only (with several
  # processes every process holds the same values); arrays spread over processes stay jax Arrays,
  # of which every process writes its own shards.
  return jax.tree_util.tree_map(
      lambda a: a if isinstance(a, jax.Array) and not a.is_fully_addressable
      else np.asarray(jax.device_get(a)), tree)


class SweepCheckpointer:
  """Epoch- and phase-boundary checkpoints of a sweep (Orbax ``CheckpointManager``).

  Args:
    directory: where the steps go (``<workdir>/checkpoints``).
    keep: number of most recent steps kept.
    async_save: write in the background.
  """

  def __init__(self, directory: str, keep: int = 2, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(max_to_keep=max(int(keep), 1),
                                           enable_async_checkpointing=bool(async_save),
                                           create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "meta"))

  def latest_step(self) -> Optional[int]:
    """Most recent complete step, or None."""
    return self.manager.latest_step()

  def save(self, step: int, state: Any, meta: Mapping) -> None:
    """Save (asynchronously) ``state`` and ``meta`` as ``step``.

    With several processes every process must call this (Orbax synchronises them); process 0
    writes ``meta`` and the process-local arrays.
    """
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    meta=ocp.args.JsonSave(dict(meta))),
                      force=True)

  def meta(self, step: Optional[int] = None) -> Optional[Dict[str, Any]]:
    """The JSON metadata of ``step`` (default: latest), or None when there is no checkpoint."""
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(out["meta"])

  def restore(self, step: int, target: Any) -> Any:
    """The ``state`` of ``step`` restored into the structure of ``target`` (abstract or concrete)."""
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_like(target))))
    return out["state"]

  def wait(self) -> None:
    """Block until pending asynchronous saves are on disk."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    """Wait for pending saves and release the manager."""
    self.manager.wait_until_finished()
    self.manager.close()


def save_tree(path: str, tree: Any) -> None:
  """Save a pytree synchronously to ``path`` (overwrites); call it on every process."""
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(os.path.abspath(path), _for_save(tree), force=True)
  ckptr.wait_until_finished()
  ckptr.close()


def load_tree(path: str, target: Any = None) -> Any:
  """Load a pytree saved by :func:`save_tree` (into ``target``'s structure when given)."""
  ckptr = ocp.StandardCheckpointer()
  out = ckptr.restore(os.path.abspath(path), abstract_like(target) if target is not None else None)
  ckptr.close()
  return out


def restore_member(workdir: str, member: int) -> Tuple[Any, Dict[str, Any], Any]:
  """A finished sweep's member as a standalone fixed-architecture model.

  Args:
    workdir: the sweep's work directory.
    member: member index (as in ``results.json``).

  Returns:
    ``(model, variables, table)``: the Flax model, ``{'params', 'precision'}`` for
    ``model.apply(variables, x, jpq_jax.Ctx.fixed())``, and the layer table.

  Raises:
    FileNotFoundError: the sweep has not finished (no ``final`` checkpoint).
    IndexError: no such member.
  """
  from jpq_jax import sweep  # pylint: disable=import-outside-toplevel
  final = os.path.join(workdir, "final")
  if not os.path.exists(final):
    raise FileNotFoundError(f"{workdir!r} has no finished sweep (no 'final' checkpoint); run or "
                            "resume the sweep first")
  with open(os.path.join(workdir, "config.json")) as f:
    cfg = json.load(f)["config"]
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  n = len(results["members"])
  if not 0 <= member < n:
    raise IndexError(f"member {member} out of range: the sweep has {n} members (0..{n - 1})")
  model, table, sample = sweep.build_model_from_config(cfg, results["num_classes"],
                                                       tuple(results["input_shape"]))
  target = sweep.fixed_variables_template(model, sample, n)
  stacked = load_tree(final, target)
  variables = jax.tree_util.tree_map(lambda x: np.asarray(x)[member], stacked)
  return model, variables, table
