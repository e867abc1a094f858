"""A bundle as a standard ONNX model (QDQ) or as QONNX, and running them in their own runtimes.

The graph is built from a :class:`jpq_jax.export.Bundle`, so it holds exactly the bundle's network:
pruned channels removed, integer weight codes, the searched clips and bit-widths.

**ONNX (``flavor="onnx"``).** Weights are integer initializers of the narrowest type the installed
onnx/onnxruntime run for each channel's bit-width (``INT2`` from opset 25, ``INT4`` from opset 21,
else ``INT8``), each followed by a per-output-channel ``DequantizeLinear`` (``axis=0``). A layer's
channels of one bit-width form one initializer; to keep them contiguous, the channels of every
sharing group are put in the order (bit-width, original position), consistently for all its layers
and every consumer's input channels (the original channel of each ONNX position is in the metadata;
the logits are put back in class order by a final ``Gather``). Biases are ``INT32`` codes with
``DequantizeLinear`` at scale ``s_a * s_w``. Every activation quantizer is
``Clip(lo, hi) -> Sub(step/2) -> QuantizeLinear -> DequantizeLinear`` at step ``1/k`` (the PACT
step, ``k = (2^b - 1) / (clip + 1e-3)``), in an unsigned container of at least its bit-width (a
signed quantizer gets the zero point ``-floor(k * inf)``). PACT floors while ``QuantizeLinear``
rounds half to even, and ``round(v - 1/2) = floor(v)`` except where ``v`` is an exact odd integer
(rare after a conv's float rescaling; 0, by far the most frequent code, is exact). A residual add,
whose operands share its grid so that ``k * z`` sits on integers, is instead recomputed from the
operands' codes with JAX's float32 arithmetic (``Cast``, ``Div``, ``Add``, ``Clip``, ``Mul``,
``Floor``; see :meth:`_Writer.add_like_jax`), then QDQ'd losslessly. Average
pools are followed by a 16-bit QDQ at step ``1/(k * window)`` (the window sum of codes, exact) so
that the classifier reads a dequantized integer tensor too. The graph takes NHWC input (as jpq
does) and transposes it to NCHW once.

**QONNX (``flavor="qonnx"``).** The same graph, with QONNX ``Quant`` nodes (domain
``qonnx.custom_op.general``) instead: float32 weights ``q * s_w`` through ``Quant`` with the
channel's exact bit-width (``ROUND``), activations ``Clip`` then ``Quant`` with the exact activation
bit-width and ``rounding_mode="FLOOR"`` (PACT's own rounding), biases through a 32-bit ``Quant``;
residual adds as in ONNX (their ``Quant`` rounds the already floored grid value: ``ROUND``).

**Checked** (tests/test_deploy_onnx.py): onnxruntime and qonnx's ``execute_onnx`` reproduce jpq's
fixed-mode network on the trained demo (all 359 test examples: same argmax, logits within 2.4e-6)
and on a random-weight ResNet-8 with 2/4/8-bit weights and activations (within 3.6e-7).

API::

  model = to_onnx(bundle)                 # onnx.ModelProto, checked by onnx.checker
  logits = run_onnx(model, x)             # onnxruntime, CPU; x NHWC float32
  model = to_onnx(bundle, flavor="qonnx"); logits = run_qonnx(model, x)
"""

from __future__ import annotations

import functools
import importlib
import json
from typing import Any, Dict, List, Mapping, Optional, Tuple

import ml_dtypes
import numpy as np

from jpq_jax import ops as ops_lib
from jpq_jax.bundle import Bundle, BundleError
from jpq_jax.bundle_run import _layer_weights

__all__ = ["FLAVORS", "QONNX_DOMAIN", "capabilities", "to_onnx", "weight_payload_bytes", "run_onnx",
           "run_qonnx", "require"]

FLAVORS = ("onnx", "qonnx")
QONNX_DOMAIN = "qonnx.custom_op.general"
# QONNX's consumers (FINN, hls4ml) and qonnx's own executor work at moderate opsets; every op used
# here exists unchanged since opset 13.
QONNX_OPSET = 13
_OPSETS = (25, 21)  # 25: INT2/UINT2 in (De)QuantizeLinear; 21: INT4/UINT4
_TYPES = {"int": ((2, "INT2", ml_dtypes.int2), (4, "INT4", ml_dtypes.int4), (8, "INT8", np.int8),
                  (16, "INT16", np.int16)),
          "uint": ((2, "UINT2", ml_dtypes.uint2), (4, "UINT4", ml_dtypes.uint4),
                   (8, "UINT8", np.uint8), (16, "UINT16", np.uint16))}
