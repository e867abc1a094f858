"""Flax NNX models in jpq: search, freeze and export an ``nnx.Module`` (``jpq_jax.nnx``).

:func:`searchable` takes an unmodified NNX model built from ``nnx.Conv`` (incl. depthwise
``feature_group_count``), ``nnx.Linear``, ``nnx.BatchNorm``, ``nnx.Dropout``, activation functions,
``+`` residual adds, pooling, mean and reshape/flatten, with its current weights, and returns a
:class:`Searchable` ``nnx.Module``: ``model(x, ctx)`` runs it in the float, search and fixed
modes of :class:`jpq_jax.Ctx`, and its search state is NNX variables of their own types:

* ``nnx.Param`` (attribute ``params``, the Linen collection of the same name): weights, biases,
  PACT clips;
* ``nnx.BatchStat`` (``batch_stats``): BatchNorm statistics (float mode only);
* :class:`ArchLogits` (``arch``): precision logits (search mode);
* :class:`Precision` (``precision``): frozen bit-widths (fixed mode);

so ``nnx.state(model, ArchLogits)``, ``nnx.split(model, nnx.Param, ...)`` and
``nnx.Optimizer(model, tx, wrt=nnx.Param)`` separate them as they separate any NNX state.

Why a bridge and not a second implementation: the model is traced exactly as
:mod:`jpq_jax.convert` traces a Linen model (known layers become marker equations of a jaxpr,
:func:`jpq_jax.convert_graph.analyse` infers the sharing groups), into a :class:`LinenNet`, a
:class:`jpq_jax.convert.Searchable` whose only difference is where the trace comes from. The
NNX module holds that Linen net (static) and the variables (data); its ``__call__`` is
``net.apply`` on them. So the layer table, every cost model, ``to_search`` (BatchNorm folding),
freezing, the integer export and the sweep driver's pure step are the Linen ones, unchanged, and a
converted NNX model gives the same numbers as the same model written in Linen.

How the NNX layers are intercepted: NNX has no ``intercept_methods``; the trace merges a throwaway
copy of the model from its graph definition and *abstract* state (``nnx.merge`` of
``jax.ShapeDtypeStruct`` leaves, so no weight is copied or read) and sets the class of each known
layer in that copy to a subclass whose ``__call__`` binds the marker. The user's model and its
classes are never modified.

Modes are changed by making a new module from the Linen variables (variable structure differs
per mode): :meth:`Searchable.to_search` (fold BatchNorm, add the logits),
:meth:`Searchable.to_fixed` (argmax of the logits into bit-widths), :meth:`Searchable.export`.
"""

from __future__ import annotations

import contextvars
import functools
import re
import threading
from typing import Any, Dict, List, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jpq_jax import arch as arch_lib
from jpq_jax import costs as costs_lib
from jpq_jax import fold
from jpq_jax.convert import (_LAYER_P, ConversionError, Searchable as _LinenSearchable, _Call,
                             _check_batchnorm, _mode_kwargs, _out_shape)
from jpq_jax.convert_graph import Plan, analyse
from jpq_jax.ctx import Ctx
from jpq_jax.layers import QTensor, SearchSpace
from jpq_jax.table import IN_USER_TRACE, LayerTable, trace_table

__all__ = ["ArchLogits", "Precision", "LinenNet", "Searchable", "searchable", "nnx_searchable",
           "COLLECTIONS"]


class ArchLogits(nnx.Variable):
  """Precision logits of the search (the ``arch`` collection: ``alpha_w`` per sharing group,
  ``alpha_a`` per activation quantizer)."""


class Precision(nnx.Variable):
  """A frozen architecture (the ``precision`` collection: ``w_bits`` per channel, 0 = pruned, and
  ``a_bits`` per activation quantizer)."""


# Linen collection -> NNX variable type (and the attribute of :class:`Searchable` holding it).
COLLECTIONS = {"params": nnx.Param, "batch_stats": nnx.BatchStat, "arch": ArchLogits,
               "precision": Precision}

