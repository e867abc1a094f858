"""Precision choices: from trainable logits to the mixing coefficients ``theta``.

Each sharing group owns weight logits ``alpha_w`` of shape ``(n_wbits, C)`` (or ``(n_wbits,)`` for
layer-wise search) and activation logits ``alpha_a`` of shape ``(n_abits,)``. ``theta`` is a
distribution over the precision axis (axis 0). METHOD.md §2.1-2.4.

The temperature is always an array argument (never a Python constant folded into a compile) so that
one compiled step serves every epoch of the annealing schedule and every member of a sweep.
"""

from __future__ import annotations

import zlib
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jpq_jax.quant import div_by_scalar

__all__ = [
    "SAMPLINGS",
    "validate_precisions",
    "init_logits",
    "sample_theta",
    "argmax_onehot",
    "group_key",
    "weight_key",
    "activation_key",
    "onehot_from_bits",
    "keep_alive_logits",
]

# Sampling methods in training mode (METHOD.md §2.3):
#   softmax      theta = softmax(alpha / T)                       (reference default)
#   hard         theta = STE-argmax(softmax(alpha / T))
#   gumbel       theta = softmax((alpha + g) / T), g ~ Gumbel(0,1)
#   gumbel_hard  one-hot forward of the Gumbel sample, soft gradient
# Evaluation mode always uses the straight-through one-hot argmax of softmax(alpha / T).
SAMPLINGS = ("softmax", "hard", "gumbel", "gumbel_hard")


def validate_precisions(precisions: Sequence[int], what: str, allow_zero: bool = True) -> tuple:
  """Check a precision set and return it as a tuple of ints.

  Args:
    precisions: bit-widths, e.g. ``(0, 2, 4, 8)``.
    what: name used in error messages (e.g. ``"weight precisions of group 'g1'"``).
    allow_zero: whether 0 (= pruned) is allowed.

  Returns:
    ``tuple(int)`` in the given order (row ``i`` of the logits is ``precisions[i]``).

  Raises:
    ValueError: empty, repeated, non-integer, negative or above 32 bits, or 0 where not allowed.
  """
  try:
    ps = tuple(precisions)
  except TypeError:
    raise ValueError(f"{what}: expected a sequence of bit-widths, got {precisions!r}") from None
  if not ps:
    raise ValueError(f"{what}: the precision set is empty; give at least one bit-width, e.g. (8,)")
  out = []
  for p in ps:
    if isinstance(p, bool) or not float(p).is_integer():
      raise ValueError(f"{what}: unknown precision {p!r}; bit-widths are integers such as 0, 2, 4, 8")
    p = int(p)
    if p < 0 or p > 32:
      raise ValueError(f"{what}: unknown precision {p}; bit-widths must lie in 0..32")
    out.append(p)
  if len(set(out)) != len(out):
    raise ValueError(f"{what}: repeated precision in {tuple(out)}; list each bit-width once")
  if not allow_zero and 0 in out:
    raise ValueError(f"{what}: 0 bits (pruning) is not allowed here, got {tuple(out)}")
  if max(out) == 0:
    raise ValueError(f"{what}: at least one non-zero bit-width is needed, got {tuple(out)}")
  return tuple(out)


