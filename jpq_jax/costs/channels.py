"""Effective channel counts and the per-layer view every cost model consumes.

A cost model sees one searchable layer at a time through a :class:`LayerView`: the layer's static
record plus the architecture quantities that depend on theta (METHOD.md §2.5, §5):

* ``Cout_eff`` of a sharing group = ``C - sum_c theta[0-bit, c]`` for a channel-wise group with a
  0-bit option; the constant ``C`` otherwise (no 0-bit option, or layer-wise search where 0 bit is
  not pruning, METHOD.md §2.1);
* ``Cin_eff`` of a layer = ``Cout_eff`` of the group that produced its input times the flatten factor
  ``in_mult``; the network-input group reports its constant data channels;
* ``N_w = sum_c theta[w, c]``: the expected number of channels at weight precision ``w``;
* ``theta_in``: the layer's *input* activation theta (the producing group's activation quantizer).

Everything here is plain ``jax.numpy`` on the theta pytree, so it jits, differentiates and vmaps
over a leading member axis of theta without special handling.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp

from jpq_jax.table import GroupRecord, LayerRecord, LayerTable

__all__ = [
    "UNQUANTIZED_INPUT_BITS", "LayerView", "effective_channels", "layer_views", "check_table",
    "check_theta",
]

# When a layer's input comes from a group whose output is not quantized (no activation
# precisions, e.g. a layer fed by the classifier's float output, or a float network input), the
# hardware models still need an activation bit-width; the reference's LUTs are defined for 8-bit
# activations, the deployment default, so such inputs are costed as 8 bit.
UNQUANTIZED_INPUT_BITS = 8


@dataclasses.dataclass(frozen=True)
class LayerView:
  """Everything a cost model may use about one layer under a given theta.

  Array attributes are (traced) scalars or small vectors of the *current member* (under
  ``jax.vmap`` the member axis is invisible here).

  Attributes:
    record: the static :class:`LayerRecord`.
    group: record of the layer's weight group (``record.w_group``).
    in_group: record of the group that produced the layer's input.
    theta_w: weight theta ``(n_w, C)``, row i is ``w_precisions[i]``.
    w_precisions: weight bit-widths (rows of ``theta_w``).
    n_w: ``(n_w,)`` expected channel count per weight precision, ``sum_c theta_w[i, c]``.
    cout_eff: effective output channels of the layer (of its weight group).
    cin_eff: effective input channels (not detached; the size cost detaches it itself).
    theta_in: ``(n_in,)`` theta of the input activation precisions.
    in_precisions: input activation bit-widths (rows of ``theta_in``).
  """
  record: LayerRecord
  group: GroupRecord
  in_group: GroupRecord
  theta_w: jax.Array
  w_precisions: Tuple[int, ...]
  n_w: jax.Array
  cout_eff: jax.Array
  cin_eff: jax.Array
  theta_in: jax.Array
  in_precisions: Tuple[int, ...]

  @property
  def per_channel(self) -> bool:
    """True for channel-wise search (the method); False for the layer-wise baseline."""
    return self.group.granularity == "channel"

  @property
  def depthwise(self) -> bool:
    """True for a depthwise conv (feature groups == channels)."""
    return self.record.kind == "depthwise" or self.record.feature_groups > 1

  @property
  def p_eff(self) -> jax.Array:
    """Effective weight bit-width of a kept channel (METHOD.md §5.1).

    Channel-wise: ``sum_i P_i N_i / (Cout_eff + 1e-10)``; layer-wise: ``sum_i theta_i P_i``.
    """
    p = jnp.asarray(self.w_precisions, self.theta_w.dtype)
    if self.per_channel:
      return jnp.sum(p * self.n_w) / (self.cout_eff + 1e-10)
    # Layer-wise theta is broadcast over channels (every column equal): take column 0.
    return jnp.sum(p * self.theta_w[:, 0])

  @property
  def a_in_eff(self) -> jax.Array:
    """Expected input activation bit-width ``sum_j theta_in[j] P_j``."""
    return jnp.sum(jnp.asarray(self.in_precisions, self.theta_in.dtype) * self.theta_in)


def check_table(table: LayerTable) -> None:
  """Raise a clear error when ``table`` cannot be costed.

  Args:
    table: a :class:`LayerTable`.

  Raises:
    ValueError: the table has no searchable layer, a layer references an unknown group, or a
      layer kind is unknown.
  """
  if not isinstance(table, LayerTable):
    raise TypeError(f"costs need a jpq_jax.LayerTable (from jpq_jax.trace_table), got {type(table)}")
  if not table.layers:
    raise ValueError(
        "the layer table has no searchable layer: there is nothing to cost (build the model with "
        "jpq_jax.Conv / jpq_jax.Dense layers and trace it with jpq_jax.trace_table)")
  names = {g.name for g in table.groups}
  for l in table.layers:
    if l.kind not in ("conv", "depthwise", "dense"):
      raise ValueError(f"layer {l.name}: unknown kind {l.kind!r} (expected conv, depthwise, dense)")
    for what, g in (("weight group", l.w_group), ("input group", l.in_group)):
      if g not in names:
        raise ValueError(f"layer {l.name}: its {what} {g!r} is not in the table's groups "
                         f"{sorted(names)}")
    if table.group(l.w_group).kind == "input":
      raise ValueError(f"layer {l.name}: its weight group {l.w_group!r} is the network-input group")


def check_theta(table: LayerTable, theta: Mapping) -> None:
  """Check that ``theta`` has an entry of the right shape for every group that needs one.

  Shapes are checked on the unbatched (per-member) arrays, so call it inside ``vmap`` or on one
  member; it only looks at static shapes and is free under ``jit``.

  Args:
    table: the model's :class:`LayerTable`.
    theta: ``{group name: GroupTheta}`` (e.g. from :func:`jpq_jax.thetas`). Every group needs an
      entry; every non-input group needs ``.w`` of shape ``(len(w_precisions), channels)``; ``.a``,
      when present on a group with activation precisions, must have shape ``(len(a_precisions),)``
      (a missing ``.a`` is not an error).

  Returns:
    None when ``theta`` is valid.

  Raises:
    ValueError: a group is missing or has a theta of the wrong shape (or a non-input group has no
      ``.w``).
  """
  for g in table.groups:
    if g.name not in theta:
      raise ValueError(f"theta has no entry for group {g.name!r}; got groups {sorted(theta)}. "
                       "Compute it with jpq_jax.thetas(variables, table, ctx)")
    t = theta[g.name]
    if g.kind != "input":
      w = getattr(t, "w", None)
      if w is None or tuple(jnp.shape(w)) != (len(g.w_precisions), g.channels):
        raise ValueError(
            f"theta[{g.name!r}].w must have shape ({len(g.w_precisions)}, {g.channels}) "
            f"(weight precisions {g.w_precisions} x channels), got "
            f"{None if w is None else tuple(jnp.shape(w))}")
    a = getattr(t, "a", None)
    if g.a_precisions and a is not None and tuple(jnp.shape(a)) != (len(g.a_precisions),):
      raise ValueError(f"theta[{g.name!r}].a must have shape ({len(g.a_precisions)},), got "
                       f"{tuple(jnp.shape(a))}")


def _group_cout_eff(g: GroupRecord, theta: Mapping) -> jax.Array:
  if g.kind == "input":
    # The network input reports its constant data channels (no search on it).
    return jnp.asarray(float(g.channels), jnp.float32)
  w = theta[g.name].w
  if g.prunable:
    # The barrier keeps XLA from reassociating `(C - sum theta_0) + eps` into
    # `(C + eps) - sum theta_0` inside the cost formulas: in float32 that drops the epsilon, and a
    # fully pruned group then gives 0/0 = NaN under jit where the reference (eager) gives 0.
    return jax.lax.optimization_barrier(g.channels - jnp.sum(w[g.zero_index]))
  # No 0-bit option, or layer-wise search (0 bit there is not pruning): all channels count.
  return jnp.asarray(float(g.channels), w.dtype)


def effective_channels(table: LayerTable, theta: Mapping) -> Dict[str, jax.Array]:
  """``Cout_eff`` of every sharing group (METHOD.md §2.5).

  Args:
    table: the model's :class:`LayerTable`.
    theta: ``{group name: GroupTheta}`` from :func:`jpq_jax.thetas` (optionally with a leading
      member axis under ``jax.vmap``).

  Returns:
    ``{group name: scalar}``: ``C - sum_c theta[0-bit, c]`` for channel-wise groups with a 0-bit
    option, the constant ``C`` for every other group (the input group reports its data channels).
    Differentiable w.r.t. theta.

  Raises:
    ValueError: theta lacks a group or has a wrong shape.
  """
  check_theta(table, theta)
  return {g.name: _group_cout_eff(g, theta) for g in table.groups}


def _input_theta(g: GroupRecord, theta: Mapping) -> Tuple[jax.Array, Tuple[int, ...]]:
  a = getattr(theta.get(g.name), "a", None) if g.a_precisions else None
  if a is None:
    # Unquantized producer (no activation precisions): cost the input as 8-bit, see
    # UNQUANTIZED_INPUT_BITS.
    return jnp.ones((1,), jnp.float32), (UNQUANTIZED_INPUT_BITS,)
  return a, tuple(g.a_precisions)


def layer_views(table: LayerTable, theta: Mapping,
                cout_eff: Optional[Mapping[str, jax.Array]] = None) -> Tuple[LayerView, ...]:
  """One :class:`LayerView` per searchable layer, in table order.

  Args:
    table: the model's :class:`LayerTable`.
    theta: ``{group name: GroupTheta}``.
    cout_eff: precomputed :func:`effective_channels` (computed when None).

  Returns:
    Views in the order of ``table.layers``.

  Raises:
    ValueError: see :func:`check_table` and :func:`check_theta`.
  """
  check_table(table)
  check_theta(table, theta)
  if cout_eff is None:
    cout_eff = effective_channels(table, theta)
  groups = {g.name: g for g in table.groups}
  views = []
  for l in table.layers:
    g = groups[l.w_group]
    gi = groups[l.in_group]
    tw = theta[g.name].w
    tin, pin = _input_theta(gi, theta)
    views.append(LayerView(
        record=l, group=g, in_group=gi, theta_w=tw, w_precisions=tuple(g.w_precisions),
        n_w=jnp.sum(tw, axis=-1), cout_eff=cout_eff[g.name],
        cin_eff=cout_eff[gi.name] * l.in_mult, theta_in=tin, in_precisions=pin))
  return tuple(views)