_KNOWN = {nnx.Conv: "conv", nnx.Linear: "dense", nnx.BatchNorm: "batchnorm", nnx.Dropout: "dropout"}
_SUPPORTED = "nnx.Conv, nnx.Linear, nnx.BatchNorm, nnx.Dropout and functions between them"

# The recorder of the trace in progress: the marked layers' ``__call__`` hand their input to it.
_RECORDER: contextvars.ContextVar = contextvars.ContextVar("jpq_nnx_recorder", default=None)
# Class swaps are per copy, but merging and tracing touch NNX's global graph context: one at a time.
_TRACE_LOCK = threading.RLock()


def _marked_call(self, x=None, *args, **kwargs):
  rec = _RECORDER.get()
  if rec is None:  # pragma: no cover - a marked copy never escapes the trace
    raise RuntimeError("a jpq-marked NNX layer was called outside its conversion trace")
  return rec(self, x, args, kwargs)


_MARKED = {cls: type(f"_JpqMarked{cls.__name__}", (cls,), {"__call__": _marked_call})
           for cls in _KNOWN}


def _kind(mod: Any) -> Optional[str]:
  """The kind of a known layer (its exact class, or a subclass that keeps its ``__call__``)."""
  for cls, kind in _KNOWN.items():
    if isinstance(mod, cls) and type(mod).__call__ is cls.__call__:
      return kind
  return None


def _linen_view(kind: str, mod: Any) -> nn.Module:
  """The Linen layer with the same hyper-parameters, so that the Linen conversion's checks and
  evaluator (which read Linen attribute names) serve the NNX layer unchanged. Initializers are the
  Linen defaults (NNX keeps none on the module; the weights come from the NNX model)."""
  if kind == "conv":
    return nn.Conv(int(mod.out_features), tuple(mod.kernel_size), strides=mod.strides,
                   padding=mod.padding, input_dilation=mod.input_dilation,
                   kernel_dilation=mod.kernel_dilation,
                   feature_group_count=int(mod.feature_group_count), use_bias=bool(mod.use_bias),
                   mask=mod.mask, parent=None)
  if kind == "dense":
    return nn.Dense(int(mod.out_features), use_bias=bool(mod.use_bias), parent=None)
  if kind == "batchnorm":
    return nn.BatchNorm(momentum=float(mod.momentum), epsilon=float(mod.epsilon), axis=mod.axis,
                        use_scale=bool(mod.use_scale), use_bias=bool(mod.use_bias),
                        axis_name=mod.axis_name, parent=None)
  return nn.Dropout(float(mod.rate), broadcast_dims=tuple(mod.broadcast_dims), parent=None)


def _path(p) -> Tuple[str, ...]:
  return tuple(str(a) for a in p)


def _modules(model: nnx.Module) -> Dict[Tuple[str, ...], Any]:
  return {_path(p): m for p, m in nnx.iter_modules(model)}


def _check_variables(model: nnx.Module) -> None:
  """Refuses state the conversion cannot quantize or cost: any variable (RNG streams aside) that
  does not belong to a known layer, naming its path and the layer that owns it."""
  mods = _modules(model)
  for p, var in nnx.to_flat_state(nnx.state(model)):
    if isinstance(var, nnx.RngState):
      continue
    path = _path(p)
    owner_path = max((q for q in mods if path[:len(q)] == q), key=len)
    owner = mods[owner_path]
    if _kind(owner) is not None and len(path) == len(owner_path) + 1:
      continue
    where = "/".join(owner_path) or type(model).__name__
    cls = type(owner)
    if cls.__module__.startswith("flax."):
      raise ConversionError(f"{where}: flax.nnx.{cls.__name__} is a layer the conversion does not "
                            f"know (supported: {_SUPPORTED})")
    raise ConversionError(f"{'/'.join(path)}: a {type(var).__name__} variable outside "
                          f"nnx.Conv/nnx.Linear/nnx.BatchNorm (in {cls.__name__}: a custom layer "
                          "with its own weights or state); the conversion cannot quantize or "
                          "cost it")


_NNX_NAMES = {"Conv": "nnx.Conv", "Dense": "nnx.Linear", "BatchNorm": "nnx.BatchNorm",
              "Dropout": "nnx.Dropout"}
