"""How the member axis is executed: the strategies (DESIGN.md principle 6).

Every strategy runs the same pure single-member step (:func:`jpq_jax.train.make_train_step`), so a
member's trajectory does not depend on the strategy nor on the other members:

* ``loop``: one jitted single-member step, called per member from Python (:class:`LoopExecutor`);
* ``vmap``: ``jax.vmap`` of the step over the leading member axis of the stacked states
  (:class:`VmapExecutor`; with ``sweep.member_chunk``, :class:`ChunkedExecutor`);
* ``sharded``: ``vmap`` inside, the member axis spread over a ``jax.sharding.Mesh`` axis
  ``member`` (and the batch over an optional ``data`` axis), with ``NamedSharding``;
* ``auto``: a per-backend rule backed by ``benchmarks/sweep.py``: XLA:CPU lowers a vmapped conv
  whose kernel differs per member to a grouped convolution that is 2-3x slower per member than
  separate convs, so CPU uses ``loop``; accelerators use ``vmap`` (``sharded`` with >1 device);
* ``measure``: compile both ``loop`` and ``vmap`` (or ``sharded``) and time a few steps of each at
  startup, keep the faster (:func:`jpq_jax.sweep.phases.measure`).

An executor holds the members' states on device and offers ``set_states`` / ``stacked`` (the
stacked states in and out), ``train_step``, ``evaluate``, ``end_epoch``, ``map`` (a per-member
function over the states) and ``host_field`` (one state field of every member, on the host).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jpq_jax.sweep.distributed import _host, _put_global


def _stack(states: Sequence[Any]) -> Any:
  """Per-member pytrees stacked along a new leading member axis."""
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
  """The first ``n`` members of a stacked pytree, one pytree each."""
  return [jax.tree_util.tree_map(lambda x: x[k], stacked) for k in range(n)]



class _Executor:
  """Runs per-member pure functions over all members; states live on device.

  Every executor offers:

  * ``set_states(stacked)`` / ``stacked()``: the members' states in and out (leading member axis);
  * ``train_step(x, y, lam_e, lr_scale, poison)``: one step of every member on the same batch
    (``lam_e``, ``poison``: ``(n,)``; returns the members' metrics);
  * ``evaluate(x, y, mask, params_of=...)``: the evaluation sums of every member on one batch;
  * ``end_epoch(metric)``: the end-of-epoch rule (best epoch, early stop, temperature) with each
    member's selection metric;
  * ``map(fn)``: a per-member function over the states (e.g. :func:`jpq_jax.train.restore_best`);
  * ``host_field(field)``: one state field of every member as ``(n,)`` numpy.
  """

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



def _host_flags(ex) -> Dict[str, np.ndarray]:
  """The per-member flags the driver reads after each epoch, as ``(n,)`` host arrays."""
  return {f: ex.host_field(f) for f in ("failed", "stopped", "best_epoch", "temperature")}
