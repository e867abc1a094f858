"""Recording the dataflow graph of a jpq model for the export (one abstract trace).

:func:`trace_graph` records every :class:`~jpq_jax.InputQuantizer`, ``Conv``, ``Dense``, ``Add``
and every named op applied with ``QTensor.map`` between them, so the bundle knows the graph
without the table's help (the table knows groups, not adds and ops).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jpq_jax import ops as ops_lib
from jpq_jax.bundle import BundleError
from jpq_jax.layers import (GRAPH_RECORDER, Add, Conv, Ctx, Dense, InputQuantizer, QTensor)

__all__ = ["trace_graph"]


# ------------------------------------------------------------------------------------------------
# Graph recording
# ------------------------------------------------------------------------------------------------
def _fn_name(fn) -> str:
  name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
  mod = getattr(fn, "__module__", None)
  return f"{mod}.{name}" if mod else name


def _explicit_pads(padding, in_hw, kernel, strides) -> List[List[int]]:
  if isinstance(padding, str):
    pads = jax.lax.padtype_to_pads(tuple(in_hw), tuple(kernel), tuple(strides), padding.upper())
  elif isinstance(padding, int):
    pads = ((padding, padding), (padding, padding))
  else:
    pads = padding
  return [[int(a), int(b)] for a, b in pads]


def _pair(v) -> Tuple[int, int]:
  return tuple(int(t) for t in v) if isinstance(v, (tuple, list)) else (int(v), int(v))


class _Recorder:
  """Collects graph nodes during one abstract trace; edges by identity of the traced values."""

  def __init__(self):
    self.nodes: List[Dict[str, Any]] = []
    self._src: Dict[int, int] = {}
    # Keeps every traced value alive until the trace ends, so no id() is reused for another one.
    self._keep: List[Any] = []

  def _add(self, node: Dict[str, Any], out_value) -> int:
    node["id"] = len(self.nodes)
    self.nodes.append(node)
    self._src[id(out_value)] = node["id"]
    self._keep.append(out_value)
    return node["id"]

  def add_input(self, x) -> None:
    self._add({"op": "input", "inputs": [], "shape": list(x.shape[1:])}, x)

  def source(self, value, consumer: str) -> int:
    try:
      return self._src[id(value)]
    except KeyError:
      raise BundleError(
          f"{consumer}: its input has no known origin; it was computed outside the library's layers "
          "and QTensor.map/flatten (e.g. with jnp on .value); build the tensor with a jpq_jax layer "
          "or apply the op with QTensor.map(jpq_jax.ops....)") from None

  def on_op(self, vin, vout, fn) -> None:
    src = self._src.get(id(vin))
    if src is None:
      return  # an op on a tensor of unknown origin: its consumer reports it
    self._keep.append(vin)
    if isinstance(fn, str) and fn == "flatten":
      node = {"op": "flatten"}
    else:
      op = ops_lib.describe(fn)
      node = op.descriptor() if op is not None else {"op": "unnamed", "fn": _fn_name(fn)}
    node["inputs"] = [src]
    node["shape"] = list(vout.shape[1:])
    self._add(node, vout)

  def on_module(self, mod: nn.Module, args, kwargs, out) -> None:
    name = "/".join(mod.scope.path)
    if isinstance(mod, InputQuantizer):
      x = args[0] if args else kwargs["x"]
      x = x.value if isinstance(x, QTensor) else x
      src = self.source(x, f"input quantizer {name!r}")
      node = {"op": "input_quant", "name": name, "group": out.group, "inputs": [src]}
    elif isinstance(mod, (Conv, Dense)):
      x = args[0] if args else kwargs["x"]
      src = self.source(x.value, f"layer {name!r}")
      node = {"op": "conv" if isinstance(mod, Conv) else "dense", "name": name,
              "group": mod.group.group_name, "in_group": x.group, "inputs": [src]}
      if isinstance(mod, Conv):
        in_hw = tuple(int(v) for v in x.value.shape[1:3])
        kernel, strides = _pair(mod.kernel_size), _pair(mod.strides)
        node.update(kernel=list(kernel), strides=list(strides),
                    padding=_explicit_pads(mod.padding, in_hw, kernel, strides),
                    depthwise=bool(mod.depthwise))
    elif isinstance(mod, Add):
      srcs = [self.source(x.value, f"add {name!r} (operand {i})") for i, x in enumerate(args)]
      node = {"op": "add", "name": name, "group": out.group, "inputs": srcs}
    else:  # pragma: no cover - filtered by the interceptor
      return
    node["shape"] = list(out.value.shape[1:])
    if getattr(mod, "relu", False):
      # The layer applied the ReLU that follows its quantizer: the same relu node a
      # QTensor.map(jax.nn.relu) after the layer records.
      relu = ops_lib.describe(jax.nn.relu).descriptor()
      relu.update(inputs=[self._add(node, object())], shape=node["shape"])
      self._add(relu, out.value)
    else:
      self._add(node, out.value)


_RECORDED = (InputQuantizer, Conv, Dense, Add)


def trace_graph(model: Any, variables: Mapping, sample_input: Any) -> Dict[str, Any]:
  """Record the fixed-mode network graph with one abstract trace (nothing is computed).

  Args:
    model: the Flax model.
    variables: fixed-mode variables (``params`` and ``precision``).
    sample_input: an array or ShapeDtypeStruct of the input (batch included).

  Returns:
    ``{"nodes": [...], "output": id}``; nodes in topological order, each with ``id``, ``op``,
    ``inputs`` (node ids) and the op's static attributes.

  Raises:
    BundleError: a tensor of unknown origin, or an unnamed op in ``QTensor.map``.
  """
  rec = _Recorder()
  out_id: List[int] = []

  def intercept(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == "__call__" and isinstance(context.module, _RECORDED):
      rec.on_module(context.module, args, kwargs, out)
    return out

  def run(variables, x):
    token = GRAPH_RECORDER.set(rec)
    try:
      rec.add_input(x)
      with nn.intercept_methods(intercept):
        y = model.apply(variables, x, Ctx.fixed())
      out_id.append(rec.source(y.value if isinstance(y, QTensor) else y, "the model's output"))
    finally:
      GRAPH_RECORDER.reset(token)
    return None

  x = jax.ShapeDtypeStruct(tuple(sample_input.shape), getattr(sample_input, "dtype", jnp.float32))
  jax.eval_shape(run, variables, x)
  nodes = rec.nodes
  # Keep only what the output depends on (e.g. an auxiliary head is not exported).
  live, stack = set(), [out_id[0]]
  while stack:
    i = stack.pop()
    if i not in live:
      live.add(i)
      stack.extend(nodes[i]["inputs"])
  for n in nodes:
    if n["id"] in live and n["op"] == "unnamed":
      raise BundleError(
          f"cannot export: QTensor.map({n['fn']}) feeds {_consumer(nodes, n['id'])}; the export "
          "needs a named op: use jpq_jax.ops.relu, ops.global_avg_pool, ops.avg_pool, "
          "ops.max_pool or ops.dropout in QTensor.map instead of an unnamed function")
  return {"nodes": [n for n in nodes if n["id"] in live], "output": out_id[0]}


def _consumer(nodes, i) -> str:
  """The first layer (or the output) downstream of node ``i``, for error messages."""
  frontier = [i]
  while frontier:
    nxt = []
    for n in nodes:
      if any(j in n["inputs"] for j in frontier):
        if "name" in n:
          return f"{n['op']} {n['name']!r}"
        nxt.append(n["id"])
    frontier = nxt
  return "the model's output"

