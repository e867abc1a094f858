"""Hardware cost models: LUT-based per-MAC costs (MPIC, bitops, users' own) and NE16 latency.

* :func:`lut_layer_cost` is the structure shared by MPIC and bitops (METHOD.md §5.3, §5.4)::

      cost_L = sum_a theta_in[a] * MACs_L * sum_{w != 0} N_w / (Cout_eff + 1e-6) * c(a, w)

  with ``c(a, w) = 1 / LUT[a][w]`` for a throughput LUT (MACs/cycle; MPIC) or ``c(a, w)`` directly
  for a cost-per-MAC LUT (e.g. ``a * w`` for bitops, energy per MAC, ...). ``a`` is the layer's
  *input* activation bit-width, ``w`` its weight bit-width; 0-bit (pruned) channels cost nothing.
* :func:`ne16_layer_cycles` is the analytical NE16 accelerator model (METHOD.md §5.5,
  ``Ne16PerfModelGeneralized``), with floor / ceil / mod given straight-through (identity) gradients
  with respect to their first argument, exactly as the reference's autograd functions do.
"""

from __future__ import annotations

from typing import Callable, Dict, Mapping, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from jpq_jax.costs.channels import LayerView
from jpq_jax.costs.size import layer_macs
from jpq_jax.table import LayerTable

__all__ = [
    "MPIC_LUT", "MPIC_FREQUENCY_HZ", "MPIC_MEAN_POWER_W", "normalize_lut", "lut_missing_pairs",
    "lut_layer_cost", "mpic_layer_cycles", "mpic_layer_energy", "bitops_layer", "ne16_layer_cycles",
    "ne16_kernel_latency",
]

# MPIC throughput in MACs/cycle, [activation bits][weight bits] (Ottavi et al., reference
# hardware_models/hardware_model_mpic.py).
MPIC_LUT: Dict[int, Dict[int, float]] = {
    2: {2: 6.5, 4: 4.0, 8: 2.2},
    4: {2: 3.9, 4: 3.5, 8: 2.1},
    8: {2: 2.5, 4: 2.3, 8: 2.1},
}
MPIC_FREQUENCY_HZ = 250e6
# mean(5.30, 5.39, 5.46, 5.38) mW, the reference's compute_energy_mpic.
MPIC_MEAN_POWER_W = 5.3825e-3

LutLike = Union[Mapping[int, Mapping[int, float]], Mapping[Tuple[int, int], float],
                Callable[[int, int], float]]


def normalize_lut(lut: LutLike) -> Union[Dict[Tuple[int, int], float], Callable[[int, int], float]]:
  """Canonical form of a LUT: ``{(a_bits, w_bits): value}`` (a callable is kept as is).

  Args:
    lut: nested ``{a: {w: value}}``, flat ``{(a, w): value}``, or a function ``(a, w) -> value``.

  Returns:
    The flat dict (or the callable).

  Raises:
    ValueError: malformed LUT (non-integer keys, non-positive or non-finite values).
  """
  if callable(lut) and not isinstance(lut, Mapping):
    return lut
  if not isinstance(lut, Mapping) or not lut:
    raise ValueError(f"a LUT must be a non-empty mapping or a callable (a_bits, w_bits) -> value, "
                     f"got {lut!r}")
  flat: Dict[Tuple[int, int], float] = {}
  for k, v in lut.items():
    if isinstance(k, tuple):
      if len(k) != 2:
        raise ValueError(f"LUT key {k!r}: expected (activation bits, weight bits)")
      flat[(int(k[0]), int(k[1]))] = float(v)
    elif isinstance(v, Mapping):
      for kw, vv in v.items():
        flat[(int(k), int(kw))] = float(vv)
    else:
      raise ValueError(f"LUT entry {k!r}: {v!r}; use {{a_bits: {{w_bits: value}}}} or "
                       "{(a_bits, w_bits): value}")
  for k, v in flat.items():
    if not np.isfinite(v) or v <= 0:
      raise ValueError(f"LUT entry {k}: value {v} must be finite and > 0")
  return flat


def lut_missing_pairs(lut: LutLike, table: LayerTable) -> Dict[str, Tuple[Tuple[int, int], ...]]:
  """(activation bits, weight bits) pairs the search space of ``table`` can produce that ``lut`` lacks.

  Args:
    lut: a LUT in any form accepted by :func:`normalize_lut`.
    table: the layer table the cost is bound to.

  Returns:
    ``{layer name: missing pairs}`` for the layers with missing pairs (empty when complete).
  """
  from jpq_jax.costs.channels import UNQUANTIZED_INPUT_BITS
  flat = normalize_lut(lut)
  if callable(flat):
    return {}
  out = {}
  for l in table.layers:
    gi = table.group(l.in_group)
    a_bits = tuple(gi.a_precisions) or (UNQUANTIZED_INPUT_BITS,)
    w_bits = [w for w in table.group(l.w_group).w_precisions if w != 0]
    miss = tuple((a, w) for a in a_bits for w in w_bits if (a, w) not in flat)
    if miss:
      out[l.name] = miss
  return out