_F32 = np.float32


def require(module: str):
  """Import an optional dependency or fail with one line naming it.

  Args:
    module: ``"onnx"``, ``"onnxruntime"`` or ``"qonnx"``.

  Returns:
    The module.

  Raises:
    ImportError: it is not installed (the message names it and the extra that installs it).
  """
  try:
    return importlib.import_module(module)
  except ImportError:
    raise ImportError(f"ONNX export needs the optional dependency {module!r}, which is not "
                      "installed: pip install 'jpq-jax[onnx]'") from None


def _probe(onnx, ort, opset: int, np_type) -> bool:
  """Whether a QuantizeLinear/DequantizeLinear pair and a per-axis DequantizeLinear of an
  initializer of this type pass the checker (and run in onnxruntime, when installed)."""
  h, nh = onnx.helper, onnx.numpy_helper
  f = onnx.TensorProto.FLOAT
  w = np.array([[1, 0], [0, 1]])
  inits = [nh.from_array(w.astype(np_type), "w"), nh.from_array(np.array([0.5, 0.25], _F32), "s"),
           nh.from_array(_F32(0.5), "t"), nh.from_array(np.zeros((), np_type), "z")]
  nodes = [h.make_node("DequantizeLinear", ["w", "s"], ["y1"], axis=0),
           h.make_node("QuantizeLinear", ["x", "t", "z"], ["q"]),
           h.make_node("DequantizeLinear", ["q", "t", "z"], ["y2"])]
  graph = h.make_graph(nodes, "probe", [h.make_tensor_value_info("x", f, [2, 2])],
                       [h.make_tensor_value_info("y1", f, [2, 2]),
                        h.make_tensor_value_info("y2", f, [2, 2])], initializer=inits)
  model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
  try:
    onnx.checker.check_model(model, full_check=True)
    if ort is None:
      return True
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.array([[0.0, 0.5], [0.5, 0.0]], _F32)
    y1, y2 = sess.run(None, {"x": x})
  except Exception:  # pylint: disable=broad-except
    return False  # not supported by this onnx / onnxruntime pair
  return bool(np.allclose(y1, w * np.array([[0.5], [0.25]])) and np.allclose(y2, x))


@functools.lru_cache(maxsize=None)
def capabilities() -> Dict[str, Any]:
  """The opset and integer types the installed onnx (and onnxruntime) support, probed once.

  Returns:
    ``{"opset", "int": [(bits, type name)], "uint": [...], "checked_by"}``: the highest opset of
    ``(25, 21)`` whose 8-bit QDQ runs, and the container types (narrowest first) that work there.

  Raises:
    ImportError: onnx is not installed. BundleError: no usable opset.
  """
  onnx = require("onnx")
  try:
    ort = importlib.import_module("onnxruntime")
  except ImportError:
    ort = None
  for opset in _OPSETS:
    if opset > onnx.defs.onnx_opset_version():
      continue
    found = {kind: [(b, name) for b, name, np_type in cands if hasattr(onnx.TensorProto, name)
                    and _probe(onnx, ort, opset, np_type)]
             for kind, cands in _TYPES.items()}
    if all(any(b == 8 for b, _ in v) for v in found.values()):
      by = f"onnxruntime {ort.__version__}" if ort is not None else "onnx.checker only"
      return {"opset": opset, **found, "checked_by": by}
  raise BundleError(f"the installed onnx {onnx.__version__} / onnxruntime support none of the "
                    f"opsets {_OPSETS} with 8-bit QuantizeLinear; upgrade them")


def _container(kind: str, bits: int, caps: Mapping) -> Tuple[str, Any]:
  for b, name in caps[kind]:
    if bits <= b:
      return name, dict((n, t) for _, n, t in _TYPES[kind])[name]
  raise BundleError(f"a {bits}-bit {'weight' if kind == 'int' else 'activation'} has no ONNX "
                    f"integer type (QuantizeLinear/DequantizeLinear hold at most "
                    f"{caps[kind][-1][0]} bits); export it with --format qonnx")


