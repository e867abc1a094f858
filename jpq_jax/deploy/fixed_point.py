"""Integer-only requantization of a bundle: fixed-point multipliers and shifts (MCU targets).

The float bundle (:func:`jpq_jax.export.run_bundle`) rescales every accumulator with float32
arithmetic, as the fake-quant graph does:
``code = floor(k_out * clamp(acc * m_in * s_w + B * s_b))``.
An MCU kernel (CMSIS-NN, TFLite Micro) instead multiplies the int32 accumulator by an int32
mantissa and shifts. With ``requant="fixed_point"`` the export derives, per output channel:

* ``bias_acc = round(B * s_b / (m_in * s_w))``: the int32 bias on the accumulator's own scale
  (the bias quantizer's scale ``s_a * s_w`` uses the clip without PACT's ``1e-3``, the step does);
* ``M = k_out * m_in * s_w = m0 * 2^-shift`` with ``m0`` in ``[2^30, 2^31)`` (a Q31 mantissa,
  TFLite's ``QuantizeMultiplier``);
* the codes ``clamp((acc + bias_acc) * m0 >> shift, lo, hi)``, where ``lo, hi`` are the codes of the
  clip values. The shift is arithmetic, i.e. it *floors*, as PACT does (TFLite rounds; PACT's
  ``floor`` is the searched network's semantics). ``m_in`` is the input's static multiplier: ``1/k``
  of its quantizer, divided by the window of any average pool in between.

A residual add sums its operands' codes times ``m_i = round(k_out * m_in_i * 2^S)`` (one shift ``S``
for all), then shifts; operands on the output's own grid (the usual case: one sharing group) have
``m_i = 2^S`` and the sum is exact. The classifier's accumulators are the one float step at the
end: ``logits = (acc + bias_acc) * (m_in * s_w)`` (a dequantization; their argmax needs it, since
``s_w`` differs per class). The input quantizer is the other: it quantizes the float input (on a
device, the sensor or the previous stage delivers codes). Everything in between is int64 numpy
arithmetic on integer arrays (the products fit: ``|acc| < 2^31`` is checked, ``m0 < 2^31``).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from jpq_jax import ops as ops_lib

__all__ = ["REQUANTS", "quantize_multiplier", "add_plan", "run_integer"]

REQUANTS = ("float", "fixed_point")
_F32 = np.float32


def quantize_multiplier(m) -> Tuple[np.ndarray, np.ndarray]:
  """``m = m0 * 2^-shift`` with an int32 mantissa ``m0`` in ``[2^30, 2^31)`` (0 for ``m = 0``).

  Args:
    m: positive real multipliers (array), each below ``2^31``.

  Returns:
    ``(m0, shift)`` int64 arrays; ``shift <= 62`` (a smaller ``m`` loses mantissa bits instead).

  Raises:
    ValueError: a negative or non-finite multiplier, or one of ``2^31`` or more.
  """
  m = np.asarray(m, np.float64)
  if not np.isfinite(m).all() or (m < 0).any() or (m >= 2.0**31).any():
    raise ValueError(f"fixed-point multipliers must be finite, >= 0 and < 2^31; got range "
                     f"[{m.min():.3g}, {m.max():.3g}]")
  frac, exp = np.frexp(m)  # m = frac * 2^exp, frac in [0.5, 1)
  m0 = np.round(frac * 2.0**31).astype(np.int64)
  over = m0 == 2**31  # frac rounded up to 1
  m0, exp = np.where(over, 2**30, m0), np.where(over, exp + 1, exp)
  shift = 31 - exp.astype(np.int64)
  extra = np.maximum(shift - 62, 0)
  m0, shift = m0 >> extra, shift - extra
  return np.where(m == 0, 0, m0), np.where(m == 0, 0, shift)


def _codes_range(q: Mapping) -> Tuple[int, int]:
  """Codes of the clip values, with the float32 arithmetic of the float bundle's requantization."""
  k = _F32(q["k"])
  lo, hi = ((_F32(q["clip_inf"]), _F32(q["clip_sup"])) if q["signed"]
            else (_F32(0), _F32(q["clip"])))
  return int(np.floor(k * lo)), int(np.floor(k * hi))


