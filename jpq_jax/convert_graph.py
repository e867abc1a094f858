"""The sharing graph of a traced user model (METHOD.md §2.6), for :mod:`jpq_jax.convert`.

:func:`analyse` walks the jaxpr of the user's model, in which every intercepted layer is one marker
equation, and decides statically what the converted model does at each equation:

* a conv/dense marker starts a sharing group; a depthwise conv joins its input's group (the
  reference deletes the incoming edges of channel-defining nodes; depthwise convs keep theirs);
* the operands of a ``+`` of two activations from different producers are merged into one group
  (union-find) and the sum is re-quantized by that group (the residual Add quantizer, §2.7);
* a BatchNorm must consume a conv's output and nothing else may: it is folded into that conv;
* ops that keep the channel (last) axis pass the tensor's group on; a flatten records the spatial
  factor; anything that mixes channels outside a layer is refused with the module path and op.

Equations are referred to by their index in ``jaxpr.eqns`` (the plan is made for one jaxpr).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Sequence, Set, Tuple

import numpy as np
from jax.extend import core as jcore

__all__ = ["Act", "Plan", "analyse", "is_relu", "ConversionError"]


class ConversionError(ValueError):
  """The user's model has something the conversion cannot make searchable (names path and op)."""


INPUT = 0  # union-find node of the network input

_ELEMENTWISE = frozenset("""
add sub mul div max min pow atan2 rem nextafter select_n clamp and or xor not ne eq ge gt le lt
neg exp exp2 log log1p expm1 tanh logistic sin cos tan abs sign floor ceil round sqrt rsqrt cbrt
integer_pow square erf erfc erf_inv is_finite convert_element_type stop_gradient copy copy_p
reduce_precision real imag
""".split())
_REDUCE = frozenset("reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or argmax "
                    "argmin".split())
_CUMULATIVE = frozenset("cumsum cumprod cummax cummin cumlogsumexp".split())
_WINDOW = frozenset("reduce_window_sum reduce_window_max reduce_window_min reduce_window".split())
_CALLS = frozenset("jit pjit custom_jvp_call custom_vjp_call custom_vjp_call_jaxpr closed_call "
                   "remat checkpoint".split())


@dataclasses.dataclass(frozen=True)
class Act:
  """Static facts of an activation value: its group node, producer and flatten factor."""
  group: int
  src: Any
  mult: int = 1


class _UnionFind:
  def __init__(self):
    self.parent: List[int] = [INPUT]

  def new(self) -> int:
    self.parent.append(len(self.parent))
    return len(self.parent) - 1

  def find(self, a: int) -> int:
    while self.parent[a] != a:
      self.parent[a] = self.parent[self.parent[a]]
      a = self.parent[a]
    return a

  def union(self, a: int, b: int) -> int:
    a, b = self.find(a), self.find(b)
    lo, hi = min(a, b), max(a, b)  # the earlier group names the merged one
    self.parent[hi] = lo
    return lo


@dataclasses.dataclass
class Plan:
  """What the converted model does at each equation of one jaxpr.

  Attributes:
    layer_group: layer call index -> group root (conv and dense calls).
    bn_of: conv call index -> index of the BatchNorm call folded into it.
    relu_after: producers (``("layer", i)`` or ``("add", k)``) whose following ReLU they apply.
    skip: equation indices that are the identity in the converted model (fused ReLU, folded
      BatchNorm, the division of a global average pool).
    pools: equation index of a spatial ``reduce_sum`` -> that of its division (global avg pool).
    window_pools: equation index of a spatial ``reduce_window_sum`` divided by its window size
      (``nn.avg_pool``) -> (window, strides, padding) of :func:`jpq_jax.ops.avg_pool`.
    adds: equation index of a residual add -> group root.
    out_group: root of the classifier's group.
    groups: root -> ``(channels, [layer call indices])`` in first-use order.
  """
  layer_group: Dict[int, int]
  bn_of: Dict[int, int]
  relu_after: Set[Any]
  skip: Set[int]
  pools: Dict[int, int]
  window_pools: Dict[int, Any]
  adds: Dict[int, int]
  out_group: int
  groups: Dict[int, Tuple[int, List[int]]]


def _where(eqn, default: str) -> str:
  ns = str(eqn.source_info.name_stack)
  return ns or default