def _concrete(x) -> Optional[np.ndarray]:
  """``x`` as a numpy array, or None while it is traced (inside jit/vmap: not checkable)."""
  try:
    return np.asarray(x)
  except (TypeError, jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def check_temperature(temperature, what: str) -> None:
  """Reject a concrete temperature that is not a finite number > 0 (traced ones pass through).

  ``softmax(alpha / T)`` at T = 0 is NaN and at T < 0 inverts the argmax (every channel pruned);
  a hard argmax is evaluation mode (``train=False``) or ``sampling='hard'``, not T = 0.

  Args:
    temperature: a Python number or an array (one temperature, or one per member).
    what: the caller, for the message.

  Raises:
    ValueError: a concrete temperature that is NaN, infinite or <= 0.
  """
  t = _concrete(temperature)
  if t is None:
    return  # traced (inside jit/vmap): checked where it was created
  t = t.astype(np.float64)
  if t.size and not (np.isfinite(t).all() and (t > 0).all()):
    raise ValueError(f"{what}: temperature must be a finite number > 0, got {temperature!r} (for a "
                     "hard argmax use train=False or sampling='hard')")


def init_logits(precisions: Sequence[int], channels: Optional[int] = None) -> jax.Array:
  """Reference initialisation ``alpha[i] = p_i / max(p)`` (not uniform; METHOD.md §2.1).

  Args:
    precisions: bit-widths.
    channels: if given, logits of shape ``(n, channels)`` (channel-wise); else ``(n,)``.

  Returns:
    float32 logits.
  """
  p = jnp.asarray(precisions, jnp.float32)
  a = p / jnp.max(p)
  if channels is not None:
    a = jnp.broadcast_to(a[:, None], (p.shape[0], channels))
  return a


def argmax_onehot(theta_soft: jax.Array) -> jax.Array:
  """One-hot of the argmax along axis 0 with a straight-through (identity) gradient.

  Args:
    theta_soft: soft coefficients over the precision axis (axis 0), shape ``(n,)`` or ``(n, ...)``.

  Returns:
    Array of the shape and dtype of ``theta_soft``: forward, the one-hot of the argmax along axis 0
    (the first index on ties); backward, the gradient passes unchanged to ``theta_soft``.
  """
  idx = jnp.argmax(theta_soft, axis=0)
  onehot = jax.nn.one_hot(idx, theta_soft.shape[0], axis=0, dtype=theta_soft.dtype)
  return theta_soft + jax.lax.stop_gradient(onehot - theta_soft)


def group_key(key: jax.Array, group_name: str) -> jax.Array:
  """Deterministic per-group PRNG key: every layer of a group sees the same Gumbel sample.

  Args:
    key: base PRNG key.
    group_name: name folded into ``key`` (through its CRC-32, masked to 31 bits).

  Returns:
    ``jax.random.fold_in(key, crc32(group_name) & 0x7FFFFFFF)``, a PRNG key.
  """
  return jax.random.fold_in(key, zlib.crc32(group_name.encode()) & 0x7FFFFFFF)


def weight_key(key: Optional[jax.Array], group_name: str) -> Optional[jax.Array]:
  """Key of a group's weight-choice sample (None without a key).

  The layers and :func:`jpq_jax.thetas` both derive it here, so the costs see the sample the
  forward used.

  Args:
    key: base PRNG key, or None.
    group_name: the sharing group's name.

  Returns:
    ``group_key(key, group_name)``, or None when ``key`` is None.
  """
  return group_key(key, group_name) if key is not None else None


def activation_key(key: Optional[jax.Array], group_name: str, is_input: bool) -> Optional[jax.Array]:
  """Key of a group's activation-choice sample; the input quantizer has only this one choice.

  Args:
    key: base PRNG key, or None.
    group_name: the sharing group's name.
    is_input: whether the group is the input quantizer's; its key is derived from ``group_name``
      itself (it has no weight choice), any other group's from ``group_name + "/a"``.

  Returns:
    The derived PRNG key, or None when ``key`` is None.
  """
  if key is None:
    return None
  return group_key(key, group_name if is_input else group_name + "/a")


def onehot_from_bits(bits: jax.Array, precisions: Sequence[int], what: str = "precision"
                     ) -> jax.Array:
  """theta ``(n, ...)`` of a frozen choice: ``theta[i] = (bits == precisions[i])`` (float32).

  Args:
    bits: chosen bit-width(s), a scalar or an array (e.g. one per channel); cast to int32.
    precisions: the group's precision set, ``n`` bit-widths in logit-row order.
    what: the variable, for the error message (e.g. ``"group 'g1' w_bits"``).

  Returns:
    float32 array of shape ``(n,) + bits.shape``.

  Raises:
    ValueError: concrete ``bits`` holding a bit-width outside ``precisions`` (its column would be
      all zeros: the channel silently zeroed). Traced ``bits`` (inside jit/vmap) cannot raise:
      their columns outside the set are NaN instead, so the output and the loss turn NaN (the
      sweep reports such a member as failed) rather than the channel silently reading zero.
  """
  concrete = _concrete(bits)
  if concrete is not None:
    bad = sorted(set(np.unique(concrete).tolist()) - {int(p) for p in precisions})
    if bad:
      raise ValueError(f"{what}: bit-width(s) {bad} not in the precision set {tuple(precisions)} "
                       "(freeze the architecture with jpq_jax.freeze / to_fixed)")
  bits = jnp.asarray(bits, jnp.int32)
  p = jnp.asarray(precisions, jnp.int32).reshape((-1,) + (1,) * bits.ndim)
  onehot = (bits[None] == p).astype(jnp.float32)
  if concrete is not None:
    return onehot
  return jnp.where(onehot.sum(0, keepdims=True) > 0, onehot, jnp.nan)


def keep_alive_logits(alpha: jax.Array, zero_index: Optional[int], keep_alive: int) -> jax.Array:
  """``alpha`` with the 0-bit option of the last ``keep_alive`` channels removed (logit -inf).

  The keep-alive improvement (``SearchSpace.keep_alive``, not in the reference): a group's last
  ``keep_alive`` output channels can never be pruned, as PIT's keep-alive channel (METHOD.md §7.1),
  so a large lambda cannot remove a whole group (a residual group pruned away leaves a network that
  predicts one class). Their theta over the other precisions is the softmax of the remaining logits;
  the masked logit gets no gradient. Every reader of ``alpha_w`` (the layers' theta, the costs'
  thetas, :func:`jpq_jax.freeze`, the conversion's compensation) applies it, so they agree.

  Args:
    alpha: weight logits ``(n, C)`` of a channel-wise group (other shapes are returned as they are:
      layer-wise groups have no pruning).
    zero_index: row of the 0-bit option, or None (no pruning option: returned as it is).
    keep_alive: number of channels to keep, counted from the last; 0 (the reference) returns
      ``alpha`` unchanged; more than ``C`` keeps every channel.

  Returns:
    The masked logits, same shape and dtype.
  """
  if not keep_alive or zero_index is None or jnp.ndim(alpha) != 2:
    return alpha
  alpha = jnp.asarray(alpha)
  n, c = alpha.shape
  masked = ((jnp.arange(n) == zero_index)[:, None]
            & (jnp.arange(c) >= c - int(keep_alive))[None, :])
  return jnp.where(masked, -jnp.inf, alpha)


def sample_theta(alpha: jax.Array,
                 temperature: jax.Array,
                 *,
                 train: bool,
                 sampling: str = "softmax",
                 key: Optional[jax.Array] = None) -> jax.Array:
  """Mixing coefficients over the precision axis (axis 0) from logits.

  Args:
    alpha: logits, shape ``(n,)`` or ``(n, C)``.
    temperature: scalar array T (> 0).
    train: training mode (relaxed, per ``sampling``) or evaluation mode (one-hot argmax, STE).
    sampling: one of :data:`SAMPLINGS`.
    key: PRNG key, required by the Gumbel samplings in training mode.

  Returns:
    ``theta`` with the shape of ``alpha``, summing to 1 along axis 0.

  Raises:
    ValueError: unknown sampling, or Gumbel sampling without a key.
  """
  if sampling not in SAMPLINGS:
    raise ValueError(f"unknown sampling {sampling!r}; expected one of {SAMPLINGS}")
  temperature = jnp.asarray(temperature, alpha.dtype)
  # div_by_scalar: the true division of a single-member program also when vmapped over members
  # (a per-member temperature would otherwise become a reciprocal multiplication, 1 ulp off).
  soft = jax.nn.softmax(div_by_scalar(alpha, temperature), axis=0)
  if not train:
    return argmax_onehot(soft)
  if sampling == "softmax":
    return soft
  if sampling == "hard":
    return argmax_onehot(soft)
  if key is None:
    raise ValueError(f"sampling={sampling!r} needs a PRNG key (Ctx.key) in training mode")
  g = jax.random.gumbel(key, alpha.shape, alpha.dtype)
  # torch.nn.functional.gumbel_softmax: softmax((logits + g) / tau); the logits are NOT divided by
  # T beforehand (tau plays that role).
  gsoft = jax.nn.softmax(div_by_scalar(alpha + g, temperature), axis=0)
  if sampling == "gumbel":
    return gsoft
  return argmax_onehot(gsoft)