_NNX_NAME = re.compile(r"(?<![\w.])nn\.(Conv|Dense|BatchNorm|Dropout)\b")


class _Source:
  """The user's NNX model as the Linen :class:`LinenNet` holds it: its graph definition and its
  abstract state (shapes only; the weights live in the NNX :class:`Searchable`). Compared by
  identity, so that a Linen field holding it is hashable (``jax.jit`` static arguments)."""

  def __init__(self, model: nnx.Module):
    graphdef, state = nnx.split(model)
    self.graphdef = graphdef
    self.state = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)
    self.cls = type(model)

  def copy(self) -> nnx.Module:
    return nnx.merge(self.graphdef, self.state)

  def __repr__(self):
    return f"<NNX {self.cls.__module__}.{self.cls.__qualname__}>"


def _trace_nnx(source: _Source, shape, dtype, train: bool, mode_arg) -> Tuple[Any, List[_Call]]:
  """The NNX model as a closed jaxpr with marker equations for its layers, and the layer calls."""
  with _TRACE_LOCK:
    model = source.copy()
    known: Dict[int, Tuple[Tuple[str, ...], str, str]] = {}  # id -> (path, kind, class name)
    for path, mod in _modules(model).items():
      kind = _kind(mod)
      if kind is not None:
        base = next(c for c in _KNOWN if _KNOWN[c] == kind)
        known[id(mod)] = (path, kind, base.__name__)
        mod.__class__ = _MARKED[base]
    calls: List[_Call] = []
    called: Dict[int, str] = {}

    def record(mod, x, args, kwargs):
      path, kind, name = known[id(mod)]
      where = "/".join(path) or type(model).__name__
      if x is None:
        raise ConversionError(f"{where}: nnx.{name} called without a positional input")
      # Mode flags are jpq's Ctx's business (BatchNorm's running average, dropout's randomness).
      extra = {k: v for k, v in kwargs.items()
               if not (kind == "batchnorm" and k == "use_running_average" or
                       kind == "batchnorm" and k == "mask" and v is None or
                       kind == "dropout" and k in ("deterministic", "rngs", "rng"))}
      if (args and kind != "dropout") or extra:
        raise ConversionError(f"{where}: nnx.{name} called with extra arguments "
                              f"{sorted(extra) or len(args)}; not supported")
      if id(mod) in called:
        raise ConversionError(f"{where}: nnx.{name} is called more than once (weights shared "
                              "between two places of the graph); not supported")
      called[id(mod)] = where
      view = _linen_view(kind, mod)
      out = _out_shape(kind, view, tuple(x.shape), x.dtype, where)
      calls.append(_Call(kind, view, path, tuple(x.shape)))
      return _LAYER_P.bind(x, index=len(calls) - 1, shape=out)

    kwargs = _mode_kwargs(model, mode_arg, train)
    aval = jax.ShapeDtypeStruct(tuple(shape), dtype)
    rec, user = _RECORDER.set(record), IN_USER_TRACE.set(True)
    try:
      closed = jax.make_jaxpr(lambda x: model(x, **kwargs))(aval)
    finally:
      IN_USER_TRACE.reset(user)
      _RECORDER.reset(rec)
  return closed, calls


class LinenNet(_LinenSearchable):
  """The Linen form of a converted NNX model: :class:`jpq_jax.convert.Searchable` traced from the
  NNX model. Every Linen jpq function (``trace_table``, ``to_search``, costs, the export, the sweep
  driver) takes it; :class:`Searchable` wraps it with NNX variables.

  Attributes:
    source: the user's NNX model (graph definition and abstract state, see :class:`_Source`).
  """

  @property
  def user_model(self) -> nnx.Module:
    """An abstract copy of the user's NNX model (its structure; its variables are shapes)."""
    return self.source.copy()

  def trace(self, shape, dtype=jnp.float32, train: bool = False) -> Tuple[Any, List[_Call], Plan]:
    """The NNX model traced at input ``shape``: ``(closed_jaxpr, layer calls, plan)``.

    Raises:
      ConversionError: something the conversion cannot handle (names the module path and op).
    """
    try:
      closed, calls = _trace_nnx(self.source, shape, dtype, train, self.mode_arg)
      plan = analyse(closed.jaxpr, calls, self.source.cls.__name__)
      for c in calls:
        if c.kind == "batchnorm":
          _check_batchnorm(c.module, c.where)
        if c.kind == "dropout" and tuple(c.module.broadcast_dims):
          raise ConversionError(f"{c.where}: nnx.Dropout with broadcast_dims is not supported")
    except ConversionError as e:  # the Linen checks name Linen layers: name the NNX ones
      raise ConversionError(_NNX_NAME.sub(lambda m: _NNX_NAMES[m.group(1)], str(e))) from None
    return closed, calls, plan