def is_relu(eqn, var) -> bool:
  """Whether ``eqn`` is ``relu(var)`` (``jax.nn.relu`` / ``nn.relu`` or ``max(var, 0)``)."""
  p = eqn.primitive.name
  if p in ("custom_jvp_call", "jit", "pjit"):
    if len(eqn.invars) != 1 or len(eqn.outvars) != 1:
      return False
    if eqn.params.get("name") == "relu":
      return True
    sub = _sub_jaxpr(eqn)  # jax.nn.relu: a custom_jvp around jit(max(x, 0))
    return (sub is not None and len(sub.eqns) == 1 and sub.outvars[0] is sub.eqns[0].outvars[0]
            and is_relu(sub.eqns[0], sub.invars[0]))
  if p == "max" and len(eqn.invars) == 2 and var in eqn.invars:
    other = eqn.invars[1] if eqn.invars[0] is var else eqn.invars[0]
    return isinstance(other, jcore.Literal) and bool(np.all(np.asarray(other.val) == 0))
  return False


def _sub_jaxpr(eqn):
  sub = eqn.params.get("jaxpr", eqn.params.get("call_jaxpr", eqn.params.get("fun_jaxpr")))
  return getattr(sub, "jaxpr", sub)


def _channel_rule(eqn, acts: Sequence[Tuple[int, Act]], where: str, uf: _UnionFind) -> List[Act]:
  """Output facts of a non-layer equation on activations (one producer); raises if it mixes
  channels."""
  p = eqn.primitive.name
  a = acts[0][1]
  x = eqn.invars[acts[0][0]]
  shape = tuple(x.aval.shape)
  nd = len(shape)
  out_shape = tuple(eqn.outvars[0].aval.shape) if eqn.outvars else ()

  def refuse(why: str):
    raise ConversionError(f"{where}: operation '{p}' on an activation of shape {shape} {why}; the "
                          "conversion cannot make it searchable (only conv/dense layers may mix "
                          "channels, and only '+' may merge branches)")

  if len({m.src for _, m in acts}) > 1:
    refuse("combines tensors of different layers")
  same = [Act(a.group, a.src, a.mult)] * len(eqn.outvars)
  if p in _ELEMENTWISE:
    if out_shape != shape:
      refuse(f"broadcasts it to {out_shape}")
    return same
  if p in _REDUCE:
    if nd - 1 in tuple(eqn.params.get("axes", ())):
      refuse("reduces over the channel axis")
    return same
  if p in _CUMULATIVE:
    if eqn.params.get("axis") == nd - 1:
      refuse("runs along the channel axis")
    return same
  if p in _WINDOW:
    ok = (eqn.params["window_dimensions"][-1] == 1 and eqn.params["window_strides"][-1] == 1
          and tuple(eqn.params["padding"][-1]) == (0, 0))
    if not ok:
      refuse("pools over the channel axis")
    return same
  if p == "reshape":
    if out_shape[-1:] == shape[-1:] and out_shape[:1] == shape[:1]:
      return same
    if len(out_shape) == 2 and nd > 2 and out_shape[0] == shape[0]:
      return [Act(a.group, a.src, a.mult * int(np.prod(shape[1:-1])))]
    refuse(f"reshapes it to {out_shape} (only a flatten to (batch, features) or a reshape that "
           "keeps the channel axis last is supported)")
  if p == "squeeze":
    if nd - 1 in tuple(eqn.params["dimensions"]):
      refuse("squeezes the channel axis")
    return same
  if p == "broadcast_in_dim":
    bd = tuple(eqn.params["broadcast_dimensions"])
    if not (bd and bd[-1] == len(out_shape) - 1 and out_shape[-1] == shape[-1]):
      refuse(f"broadcasts it to {out_shape}")
    return same
  if p == "transpose":
    if tuple(eqn.params["permutation"])[-1] != nd - 1:
      refuse("moves the channel axis")
    return same
  if p == "rev":
    if nd - 1 in tuple(eqn.params["dimensions"]):
      refuse("reverses the channel axis")
    return same
  if p == "slice":
    st, lim = eqn.params["start_indices"], eqn.params["limit_indices"]
    strides = eqn.params.get("strides") or (1,) * nd
    if not (st[-1] == 0 and lim[-1] == shape[-1] and strides[-1] == 1):
      refuse("slices the channel axis")
    return same
  if p == "pad":
    if tuple(eqn.params["padding_config"][-1]) != (0, 0, 0):
      refuse("pads the channel axis")
    return same
  if p in _CALLS:
    sub = _sub_jaxpr(eqn)
    if sub is None:
      refuse("(a transformed function the conversion cannot look into)")
    env = {}
    for i, v in enumerate(eqn.invars):
      m = next((m for j, m in acts if j == i), None)
      if m is not None:
        env[sub.invars[i]] = m
    outs = _walk_inner(sub, env, where, uf)
    return [outs.get(v) if not isinstance(v, jcore.Literal) else None for v in sub.outvars]
  refuse("mixes channels or is not supported")
  return []  # unreachable


