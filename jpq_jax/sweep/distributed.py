"""Several processes (``jax.distributed``): start-up, and arrays that span processes.

With several processes the sharded strategy's states are global ``jax.Array`` s, each process
holding the members (and batch rows) of its own devices; the helpers here move them between that
form and whole host values. Gathering is a collective: every process must call :func:`_host` at the
same point, which is why the driver's code paths are the same on every process.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jpq_jax.sweep.config import _field_error


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
  """:func:`_host` of every leaf of ``tree``."""
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