def _wrap(tree: Mapping, var_type) -> nnx.Dict:
  return nnx.Dict({k: _wrap(v, var_type) if isinstance(v, Mapping) else var_type(jnp.asarray(v))
                   for k, v in tree.items()})


def _unwrap(node) -> Dict[str, Any]:
  return {k: _unwrap(v) if isinstance(v, nnx.Dict) else v[...] for k, v in node.items()}


def _assign(node, tree: Mapping) -> None:
  for k, v in tree.items():
    if isinstance(v, Mapping):
      _assign(node[k], v)
    else:
      node[k][...] = v


@functools.lru_cache(maxsize=32)
def _table(net: LinenNet, shape: Tuple[int, ...], dtype: str) -> LayerTable:
  return trace_table(net, jax.ShapeDtypeStruct(shape, jnp.dtype(dtype)))


class Searchable(nnx.Module):
  """A converted NNX model: ``model(x, ctx) -> QTensor`` in the mode its variables hold.

  Build it with :func:`searchable` (float mode, the NNX model's weights); change mode with
  :meth:`to_search` and :meth:`to_fixed`. Its variables are the attributes ``params``
  (``nnx.Param``), ``batch_stats`` (``nnx.BatchStat``), ``arch`` (:class:`ArchLogits`) and
  ``precision`` (:class:`Precision`), each an ``nnx.Dict`` laid out as the Linen collection of the
  same name (see the module docstring); those of other modes are absent.

  Attributes:
    net: the Linen form (:class:`LinenNet`), static.
    rngs: the ``nnx.Rngs`` stream of dropout keys (training calls without ``key``).
    input_shape: shape of one example (no batch axis).
    input_dtype: the input dtype's name.
  """

  def __init__(self, net: LinenNet, variables: Mapping[str, Any], input_shape: Tuple[int, ...],
               input_dtype: str = "float32", *, rngs: Optional[nnx.Rngs] = None):
    """Wraps Linen variables of ``net`` as NNX variables (see :meth:`from_variables`); ``rngs``
    (default ``nnx.Rngs(dropout=0)``) gives the dropout keys of training calls without a ``key``."""
    unknown = set(variables) - set(COLLECTIONS)
    if unknown:
      raise ValueError(f"jpq_jax.nnx.Searchable: unknown collections {sorted(unknown)}; expected "
                       f"some of {sorted(COLLECTIONS)}")
    if "params" not in variables:
      raise ValueError("jpq_jax.nnx.Searchable: the variables need a 'params' collection")
    self.net = net
    self.input_shape = tuple(int(a) for a in input_shape)
    self.input_dtype = str(jnp.dtype(input_dtype))
    self.rngs = rngs if rngs is not None else nnx.Rngs(dropout=0)
    for col in COLLECTIONS:
      if col in variables:
        setattr(self, col, _wrap(variables[col], COLLECTIONS[col]))

  @classmethod
  def from_variables(cls, net: LinenNet, variables: Mapping[str, Any],
                     sample_input: Any = None) -> "Searchable":
    """The NNX module of ``net`` holding Linen ``variables`` (e.g. a restored member).

    Args:
      net: the Linen form of a converted NNX model.
      variables: some of ``params``, ``batch_stats``, ``arch``, ``precision``.
      sample_input: an array or ShapeDtypeStruct (its dtype; default: ``net.input_shape``, float32).

    Returns:
      The module.

    Raises:
      TypeError: ``net`` is not a :class:`LinenNet`.
      ValueError: unknown collections, or no ``params``.
    """
    if not isinstance(net, LinenNet):
      raise TypeError(f"from_variables: net must be a jpq_jax.nnx.LinenNet, got "
                      f"{type(net).__name__}")
    dtype = getattr(sample_input, "dtype", jnp.float32)
    return cls(net, variables, net.input_shape, str(jnp.dtype(dtype)))

  @property
  def mode(self) -> str:
    """``"fixed"`` with a ``precision``, ``"search"`` with an ``arch``, else ``"float"``."""
    if hasattr(self, "precision"):
      return "fixed"
    return "search" if hasattr(self, "arch") else "float"

  @property
  def sample(self) -> jax.ShapeDtypeStruct:
    """A one-example abstract input."""
    return jax.ShapeDtypeStruct((1,) + self.input_shape, jnp.dtype(self.input_dtype))

  def variables(self) -> Dict[str, Any]:
    """The Linen variables: the bridge to every Linen jpq function.

    Returns:
      ``{'params', ...}``: the collections this module holds, as nested dicts of arrays (tracers
      under a transform).
    """
    return {col: _unwrap(getattr(self, col)) for col in COLLECTIONS if hasattr(self, col)}

  def __call__(self, x, ctx: Ctx, *, key: Optional[jax.Array] = None) -> QTensor:
    """Runs the model; in float training mode, updates ``batch_stats`` in place.

    Args:
      x: an input batch.
      ctx: the :class:`jpq_jax.Ctx` (its mode must be this module's, see :attr:`mode`).
      key: the dropout PRNG key of a training call (default: the next of ``self.rngs.dropout``,
        as NNX layers draw theirs).

    Returns:
      The output :class:`jpq_jax.QTensor` (logits in ``.value``).

    Raises:
      ValueError: ``ctx`` asks for a mode whose variables the module does not hold.
    """
    if not isinstance(ctx, Ctx):
      raise TypeError(f"jpq_jax.nnx.Searchable is called as model(x, ctx) with a jpq_jax.Ctx, got "
                      f"{type(ctx).__name__}")
    need = {"search": "arch", "fixed": "precision"}.get(ctx.mode)
    if need and not hasattr(self, need):
      raise ValueError(f"jpq_jax.nnx.Searchable: {ctx.mode} mode needs {need!r} variables; this "
                       f"module is in {self.mode} mode (use to_search() / to_fixed())")
    v = self.variables()
    if key is None and ctx.train:
      key = self.rngs.dropout()
    rngs = {"dropout": key} if key is not None else None
    if ctx.mode == "float" and ctx.train and "batch_stats" in v:
      out, upd = self.net.apply(v, x, ctx, mutable=["batch_stats"], rngs=rngs)
      _assign(self.batch_stats, upd["batch_stats"])
      return out
    return self.net.apply(v, x, ctx, rngs=rngs)

  def table(self) -> LayerTable:
    """The static layer table (cached per Linen net and input shape).

    Returns:
      The :class:`jpq_jax.LayerTable` of the model at :attr:`sample`'s shape.
    """
    return _table(self.net, (1,) + self.input_shape, self.input_dtype)

  def thetas(self, ctx: Optional[Ctx] = None) -> Dict[str, arch_lib.GroupTheta]:
    """theta of every group (:func:`jpq_jax.thetas`).

    Args:
      ctx: a search or fixed :class:`jpq_jax.Ctx`; default: the module's mode (search:
        evaluation at T = 1, fixed: the bit-widths).

    Returns:
      ``{group name: GroupTheta}``.

    Raises:
      ValueError: float mode, or a ``ctx`` whose collection the module does not hold.
    """
    if ctx is None:
      if self.mode == "float":
        raise ValueError("thetas: a float-mode model has no precision choices; use to_search()")
      ctx = Ctx.search() if self.mode == "search" else Ctx.fixed()
    return arch_lib.thetas(self.variables(), self.table(), ctx)

  def cost(self, name: str, ctx: Optional[Ctx] = None) -> jax.Array:
    """The registered cost model ``name`` of the current architecture.

    Args:
      name: a registered cost model (``jpq_jax.costs.list_costs()``).
      ctx: as for :meth:`thetas` (a training ``ctx`` gives the relaxed, differentiable cost).

    Returns:
      The scalar cost.

    Raises:
      ValueError: unknown cost model, one that cannot cost this table, or float mode.
    """
    return costs_lib.get_cost(name)(self.table(), self.thetas(ctx))

  def to_search(self, *, compensate: bool = True, rng: Optional[jax.Array] = None) -> "Searchable":
    """A new search-mode module: BatchNorm folded, precision logits initialised
    (:func:`jpq_jax.to_search`).

    Args:
      compensate: divide the weights by ``1 - theta_0`` (see :func:`jpq_jax.to_search`).
      rng: PRNG key of the search-mode init (the clips and logits are deterministic).

    Returns:
      The search-mode :class:`Searchable` (this module is unchanged).

    Raises:
      ValueError: the module is not in float mode.
    """
    if self.mode != "float":
      raise ValueError(f"to_search: the module is in {self.mode} mode; it takes a float-mode one")
    sv = fold.to_search(self.net, self.variables(), self.sample, compensate=compensate,
                        table=self.table(), rng=rng)
    return Searchable(self.net, sv, self.input_shape, self.input_dtype)

  def to_fixed(self, temperature: float = 1.0) -> "Searchable":
    """A new fixed-mode module: the argmax architecture of the logits (:func:`jpq_jax.freeze`),
    same weights.

    Args:
      temperature: temperature of the softmax whose argmax is taken.

    Returns:
      The fixed-mode :class:`Searchable` (this module is unchanged).

    Raises:
      ValueError: the module is not in search mode.
    """
    if self.mode != "search":
      raise ValueError(f"to_fixed: the module is in {self.mode} mode; it takes a search-mode one")
    fx = fold.to_fixed(self.variables(), self.table(), temperature)
    return Searchable(self.net, fx, self.input_shape, self.input_dtype)

  def export(self, requant: str = "float"):
    """The integer deployment bundle (:func:`jpq_jax.export.export_model`) of a fixed-mode module.

    Args:
      requant: ``"float"`` or ``"fixed_point"`` (see :func:`jpq_jax.export.export_model`).

    Returns:
      The :class:`jpq_jax.bundle.Bundle` (``.save(path)``; ``jpq_jax.export.run_bundle``).

    Raises:
      jpq_jax.export.BundleError: not in fixed mode, or an unexportable graph.
    """
    from jpq_jax import export  # pylint: disable=import-outside-toplevel
    return export.export_model(self.net, self.variables(), self.table(), self.sample,
                               requant=requant)


