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

import os
from typing import Any, Dict, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jpq_jax import quant
from jpq_jax.arch import get_path
# The bundle's container, its graph recording and its numpy inference live in their own modules;
# their public names are re-exported here, where users have always found them.
from jpq_jax.bundle import (_F32, FORMAT_VERSION, MANIFEST, PAYLOAD, Bundle, BundleError,  # noqa: F401
                            _key, _sha, load_bundle, pack_codes, unpack_codes)
from jpq_jax.bundle_run import _layer_weights, run_bundle  # noqa: F401
from jpq_jax.export_graph import trace_graph  # noqa: F401
from jpq_jax.layers import Ctx
from jpq_jax.table import GroupRecord, LayerTable, trace_table

__all__ = ["FORMAT_VERSION", "BundleError", "Bundle", "trace_graph", "export_model",
           "export_member", "to_onnx", "load_bundle", "run_bundle", "pack_codes", "unpack_codes"]


# ------------------------------------------------------------------------------------------------
# Export
# ------------------------------------------------------------------------------------------------
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
  model, variables, table = restore_member(workdir, member, as_nnx=False)  # raises if unfinished
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

