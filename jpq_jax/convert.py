"""Automatic conversion of an unmodified Flax Linen model into a jpq search model.

:func:`searchable` takes a plain ``flax.linen`` model (``nn.Conv`` incl. depthwise
``feature_group_count``, ``nn.Dense``, ``nn.BatchNorm``, ``nn.Dropout``, activation functions,
``+`` residual adds, pooling, mean, reshape/flatten) and returns a :class:`Searchable` module that
runs in the float, search and fixed modes of :class:`jpq_jax.Ctx` with the variable collections of
jpq's own models (``params``, ``batch_stats``, ``arch``, ``precision``).

How (the JAX counterpart of the reference's torch.fx tracing, METHOD.md §2.6):

1. The user's model is traced to a jaxpr with :func:`flax.linen.intercept_methods`; every call of a
   known layer is replaced by a marker primitive (:data:`_LAYER_P`) that records the layer, so the
   jaxpr is the layer graph with the glue ops between them (adds, activations, pooling, reshape).
2. :func:`jpq_jax.convert_graph.analyse` walks it: a conv/dense starts a sharing group,
   a depthwise conv and every channel-preserving op keep their input's, and the operands of an
   ``add`` are merged (union-find); a BatchNorm must directly follow a conv (it is folded into it);
   anything that mixes channels outside a layer (concatenate, dot_general, a reduction over
   channels...) or a layer the conversion does not know is refused, naming the module path.
3. :class:`Searchable` re-traces the user's model on each call (the batch size may differ) and
   evaluates the jaxpr, running jpq's own :class:`~jpq_jax.Conv` / :class:`~jpq_jax.Dense` /
   :class:`~jpq_jax.Add` / :class:`~jpq_jax.InputQuantizer` in place of the markers and of the
   residual adds, with the user module's initializers and BatchNorm settings.

A converted layer keeps the user's module path, its segments joined with ``.`` (``Block_0.Conv_0``);
a folded BatchNorm lives under its conv as ``BatchNorm_0``, as in jpq's layers.
:func:`convert_variables` maps the user's own trained variables onto that layout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from jpq_jax import ops
from jpq_jax.convert_graph import ConversionError, Plan, analyse, is_relu
from jpq_jax.ctx import Ctx
from jpq_jax.layers import Add, Conv, Dense, Group, InputQuantizer, QTensor, SearchSpace
from jpq_jax.table import IN_USER_TRACE

__all__ = ["ConversionError", "Searchable", "searchable", "convert_variables"]



_LAYER_P = jcore.Primitive("jpq_user_layer")


def _layer_abstract(x, *, index, shape):
  del index
  return jax.core.ShapedArray(shape, x.dtype)


def _layer_impl(x, *, index, shape):
  raise RuntimeError("jpq_user_layer is a tracing marker; it is never evaluated")


_LAYER_P.def_abstract_eval(_layer_abstract)
_LAYER_P.def_impl(_layer_impl)

# Layers the conversion replaces; anything else from flax.linen with variables is refused.
_KNOWN = {nn.Conv: "conv", nn.Dense: "dense", nn.BatchNorm: "batchnorm", nn.Dropout: "dropout"}
_PASS_THROUGH = (nn.Sequential,)


@dataclasses.dataclass
class _Call:
  """One intercepted layer call of the user's model."""
  kind: str
  module: Any
  path: Tuple[str, ...]
  in_shape: Tuple[int, ...]

  @property
  def where(self) -> str:
    return "/".join(self.path) or "<top>"

  @property
  def name(self) -> str:
    return ".".join(self.path)


def _pair(v, what: str, where: str) -> Tuple[int, int]:
  if v is None:
    return (1, 1)
  if isinstance(v, int):
    return (v, v)
  v = tuple(int(a) for a in v)
  if len(v) != 2:
    raise ConversionError(f"{where}: {what} {v} is not 2-D; only 2-D convolutions are supported")
  return v


def _conv_padding(pad, where: str):
  """Flax Conv padding as jpq Conv / lax take it: 'SAME', 'VALID' or ((t, b), (l, r))."""
  if isinstance(pad, str):
    if pad.upper() not in ("SAME", "VALID"):
      raise ConversionError(f"{where}: nn.Conv padding {pad!r} is not supported (use 'SAME', "
                            "'VALID', an int or explicit pairs)")
    return pad.upper()
  if isinstance(pad, int):
    return ((pad, pad), (pad, pad))
  pad = tuple(pad)
  if len(pad) != 2:
    raise ConversionError(f"{where}: nn.Conv padding {pad} is not 2-D")
  return tuple((p, p) if isinstance(p, int) else (int(p[0]), int(p[1])) for p in pad)