def searchable(model: nnx.Module, sample_input: Any, space: SearchSpace = SearchSpace(), *,
               mode_arg: Optional[str] = "auto") -> Searchable:
  """Convert an unmodified Flax NNX model into a jpq search model holding its weights.

  Args:
    model: the user's ``nnx.Module``, called as ``model(x)`` (or ``model(x, train=...)``, see
      ``mode_arg``); its current weights and BatchNorm statistics become the float variables.
    sample_input: an array or ShapeDtypeStruct of the input (batch included).
    space: the :class:`~jpq_jax.SearchSpace`.
    mode_arg: the keyword of the model's ``__call__`` that selects training (``"auto"``:
      ``train``, ``training``, ``is_training`` or ``deterministic`` if it has one; ``None``: none).
      NNX's ``model.train()`` / ``model.eval()`` flags need nothing: jpq's ``Ctx`` decides.

  Returns:
    A float-mode :class:`Searchable`.

  Raises:
    TypeError: ``model`` is not an NNX module, or ``space`` not a SearchSpace.
    ConversionError: a layer, variable or op the conversion cannot handle (names path and op).
  """
  if not isinstance(model, nnx.Module):
    raise TypeError(f"jpq_jax.nnx.searchable: expected a flax.nnx Module, got "
                    f"{type(model).__name__} (a Linen model is converted by jpq_jax.searchable)")
  if isinstance(model, Searchable):
    raise TypeError("jpq_jax.nnx.searchable: the model is already converted")
  if not isinstance(space, SearchSpace):
    raise TypeError(f"searchable: space must be a jpq_jax.SearchSpace, got {type(space).__name__}")
  _check_variables(model)
  shape = tuple(sample_input.shape)
  dtype = getattr(sample_input, "dtype", jnp.float32)
  net = LinenNet(_Source(model), space, mode_arg, shape[1:])
  for train in (False, True):  # both, as the user's Python may branch on its train argument
    _, calls, plan = net.trace(shape, dtype, train)
  variables = float_variables(net, model, calls, plan)
  return Searchable(net, variables, shape[1:], str(jnp.dtype(dtype)))