def _lut_matrix(flat, v: LayerView, mode: str) -> np.ndarray:
  """Static ``(n_in, n_w)`` matrix of per-MAC costs c(a, w); 0 for the 0-bit row."""
  m = np.zeros((len(v.in_precisions), len(v.w_precisions)), np.float64)
  for j, a in enumerate(v.in_precisions):
    for i, w in enumerate(v.w_precisions):
      if w == 0:
        continue  # pruned channels cost nothing (the reference skips w = 0)
      val = flat(a, w) if callable(flat) else flat.get((a, w))
      if val is None:
        raise ValueError(
            f"layer {v.record.name}: the LUT has no entry for (activation bits {a}, weight bits "
            f"{w}), which this search space can produce; LUT pairs: {sorted(flat)}")
      m[j, i] = 1.0 / val if mode == "throughput" else val
  return m


def lut_layer_cost(v: LayerView, lut: LutLike, mode: str = "throughput") -> jax.Array:
  """Per-MAC LUT cost of one layer (the MPIC/bitops structure of METHOD.md §5.3-5.4).

  Args:
    v: the layer's view.
    lut: LUT over (input activation bits, weight bits), see :func:`normalize_lut`.
    mode: ``"throughput"`` (values are MACs per unit, e.g. MACs/cycle: cost = MACs / value) or
      ``"cost"`` (values are a cost per MAC: cost = MACs * value).

  Returns:
    Scalar cost of the layer; differentiable w.r.t. theta_w, theta_in and Cin_eff (not detached).

  Raises:
    ValueError: unknown mode, or a (bits, bits) pair missing from the LUT.
  """
  if mode not in ("throughput", "cost"):
    raise ValueError(f"LUT mode must be 'throughput' or 'cost', got {mode!r}")
  c = jnp.asarray(_lut_matrix(normalize_lut(lut), v, mode), v.theta_w.dtype)
  frac = v.n_w / (v.cout_eff + 1e-6)  # share of kept channels at each weight precision
  per_a = c @ frac  # (n_in,)
  return jnp.sum(v.theta_in * per_a) * layer_macs(v)


def mpic_layer_cycles(v: LayerView) -> jax.Array:
  """MPIC cycles of one layer (METHOD.md §5.3).

  Args:
    v: the layer's view.

  Returns:
    Scalar, cycles.
  """
  return lut_layer_cost(v, MPIC_LUT, "throughput")


def mpic_layer_energy(v: LayerView) -> jax.Array:
  """MPIC energy of one layer: ``cycles / 250 MHz * 5.3825 mW`` (joules).

  Args:
    v: the layer's view.

  Returns:
    Scalar, J.
  """
  return mpic_layer_cycles(v) * (MPIC_MEAN_POWER_W / MPIC_FREQUENCY_HZ)


def _bitops_lut(a: int, w: int) -> float:
  return float(a * w)


def bitops_layer(v: LayerView) -> jax.Array:
  """Bit operations of one layer: the MPIC structure with ``1/LUT[a][w]`` replaced by ``a*w`` (§5.4).

  Args:
    v: the layer's view.

  Returns:
    Scalar, bit operations.
  """
  return lut_layer_cost(v, _bitops_lut, "cost")


# ---- NE16 --------------------------------------------------------------------------------------
def _ste(x, value):
  """``value`` in the forward pass, identity gradient w.r.t. ``x`` (reference's *STE functions)."""
  return x + jax.lax.stop_gradient(value - x)


def _floor_div(a, b):
  if isinstance(a, (int, np.integer)):
    return a // b
  return _ste(a, jnp.floor_divide(a, b))


def _ceil_div(a, b):
  # The reference's div_and_ceil: ((a - 1) // b) + 1, also applied to fractional a.
  if isinstance(a, (int, np.integer)):
    return (a - 1) // b + 1
  return _ste(a, jnp.floor_divide(a - 1, b) + 1)


def _mod(a, b):
  if isinstance(a, (int, np.integer)):
    return a % b
  return _ste(a, jnp.mod(a, b))


# NE16 constants (Ne16PerfModel): buffers (h, w, k), FIFO latency, multipliers, memory bits/cycle.
_IN_BUF = (5, 5, 16)
_OUT_BUF = (3, 3, 32)
_FIFO = 6
_MULTIPLIERS = 4
_MEM_BITS = 256
_IO_BITS = 8  # input and output activations are 8 bit in this model
_NQ_BITS = 32


