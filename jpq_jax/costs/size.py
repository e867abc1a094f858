"""Hardware-agnostic per-layer costs: weight size in bits, parameter count, MACs.

All functions take a :class:`~jpq_jax.costs.channels.LayerView` and return a scalar; the registry
sums them over layers. Formulas follow the reference (METHOD.md §5.1, §5.2, §7.1), including its
epsilons and its gradient behaviour:

* ``size`` detaches ``Cin_eff`` (its gradient reaches only the layer's own weight logits);
  ``size_nodetach`` is the same value with ``Cin_eff`` attached (a documented deviation);
* ``params`` (PIT's size regulariser, weights as a float count) and ``macs`` do not detach.
"""

from __future__ import annotations

import jax

from jpq_jax.costs.channels import LayerView

__all__ = ["layer_size_bits", "layer_size_bits_nodetach", "layer_params", "layer_macs"]


def _size(v: LayerView, detach_cin: bool) -> jax.Array:
  r = v.record
  cin = jax.lax.stop_gradient(v.cin_eff) if detach_cin else v.cin_eff
  cost = cin * v.cout_eff * (r.kernel[0] * r.kernel[1])
  if v.depthwise:
    # Depthwise: one input channel per output channel. The reference divides by
    # (Cout_eff + 1e-4) rather than simplifying, which keeps a tiny gradient through Cout_eff.
    cost = cost / (v.cout_eff + 1e-4)
  return cost * v.p_eff


def layer_size_bits(v: LayerView) -> jax.Array:
  """Weight bits of one layer, reference formula (``Cin_eff`` detached).

  ``stopgrad(Cin_eff) * Cout_eff * kh * kw * p_eff`` (depthwise: ``/ (Cout_eff + 1e-4)``); dense
  layers have a 1x1 kernel. Biases and activations are not counted (METHOD.md §5.1).

  Args:
    v: the layer's view.

  Returns:
    Scalar, bits.
  """
  return _size(v, detach_cin=True)


def layer_size_bits_nodetach(v: LayerView) -> jax.Array:
  """As :func:`layer_size_bits` but with ``Cin_eff`` attached (deviation from the reference).

  Pruning a channel then also lowers the size of the consumer layers *through the gradient*, so a
  group's logits feel the full weight-memory saving of pruning; the value is identical.

  Args:
    v: the layer's view.

  Returns:
    Scalar, bits.
  """
  return _size(v, detach_cin=False)


def layer_params(v: LayerView) -> jax.Array:
  """Effective weight count of one layer (PIT's 'size' regulariser, METHOD.md §7.1).

  ``Cin_eff * Cout_eff * kh * kw``; depthwise ``Cin_eff * kh * kw`` (the reference's
  ``... / Cout_eff``, simplified exactly: same value and same gradient, and no 0/0 when a group is
  fully pruned). Not detached; no bits involved.

  Args:
    v: the layer's view.

  Returns:
    Scalar, number of weights (float).
  """
  r = v.record
  k = r.kernel[0] * r.kernel[1]
  if v.depthwise:
    return v.cin_eff * k
  return v.cin_eff * v.cout_eff * k


def layer_macs(v: LayerView) -> jax.Array:
  """Effective multiply-accumulates of one layer (METHOD.md §5.2, ``get_macs_layer``).

  ``Cin_eff * Cout_eff * kh * kw * Ho * Wo`` (depthwise: ``/ (Cout_eff + 1e-6)``; dense:
  ``Cin_eff * Cout_eff``). ``Cin_eff`` is not detached.

  Args:
    v: the layer's view.

  Returns:
    Scalar, MACs.
  """
  r = v.record
  cost = v.cin_eff * v.cout_eff * (r.kernel[0] * r.kernel[1])
  if v.depthwise:
    cost = cost / (v.cout_eff + 1e-6)
  return cost * (r.out_hw[0] * r.out_hw[1])