class _Graph:
  """ONNX nodes and initializers under construction, with unique names."""

  def __init__(self, onnx):
    self.onnx, self.nodes, self.inits, self._used = onnx, [], [], set()
    self.weight_inits: List[str] = []

  def fresh(self, base: str) -> str:
    base = base.replace("/", ".")
    name, i = base, 1
    while name in self._used:
      name, i = f"{base}_{i}", i + 1
    self._used.add(name)
    return name

  def const(self, base: str, value, weight: bool = False) -> str:
    name = self.fresh(base)
    self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(value), name))
    if weight:
      self.weight_inits.append(name)
    return name

  def op(self, op_type: str, inputs: List[str], base: str, domain: Optional[str] = None,
         **attrs) -> str:
    out = self.fresh(base)
    self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [out], name=out, domain=domain,
                                                 **attrs))
    return out


class _Writer:
  """Translates the bundle's nodes one by one; each value is ``(name, quant, order)``.

  ``quant`` is the integer grid of a quantized value (``scale``, ``lo``/``hi`` codes) or None;
  ``order[j]`` is the bundle channel held at ONNX channel ``j`` (see the module docstring).
  """

  def __init__(self, bundle: Bundle, flavor: str, caps: Mapping, onnx):
    self.b, self.m, self.flavor, self.caps = bundle, bundle.manifest, flavor, caps
    self.g = _Graph(onnx)
    self.containers: Dict[str, Any] = {}

  # ---- quantizers ---------------------------------------------------------------------------
  def quantize(self, z: str, q: Mapping, base: str, exact: bool = False):
    """PACT quantizer ``q`` on ``z``; ``exact``: ``z`` is a sum of values on this quantizer's own
    grid (a residual add), so ``z / step`` is an integer up to float rounding and rounds exactly."""
    k = _F32(q["k"])
    lo, hi = ((_F32(q["clip_inf"]), _F32(q["clip_sup"])) if q["signed"]
              else (_F32(0), _F32(q["clip"])))
    c_lo, c_hi = int(np.floor(k * lo)), int(np.floor(k * hi))  # float32, as the bundle does
    step = _F32(1.0 / np.float64(k))
    zp = -c_lo  # unsigned container; 0 for unsigned PACT
    g = self.g
    lo_name, hi_name = g.const(f"{base}.lo", lo), g.const(f"{base}.hi", hi)
    if exact and self.flavor == "onnx":
      # The same clamp as Max/Min: onnxruntime 1.32's Clip->QuantizeLinear fusion fails on a 2- or
      # 4-bit zero point ("Unexpected data type for QuantizeLinear input y_zero_point").
      c = g.op("Min", [g.op("Max", [z, lo_name], f"{base}.max"), hi_name], f"{base}.clip")
    else:
      c = g.op("Clip", [z, lo_name, hi_name], f"{base}.clip")
    if self.flavor == "qonnx":
      out = g.op("Quant", [c, g.const(f"{base}.scale", step), g.const(f"{base}.zp", _F32(zp)),
                           g.const(f"{base}.bits", _F32(q["bits"]))], f"{base}.quant",
                 domain=QONNX_DOMAIN, signed=0, narrow=0,
                 rounding_mode="ROUND" if exact else "FLOOR")
      self.containers[base] = f"Quant {q['bits']}b"
      return out, {"scale": step, "lo": c_lo, "hi": c_hi, "q": out, "zp": 0}
    else:
      tname, np_type = _container("uint", int(q["bits"]), self.caps)
      self.containers[base] = tname
      zp_name = g.const(f"{base}.zp", np.asarray(zp).astype(np_type))
      s_name = g.const(f"{base}.scale", step)
      shifted = c if exact else g.op("Sub", [c, g.const(f"{base}.half", _F32(step / 2))],
                                     f"{base}.floor_shift")
      qv = g.op("QuantizeLinear", [shifted, s_name, zp_name], f"{base}.q")
      out = g.op("DequantizeLinear", [qv, s_name, zp_name], f"{base}.dq")
      return out, {"scale": step, "lo": c_lo, "hi": c_hi, "q": qv, "zp": zp}
    return out, {"scale": step, "lo": c_lo, "hi": c_hi}

  def add_like_jax(self, ins, q: Mapping, base: str):
    """A residual add with the fake-quant graph's float32 arithmetic, then its QDQ.

    The operands share the output's grid, so ``k * z`` is an integer up to float rounding and
    JAX's ``floor(k * (n1/k + n2/k))`` lands one code below ``n1 + n2`` for a share of the outputs
    (7.4% of the non-zero ones on the trained demo); the trained network has this bias. The operand
    values ``n_i / k`` are recomputed from the integer codes by a true division (not
    DequantizeLinear's multiplication by ``1/k``, one ulp apart), summed, clamped and floored as
    in JAX, so the codes are the bundle's (and JAX's) exactly; the QDQ that follows is lossless.
    """
    g = self.g
    k = g.const(f"{base}.k", _F32(q["k"]))
    vals = []
    for i, t in enumerate(ins):
      if self.flavor == "qonnx":  # Quant outputs the dequantized value: its codes, exactly
        step = g.const(f"{base}.in{i}.step", _F32(t[1]["scale"]))
        codes = g.op("Round", [g.op("Div", [t[1]["q"], step], f"{base}.in{i}.div")],
                     f"{base}.in{i}.codes")
      else:
        codes = g.op("Cast", [t[1]["q"]], f"{base}.in{i}.codes", to=g.onnx.TensorProto.FLOAT)
      if t[1]["zp"]:
        codes = g.op("Sub", [codes, g.const(f"{base}.in{i}.zp", _F32(t[1]["zp"]))],
                     f"{base}.in{i}.centered")
      vals.append(g.op("Div", [codes, k], f"{base}.in{i}.value"))
    z = vals[0]
    for v in vals[1:]:
      z = g.op("Add", [z, v], base)
    lo, hi = ((_F32(q["clip_inf"]), _F32(q["clip_sup"])) if q["signed"]
              else (_F32(0), _F32(q["clip"])))
    c = g.op("Clip", [z, g.const(f"{base}.lo", lo), g.const(f"{base}.hi", hi)], f"{base}.clip")
    n = g.op("Floor", [g.op("Mul", [c, k], f"{base}.scaled")], f"{base}.floor")
    return self.quantize(g.op("Div", [n, k], f"{base}.value"), q, f"{base}.out", exact=True)

  def requant_sum(self, x: str, quant, window: int, base: str):
    """16-bit QDQ of a pool output (the window sum of codes, exact); None when it does not fit."""
    if quant is None:
      return x, None
    lo, hi = quant["lo"] * window, quant["hi"] * window
    if lo < 0 or hi > 65535:
      return x, None
    step = _F32(quant["scale"] / _F32(window))
    g = self.g
    if self.flavor == "qonnx":
      out = g.op("Quant", [x, g.const(f"{base}.scale", step), g.const(f"{base}.zp", _F32(0)),
                           g.const(f"{base}.bits", _F32(16))], f"{base}.quant",
                 domain=QONNX_DOMAIN, signed=0, narrow=0, rounding_mode="ROUND")
    else:
      s, zp = g.const(f"{base}.scale", step), g.const(f"{base}.zp", np.uint16(0))
      out = g.op("DequantizeLinear", [g.op("QuantizeLinear", [x, s, zp], f"{base}.q"), s, zp],
                 f"{base}.dq")
    return out, {"scale": step, "lo": lo, "hi": hi}

  # ---- weights ------------------------------------------------------------------------------
  def weight(self, name: str, w: np.ndarray, bits: np.ndarray, s_w: np.ndarray) -> str:
    """Per bit-width segment (contiguous: the group order sorts by bits): codes -> DQ/Quant."""
    g, segs = self.g, []
    for b in sorted(set(bits.tolist())):
      rows = np.flatnonzero(bits == b)
      codes, scale = w[rows], s_w[rows].astype(_F32)
      base = f"{name}.w{b}"
      if self.flavor == "qonnx":
        self.containers[base] = f"Quant {b}b"
        shape = (-1,) + (1,) * (codes.ndim - 1)
        wf = codes.astype(_F32) * scale.reshape(shape)
        segs.append(g.op("Quant", [g.const(base, wf, weight=True),
                                   g.const(f"{base}.scale", scale.reshape(shape)),
                                   g.const(f"{base}.zp", _F32(0)),
                                   g.const(f"{base}.bits", _F32(b))], f"{base}.quant",
                         domain=QONNX_DOMAIN, signed=1, narrow=0, rounding_mode="ROUND"))
      else:
        tname, np_type = _container("int", int(b), self.caps)
        self.containers[base] = tname
        segs.append(g.op("DequantizeLinear", [g.const(base, codes.astype(np_type), weight=True),
                                              g.const(f"{base}.scale", scale)],
                         f"{base}.dq", axis=0))
    return segs[0] if len(segs) == 1 else g.op("Concat", segs, f"{name}.w", axis=0)

  def bias(self, name: str, codes: np.ndarray, s_b: np.ndarray) -> str:
    g, s_b = self.g, s_b.astype(_F32)
    if self.flavor == "qonnx":
      return g.op("Quant", [g.const(f"{name}.b", codes.astype(_F32) * s_b),
                            g.const(f"{name}.b.scale", s_b), g.const(f"{name}.b.zp", _F32(0)),
                            g.const(f"{name}.b.bits", _F32(32))], f"{name}.b.quant",
                  domain=QONNX_DOMAIN, signed=1, narrow=0, rounding_mode="ROUND")
    return g.op("DequantizeLinear", [g.const(f"{name}.b", codes.astype(np.int32)),
                                     g.const(f"{name}.b.scale", s_b)], f"{name}.b.dq", axis=0)

  # ---- layers -------------------------------------------------------------------------------
  def layer(self, n: Mapping, x, orders: Mapping) -> Tuple[str, np.ndarray]:
    name, l = n["name"], self.m["layers"][n["name"]]
    if l["cout"] == 0:
      raise BundleError(f"cannot export a degenerate member: layer {name!r} keeps no output "
                        f"channel (group {l['group']!r} is fully pruned, so the network's output "
                        "does not depend on its input)")
    codes, p = _layer_weights(self.b, name)
    bits = self.b.arrays[f"{name.replace('/', '.')}.w_bits"].astype(np.int64)
    order = orders[l["group"]]
    x_name, _, in_order = x
    if n["op"] == "conv":
      w = codes.transpose(3, 2, 0, 1)[order]  # HWIO -> OIHW
      if not n["depthwise"]:
        w = w[:, in_order]
    else:
      w = codes.T[order][:, in_order]  # (in, out) -> (out, in) for Gemm transB
    ins = [x_name, self.weight(name, w, bits[order], p["s_w"][order])]
    if p["bias"] is not None:
      ins.append(self.bias(name, p["bias"][order], p["s_b"][order]))
    base = name.replace("/", ".")
    if n["op"] == "conv":
      (t, b_), (left, r) = n["padding"]
      out = self.g.op("Conv", ins, base, kernel_shape=list(n["kernel"]),
                      strides=list(n["strides"]), pads=[t, left, b_, r],
                      group=l["cout"] if n["depthwise"] else 1)
    else:
      out = self.g.op("Gemm", ins, base, transB=1)
    return out, order

  def pool(self, n: Mapping, x, in_shape) -> Tuple[str, Any]:
    op = ops_lib.from_descriptor(n)
    name, quant, _ = x
    if op.kind == "global_avg_pool":
      out = self.g.op("GlobalAveragePool", [name], "global_avg_pool")
      return self.requant_sum(out, quant, int(in_shape[0] * in_shape[1]), "global_avg_pool")
    pads = ops_lib._pool_pads(  # pylint: disable=protected-access
        in_shape[:2], op.window, op.strides, op.padding)
    (t, b), (left, r) = pads
    kw = dict(kernel_shape=list(op.window), strides=list(op.strides), pads=[t, left, b, r])
    if op.kind == "max_pool":
      return self.g.op("MaxPool", [name], "max_pool", **kw), quant
    out = self.g.op("AveragePool", [name], "avg_pool", count_include_pad=1, **kw)
    return self.requant_sum(out, quant, int(op.window[0] * op.window[1]), "avg_pool")

  def write(self) -> Tuple[Dict[str, np.ndarray], Tuple[str, List]]:
    """All nodes; returns the group orders and the output's name and shape."""
    m, g = self.m, self.g
    orders = {l["group"]: np.argsort(self.b.arrays[f"{k.replace('/', '.')}.w_bits"], kind="stable")
              for k, l in m["layers"].items()}
    vals: Dict[int, Tuple[str, Any, np.ndarray]] = {}
    shapes = {n["id"]: n["shape"] for n in m["nodes"]}
    for n in m["nodes"]:
      op = n["op"]
      x = vals[n["inputs"][0]] if n["inputs"] else None
      if op == "input":
        name = ("x" if len(n["shape"]) != 3
                else g.op("Transpose", ["x"], "x.nchw", perm=[0, 3, 1, 2]))
        out = (name, None, np.arange(n["shape"][-1]))
      elif op == "input_quant":
        out = self.quantize(x[0], m["quantizers"][n["group"]], n["name"]) + (x[2],)
      elif op in ("conv", "dense"):
        z, order = self.layer(n, x, orders)
        q = m["quantizers"].get(n["group"])
        out = (self.quantize(z, q, f"{n['name']}.out") if q is not None else (z, None)) + (order,)
      elif op == "add":
        ins = [vals[i] for i in n["inputs"]]
        if any(not np.array_equal(t[2], ins[0][2]) for t in ins):
          raise BundleError(f"add {n['name']!r}: its operands' channels differ (damaged bundle?)")
        q = m["quantizers"][n["group"]]
        step = _F32(1.0 / np.float64(_F32(q["k"])))
        if all(t[1] is not None and "q" in t[1] and t[1]["scale"] == step for t in ins):
          out = self.add_like_jax(ins, q, n["name"]) + (ins[0][2],)
        else:  # an operand through a pool: the sum on the values
          z = ins[0][0]
          for t in ins[1:]:
            z = g.op("Add", [z, t[0]], n["name"])
          exact = all(t[1] is not None and t[1]["scale"] == step for t in ins)
          out = self.quantize(z, q, f"{n['name']}.out", exact=exact) + (ins[0][2],)
      elif op == "flatten":
        in_shape = shapes[n["inputs"][0]]
        name = x[0]
        if len(in_shape) == 3:  # channels-last flatten, as jpq's: feature s * C + c
          name = g.op("Transpose", [name], "flatten.nhwc", perm=[0, 2, 3, 1])
          spatial, c = int(in_shape[0] * in_shape[1]), len(x[2])  # kept channels
          order = (np.arange(spatial)[:, None] * c + x[2][None, :]).ravel()
        else:
          order = x[2]
        out = (g.op("Flatten", [name], "flatten", axis=1), x[1], order)
      elif op == "relu":
        quant = x[1] and {**x[1], "lo": max(x[1]["lo"], 0)}
        if quant and x[1]["lo"] < 0:
          quant.pop("q", None)  # the codes before the ReLU are no longer the value's
        out = (g.op("Relu", [x[0]], "relu"), quant, x[2])
      elif op in ("identity", "dropout"):
        if op == "dropout" and not n.get("deterministic", True):
          raise BundleError(f"cannot express a training-mode dropout (rate {n.get('rate')}) in "
                            f"{self.flavor}: export the network in evaluation mode")
        out = x
      elif op in ("global_avg_pool", "avg_pool", "max_pool"):
        out = self.pool(n, x, shapes[n["inputs"][0]]) + (x[2],)
      else:
        raise BundleError(f"cannot express op {op!r} (node {n['id']}) in {self.flavor}")
      vals[n["id"]] = out
    y, _, order = vals[m["output"]]
    if len(shapes[m["output"]]) == 3:
      y = g.op("Transpose", [y], "y.nhwc", perm=[0, 2, 3, 1])
    if not np.array_equal(order, np.arange(len(order))):  # back to the class order
      axis = len(shapes[m["output"]])
      y = g.op("Gather", [y, g.const("class_order", np.argsort(order).astype(np.int64))],
               "logits", axis=axis)
    shape = ["N"] + list(shapes[m["output"]][:-1]) + [len(order)]
    return orders, (y, shape)