def ne16_kernel_latency(kernel: Tuple[int, int], depthwise: bool, w_bits: int, ho: int, wo: int,
                        ko, ki):
  """NE16 cycles of one ``(3, 3)`` or ``(1, 1)`` kernel on the layer ``(Ho, Wo, Ko, Ki)``.

  Args:
    kernel: ``(3, 3)`` or ``(1, 1)``.
    depthwise: depthwise layer flag.
    w_bits: weight bit-width.
    ho: output height.
    wo: output width.
    ko: output channels (fractional, differentiable: the expected channels at ``w_bits``).
    ki: input channels (differentiable ``Cin_eff``, or a constant).

  Returns:
    Scalar cycles (floor/ceil/mod with straight-through gradients).
  """
  is_1x1 = kernel == (1, 1) and not depthwise
  is_dw = kernel == (3, 3) and depthwise
  # Every other case (3x3 dense, and a 1x1 piece of a decomposed depthwise kernel) is "dense".
  if is_1x1:
    load = 10 + _OUT_BUF[0] * _OUT_BUF[1] * _ceil_div(_IN_BUF[2] * _IO_BITS, _MEM_BITS)
  else:
    load = _FIFO + _IN_BUF[0] * _IN_BUF[1] * _ceil_div(_IN_BUF[2] * _IO_BITS, _MEM_BITS)

  def weight_offset(k):
    return _FIFO + k if is_dw else _FIFO

  def matvec(k):
    return _FIFO + k if is_1x1 else _FIFO + k * w_bits

  update_idx = 2

  def normquant(k):
    # nq_shift and nq_bias disabled; nq_scale = 9 + ceil(k * nq_bits/8 / multipliers).
    return 9 + _ceil_div(k * (_NQ_BITS // 8), _MULTIPLIERS)

  streamout = 3 + _OUT_BUF[0] * _OUT_BUF[1] * _ceil_div(_OUT_BUF[2] * _IO_BITS, _MEM_BITS) + 1

  k_body = _IN_BUF[2] if is_dw else _OUT_BUF[2]
  n_body = _floor_div(ko, k_body)
  k_rem = _mod(ko, k_body)
  n_in = _ceil_div(ki, _IN_BUF[2])
  n_sp = _ceil_div(ho, _OUT_BUF[0]) * _ceil_div(wo, _OUT_BUF[1])

  if is_dw:
    def iteration(k):
      return load + weight_offset(k) + matvec(k) + update_idx + normquant(k) + streamout
  else:
    def iteration(k):
      return n_in * (load + weight_offset(None) + matvec(k) + update_idx) + normquant(k) + streamout

  # The remainder iteration runs only when k_rem != 0 (a step in Ko; with soft theta it is almost
  # always taken, METHOD.md §13.18). jnp.where keeps the gradient of the taken branch only.
  rem = jnp.where(k_rem != 0, iteration(k_rem), 0.0)
  return n_sp * (n_body * iteration(k_body) + rem)


def ne16_layer_cycles(v: LayerView) -> jax.Array:
  """NE16 cycles of one layer (METHOD.md §5.5), summed over its non-zero weight precisions.

  For each ``w != 0``: the layer tuple is ``(Ho, Wo, N_w, Cin_eff)`` (dense layers ``(1, 1, N_w,
  Cin_eff)`` with a 1x1 kernel); a ``kh x kw`` kernel is decomposed into ``n3`` 3x3 and ``n1`` 1x1
  kernels, each costed on the same tuple. Activation theta is ignored (8-bit activations).

  Args:
    v: the layer's view.

  Returns:
    Scalar, cycles; gradients reach ``theta_w`` (through ``N_w``) and the producer's theta (through
    ``Cin_eff``, not detached), via straight-through floor/ceil/mod.
  """
  r = v.record
  if r.kind == "dense":
    kh, kw, ho, wo, dw = 1, 1, 1, 1, False
  else:
    (kh, kw), (ho, wo) = r.kernel, r.out_hw
    # The reference's flag: groups == C_in == C_out.
    dw = r.kind == "depthwise" or (r.feature_groups == r.cin == r.cout and r.feature_groups > 1)
  n3 = (kh // 3) * (kw // 3)
  n1 = (kh % 3) * kw + (kw % 3) * kh - (kh % 3) * (kw % 3)
  total = jnp.zeros((), v.theta_w.dtype)
  for i, w in enumerate(v.w_precisions):
    if w == 0:
      continue  # pruned channels cost nothing
    ko = v.n_w[i]
    lat = 0.0
    if n3 > 0:
      lat = lat + n3 * ne16_kernel_latency((3, 3), dw, w, ho, wo, ko, v.cin_eff)
    if n1 > 0:
      lat = lat + n1 * ne16_kernel_latency((1, 1), dw, w, ho, wo, ko, v.cin_eff)
    total = total + lat
  return total