def _check_conv(mod: nn.Conv, cin: int, where: str) -> None:
  for attr in ("input_dilation", "kernel_dilation"):
    if _pair(getattr(mod, attr), attr, where) != (1, 1):
      raise ConversionError(f"{where}: nn.Conv with {attr}={getattr(mod, attr)} is not supported")
  if getattr(mod, "mask", None) is not None:
    raise ConversionError(f"{where}: nn.Conv with a kernel mask is not supported")
  fgc = int(mod.feature_group_count)
  if fgc != 1 and not (fgc == cin == mod.features):
    raise ConversionError(
        f"{where}: grouped nn.Conv (feature_group_count={fgc}, {cin} -> {mod.features} channels) is "
        "not supported; only depthwise (feature_group_count = input = output channels) or plain")
  _pair(mod.kernel_size, "kernel_size", where)


def _out_shape(kind: str, mod: Any, shape: Tuple[int, ...], dtype, where: str) -> Tuple[int, ...]:
  if kind == "conv":
    if len(shape) != 4:
      raise ConversionError(f"{where}: nn.Conv on a rank-{len(shape)} input {shape}; the conversion "
                            "supports 2-D convolutions on NHWC batches")
    _check_conv(mod, shape[-1], where)
    kh, kw = _pair(mod.kernel_size, "kernel_size", where)
    fgc = int(mod.feature_group_count)
    k = jax.ShapeDtypeStruct((kh, kw, shape[-1] // fgc, mod.features), dtype)
    out = jax.eval_shape(
        lambda a, b: jax.lax.conv_general_dilated(
            a, b, _pair(mod.strides, "strides", where), _conv_padding(mod.padding, where),
            dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=fgc),
        jax.ShapeDtypeStruct(shape, dtype), k)
    return tuple(out.shape)
  if kind == "dense":
    return tuple(shape[:-1]) + (int(mod.features),)
  return tuple(shape)


def _is_flax_layer(mod: nn.Module) -> bool:
  return type(mod).__module__.startswith("flax.") and not isinstance(mod, _PASS_THROUGH)


def _mode_kwargs(model: nn.Module, mode_arg: Optional[str], train: bool) -> Dict[str, Any]:
  """The keyword the user's ``__call__`` takes for training/evaluation (``train=`` etc.)."""
  if mode_arg is None:
    return {}
  if mode_arg != "auto":
    return {mode_arg: (not train) if mode_arg == "deterministic" else train}
  params = inspect.signature(type(model).__call__).parameters
  for name in ("train", "training", "is_training"):
    if name in params:
      return {name: train}
  if "deterministic" in params:
    return {"deterministic": not train}
  return {}


def _trace_user(model: nn.Module, shape, dtype, kwargs) -> Tuple[Any, List[_Call]]:
  """The user's model as a closed jaxpr with marker equations for its layers, and the layers."""
  calls: List[_Call] = []

  def intercept(next_fun, args, kw, context):
    mod = context.module
    path = tuple(mod.scope.path) if mod.scope is not None else ()
    where = "/".join(path) or type(mod).__name__
    kind = _KNOWN.get(type(mod))
    if kind is None:
      if _is_flax_layer(mod):
        raise ConversionError(f"{where}: {type(mod).__module__}.{type(mod).__name__} is a layer the "
                              "conversion does not know (supported: nn.Conv, nn.Dense, "
                              "nn.BatchNorm, nn.Dropout and functions between them)")
      scope = jax.named_scope(path[-1]) if path else contextlib.nullcontext()
      with scope:
        return next_fun(*args, **kw)
    if context.method_name != "__call__":
      raise ConversionError(f"{where}: {type(mod).__name__}.{context.method_name} is not supported")
    if not args:
      raise ConversionError(f"{where}: {type(mod).__name__} called without a positional input")
    x = args[0]
    out = _out_shape(kind, mod, tuple(x.shape), x.dtype, where)
    calls.append(_Call(kind, mod, path, tuple(x.shape)))
    return _LAYER_P.bind(x, index=len(calls) - 1, shape=out)

  key = jax.random.PRNGKey(0)
  aval = jax.ShapeDtypeStruct(tuple(shape), dtype)
  token = IN_USER_TRACE.set(True)
  try:
    with nn.intercept_methods(intercept):
      variables = jax.eval_shape(lambda x: model.init({"params": key, "dropout": key}, x, **kwargs),
                                 aval)
    leaves = jax.tree_util.tree_leaves_with_path(variables)
    if leaves:
      p, _ = leaves[0]
      raise ConversionError(
          f"{jax.tree_util.keystr(p)}: a variable outside nn.Conv/nn.Dense/nn.BatchNorm (a custom "
          "layer with its own weights or state); the conversion cannot quantize or cost it")
    calls.clear()
    with nn.intercept_methods(intercept):
      closed = jax.make_jaxpr(lambda x: model.apply({}, x, rngs={"dropout": key}, **kwargs))(aval)
  finally:
    IN_USER_TRACE.reset(token)
  return closed, calls


@dataclasses.dataclass(frozen=True)
class _Source:
  """Holds the user's module so that Flax does not adopt it as a submodule of :class:`Searchable`
  (it is traced on its own, unbound, with its layers intercepted)."""
  model: Any


def _bind(eqn, invals):
  # As jax.core.eval_jaxpr evaluates an equation (call primitives get their bind parameters).
  params = eqn.primitive.get_bind_params(eqn.params)
  out = eqn.primitive.bind(*invals, **params)
  return list(out) if eqn.primitive.multiple_results else [out]


def _is_default_init(fn, value: float) -> bool:
  with jax.ensure_compile_time_eval():  # called while the converted model is being traced
    v = fn(jax.random.PRNGKey(0), (3,), jnp.float32)
  return bool(np.all(np.asarray(v) == value))


def _check_batchnorm(mod: nn.BatchNorm, where: str) -> None:
  if mod.axis not in (-1, 3):
    raise ConversionError(f"{where}: nn.BatchNorm over axis {mod.axis}; only the channel (last) "
                          "axis can be folded")
  if not (mod.use_scale and mod.use_bias):
    raise ConversionError(f"{where}: nn.BatchNorm with use_scale/use_bias False is not supported")
  if mod.axis_name is not None:
    raise ConversionError(f"{where}: nn.BatchNorm with axis_name (cross-device statistics) is not "
                          "supported")
  if not (_is_default_init(mod.scale_init, 1.0) and _is_default_init(mod.bias_init, 0.0)):
    raise ConversionError(f"{where}: nn.BatchNorm with non-default scale_init/bias_init is not "
                          "supported (jpq's BatchNorm starts at scale 1, bias 0)")


class Searchable(nn.Module):
  """A user's plain Flax model, converted: ``model(x, ctx) -> QTensor`` in every jpq mode.

  Build it with :func:`searchable`. Its layers are jpq's own (:class:`~jpq_jax.Conv`,
  :class:`~jpq_jax.Dense`, :class:`~jpq_jax.Add`, :class:`~jpq_jax.InputQuantizer`), so every
  jpq function (``trace_table``, ``to_search``, ``freeze``, costs, the sweep, the export) takes it
  like a hand-written jpq model.

  Attributes:
    source: the user's module (wrapped, see :class:`_Source`).
    space: the search space.
    mode_arg: the keyword of the user's ``__call__`` that selects training (``"auto"``: ``train``,
      ``training``, ``is_training`` or ``deterministic`` if it has one; ``None``: no argument).
    input_shape: shape of one example (no batch axis), as given to :func:`searchable`.
  """
  source: _Source
  space: SearchSpace = SearchSpace()
  mode_arg: Optional[str] = "auto"
  input_shape: Tuple[int, ...] = ()

  @property
  def user_model(self) -> nn.Module:
    """The user's unmodified module."""
    return self.source.model

  def trace(self, shape, dtype=jnp.float32, train: bool = False) -> Tuple[Any, List[_Call], Plan]:
    """The user's model traced at input ``shape``: ``(closed_jaxpr, layer calls, plan)``.

    Raises:
      ConversionError: something the conversion cannot handle (names the module path and op).
    """
    model = self.source.model
    closed, calls = _trace_user(model, shape, dtype, _mode_kwargs(model, self.mode_arg, train))
    plan = analyse(closed.jaxpr, calls, type(model).__name__)
    for i, c in enumerate(calls):
      if c.kind == "batchnorm":
        _check_batchnorm(c.module, c.where)
      if c.kind == "dropout" and tuple(c.module.broadcast_dims):
        raise ConversionError(f"{c.where}: nn.Dropout with broadcast_dims is not supported")
    return closed, calls, plan

  @nn.compact
  def __call__(self, x, ctx: Ctx) -> QTensor:
    if not isinstance(ctx, Ctx):
      raise TypeError(f"a converted model is called as model(x, ctx) with a jpq_jax.Ctx, got "
                      f"{type(ctx).__name__}")
    closed, calls, plan = self.trace(tuple(jnp.shape(x)), jnp.result_type(x), ctx.train)
    jaxpr = closed.jaxpr
    sp = self.space
    groups = {}
    for root, (ch, members) in plan.groups.items():
      groups[root] = Group(ch, sp, output=root == plan.out_group,
                           name="g_" + calls[members[0]].name)
    env: Dict[Any, Any] = {}

    def read(v):
      return v.val if isinstance(v, jcore.Literal) else env[v]

    for v, c in zip(jaxpr.constvars, closed.consts):
      env[v] = c
    env[jaxpr.invars[0]] = InputQuantizer(sp, name="input_q")(x, ctx)
    n_add = 0
    for k, eqn in enumerate(jaxpr.eqns):
      ins = [read(v) for v in eqn.invars]
      qs = [a for a in ins if isinstance(a, QTensor)]
      if k in plan.skip:
        env[eqn.outvars[0]] = qs[0]
        continue
      if eqn.primitive is _LAYER_P:
        i = eqn.params["index"]
        env[eqn.outvars[0]] = self._layer(i, calls, plan, groups, qs[0], ctx)
        continue
      if k in plan.adds:
        relu = ("add", k) in plan.relu_after
        env[eqn.outvars[0]] = Add(groups[plan.adds[k]], relu=relu, name=f"add{n_add}")(
            qs[0], qs[1], ctx=ctx)
        n_add += 1
        continue
      if not qs:
        for v, o in zip(eqn.outvars, _bind(eqn, ins)):
          env[v] = o
        continue
      q = qs[0]
      if k in plan.pools:
        env[eqn.outvars[0]] = q.map(ops.global_avg_pool).flatten()
        continue
      if k in plan.window_pools:  # nn.avg_pool: jpq's named op, which the export knows
        env[eqn.outvars[0]] = q.map(ops.avg_pool(*plan.window_pools[k]))
        continue
      if eqn.primitive.name == "reshape" and len(eqn.outvars[0].aval.shape) == 2:
        env[eqn.outvars[0]] = q.flatten()
        continue
      if len(qs) == 1 and len(eqn.outvars) == 1:
        pos = next(j for j, a in enumerate(ins) if a is q)
        if is_relu(eqn, eqn.invars[pos]):
          env[eqn.outvars[0]] = q.map(ops.relu)
          continue

        def fn(v, eqn=eqn, ins=ins, pos=pos):
          args = list(ins)
          args[pos] = v
          return _bind(eqn, args)[0]

        env[eqn.outvars[0]] = q.map(fn)
        continue
      vals = [a.value if isinstance(a, QTensor) else a for a in ins]
      for v, o in zip(eqn.outvars, _bind(eqn, vals)):
        env[v] = q.replace(value=o) if o.shape[-1:] == q.value.shape[-1:] else o
    out = read(jaxpr.outvars[0])
    return out

  def _layer(self, i: int, calls: List[_Call], plan: Plan, groups, q: QTensor, ctx: Ctx):
    c = calls[i]
    m = c.module
    if c.kind == "dropout":
      return q.map(ops.dropout(float(m.rate), deterministic=not ctx.train))
    g = groups[plan.layer_group[i]]
    relu = ("layer", i) in plan.relu_after
    if c.kind == "dense":
      return Dense(int(m.features), g, use_bias=bool(m.use_bias), kernel_init=m.kernel_init,
                   bias_init=m.bias_init, name=c.name)(q, ctx)
    bn = calls[plan.bn_of[i]].module if i in plan.bn_of else None
    extra = dict(use_bn=True, bn_momentum=float(bn.momentum), bn_eps=float(bn.epsilon)) if bn else {}
    return Conv(int(m.features), _pair(m.kernel_size, "kernel_size", c.where), g,
                strides=_pair(m.strides, "strides", c.where),
                padding=_conv_padding(m.padding, c.where), use_bias=bool(m.use_bias),
                depthwise=int(m.feature_group_count) > 1, kernel_init=m.kernel_init,
                bias_init=m.bias_init, relu=relu, name=c.name, **extra)(q, ctx)


def searchable(model: nn.Module, sample_input: Any, space: SearchSpace = SearchSpace(), *,
               mode_arg: Optional[str] = "auto") -> Searchable:
  """Convert an unmodified Flax Linen model into a jpq model searchable in every mode.

  Args:
    model: the user's ``flax.linen`` module, called as ``model(x)`` or ``model(x, train=...)``.
    sample_input: an array or ShapeDtypeStruct of the input (batch included).
    space: the :class:`~jpq_jax.SearchSpace`.
    mode_arg: the user's training keyword (see :class:`Searchable`); ``None`` if it takes none.

  Returns:
    The :class:`Searchable` model: ``out = net.apply(variables, x, ctx)`` returns a
    :class:`~jpq_jax.QTensor` (logits in ``out.value``), as jpq's own models.

  Raises:
    TypeError: ``model`` is not a Flax module, or is already a jpq model.
    ConversionError: an op or layer the conversion cannot handle (names module path and op).
  """
  if not isinstance(model, nn.Module):
    if any(c.__module__.startswith("flax.nnx") for c in type(model).__mro__):
      raise TypeError(f"searchable: {type(model).__name__} is a Flax NNX module; convert it with "
                      "jpq_jax.nnx_searchable(model, sample_input, space)")
    raise TypeError(f"searchable: expected a flax.linen Module, got {type(model).__name__}")
  if isinstance(model, Searchable):
    raise TypeError("searchable: the model is already converted")
  if "space" in {f.name for f in dataclasses.fields(model)}:
    raise TypeError(f"searchable: {type(model).__name__} looks like a jpq model (it has a 'space' "
                    "field); jpq models are used as they are, convert plain Flax models only")
  if not isinstance(space, SearchSpace):
    raise TypeError(f"searchable: space must be a jpq_jax.SearchSpace, got {type(space).__name__}")
  shape = tuple(sample_input.shape)
  net = Searchable(_Source(model), space, mode_arg, shape[1:])
  dtype = getattr(sample_input, "dtype", jnp.float32)
  for train in (False, True):  # both, as the user's Python may branch on its train argument
    net.trace(shape, dtype, train)
  return net


def _get(tree: Mapping, path: Sequence[str], what: str):
  node = tree
  for p in path:
    if not isinstance(node, Mapping) or p not in node:
      raise ValueError(f"convert_variables: the user variables have no {what} at "
                       f"{'/'.join(path)!r}; were they made by this model?")
    node = node[p]
  return node


def convert_variables(net: Searchable, user_variables: Mapping) -> Dict[str, Any]:
  """The user's trained float variables laid out for the converted model's float mode.

  Args:
    net: the converted model (:func:`searchable`).
    user_variables: ``{'params', 'batch_stats'}`` of the user's own model (e.g. its
      ``model.init(...)`` or a trained checkpoint).

  Returns:
    ``{'params', 'batch_stats'}`` for ``net.apply(..., jpq_jax.Ctx.float())``; pass it to
    :func:`jpq_jax.to_search` to start a search from the trained weights.

  Raises:
    ValueError: a layer's variables are missing or have another shape.
  """
  if "params" not in user_variables:
    raise ValueError("convert_variables: user_variables must hold a 'params' collection")
  shape = (1,) + tuple(net.input_shape)
  _, calls, plan = net.trace(shape)
  up, ustats = user_variables["params"], user_variables.get("batch_stats", {})
  params: Dict[str, Any] = {}
  stats: Dict[str, Any] = {}
  for i, c in enumerate(calls):
    if c.kind not in ("conv", "dense"):
      continue
    entry = dict(_get(up, c.path, "parameters"))
    if i in plan.bn_of:
      b = calls[plan.bn_of[i]]
      entry["BatchNorm_0"] = dict(_get(up, b.path, "BatchNorm parameters"))
      stats[c.name] = {"BatchNorm_0": dict(_get(ustats, b.path, "BatchNorm statistics"))}
    params[c.name] = entry
  want = jax.eval_shape(lambda x: net.init(jax.random.PRNGKey(0), x, Ctx.float()),
                        jax.ShapeDtypeStruct(shape, jnp.float32))
  out = {"params": params, "batch_stats": stats}
  got_s = jax.tree_util.tree_map(lambda a: tuple(np.shape(a)), out)
  want_s = jax.tree_util.tree_map(lambda a: tuple(a.shape),
                                  {"params": want["params"], "batch_stats": want.get("batch_stats",
                                                                                     {})})
  if got_s != want_s:
    raise ValueError(f"convert_variables: the user variables do not match the converted model "
                     f"(shapes {got_s} vs {want_s})")
  return out