def to_onnx(bundle: Bundle, flavor: str = "onnx"):
  """Build the bundle's network as an ONNX (QDQ) or QONNX model.

  Args:
    bundle: from :func:`jpq_jax.export.export_model`, ``export_member`` or ``load_bundle``.
    flavor: ``"onnx"`` (QuantizeLinear/DequantizeLinear, runs in onnxruntime) or ``"qonnx"``
      (QONNX ``Quant`` nodes with the exact bit-widths).

  Returns:
    The ``onnx.ModelProto``, checked by ``onnx.checker`` (with shape inference); its
    ``metadata_props`` hold the true bit-widths (``jpq.layers``, ``jpq.quantizers``), the container
    types, the original channel of every ONNX channel and the weight payload.

  Raises:
    ImportError: onnx is not installed. ValueError: unknown flavor. BundleError: a degenerate
    member (a fully pruned group), an op or a bit-width the format cannot express.
  """
  if flavor not in FLAVORS:
    raise ValueError(f"unknown ONNX flavor {flavor!r}; expected one of {FLAVORS}")
  onnx = require("onnx")
  caps = capabilities() if flavor == "onnx" else {"opset": QONNX_OPSET}
  w = _Writer(bundle, flavor, caps, onnx)
  orders, (y, y_shape) = w.write()
  m, h = bundle.manifest, onnx.helper
  f = onnx.TensorProto.FLOAT
  inp = h.make_tensor_value_info("x", f, ["N"] + list(m["input"]["shape"]))
  out = h.make_tensor_value_info(y, f, y_shape)
  graph = h.make_graph(w.g.nodes, "jpq_member", [inp], [out], initializer=w.g.inits)
  opsets = [h.make_opsetid("", caps["opset"])]
  if flavor == "qonnx":
    opsets.append(h.make_opsetid(QONNX_DOMAIN, 1))
  model = h.make_model(graph, opset_imports=opsets, producer_name="jpq_jax",
                       doc_string="jpq_jax searched member, pruned channels removed")
  layers = {}
  for k, l in m["layers"].items():
    o = orders[l["group"]]
    bits = bundle.arrays[f"{k.replace('/', '.')}.w_bits"][o]
    layers[k] = {"w_bits": bits.tolist(), "channels": np.asarray(l["kept_out"])[o].tolist(),
                 "cout_orig": l["cout_orig"]}
  meta = {"jpq.flavor": flavor, "jpq.opset": str(caps["opset"]),
          "jpq.layers": json.dumps(layers), "jpq.quantizers": json.dumps(m["quantizers"]),
          "jpq.containers": json.dumps(w.containers),
          "jpq.weight_payload_bytes": str(sum(_init_bytes(t) for t in w.g.inits
                                              if t.name in set(w.g.weight_inits))),
          "jpq.weight_inits": json.dumps(w.g.weight_inits),
          "jpq.size_cost_bits": str(bundle.payload_bits),
          "jpq.checked_by": caps.get("checked_by", "onnx.checker")}
  if "source" in m:
    meta["jpq.source"] = json.dumps(m["source"])
  h.set_model_props(model, meta)
  onnx.checker.check_model(model, full_check=True)
  return model