def add_plan(manifest: Dict[str, Any], arrays: Dict[str, np.ndarray], layer_params) -> None:
  """Derive the integer requantization of every layer and add (in place).

  Args:
    manifest: a bundle manifest under construction (``nodes``, ``layers``, ``quantizers``); gets
      ``requant = "fixed_point"`` and ``fixed_point`` (codes ranges, add shifts).
    arrays: the bundle's arrays; gets ``<layer>.fx_bias`` (int32), ``fx_m0`` (int32), ``fx_shift``
      (int8), ``fx_out_scale`` (float32, classifier only) and ``<add>.fx_m`` (int32 per operand).
    layer_params: ``fn(name) -> {"s_w", "bias", "s_b"}`` (as :func:`jpq_jax.export._layer_weights`).

  Raises:
    ValueError: a bias or a multiplier that does not fit 32 bits.
  """
  quantizers = manifest["quantizers"]
  shapes = {n["id"]: n["shape"] for n in manifest["nodes"]}
  mult: Dict[int, float] = {}
  ranges: Dict[str, list] = {}
  adds: Dict[str, int] = {}

  def key(name, what):
    return f"{name.replace('/', '.')}.{what}"

  for n in manifest["nodes"]:
    op, ins = n["op"], n["inputs"]
    q = quantizers.get(n.get("group")) if op in ("input_quant", "conv", "dense", "add") else None
    if q is not None:
      ranges[n["group"]] = list(_codes_range(q))
    if op == "input":
      m = None
    elif op == "input_quant":
      m = 1.0 / float(q["k"])
    elif op in ("conv", "dense"):
      p = layer_params(n["name"])
      acc_scale = mult[ins[0]] * p["s_w"]
      bias = np.zeros(acc_scale.shape, np.int64)
      if p["bias"] is not None:
        bias = np.round(p["bias"] * p["s_b"] / acc_scale).astype(np.int64)
      if bias.size and np.abs(bias).max() >= 2**31:
        raise ValueError(f"layer {n['name']!r}: a bias on the accumulator scale overflows 32 bits")
      arrays[key(n["name"], "fx_bias")] = bias.astype(np.int32)
      if q is None:  # the classifier: logits are dequantized once, at the end
        arrays[key(n["name"], "fx_out_scale")] = acc_scale.astype(_F32)
        m = None
      else:
        m0, shift = quantize_multiplier(acc_scale * float(q["k"]))
        arrays[key(n["name"], "fx_m0")] = m0.astype(np.int32)
        arrays[key(n["name"], "fx_shift")] = shift.astype(np.int8)
        m = 1.0 / float(q["k"])
    elif op == "add":
      r = np.array([mult[i] * float(q["k"]) for i in ins])
      s = int(31 - np.frexp(r.max())[1])  # r.max() * 2^s in [2^30, 2^31)
      arrays[key(n["name"], "fx_m")] = np.round(r * 2.0**s).astype(np.int64).astype(np.int32)
      adds[n["name"]] = s
      m = 1.0 / float(q["k"])
    elif op == "global_avg_pool":
      hw = shapes[ins[0]]
      m = mult[ins[0]] / (hw[0] * hw[1])
    elif op == "avg_pool":
      m = mult[ins[0]] / (n["window"][0] * n["window"][1])
    else:  # flatten, relu, identity, dropout, max_pool: the same multiplier
      m = mult[ins[0]]
    mult[n["id"]] = m
  manifest["requant"] = "fixed_point"
  manifest["fixed_point"] = {"codes_range": ranges, "add_shift": adds}


def run_integer(bundle, x: np.ndarray, activations: Optional[Dict[str, Any]] = None) -> np.ndarray:
  """Integer-only inference of a ``requant="fixed_point"`` bundle (see the module docstring).

  Args:
    bundle: a bundle exported with ``requant="fixed_point"``.
    x: float input ``(N, *input_shape)``.
    activations: if a dict, receives ``{name: (codes, None)}`` of every quantizer, layer and add.

  Returns:
    float32 logits ``(N, classes)``.

  Raises:
    jpq_jax.export.BundleError: an accumulator beyond 32 bits (the fixed-point product would not be
    exact), or a bundle without the fixed-point plan.
  """
  # pylint: disable=import-outside-toplevel,protected-access
  from jpq_jax import bundle_run as ex
  m, a = bundle.manifest, bundle.arrays
  if m.get("requant") != "fixed_point":
    raise ex.BundleError("run_integer needs a bundle exported with requant='fixed_point'")
  fx = m["fixed_point"]
  weights = {name: ex._layer_weights(bundle, name) for name in m["layers"]}
  vals: Dict[int, Any] = {}
  out = None
  for n in m["nodes"]:
    op = n["op"]
    ins = [vals[i] for i in n["inputs"]]
    if op == "input":
      out = np.asarray(x, _F32)
    elif op == "input_quant":
      out = ex._requant(ins[0], m["quantizers"][n["group"]]).codes
    elif op in ("conv", "dense"):
      w, _ = weights[n["name"]]
      k = lambda what: a[f"{n['name'].replace('/', '.')}.{what}"].astype(np.int64)
      acc = (ex._conv_int(ins[0], w, n["strides"], n["padding"], n["depthwise"])
             if op == "conv" else ins[0] @ w) + k("fx_bias")
      if acc.size and np.abs(acc).max() >= 2**31:
        raise ex.BundleError(f"layer {n['name']!r}: an accumulator exceeds 32 bits")
      if n["group"] in fx["codes_range"]:
        lo, hi = fx["codes_range"][n["group"]]
        out = np.clip((acc * k("fx_m0")) >> k("fx_shift"), lo, hi)
      else:
        scale = a[f"{n['name'].replace('/', '.')}.fx_out_scale"]
        out = (acc.astype(np.float64) * scale).astype(_F32)
    elif op == "add":
      mi = a[f"{n['name'].replace('/', '.')}.fx_m"].astype(np.int64)
      total = sum(t * mi[i] for i, t in enumerate(ins))
      lo, hi = fx["codes_range"][n["group"]]
      out = np.clip(total >> fx["add_shift"][n["name"]], lo, hi)
    elif op == "flatten":
      out = ins[0].reshape(ins[0].shape[0], -1)
    else:
      out, _ = ops_lib.from_descriptor(n).apply_codes(ins[0], 1.0)
    vals[n["id"]] = out
    if activations is not None and "name" in n:
      activations[n["name"]] = (out, None)
  return np.asarray(vals[m["output"]], _F32)
