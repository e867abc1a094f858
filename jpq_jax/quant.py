"""Fake quantizers with the reference's exact forward and backward passes.

Every function here reproduces PLiNIO @ 2e1a4353 (the version the paper's scripts pin) to float32
precision; see METHOD.md §3 and §14 and the golden vectors in ``shared/golden/quantizers.json``.

* :func:`quantize_weight` -- per-output-channel symmetric min-max, round half to even, upper clip only,
  identity straight-through gradient (also at 0 bits, whose forward is all zeros).
* :func:`pact` -- unsigned PACT: ``floor(k * clamp(x, 0, clip)) / k`` with ``k = (2^b-1)/(clip+1e-3)``.
* :func:`pact_signed` -- signed PACT with two trainable clips (the speech input quantizer).
* :func:`quantize_bias` -- the 32-bit bias quantizer with scale ``s_a * s_w``.
* :func:`pact_mixture` -- ``sum_j theta_j * pact(x, clip_j, bits_j)`` with the same gradients as the
  sum of :func:`pact` copies, computed in one pass that keeps only ``x`` for the backward.

Layouts: weights have their *output channel on the last axis* (Flax HWIO / ``(in, out)``), activations
are arbitrary arrays.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "weight_scale",
    "quantize_weight",
    "weight_codes",
    "pact",
    "pact_signed",
    "pact_scale",
    "pact_signed_scale",
    "pact_mixture",
    "quantize_bias",
]

# PACT adds this to the clip in its forward scale (reference quirk, METHOD.md §3.2).
PACT_EPS = 1e-3


def exact_div(x: jax.Array, c: float) -> jax.Array:
  """``x / c`` computed as a true IEEE division, as the reference does.

  XLA rewrites ``A / broadcast(b)`` (a constant, or any scalar/vector broadcast to A's shape) into
  ``A * broadcast(1 / b)``, which is off by one ulp often enough to move a round-half-to-even tie to
  the other code (e.g. ``-max|W| / s`` must be exactly ``-1.5`` at 2 bits). Broadcasting the divisor
  to the full shape behind an optimisation barrier keeps the division a true division.

  Args:
    x: dividend.
    c: Python or array divisor.

  Returns:
    ``x / c`` rounded once, like ``torch.div``.
  """
  x = jnp.asarray(x)
  c = jnp.broadcast_to(jnp.asarray(c, dtype=x.dtype), x.shape)
  # _true_div: also a true division when vmapped over sweep members (see there).
  return _true_div(x, jax.lax.optimization_barrier(c))


def _channel_absmax(w: jax.Array) -> jax.Array:
  """max |W_c| over every axis but the last (the output channel), without gradient."""
  w = jax.lax.stop_gradient(w)
  return jnp.max(jnp.abs(w), axis=tuple(range(w.ndim - 1)))


def weight_scale(w: jax.Array, bits: int) -> jax.Array:
  """Per-output-channel scale of the symmetric min-max quantizer.

  Args:
    w: weight tensor, output channel on the last axis.
    bits: bit-width (0 gives a scale of 0, as the reference defines it).

  Returns:
    Array of shape ``(C_out,)``: ``range_c / (2^bits - 1)`` with ``range_c = 2 max|W_c|`` (1 when 0).
  """
  m = _channel_absmax(w)
  if bits == 0:
    return jnp.zeros_like(m)
  rng = 2.0 * m
  rng = jnp.where(rng == 0, jnp.ones_like(rng), rng)
  return exact_div(rng, 2.0**bits - 1.0)


def weight_codes(w: jax.Array, bits: int) -> jax.Array:
  """Integer codes of the min-max quantizer (as float array), ``clip(round(W/s), upper=2^(b-1)-1)``.

  Args:
    w: weight tensor, output channel last.
    bits: bit-width > 0.

  Returns:
    Float array of the same shape holding integers in ``[-2^(b-1), 2^(b-1)-1]``.
  """
  if bits <= 0:
    raise ValueError(f"weight_codes needs bits > 0, got {bits}")
  s = weight_scale(w, bits)
  w = jax.lax.stop_gradient(w)
  # jnp.round rounds half to even, as torch.round does; the division must be exact (see exact_div).
  return jnp.minimum(jnp.round(exact_div(w, s)), 2.0 ** (bits - 1) - 1.0)


def quantize_weight(w: jax.Array, bits: int) -> jax.Array:
  """Fake-quantize a weight tensor per output channel (symmetric min-max), with an identity STE.

  Forward: ``q * s`` (see :func:`weight_codes`); at 0 bits all zeros. Backward: the incoming gradient
  passes unchanged to ``w`` (no clipping mask, no gradient to the range), also at 0 bits.

  Args:
    w: weight tensor, output channel on the last axis.
    bits: bit-width, 0 meaning pruned.

  Returns:
    The fake-quantized weight, same shape and dtype as ``w``.
  """
  if bits == 0:
    q = jnp.zeros_like(w)
  else:
    q = weight_codes(w, bits) * weight_scale(w, bits)
  return w + jax.lax.stop_gradient(q - w)


def pact_scale(clip: jax.Array, bits: int) -> jax.Array:
  """Activation scale ``clip / (2^b - 1)`` (no 1e-3; the one the bias quantizer uses).

  Args:
    clip: PACT clip value (scalar array).
    bits: activation bit-width.

  Returns:
    ``clip / (2^bits - 1)`` as an exact division (see :func:`exact_div`), shape of ``clip``.

  Raises:
    ValueError: ``bits <= 0`` (activations have no 0-bit option).
  """
  _check_activation_bits(bits, "pact_scale")
  return exact_div(clip, 2.0**bits - 1.0)


def pact_signed_scale(clip_inf: jax.Array, clip_sup: jax.Array, bits: int) -> jax.Array:
  """Activation scale ``(sup - inf) / (2^b - 1)`` of signed PACT.

  Args:
    clip_inf: lower clip value ``inf`` (scalar array).
    clip_sup: upper clip value ``sup`` (scalar array).
    bits: activation bit-width.

  Returns:
    ``(clip_sup - clip_inf) / (2^bits - 1)`` as an exact division (see :func:`exact_div`).

  Raises:
    ValueError: ``bits <= 0``.
  """
  _check_activation_bits(bits, "pact_signed_scale")
  return exact_div(clip_sup - clip_inf, 2.0**bits - 1.0)


def _check_activation_bits(bits, fn: str) -> None:
  # Only a concrete bit-width can be checked (a traced one comes from validated precision sets).
  if isinstance(bits, (int, float, np.integer)) and bits <= 0:
    raise ValueError(f"{fn} needs bits > 0, got {bits}")


@jax.custom_batching.custom_vmap
def _true_div(q: jax.Array, c: jax.Array) -> jax.Array:
  """``q / c`` (``c`` broadcastable to ``q``), a true IEEE division also when vmapped.

  Unbatched this is plain ``q / c``: XLA keeps the division of an array by a broadcast scalar
  (or by an array behind an optimisation barrier, :func:`exact_div`) a true division. Batched
  (``jax.vmap`` over sweep members, each with its own clip and temperature), the same expression
  divides by a broadcast *vector* of per-member values (or by a constant broadcast over the new
  member axis), which XLA rewrites into a multiplication by the reciprocal: one ulp off for many
  elements, enough to move the rounding ties of the quantizers, so that the ``vmap`` strategy
  trained other trajectories than ``loop`` from the first step on (``benchmarks/agreement.py``).
  The batching rule divides by ``c`` broadcast to the full batched shape behind an optimisation
  barrier, which XLA keeps a true division. The unbatched program is unchanged.
  """
  return q / c


@_true_div.def_vmap
def _true_div_vmap(axis_size, in_batched, q, c):
  q_batched, c_batched = in_batched
  if not q_batched:
    q = jnp.broadcast_to(q, (axis_size,) + q.shape)
  if c_batched:  # (M, *S_c): align S_c to the right of q's per-member shape
    c = c.reshape(c.shape[:1] + (1,) * (q.ndim - c.ndim) + c.shape[1:])
  cc = jnp.broadcast_to(c, q.shape)
  return q / jax.lax.optimization_barrier(cc), True


@jax.custom_vjp
def div_by_scalar(q: jax.Array, k: jax.Array) -> jax.Array:
  """``q / k`` for a scalar ``k``: one true float32 division per element, vmapped or not.

  :func:`exact_div` with the gradient of ``q / k`` (``g / k`` and ``-sum(g * q / k) / k``), with
  the same true divisions: XLA may compile plain ``q / k`` into a multiplication by the
  reciprocal (one ulp off for many elements), in a single-member program or, more often, inside
  ``jax.vmap`` over the members of a sweep (each with its own ``k``); with this the ``loop`` and
  ``vmap`` strategies compute the same temperature softmaxes, as torch's division does.

  Args:
    q: array.
    k: scalar divisor.

  Returns:
    ``q / k``.
  """
  return exact_div(q, k)


def _div_by_scalar_fwd(q, k):
  out = exact_div(q, k)
  return out, (out, k)


def _div_by_scalar_bwd(res, g):
  out, k = res
  gk = exact_div(-jnp.sum(g * out), k)
  return exact_div(g, k), gk.reshape(jnp.shape(k)).astype(jnp.result_type(k))


div_by_scalar.defvjp(_div_by_scalar_fwd, _div_by_scalar_bwd)


# Jitted so that applied op by op (eagerly) the final ``/ k`` is the true float32 division it is
# inside a jitted step: alone, XLA compiles ``q / broadcast(k)`` into ``q * broadcast(1 / k)``, one
# ulp off for many elements (a later rounding tie then moves). Inside a jitted step this call is
# inlined: the compiled step is unchanged.
@jax.jit
def _pact_forward(x, clip, bits):
  k = (2.0**bits - 1.0) / (clip + PACT_EPS)
  return _true_div(jnp.floor(k * jnp.clip(x, 0.0, clip)), k)


@jax.custom_vjp
def _pact(x, clip, bits_f):
  return _pact_forward(x, clip, bits_f)


def _pact_fwd(x, clip, bits_f):
  return _pact_forward(x, clip, bits_f), (x, clip, bits_f)


def _pact_bwd(res, g):
  x, clip, bits_f = res
  gx = jnp.where((x > 0) & (x < clip), g, jnp.zeros_like(g))
  gclip = jnp.sum(jnp.where(x >= clip, g, jnp.zeros_like(g))).reshape(jnp.shape(clip)).astype(
      jnp.result_type(clip))
  return gx, gclip, jnp.zeros_like(bits_f)


_pact.defvjp(_pact_fwd, _pact_bwd)


def pact(x: jax.Array, clip: jax.Array, bits: int) -> jax.Array:
  """Unsigned PACT fake quantization (reference semantics).

  Forward ``floor(k * clamp(x, 0, clip)) / k`` with ``k = (2^bits - 1) / (clip + 1e-3)``.
  Backward: ``dx = g`` where ``0 < x < clip`` (else 0); ``dclip = sum(g where x >= clip)``.

  Args:
    x: activations.
    clip: scalar clip value (trainable).
    bits: bit-width (> 0).

  Returns:
    Quantized activations, same shape as ``x``.
  """
  if bits <= 0:
    raise ValueError(f"PACT needs bits > 0, got {bits}")
  clip = jnp.asarray(clip, dtype=x.dtype)
  return _pact(x, clip, jnp.asarray(float(bits), dtype=x.dtype))


@jax.jit  # see _pact_forward
def _pact_signed_forward(x, inf, sup, bits):
  k = (2.0**bits - 1.0) / (sup - inf + PACT_EPS)
  return _true_div(jnp.floor(k * jnp.clip(x, inf, sup)), k)


@jax.custom_vjp
def _pact_signed(x, inf, sup, bits_f):
  return _pact_signed_forward(x, inf, sup, bits_f)


def _pact_signed_fwd(x, inf, sup, bits_f):
  return _pact_signed_forward(x, inf, sup, bits_f), (x, inf, sup, bits_f)


def _pact_signed_bwd(res, g):
  x, inf, sup, bits_f = res
  zero = jnp.zeros_like(g)
  gx = jnp.where((x > inf) & (x < sup), g, zero)
  gsup = jnp.sum(jnp.where(x >= sup, g, zero)).reshape(jnp.shape(sup)).astype(jnp.result_type(sup))
  ginf = jnp.sum(jnp.where(x <= inf, g, zero)).reshape(jnp.shape(inf)).astype(jnp.result_type(inf))
  return gx, ginf, gsup, jnp.zeros_like(bits_f)


_pact_signed.defvjp(_pact_signed_fwd, _pact_signed_bwd)


def pact_signed(x: jax.Array, clip_inf: jax.Array, clip_sup: jax.Array, bits: int) -> jax.Array:
  """Signed PACT (two trainable clips; the speech/ImageNet input quantizer).

  Forward ``floor(k * clamp(x, inf, sup)) / k`` with ``k = (2^b - 1) / (sup - inf + 1e-3)`` (no
  zero-point). Backward: ``x`` passes inside ``(inf, sup)``; ``dsup = sum(g where x >= sup)``;
  ``dinf = sum(g where x <= inf)``.

  Args:
    x: activations.
    clip_inf: lower clip (scalar).
    clip_sup: upper clip (scalar).
    bits: bit-width (> 0).

  Returns:
    Quantized activations.
  """
  if bits <= 0:
    raise ValueError(f"signed PACT needs bits > 0, got {bits}")
  return _pact_signed(x, jnp.asarray(clip_inf, x.dtype), jnp.asarray(clip_sup, x.dtype),
                      jnp.asarray(float(bits), dtype=x.dtype))


def _pact_stack(x, clips, bits):
  """PACT copies of ``x`` at every precision, stacked on a new leading axis ``(J, *x.shape)``."""
  # One pact() expression per precision, each dividing by a broadcast *scalar*: XLA keeps that a
  # true division (as torch computes it), while a division by a broadcast (J,) vector is rewritten
  # into a multiplication by its reciprocal, one ulp off for many elements.
  return jnp.stack([_pact_forward(x, clips[j], float(b)) for j, b in enumerate(bits)])


def _mixture_value(x, clips, theta, bits):
  return jnp.sum(theta.reshape((-1,) + (1,) * x.ndim) * _pact_stack(x, clips, bits), axis=0)


def _unmerged(x, g):
  """``x``'s values, as an expression XLA cannot merge with the forward's uses of ``x``.

  Where ``g`` is NaN the caller's terms are NaN either way. The backward recomputes copies from it,
  which would otherwise be CSE'd with the forward's copies and kept alive from forward to backward.
  """
  return jnp.where(jnp.isnan(g), jnp.zeros_like(x), x)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _pact_mixture(x, clips, theta, bits, relu):
  y = _mixture_value(x, clips, theta, bits)
  return jax.nn.relu(y) if relu else y


def _pact_mixture_fwd(x, clips, theta, bits, relu):
  # A reduction over the precision axis (not a chain of adds): XLA keeps the mixture as one buffer
  # instead of materialising every precision's copy for the many consumers of the sum.
  return _pact_mixture(x, clips, theta, bits, relu), (x, clips, theta)


def _pact_mixture_bwd(bits, relu, res, g):
  x, clips, theta = res
  zero = jnp.zeros_like(g)
  if relu:
    # ReLU's mask (output > 0, as jax.nn.relu's derivative) from the mixture recomputed from x:
    # the output itself then need not live until the backward. The mask is exact whatever the
    # order of the sum: a sum of non-negative terms is > 0 iff one of them is.
    g = jnp.where(_mixture_value(_unmerged(x, g), clips, theta, bits) > 0, g, zero)
  # The copies are recomputed from x again below (from the masked g: measured, sharing one
  # recomputation with the mask above keeps ~1.3 MB more alive on XLA:CPU).
  xb = _unmerged(x, g)
  gx = zero
  terms = []
  for j, b in enumerate(bits):
    gj = theta[j] * g  # the gradient reaching copy j (as autodiff of the sum of copies forms it)
    gx = gx + jnp.where((x > 0) & (x < clips[j]), gj, zero)
    terms.append(jnp.where(x >= clips[j], gj, zero))                 # -> dclip_j
    terms.append(g * _pact_forward(xb, clips[j], float(b)))          # -> dtheta_j
  # All 2J sums in one variadic reduction (one pass over x and g, nothing materialised; separate
  # jnp.sum calls each write their input to a full-size buffer on XLA:CPU), first over every axis
  # but the channel one, so the pass can still be split across threads.
  per_channel = jax.lax.reduce(tuple(terms), tuple(jnp.zeros((), g.dtype) for _ in terms),
                               lambda a, b: tuple(u + v for u, v in zip(a, b)),
                               tuple(range(g.ndim - 1)))
  sums = [jnp.sum(t) for t in per_channel]
  return (gx, jnp.stack(sums[0::2]).astype(clips.dtype),
          jnp.stack(sums[1::2]).astype(theta.dtype))


_pact_mixture.defvjp(_pact_mixture_fwd, _pact_mixture_bwd)


def pact_mixture(x: jax.Array, clips: jax.Array, theta: jax.Array, bits,
                 relu: bool = False) -> jax.Array:
  """The theta-mixture of unsigned PACT copies, ``sum_j theta_j * pact(x, clips[j], bits[j])``.

  Same forward and gradients (to float32 rounding: the order of the sums may differ) as the sum of
  :func:`pact` copies, i.e. the reference's mixed activation quantizer (METHOD.md §3.2):
  ``dx = sum_j theta_j g [0 < x < clip_j]``, ``dclip_j = sum(theta_j g [x >= clip_j])``,
  ``dtheta_j = sum(g * pact_j(x))``. It is computed in one pass over ``x`` and only ``x`` is kept
  for the backward, where the copies are recomputed, instead of one activation-sized buffer per
  precision (benchmarks/step.py measures the difference).

  Args:
    x: activations.
    clips: ``(J,)`` PACT clips, one per precision.
    theta: ``(J,)`` mixing coefficients.
    bits: the ``J`` bit-widths (static, each > 0).
    relu: apply ``jax.nn.relu`` to the mixture (values unchanged, the mixture is >= 0; the gradient
      is masked where it is 0), with ReLU's mask recomputed from ``x`` in the backward, so that
      the output is not kept for it. Same as ``jax.nn.relu(pact_mixture(...))`` otherwise.

  Returns:
    The mixed quantized activations, same shape as ``x``.

  Raises:
    ValueError: a bit-width <= 0, or ``clips`` / ``theta`` not of shape ``(J,)``.
  """
  bits = tuple(int(b) for b in bits)
  if not bits or min(bits) <= 0:
    raise ValueError(f"pact_mixture needs bit-widths > 0, got {bits}")
  clips = jnp.asarray(clips, x.dtype)
  theta = jnp.asarray(theta, x.dtype)
  if clips.shape != (len(bits),) or theta.shape != (len(bits),):
    raise ValueError(f"pact_mixture: clips {clips.shape} and theta {theta.shape} must both have "
                     f"shape ({len(bits)},) for bits {bits}")
  return _pact_mixture(x, clips, theta, bits, bool(relu))


def quantize_bias(b: jax.Array, s_b: jax.Array) -> jax.Array:
  """32-bit bias quantizer: ``s_b * round(b / s_b)`` (0 where ``s_b`` is close to 0).

  The reference's backward is a straight-through estimator through *both* the division and the
  rounding, so ``d out / d b = s_b`` and ``d out / d s_b = round(b / s_b)`` (the gradient reaches the
  precision logits through ``s_b = s_a * s_w``). No clipping at 32 bits.

  Args:
    b: float bias, shape ``(C,)``.
    s_b: bias scale, broadcastable to ``b``.

  Returns:
    The fake-quantized bias.
  """
  s_b = jnp.broadcast_to(s_b, b.shape)
  # torch.isclose(s_b, 0): |s_b| <= atol (1e-8) + rtol * 0.
  near0 = jnp.abs(s_b) <= 1e-8
  safe = jnp.where(near0, jnp.ones_like(s_b), s_b)
  rounded = jnp.where(near0, jnp.zeros_like(b), jnp.round(b / jax.lax.stop_gradient(safe)))
  # STE through division and round: forward value `rounded`, gradient identity w.r.t. b.
  scaled = b + jax.lax.stop_gradient(rounded - b)
  return s_b * scaled