def _init_bytes(t) -> int:
  return len(t.raw_data) if t.raw_data else len(t.SerializeToString())


def weight_payload_bytes(model) -> int:
  """Bytes the weight-code initializers take in the file (int2/int4 packed; float32 in QONNX).

  Args:
    model: a model from :func:`to_onnx` (or loaded from its file).

  Returns:
    The sum of the raw sizes of the weight initializers named in ``jpq.weight_inits``.
  """
  props = {p.key: p.value for p in model.metadata_props}
  names = set(json.loads(props["jpq.weight_inits"]))
  return int(sum(_init_bytes(t) for t in model.graph.initializer if t.name in names))


def run_onnx(model, x: np.ndarray) -> np.ndarray:
  """Run a model (ModelProto or path) in onnxruntime on CPU.

  Args:
    model: ``onnx.ModelProto`` or a ``.onnx`` path.
    x: float input ``(N, *input_shape)`` (NHWC, as jpq).

  Returns:
    float32 logits ``(N, classes)``.

  Raises:
    ImportError: onnxruntime is not installed.
  """
  ort = require("onnxruntime")
  data = model if isinstance(model, str) else model.SerializeToString()
  sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
  return np.asarray(sess.run(None, {"x": np.asarray(x, _F32)})[0])


def run_qonnx(model, x: np.ndarray) -> np.ndarray:
  """Run a QONNX model with the ``qonnx`` package's own executor (``execute_onnx``).

  Args:
    model: a model from :func:`to_onnx` with ``flavor="qonnx"`` (ModelProto or path).
    x: float input ``(N, *input_shape)``.

  Returns:
    float32 logits.

  Raises:
    ImportError: qonnx is not installed.
  """
  onnx = require("onnx")
  require("qonnx")
  # pylint: disable=import-outside-toplevel
  from qonnx.core.modelwrapper import ModelWrapper
  from qonnx.core.onnx_exec import execute_onnx
  from qonnx.transformation.infer_shapes import InferShapes
  proto = onnx.load(model) if isinstance(model, str) else onnx.ModelProto.FromString(
      model.SerializeToString())
  # qonnx executes on fully specified shapes: fix the batch axis to this batch.
  proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = int(np.shape(x)[0])
  wrapped = ModelWrapper(proto).transform(InferShapes())
  out = execute_onnx(wrapped, {"x": np.asarray(x, _F32)})
  return np.asarray(out[wrapped.graph.output[0].name], _F32)