def _walk_inner(jaxpr, env: Dict[Any, Act], where: str, uf: _UnionFind) -> Dict[Any, Act]:
  """Channel rules through the body of a call primitive (no layers, no residual adds inside)."""
  for eqn in jaxpr.eqns:
    acts = [(i, env[v]) for i, v in enumerate(eqn.invars)
            if not isinstance(v, jcore.Literal) and v in env]
    if not acts:
      continue
    if eqn.primitive.name == "jpq_user_layer":
      raise ConversionError(f"{where}: a layer called inside a transformed function (jax.jit, "
                            "remat, custom_jvp...) is not supported")
    outs = _channel_rule(eqn, acts, _where(eqn, where), uf)
    for v, m in zip(eqn.outvars, outs):
      if m is not None:
        env[v] = m
  return env


def _avg_pool_window(eqn):
  """(window, strides, padding) of a spatial ``reduce_window_sum`` (``nn.avg_pool``'s sum), or
  None for any other equation (a window over the batch or channel axis, dilations)."""
  if eqn.primitive.name != "reduce_window_sum":
    return None
  p = eqn.params
  wd, ws, pad = tuple(p["window_dimensions"]), tuple(p["window_strides"]), tuple(p["padding"])
  if len(wd) != 4 or wd[0] != 1 or wd[3] != 1 or ws[0] != 1 or ws[3] != 1:
    return None
  if tuple(pad[0]) != (0, 0) or tuple(pad[3]) != (0, 0):
    return None
  if any(d != 1 for d in tuple(p.get("base_dilation", ())) + tuple(p.get("window_dilation", ()))):
    return None
  return (wd[1], wd[2]), (ws[1], ws[2]), (tuple(pad[1]), tuple(pad[2]))


