"""Deployment export: a compact integer network, pruned channels removed, checked against fixed mode.

A finished member (a frozen ``precision`` collection and fine-tuned ``params``) is turned into a
*bundle*: a directory with ``weights.npz`` (integer payload) and ``manifest.json`` (graph, quantizer
constants, per-array SHA-256, ``format_version``). :func:`run_bundle` runs it in numpy with integer
accumulation and reproduces ``model.apply(fixed_vars, x, Ctx.fixed())``.

**What is stored.** Per conv/dense layer: the kept output channels only, and in each the weights of
the kept input channels only; per channel its integer codes at its own bit-width
(:func:`jpq_jax.quant.weight_codes`, two's complement, packed little-endian into bytes, each
channel padded to a whole byte: 2-bit codes 4 per byte, 4-bit 2 per byte), its scale ``s_w``, a
32-bit bias code ``B = round(b / s_b)`` with ``s_b = s_a * s_w`` (the bias quantizer, METHOD.md
§3.4) and ``s_b``. Per activation quantizer (one per sharing group, and the input quantizer): bit
width, clip(s), PACT factor ``k = (2^b - 1) / (clip + 1e-3)`` and the bias scale ``s_a``.

**Why dropping channels is exact.** In fixed mode a 0-bit channel has zero weights and (its
``s_w`` being 0) a zero bias, so its pre-activation is 0 and PACT maps 0 to 0; residual adds sum
zeros from one sharing group (all operands of an add share one mask); ReLU/pooling/dropout keep 0.
So removing the channel from its layer and from every consumer's input channels (through a flatten:
channels-last, input feature ``s * C + c``) changes nothing. A depthwise conv shares its producer's
group, hence its mask.

**Integer inference.** An activation is integer codes ``a`` with a real multiplier: PACT gives
``a = floor(k * clamp(x, 0, clip))`` (signed: ``clamp(x, inf, sup)``), value ``a / k``. A conv or
dense accumulates ``acc = sum a * q`` in int64 (exact), then rescales ``z = acc * s_w / k_in + B *
s_b`` and requantizes ``z`` with the next quantizer's floor formula, in float32 as the fake-quant
network does. Average pooling sums codes and divides the multiplier (still exact); residual adds
sum the operands' float32 values and requantize, as the fake-quant graph does. The classifier's
output is not quantized: it is the logits. The remaining differences with the JAX fixed-mode
network come only from float32 rounding in its convs (accumulation order, ``w + (q - w)`` of the
straight-through estimator): a requantization can land one code apart when ``z`` sits on a floor
boundary. On the trained demo model every code of every layer is identical and the logits differ
by at most 1.4e-6 (magnitude ~10); a deep random ResNet-18 sees its first one-code flip in 1 of
45,824 activations, then a 2.8e-3 logit difference. Compare against a jitted fixed-mode apply at
full float32 precision (``jax.default_matmul_precision("highest")``): on GPUs the default TF32
convolutions move many codes; an eager (un-jitted) apply also differs from the jitted one by such
flips (3.4e-3 on a README-sized model).

**Limits.** Only ordinary and depthwise convs (the library has no other grouped conv). In a
layer-wise (``granularity="layer"``) group a 0-bit layer is removed whole, which is exact, but the
size cost does not count it as pruning its consumers' inputs, so the payload is then smaller than
that cost. Activation codes and requantization use float32 scales, as the fake-quant graph does;
``requant="fixed_point"`` derives int32 multipliers and shifts instead and runs integer-only
(:mod:`jpq_jax.deploy.fixed_point`). :func:`to_onnx` writes the bundle as ONNX or QONNX
(:mod:`jpq_jax.deploy.onnx_export`).

**How the topology is found.** The :class:`~jpq_jax.LayerTable` records conv/dense layers and
groups but not the adds and the ops between them. :func:`trace_graph` runs one abstract trace
(``jax.eval_shape``) of the fixed-mode apply with :func:`flax.linen.intercept_methods`, which sees
every ``InputQuantizer``/``Conv``/``Dense``/``Add`` call with its input and output QTensors;
``QTensor.map``/``flatten`` report themselves to a recorder set in
:data:`jpq_jax.layers.GRAPH_RECORDER` for that trace only. Edges are identified by the identity of
the traced values (all of them are kept alive during the trace so an ``id`` cannot be reused). An op
must be a named op of :mod:`jpq_jax.ops` (or ``jax.nn.relu``); a lambda runs fine in training but
makes the export fail, naming the layer it feeds. A tensor computed outside the library's layers and
``map`` has no known origin, and the export names the layer that received it.

API::

  bundle = export_model(model, fixed_vars, table, sample_input)   # or export_member(workdir, k, out)
  bundle.save("out_dir"); print(bundle.report())
  logits = run_bundle(load_bundle("out_dir"), x)                  # numpy (N, classes)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jpq_jax import ops as ops_lib
from jpq_jax import quant
from jpq_jax.arch import get_path
from jpq_jax.layers import (GRAPH_RECORDER, Add, Conv, Ctx, Dense, InputQuantizer, QTensor)
from jpq_jax.table import GroupRecord, LayerTable, trace_table

__all__ = ["FORMAT_VERSION", "BundleError", "Bundle", "trace_graph", "export_model",
           "export_member", "to_onnx", "load_bundle", "run_bundle", "pack_codes", "unpack_codes"]

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PAYLOAD = "weights.npz"
_F32 = np.float32


class BundleError(ValueError):
  """A model that cannot be exported, or a bundle that cannot be read."""


# ------------------------------------------------------------------------------------------------
# Bit packing
# ------------------------------------------------------------------------------------------------
def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
  """Pack signed integer codes at ``bits`` bits each (two's complement, little-endian bit order).

  Code ``i`` occupies bits ``[i*bits, (i+1)*bits)`` of the stream, so with 2 bits a byte holds codes
  0..3 from its low to its high bits, with 4 bits the low nibble is the first code.

  Args:
    codes: integers in ``[-2^(bits-1), 2^(bits-1) - 1]``.
    bits: 1..8.

  Returns:
    ``ceil(len(codes) * bits / 8)`` bytes (uint8).

  Raises:
    ValueError: a code out of range, or bits out of 1..8.
  """
  if not 1 <= bits <= 8:
    raise ValueError(f"pack_codes: bits must be in 1..8, got {bits}")
  c = np.asarray(codes, np.int64).ravel()
  lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
  if c.size and (c.min() < lo or c.max() > hi):
    raise ValueError(f"pack_codes: codes outside [{lo}, {hi}] for {bits} bits")
  u = (c & ((1 << bits) - 1)).astype(np.uint8)
  stream = ((u[:, None] >> np.arange(bits, dtype=np.uint8)) & 1).astype(np.uint8).ravel()
  return np.packbits(stream, bitorder="little")


def unpack_codes(buf: np.ndarray, bits: int, n: int) -> np.ndarray:
  """Inverse of :func:`pack_codes`: ``n`` signed codes (int64) from packed bytes.

  Args:
    buf: packed bytes (anything ``np.asarray(buf, np.uint8)`` accepts), as :func:`pack_codes`
      writes them; bits past the first ``n * bits`` (padding) are ignored.
    bits: bit-width of each code (as passed to :func:`pack_codes`, 1..8).
    n: number of codes to read.

  Returns:
    int64 array of shape ``(n,)`` with the two's-complement codes, in
    ``[-2^(bits-1), 2^(bits-1) - 1]``.

  Raises:
    BundleError: ``bits`` outside 1..8 (a damaged bundle), or ``buf`` holds fewer than
      ``n * bits`` bits.
  """
  if not 1 <= int(bits) <= 8:
    raise BundleError(f"packed weights: bit-width {bits} outside 1..8 (damaged bundle?)")
  stream = np.unpackbits(np.asarray(buf, np.uint8), bitorder="little")[:n * bits]
  if stream.size != n * bits:
    raise BundleError(f"packed weights too short: need {n * bits} bits, have {stream.size}")
  u = (stream.reshape(n, bits).astype(np.int64) << np.arange(bits, dtype=np.int64)).sum(axis=1)
  return np.where(u >= (1 << (bits - 1)), u - (1 << bits), u)


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


# ------------------------------------------------------------------------------------------------
# Export
# ------------------------------------------------------------------------------------------------
def _key(layer: str, what: str) -> str:
  return f"{layer.replace('/', '.')}.{what}"


def _sha(a: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@dataclasses.dataclass
class Bundle:
  """An exported integer network: the manifest (JSON-able dict) and its arrays.

  Attributes:
    manifest: format version, input spec, quantizers, graph nodes, layer metadata, checksums.
    arrays: ``{name: numpy array}`` (packed weights, bit-widths, scales, bias codes).
  """
  manifest: Dict[str, Any]
  arrays: Dict[str, np.ndarray]

  def save(self, path: str) -> str:
    """Write ``path/manifest.json`` and ``path/weights.npz`` (``path`` is created).

    Returns:
      The bundle directory.
    """
    os.makedirs(path, exist_ok=True)
    np.savez(os.path.join(path, PAYLOAD), **self.arrays)
    self.manifest["manifest_sha256"] = _manifest_sha(self.manifest)
    with open(os.path.join(path, MANIFEST), "w") as f:
      json.dump(self.manifest, f, indent=1)
    return path

  @property
  def payload_bytes(self) -> int:
    """Bytes of packed weight codes (what the size cost model estimates)."""
    return int(sum(l["weight_bytes"] for l in self.manifest["layers"].values()))

  @property
  def payload_bits(self) -> int:
    """Weight bits before per-channel byte padding (sum of codes x bit-width)."""
    return int(sum(l["weight_bits"] for l in self.manifest["layers"].values()))

  @property
  def total_bytes(self) -> int:
    """Weights + biases (int32) + per-channel scales (two float32)."""
    return int(sum(l["total_bytes"] for l in self.manifest["layers"].values()))

  def report(self) -> str:
    """Per-layer table: channels kept, bits-per-channel histogram, bytes; then totals."""
    m = self.manifest
    bits_all = sorted({int(b) for l in m["layers"].values() for b in l["w_bits_hist"]})
    hdr = (f"{'layer':<24} {'kind':<9} {'out kept':>9} {'in kept':>9} "
           + " ".join(f"{f'{b}b':>4}" for b in bits_all)
           + f" {'weight B':>9} {'bias+scale B':>12} {'total B':>9}")
    rows = [hdr, "-" * len(hdr)]
    for name, l in m["layers"].items():
      hist = " ".join(f"{l['w_bits_hist'].get(str(b), 0):>4}" for b in bits_all)
      rows.append(f"{name:<24} {l['kind']:<9} {l['cout']:>4}/{l['cout_orig']:<4} "
                  f"{l['cin']:>4}/{l['cin_orig']:<4} {hist} {l['weight_bytes']:>9,} "
                  f"{l['total_bytes'] - l['weight_bytes']:>12,} {l['total_bytes']:>9,}")
    rows.append("-" * len(hdr))
    rows.append(f"{'total':<24} {'':<9} {'':>9} {'':>9} " + " ".join(f"{'':>4}" for _ in bits_all)
                + f" {self.payload_bytes:>9,} {self.total_bytes - self.payload_bytes:>12,} "
                f"{self.total_bytes:>9,}")
    rows.append(f"weight payload: {self.payload_bits:,} bits = {self.payload_bits / 8:,.1f} bytes "
                f"unpadded, {self.payload_bytes:,} bytes packed per channel")
    q = ", ".join(f"{g}: {v['bits']}b" + (" signed" if v["signed"] else "")
                  for g, v in m["quantizers"].items())
    rows.append(f"activation quantizers: {q}")
    return "\n".join(rows)


def _f32(v) -> np.float32:
  return _F32(np.asarray(v, _F32))


def _quantizer(g: GroupRecord, params: Mapping, prec: Mapping) -> Dict[str, Any]:
  """Constants of a group's activation quantizer, computed as the fake-quant graph does (float32)."""
  node = get_path(prec, g.path)
  if "a_bits" not in node:
    raise BundleError(f"group {g.name!r} has no a_bits in the precision collection")
  b = int(np.asarray(node["a_bits"]))
  if b not in g.a_precisions:
    raise BundleError(f"group {g.name!r}: a_bits {b} is not one of {g.a_precisions}")
  j = g.a_precisions.index(b)
  p = get_path(params, g.path)
  levels = _F32(2.0**b - 1.0)
  if g.signed:
    inf, sup = _f32(p["clip_inf"][j]), _f32(p["clip_sup"][j])
    k = levels / (_F32(sup - inf) + _F32(quant.PACT_EPS))
    s_a = _f32(quant.pact_signed_scale(jnp.float32(inf), jnp.float32(sup), b))
    return {"bits": b, "signed": True, "clip_inf": float(inf), "clip_sup": float(sup),
            "k": float(k), "s_a": float(s_a)}
  clip = _f32(p["clip"][j])
  k = levels / (clip + _F32(quant.PACT_EPS))
  s_a = _f32(quant.pact_scale(jnp.float32(clip), b))
  return {"bits": b, "signed": False, "clip": float(clip), "k": float(k), "s_a": float(s_a)}


def _weight_codes_all(params: Mapping, prec: Mapping, table: LayerTable, names) -> Dict[str, Any]:
  """``{layer: {bits: (codes, scales)}}`` for every bit-width a layer's channels use.

  One jitted call of :func:`jpq_jax.quant.weight_codes` / :func:`~jpq_jax.quant.weight_scale` for
  the whole model: one compile instead of an eager dispatch per op, layer and bit-width.
  """
  kernels, bitsets = {}, {}
  for name in names:
    rec = table.layer(name)
    wb = np.asarray(get_path(prec, table.group(rec.w_group).path)["w_bits"])
    kernels[name] = jnp.asarray(get_path(params, rec.path)["kernel"], jnp.float32)
    bitsets[name] = tuple(sorted(set(int(b) for b in wb.tolist()) - {0}))
  fn = jax.jit(lambda ks: {n: {b: (quant.weight_codes(k, b), quant.weight_scale(k, b))
                               for b in bitsets[n]} for n, k in ks.items()})
  return jax.tree_util.tree_map(np.asarray, fn(kernels))


def _kept(g: GroupRecord, prec: Mapping) -> np.ndarray:
  """Indices of a group's kept channels (w_bits > 0; every channel of the input group)."""
  if g.kind == "input":
    return np.arange(g.channels)
  wb = np.asarray(get_path(prec, g.path)["w_bits"])
  return np.flatnonzero(wb > 0)


def export_model(model: Any, fixed_vars: Mapping, table: Optional[LayerTable] = None,
                 sample_input: Any = None, requant: str = "float") -> Bundle:
  """Export a fixed-architecture model as a compact integer :class:`Bundle`.

  Args:
    model: the Flax model (built from jpq_jax layers, maps with :mod:`jpq_jax.ops`).
    fixed_vars: ``{'params', 'precision'}`` (a frozen architecture and its fine-tuned weights).
    table: the model's layer table (traced when None).
    sample_input: array or ShapeDtypeStruct with the input shape (batch included; any batch).
    requant: ``"float"`` (float32 rescaling, as the fake-quant graph) or ``"fixed_point"``
      (also stores int32 multipliers and shifts; :func:`run_bundle` then runs integer-only, see
      :mod:`jpq_jax.deploy.fixed_point`).

  Returns:
    The bundle (call :meth:`Bundle.save` to write it).

  Raises:
    BundleError: no frozen architecture, an unexportable graph (unnamed op, unknown tensor origin,
      a depthwise conv whose mask differs from its input's), a fully pruned group (a degenerate
      member), a bias overflowing 32 bits, or an unknown ``requant``.
  """
  if requant not in ("float", "fixed_point"):
    raise BundleError(f"unknown requant {requant!r}; expected 'float' or 'fixed_point'")
  if sample_input is None:
    raise BundleError("export_model needs a sample_input (its shape; the batch size is irrelevant)")
  if not isinstance(fixed_vars, Mapping) or "precision" not in fixed_vars:
    have = sorted(fixed_vars) if isinstance(fixed_vars, Mapping) else type(fixed_vars).__name__
    raise BundleError(
        f"cannot export: the variables have no frozen architecture (no 'precision' collection; "
        f"got {have}); freeze the searched architecture first (jpq_jax.to_fixed / jpq_jax.freeze) "
        "and fine-tune it in fixed mode")
  if "params" not in fixed_vars:
    raise BundleError("cannot export: the variables have no 'params' collection")
  sample = jax.ShapeDtypeStruct((1,) + tuple(sample_input.shape[1:]),
                                getattr(sample_input, "dtype", jnp.float32))
  variables = {"params": fixed_vars["params"], "precision": fixed_vars["precision"]}
  table = table or trace_table(model, sample, Ctx.fixed())
  graph = trace_graph(model, variables, sample)
  params, prec = variables["params"], variables["precision"]

  quantizers = {g.name: _quantizer(g, params, prec) for g in table.groups if g.a_precisions}
  wq = _weight_codes_all(params, prec, table,
                        [n["name"] for n in graph["nodes"] if n["op"] in ("conv", "dense")])
  kept = {g.name: _kept(g, prec) for g in table.groups}
  arrays: Dict[str, np.ndarray] = {}
  layers: Dict[str, Any] = {}
  nodes = graph["nodes"]
  for n in nodes:
    if n["op"] not in ("conv", "dense"):
      continue
    rec = table.layer(n["name"])
    g = table.group(rec.w_group)
    in_g = table.group(rec.in_group)
    if in_g.name not in quantizers:
      raise BundleError(f"layer {rec.name!r}: its input (group {in_g.name!r}) is not quantized")
    s_a = _F32(quantizers[in_g.name]["s_a"])
    node_p = get_path(params, rec.path)
    kernel = np.asarray(node_p["kernel"], _F32)
    wb_full = np.asarray(get_path(prec, g.path)["w_bits"]).astype(np.int64)
    bad = sorted(set(wb_full.tolist()) - set(g.w_precisions))
    if bad:
      raise BundleError(f"group {g.name!r}: w_bits {bad} not among its precisions {g.w_precisions}")
    out_idx = kept[g.name]
    in_idx = kept[in_g.name]
    if out_idx.size == 0:
      raise BundleError(f"cannot export a degenerate member: layer {rec.name!r} keeps no output "
                        f"channel (every channel of group {g.name!r} is at 0 bits)")
    if rec.kind == "dense" and rec.in_mult > 1:
      # Channels-last flatten: feature s * C + c for spatial position s and channel c.
      in_idx = (np.arange(rec.in_mult)[:, None] * in_g.channels + in_idx[None, :]).ravel()
    depthwise = rec.feature_groups > 1
    if depthwise and not np.array_equal(in_idx, out_idx):
      raise BundleError(f"depthwise conv {rec.name!r}: its kept channels differ from its input's "
                        f"(group {g.name!r} vs {in_g.name!r}); give it its producer's group")
    # Codes and scales are computed on the full kernel: a channel's scale is its max |W| over every
    # input channel, pruned ones included, exactly as the fake-quant graph computed it.
    codes = np.zeros(kernel.shape, np.int64)
    s_w = np.zeros((kernel.shape[-1],), _F32)
    for b, (q_b, s_b_) in wq[rec.name].items():
      sel = wb_full == b
      codes[..., sel] = q_b.astype(np.int64)[..., sel]
      s_w[sel] = s_b_[sel]
    if depthwise:
      codes = codes[..., out_idx]
    else:
      codes = np.take(codes, in_idx, axis=-2)[..., out_idx]
    bits = wb_full[out_idx]
    s_w = s_w[out_idx]
    cout = len(out_idx)
    per_ch = codes.reshape(-1, cout)
    packed = [pack_codes(per_ch[:, c], int(bits[c])) for c in range(cout)]
    payload = np.concatenate(packed) if packed else np.zeros((0,), np.uint8)
    name = rec.name
    arrays[_key(name, "w_packed")] = payload
    arrays[_key(name, "w_bits")] = bits.astype(np.uint8)
    arrays[_key(name, "w_scale")] = s_w
    total = payload.size + 4 * cout
    if "bias" in node_p:
      bias = np.asarray(node_p["bias"], _F32)[out_idx]
      s_b = (s_a * s_w).astype(_F32)
      near0 = np.abs(s_b) <= 1e-8
      safe = np.where(near0, _F32(1), s_b)
      q = np.where(near0, 0.0, np.round(bias / safe)).astype(np.float64)
      if q.size and np.abs(q).max() > 2**31 - 1:
        raise BundleError(f"layer {name!r}: a bias code overflows 32 bits")
      arrays[_key(name, "bias")] = q.astype(np.int32)
      arrays[_key(name, "bias_scale")] = s_b
      total += 8 * cout
    n_per_ch = int(per_ch.shape[0])
    layers[name] = {
        "kind": rec.kind, "group": g.name, "in_group": in_g.name,
        "cin": int(len(in_idx)), "cout": cout,
        "cin_orig": int(rec.cin), "cout_orig": int(rec.cout),
        "kernel_shape": list(codes.shape), "feature_groups": cout if depthwise else 1,
        "has_bias": "bias" in node_p, "weights_per_channel": n_per_ch,
        "w_bits_hist": {str(b): int((bits == b).sum()) for b in g.w_precisions if b},
        "pruned": int(rec.cout - cout),
        "weight_bits": int(n_per_ch * bits.sum()), "weight_bytes": int(payload.size),
        "total_bytes": int(total), "kept_out": out_idx.tolist(),
    }
  manifest = {
      "format_version": FORMAT_VERSION,
      "producer": "jpq_jax.export",
      "input": {"shape": list(sample.shape[1:]), "dtype": str(np.dtype(sample.dtype))},
      "quantizers": quantizers,
      "nodes": nodes,
      "output": graph["output"],
      "layers": layers,
  }
  if requant == "fixed_point":
    from jpq_jax.deploy import fixed_point  # pylint: disable=import-outside-toplevel
    probe = Bundle(manifest=manifest, arrays=arrays)
    fixed_point.add_plan(manifest, arrays, lambda name: _layer_weights(probe, name)[1])
  manifest["arrays"] = {k: {"shape": list(a.shape), "dtype": str(a.dtype), "sha256": _sha(a)}
                        for k, a in arrays.items()}
  return Bundle(manifest=manifest, arrays=arrays)


def export_member(workdir: str, member: int, out: Optional[str], allow_failed: bool = False,
                  requant: str = "float") -> Bundle:
  """Export member ``member`` of a finished sweep in ``workdir`` to the bundle directory ``out``.

  Args:
    workdir: the sweep's work directory.
    member: member index (as in ``results.json``).
    out: bundle directory (created); None: do not save (e.g. to convert it with :func:`to_onnx`).
    allow_failed: export a member the sweep marked failed (non-finite loss) or not ``ok`` too.
    requant: ``"float"`` or ``"fixed_point"`` (see :func:`export_model`).

  Returns:
    The bundle (saved when ``out`` is given).

  Raises:
    FileNotFoundError: the sweep has not finished. IndexError: no such member.
    BundleError: see :func:`export_model`; also for a ``pit`` sweep (float members), and for a
      failed member unless ``allow_failed`` (the message lists the front's members).
  """
  from jpq_jax.checkpoint import restore_member  # pylint: disable=import-outside-toplevel
  from jpq_jax import pareto  # pylint: disable=import-outside-toplevel
  results = pareto.load_results(workdir)  # raises if the sweep has not finished
  if results.get("method") == "pit":
    raise BundleError(
        f"{workdir!r} is a 'pit' sweep: its members are float networks, and a bundle holds an "
        "integer (fixed-precision) network. Export the pit_mixprec run's members instead, or "
        "take the float model with jpq_jax.restore_member and jpq_jax.pit.prune_physically")
  model, variables, table = restore_member(workdir, member)  # raises if the sweep is unfinished
  m = results["members"][member]
  if not allow_failed and not pareto.is_healthy(m):
    front = [r["member"] for r in pareto.front_of_results(results)]
    why = m.get("status") if m.get("status", "ok") != "ok" else "failed"
    raise BundleError(f"member {member} of {workdir!r} did not train to a usable model ({why}); "
                      f"export one of the front's members {front} (or pass allow_failed=True / "
                      "--allow-failed)")
  shape = tuple(results["input_shape"])
  sample = jax.ShapeDtypeStruct((1,) + shape, jnp.float32)  # input_shape has no batch axis
  bundle = export_model(model, variables, table, sample, requant=requant)
  bundle.manifest["source"] = {"workdir": os.path.abspath(workdir), "member": int(member)}
  if out:
    bundle.save(out)
  return bundle


def to_onnx(bundle: Bundle, path: Optional[str] = None, flavor: str = "onnx"):
  """The bundle's network as an ONNX (QDQ) or QONNX model; see :mod:`jpq_jax.deploy.onnx_export`.

  Args:
    bundle: from :func:`export_model`, :func:`export_member` or :func:`load_bundle`.
    path: also write the model to this ``.onnx`` file.
    flavor: ``"onnx"`` (QuantizeLinear/DequantizeLinear, onnxruntime) or ``"qonnx"``.

  Returns:
    The checked ``onnx.ModelProto``.

  Raises:
    ImportError: onnx is not installed (``pip install 'jpq-jax[onnx]'``). BundleError: a
    degenerate member, or an op or bit-width the format cannot express.
  """
  from jpq_jax.deploy import onnx_export  # pylint: disable=import-outside-toplevel
  model = onnx_export.to_onnx(bundle, flavor)
  if path:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    onnx_export.require("onnx").save(model, path)
  return model


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------
def _manifest_sha(manifest: Mapping) -> str:
  """SHA-256 of the manifest's canonical JSON, without its own checksum field."""
  body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
  return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def load_bundle(path: str, allow_unverified: bool = False) -> Bundle:
  """Read a bundle directory written by :meth:`Bundle.save`, verifying version and checksums.

  The manifest's ``manifest_sha256`` and the payload's per-array SHA-256 detect damage (a
  truncated copy, flipped bits, a hand edit that forgot the checksum); they do not protect
  against tampering (whoever edits the bundle can recompute them).

  Args:
    path: the bundle directory (or its ``manifest.json``).
    allow_unverified: accept a bundle whose manifest has no ``manifest_sha256`` (exported by jpq
      before 2026-11-30); such a manifest cannot be checked, so it is refused by default.

  Returns:
    The bundle.

  Raises:
    BundleError: missing files, unsupported ``format_version``, a corrupt or tampered payload, a
      manifest edited after export, or (without ``allow_unverified``) one without its checksum.
  """
  if os.path.basename(path) == MANIFEST:
    path = os.path.dirname(path)
  mpath, wpath = os.path.join(path, MANIFEST), os.path.join(path, PAYLOAD)
  for p in (mpath, wpath):
    if not os.path.exists(p):
      raise BundleError(f"{path!r} is not a jpq_jax bundle: {os.path.basename(p)} is missing")
  try:
    with open(mpath) as f:
      manifest = json.load(f)
  except json.JSONDecodeError as e:
    raise BundleError(f"bundle {path!r}: manifest.json is not valid JSON ({e})") from None
  version = manifest.get("format_version") if isinstance(manifest, dict) else None
  if version != FORMAT_VERSION:
    raise BundleError(f"bundle {path!r} has format_version {version!r}; this jpq_jax reads "
                      f"format_version {FORMAT_VERSION} (re-export it with this version)")
  try:
    with np.load(wpath, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except Exception as e:  # zipfile/format errors of a damaged file
    raise BundleError(f"bundle {path!r}: {PAYLOAD} is corrupt and cannot be read ({e})") from None
  if "manifest_sha256" not in manifest and not allow_unverified:
    raise BundleError(f"bundle {path!r}: manifest.json has no manifest_sha256, so its clips, "
                      "scales and graph cannot be verified (an edit, or a bundle exported before "
                      "jpq 2026-11-30); re-export the member, or load it with "
                      "allow_unverified=True if you trust it")
  if "manifest_sha256" in manifest and manifest["manifest_sha256"] != _manifest_sha(manifest):
    # The manifest drives the integer inference (clips, scales, the graph): an edited one would
    # run silently with other numbers.
    raise BundleError(f"bundle {path!r}: manifest.json was modified after export (its checksum "
                      "differs); re-export the member")
  expected = manifest.get("arrays", {})
  missing = sorted(set(expected) - set(arrays))
  if missing:
    raise BundleError(f"bundle {path!r}: {PAYLOAD} lacks arrays {missing}")
  for k, spec in expected.items():
    a = arrays[k]
    if list(a.shape) != spec["shape"] or str(a.dtype) != spec["dtype"] or _sha(a) != spec["sha256"]:
      raise BundleError(f"bundle {path!r}: array {k!r} does not match the manifest's checksum "
                        "(corrupt or modified payload)")
  return Bundle(manifest=manifest, arrays=arrays)


# ------------------------------------------------------------------------------------------------
# Integer reference inference (numpy)
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Act:
  """An activation in the numpy runtime: real value ``codes * mult``.

  ``k`` is set while the tensor is exactly a PACT output (value ``float32(codes) / k``, bit-equal to
  the fake-quant graph's); pooling clears it. ``codes`` is float for the unquantized logits.
  """
  codes: np.ndarray
  mult: float
  k: Optional[np.float32] = None

  def value32(self) -> np.ndarray:
    if self.k is not None:
      return self.codes.astype(_F32) / self.k
    return (self.codes * self.mult).astype(_F32)


def _requant(z: np.ndarray, q: Mapping) -> _Act:
  """PACT integer codes of ``z`` (float32), with the fake-quant graph's float32 arithmetic."""
  k = _F32(q["k"])
  z = z.astype(_F32)
  if q["signed"]:
    c = np.clip(z, _F32(q["clip_inf"]), _F32(q["clip_sup"]))
  else:
    c = np.clip(z, _F32(0), _F32(q["clip"]))
  codes = np.floor(k * c).astype(np.int64)
  return _Act(codes=codes, mult=1.0 / float(k), k=k)


def _layer_weights(bundle: Bundle, name: str) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
  l = bundle.manifest["layers"][name]
  a = bundle.arrays
  bits = a[_key(name, "w_bits")].astype(np.int64)
  n = int(l["weights_per_channel"])
  buf = a[_key(name, "w_packed")]
  cols, off = [], 0
  for b in bits:
    nbytes = (n * int(b) + 7) // 8
    cols.append(unpack_codes(buf[off:off + nbytes], int(b), n))
    off += nbytes
  if off != buf.size:
    raise BundleError(f"layer {name!r}: packed weights have {buf.size} bytes, expected {off}")
  codes = (np.stack(cols, axis=1) if cols else np.zeros((n, 0), np.int64))
  return codes.reshape(l["kernel_shape"]), {
      "s_w": a[_key(name, "w_scale")].astype(np.float64),
      "bias": a[_key(name, "bias")].astype(np.int64) if l["has_bias"] else None,
      "s_b": a[_key(name, "bias_scale")].astype(np.float64) if l["has_bias"] else None,
  }


def _conv_int(codes: np.ndarray, w: np.ndarray, strides, pads, depthwise: bool) -> np.ndarray:
  """Integer NHWC convolution, int64 accumulation."""
  kh, kw = w.shape[0], w.shape[1]
  x = np.pad(codes, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))
  win = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
  win = win[:, ::strides[0], ::strides[1]]  # (N, Ho, Wo, C, kh, kw)
  if depthwise:
    return np.einsum("nhwcij,ijc->nhwc", win, w[:, :, 0, :])
  n, ho, wo, c = win.shape[:4]
  cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(n * ho * wo, kh * kw * c)
  return (cols @ w.reshape(kh * kw * c, -1)).reshape(n, ho, wo, -1)


def run_bundle(bundle: Bundle, x: np.ndarray,
               activations: Optional[Dict[str, Any]] = None) -> np.ndarray:
  """Integer reference inference of a bundle on a batch.

  Args:
    bundle: from :func:`export_model` or :func:`load_bundle`.
    x: float input ``(N, *input_shape)``.
    activations: if a dict, it receives ``{name: (codes, multiplier)}`` of every quantizer, layer
      and add output (pruned channels absent), for debugging a deployment layer by layer. A
      bundle exported with ``requant="fixed_point"`` runs integer-only (multiplier ``None``).

  Returns:
    The model's (unquantized) output, float32 numpy: a classifier's logits ``(N, classes)``, or
    e.g. an autoencoder's ``(N, H, W, C)`` (a conv in an ``output=True`` group).

  Raises:
    BundleError: wrong input shape.
  """
  m = bundle.manifest
  x = np.asarray(x, _F32)
  if list(x.shape[1:]) != m["input"]["shape"]:
    raise BundleError(f"run_bundle: input shape {x.shape[1:]} does not match the bundle's "
                      f"{tuple(m['input']['shape'])}")
  if m.get("requant") == "fixed_point":  # integer-only requantization (jpq_jax.deploy.fixed_point)
    from jpq_jax.deploy import fixed_point  # pylint: disable=import-outside-toplevel
    return fixed_point.run_integer(bundle, x, activations)
  quantizers = m["quantizers"]
  weights = {name: _layer_weights(bundle, name) for name in m["layers"]}
  vals: Dict[int, Any] = {}
  for n in m["nodes"]:
    op = n["op"]
    ins = [vals[i] for i in n["inputs"]]
    if op == "input":
      out = x
    elif op == "input_quant":
      out = _requant(ins[0], quantizers[n["group"]])
    elif op in ("conv", "dense"):
      a = ins[0]
      w, p = weights[n["name"]]
      if op == "conv":
        acc = _conv_int(a.codes, w, n["strides"], n["padding"], n["depthwise"])
      else:
        acc = a.codes @ w
      z = acc * (a.mult * p["s_w"])
      if p["bias"] is not None:
        z = z + p["bias"] * p["s_b"]
      q = quantizers.get(n["group"])
      out = _requant(z, q) if q is not None else _Act(codes=z.astype(_F32), mult=1.0)
    elif op == "add":
      z = ins[0].value32()
      for t in ins[1:]:
        z = z + t.value32()
      out = _requant(z, quantizers[n["group"]])
    elif op == "flatten":
      a = ins[0]
      out = _Act(codes=a.codes.reshape(a.codes.shape[0], -1), mult=a.mult, k=a.k)
    else:
      a = ins[0]
      codes, mult = ops_lib.from_descriptor(n).apply_codes(a.codes, a.mult)
      keeps_values = op in ("relu", "identity", "dropout", "max_pool", "upsample")
      out = _Act(codes=codes, mult=mult, k=a.k if keeps_values else None)
    vals[n["id"]] = out
    if activations is not None and "name" in n:
      activations[n["name"]] = (out.codes, out.mult)
  y = vals[m["output"]]
  return (y.value32() if isinstance(y, _Act) else np.asarray(y, _F32))