nnx_searchable = searchable


def float_variables(net: LinenNet, model: nnx.Module, calls=None, plan=None) -> Dict[str, Any]:
  """The NNX model's weights laid out as ``net``'s float-mode Linen variables.

  Args:
    net: the Linen form of ``model`` (:attr:`Searchable.net`).
    model: the user's NNX model (same structure as the one converted).
    calls, plan: a trace of ``net`` (traced when not given).

  Returns:
    ``{'params', 'batch_stats'}`` for ``net.apply(..., jpq_jax.Ctx.float())``.

  Raises:
    ValueError: the model's layers do not match ``net`` (missing layer, other shapes).
  """
  if calls is None or plan is None:
    _, calls, plan = net.trace((1,) + tuple(net.input_shape))
  mods = _modules(model)

  def layer(c):
    if c.path not in mods:
      raise ValueError(f"float_variables: the NNX model has no layer at {c.where!r}")
    return mods[c.path]

  params: Dict[str, Any] = {}
  stats: Dict[str, Any] = {}
  for i, c in enumerate(calls):
    if c.kind not in ("conv", "dense"):
      continue
    m = layer(c)
    entry = {"kernel": m.kernel[...]}
    if m.bias is not None:
      entry["bias"] = m.bias[...]
    if i in plan.bn_of:
      b = layer(calls[plan.bn_of[i]])
      entry["BatchNorm_0"] = {"scale": b.scale[...], "bias": b.bias[...]}
      stats[c.name] = {"BatchNorm_0": {"mean": b.mean[...], "var": b.var[...]}}
    params[c.name] = entry
  shape = (1,) + tuple(net.input_shape)
  want = jax.eval_shape(lambda x: net.init(jax.random.PRNGKey(0), x, Ctx.float()),
                        jax.ShapeDtypeStruct(shape, jnp.float32))
  out = {"params": params, "batch_stats": stats}
  got_s = jax.tree_util.tree_map(lambda a: tuple(np.shape(a)), out)
  want_s = jax.tree_util.tree_map(lambda a: tuple(a.shape), {
      "params": want["params"], "batch_stats": want.get("batch_stats", {})})
  if got_s != want_s:
    raise ValueError(f"float_variables: the NNX model's weights do not match the converted model "
                     f"(shapes {got_s} vs {want_s})")
  return out


