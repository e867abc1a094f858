"""Integer reference inference of an exported bundle, in numpy.

Activation codes and requantization follow the fake-quant graph's float32 arithmetic (bit-equal
codes); a bundle exported with ``requant="fixed_point"`` runs integer-only through
:mod:`jpq_jax.deploy.fixed_point`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from jpq_jax import ops as ops_lib
from jpq_jax.bundle import _F32, Bundle, BundleError, _key, unpack_codes

__all__ = ["run_bundle"]

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
    bundle: from :func:`jpq_jax.export.export_model` or :func:`load_bundle`.
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