def analyse(jaxpr, calls: Sequence[Any], model_name: str) -> Plan:
  """The :class:`Plan` of a user model's jaxpr (see the module docstring).

  Args:
    jaxpr: the model's jaxpr, one input (the batch), layer calls as marker equations.
    calls: the intercepted layer calls (:class:`jpq_jax.convert._Call`), by marker index.
    model_name: the model's class name, for messages.

  Returns:
    The plan.

  Raises:
    ConversionError: an op or layer arrangement the conversion cannot handle.
  """
  top = f"<{model_name}>"
  if len(jaxpr.invars) != 1:
    raise ConversionError(f"{top}: the model must take one input array, got {len(jaxpr.invars)}")
  if len(jaxpr.outvars) != 1:
    raise ConversionError(f"{top}: the model must return one array (the logits), got "
                          f"{len(jaxpr.outvars)} outputs")
  uf = _UnionFind()
  env: Dict[Any, Act] = {jaxpr.invars[0]: Act(INPUT, "input")}
  uses: Dict[Any, List[int]] = {}
  for k, eqn in enumerate(jaxpr.eqns):
    for v in eqn.invars:
      if not isinstance(v, jcore.Literal):
        uses.setdefault(v, []).append(k)
  for v in jaxpr.outvars:
    if not isinstance(v, jcore.Literal):
      uses.setdefault(v, []).append(-1)

  layer_group: Dict[int, int] = {}
  bn_of: Dict[int, int] = {}
  qout: Dict[Any, Any] = {}      # producer -> the var its quantizer outputs
  raw_conv: Dict[Any, int] = {}  # var -> conv call index (a conv's output before any BatchNorm)
  adds: Dict[int, int] = {}
  skip: Set[int] = set()
  pools: Dict[int, int] = {}
  window_pools: Dict[int, Any] = {}
  node_of_layer: Dict[int, int] = {}
  for k, eqn in enumerate(jaxpr.eqns):
    acts = [(i, env[v]) for i, v in enumerate(eqn.invars)
            if not isinstance(v, jcore.Literal) and v in env]
    p = eqn.primitive.name
    if p == "jpq_user_layer":
      i = eqn.params["index"]
      call = calls[i]
      where = call.where
      out = eqn.outvars[0]
      if not acts:
        raise ConversionError(f"{where}: {call.kind} layer on a tensor that does not derive from "
                              "the model's input")
      a = acts[0][1]
      if call.kind in ("conv", "dense"):
        if a.mult != 1 and call.kind == "conv":
          raise ConversionError(f"{where}: nn.Conv after a flatten is not supported")
        if call.kind == "dense" and len(call.in_shape) != 2:
          raise ConversionError(f"{where}: nn.Dense on a rank-{len(call.in_shape)} tensor "
                                f"{call.in_shape}; flatten it to (batch, features) first "
                                "(x.reshape((x.shape[0], -1)) or jnp.mean over the spatial axes)")
        depthwise = call.kind == "conv" and int(call.module.feature_group_count) > 1
        if depthwise:
          if uf.find(a.group) == INPUT:
            raise ConversionError(f"{where}: a depthwise conv on the network input has no "
                                  "producing layer to share a group with; not supported")
          g = a.group
        else:
          g = uf.new()
        node_of_layer[i] = g
        env[out] = Act(g, ("layer", i))
        qout[("layer", i)] = out
        if call.kind == "conv":
          raw_conv[out] = i
      elif call.kind == "batchnorm":
        x = eqn.invars[0]
        j = raw_conv.get(x)
        if j is None or len(uses.get(x, ())) != 1:
          why = ("its input is also used elsewhere" if j is not None
                 else "its input is not the output of an nn.Conv")
          raise ConversionError(f"{where}: nn.BatchNorm that does not directly follow an nn.Conv "
                                f"({why}); only a BatchNorm right after a conv can be folded")
        bn_of[j] = i
        skip.add(k)
        env[out] = a
        qout[("layer", j)] = out
      else:  # dropout: channel-preserving
        env[out] = a
      continue
    if not acts:
      continue
    where = _where(eqn, top)
    srcs = {m.src for _, m in acts}
    if p == "add" and len(acts) == 2 and len(srcs) == 2:
      s0, s1 = (tuple(eqn.invars[i].aval.shape) for i, _ in acts)
      if s0 != s1:
        raise ConversionError(f"{where}: residual '+' of shapes {s0} and {s1}; the operands must "
                              "have the same shape")
      g0, g1 = (uf.find(m.group) for _, m in acts)
      if INPUT in (g0, g1):
        raise ConversionError(f"{where}: residual '+' with the network input itself is not "
                              "supported (the input quantizer has no weights to share)")
      g = uf.union(g0, g1)
      adds[k] = g
      env[eqn.outvars[0]] = Act(g, ("add", k))
      qout[("add", k)] = eqn.outvars[0]
      continue
    outs = _channel_rule(eqn, acts, where, uf)
    for v, m in zip(eqn.outvars, outs):
      if m is not None:
        env[v] = m
    if p == "reduce_sum" and tuple(eqn.params["axes"]) == (1, 2):
      shape = tuple(eqn.invars[0].aval.shape)
      us = uses.get(eqn.outvars[0], [])
      if len(shape) == 4 and len(us) == 1 and us[0] >= 0:
        d = jaxpr.eqns[us[0]]
        if (d.primitive.name == "div" and d.invars[0] is eqn.outvars[0]
            and isinstance(d.invars[1], jcore.Literal)
            and float(np.asarray(d.invars[1].val)) == shape[1] * shape[2]):
          pools[k] = us[0]
          skip.add(us[0])
    window = _avg_pool_window(eqn)
    if window is not None:  # ``nn.avg_pool``: the window sum, then its division by the window size
      us = uses.get(eqn.outvars[0], [])
      if len(us) == 1 and us[0] >= 0:
        d = jaxpr.eqns[us[0]]
        if (d.primitive.name == "div" and d.invars[0] is eqn.outvars[0]
            and isinstance(d.invars[1], jcore.Literal)
            and float(np.asarray(d.invars[1].val)) == window[0][0] * window[0][1]):
          window_pools[k] = window
          skip.add(us[0])

  # A ReLU that is the only consumer of a quantizer's output is applied by the layer/Add.
  relu_after: Set[Any] = set()
  for prod, v in qout.items():
    us = uses.get(v, [])
    if prod[0] == "layer" and calls[prod[1]].kind == "dense":
      continue
    if len(us) == 1 and us[0] >= 0 and is_relu(jaxpr.eqns[us[0]], v):
      relu_after.add(prod)
      skip.add(us[0])

  outv = jaxpr.outvars[0]
  if isinstance(outv, jcore.Literal) or outv not in env:
    raise ConversionError(f"{top}: the model's output does not derive from its input")
  out_group = uf.find(env[outv].group)
  if out_group == INPUT:
    raise ConversionError(f"{top}: the model has no conv/dense layer before its output; nothing "
                          "to search")
  layer_group = {i: uf.find(g) for i, g in node_of_layer.items()}
  groups: Dict[int, Tuple[int, List[int]]] = {}
  for i in sorted(layer_group):
    root = layer_group[i]
    ch = int(calls[i].module.features)
    if root in groups and groups[root][0] != ch:  # pragma: no cover - adds check shapes
      raise ConversionError(f"{calls[i].where}: {ch} channels in a group of {groups[root][0]}")
    groups.setdefault(root, (ch, []))[1].append(i)
  adds = {k: uf.find(g) for k, g in adds.items()}
  return Plan(layer_group=layer_group, bn_of=bn_of, relu_after=relu_after, skip=skip, pools=pools,
              window_pools=window_pools,
              adds=adds, out_group=out_group, groups=groups)