def float_variables_from_state(net: LinenNet, state: Mapping[str, Any]) -> Dict[str, Any]:
  """The float variables of ``net`` from a saved state of the user's NNX model.

  Args:
    net: the Linen form of a converted NNX model.
    state: the NNX model's state as a pure dict, at least its ``nnx.Param`` and ``nnx.BatchStat``
      (``nnx.to_pure_dict(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat)))``, e.g. an Orbax
      tree).

  Returns:
    ``{'params', 'batch_stats'}`` for ``net`` (see :func:`float_variables`).

  Raises:
    ValueError: the state does not belong to the model (missing layer, other shapes).
  """
  graphdef, abstract = nnx.split(net.source.copy())
  try:
    nnx.replace_by_pure_dict(abstract, state)
  except (KeyError, ValueError, TypeError) as e:
    raise ValueError(f"float_variables_from_state: the state does not match the NNX model "
                     f"{net.source.cls.__name__} ({type(e).__name__}: {e})") from None
  model = nnx.merge(graphdef, abstract)
  for p, var in nnx.to_flat_state(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))):
    if isinstance(var.get_value(), jax.ShapeDtypeStruct):
      raise ValueError(f"float_variables_from_state: the state has no value at "
                       f"{'/'.join(_path(p))!r}")
  return float_variables(net, model)
