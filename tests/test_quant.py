"""The quantizers reproduce the reference's outputs and gradients (shared/golden/quantizers.json)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jpq_jax import quant


def _oihw_to_hwio(a):
  return jnp.asarray(np.asarray(a, np.float32).transpose(2, 3, 1, 0))


def _hwio_to_oihw(a):
  return np.asarray(a).transpose(3, 2, 0, 1)


@pytest.mark.parametrize("bits", [0, 2, 4, 8])
def test_weight_quantizer_matches_reference(golden_quantizers, bits):
  g = golden_quantizers["weight"]
  d = g[f"{bits}bit"]
  w = _oihw_to_hwio(g["W"])
  r = _oihw_to_hwio(g["R"])
  out = quant.quantize_weight(w, bits)
  # Exact: ties (e.g. -max|W|/s = -1.5 at 2 bits) must round half to even like torch.
  np.testing.assert_array_equal(_hwio_to_oihw(out), np.asarray(d["out"], np.float32))
  np.testing.assert_array_equal(np.asarray(quant.weight_scale(w, bits)),
                                np.asarray(d["scale_s_w"], np.float32))
  if bits:
    np.testing.assert_array_equal(_hwio_to_oihw(quant.weight_codes(w, bits)),
                                  np.asarray(d["integer_levels"], np.float32))
  grad = jax.grad(lambda w: jnp.sum(quant.quantize_weight(w, bits) * r))(w)
  np.testing.assert_allclose(_hwio_to_oihw(grad), np.asarray(d["grad_W"]), rtol=0, atol=0)


def test_weight_quantizer_jit_is_exact(golden_quantizers):
  g = golden_quantizers["weight"]
  w = _oihw_to_hwio(g["W"])
  for bits in (2, 4, 8):
    out = jax.jit(lambda w: quant.quantize_weight(w, bits))(w)
    np.testing.assert_array_equal(_hwio_to_oihw(out), np.asarray(g[f"{bits}bit"]["out"], np.float32))


def test_weight_codes_reach_lower_end_only():
  w = jnp.asarray([[-1.0], [0.2], [1.0]])  # one output channel
  codes = quant.weight_codes(w, 2)
  assert codes.min() == -2 and codes.max() == 1  # upper clip only: {-2,-1,0,1}
  zero = quant.weight_scale(jnp.zeros((3, 2)), 4)
  np.testing.assert_allclose(zero, 1.0 / 15.0)  # all-zero channel: range 1


@pytest.mark.parametrize("case", ["clip6_2bit", "clip6_4bit", "clip6_8bit", "clip1_2bit",
                                  "clip1_4bit", "clip1_8bit"])
def test_pact_matches_reference(golden_quantizers, case):
  g = golden_quantizers["pact"]
  d = g[case]
  bits = int(case.split("_")[1][0])
  x = jnp.asarray(g["X"], jnp.float32)
  r = jnp.asarray(g["R"], jnp.float32)
  clip = jnp.float32(d["init_clip_val"])
  out = quant.pact(x, clip, bits)
  # One ulp: the golden vectors' scale k was computed in float64 from a Python clip (their
  # "forward_scale_(2^b-1)/(clip+1e-3)"), while in training the clip is a float32 parameter.
  np.testing.assert_allclose(out, np.asarray(d["out"]), rtol=2e-7, atol=1e-6)
  # The division is a true float32 division, as torch computes it on a float32 clip parameter:
  # exactly the float32 formula, under jit (every step) and applied op by op alike (a division
  # compiled alone would be a multiplication by 1/k, one ulp off: _pact_forward is jitted).
  c32 = np.float32(d["init_clip_val"])
  k32 = np.float32(2**bits - 1) / (c32 + np.float32(quant.PACT_EPS))
  want = np.floor(k32 * np.clip(np.asarray(x), np.float32(0), c32)) / k32
  np.testing.assert_array_equal(jax.jit(lambda x, c: quant.pact(x, c, bits))(x, clip), want)
  np.testing.assert_array_equal(out, want)
  gx, gc = jax.grad(lambda x, c: jnp.sum(quant.pact(x, c, bits) * r), argnums=(0, 1))(x, clip)
  np.testing.assert_array_equal(gx, np.asarray(d["grad_X"], np.float32))
  np.testing.assert_allclose(gc, d["grad_clip_val"][0], rtol=1e-6)
  np.testing.assert_allclose(quant.pact_scale(clip, bits), d["s_a_property"], rtol=1e-7)


def test_pact_top_code_not_reached():
  # At clip 6 and 2 bits, an input of 6 gives about 4.0007 (METHOD.md §14.5).
  y = quant.pact(jnp.asarray([6.0]), jnp.float32(6.0), 2)
  np.testing.assert_allclose(y, [4.000667], rtol=1e-5)


def test_signed_pact_matches_reference(golden_quantizers):
  d = golden_quantizers["pact_signed_8bit_clip_pm6"]
  x = jnp.asarray(golden_quantizers["pact"]["X"], jnp.float32)
  r = jnp.asarray(golden_quantizers["pact"]["R"], jnp.float32)
  lo, hi = jnp.float32(-6), jnp.float32(6)
  out = quant.pact_signed(x, lo, hi, 8)
  np.testing.assert_allclose(out, np.asarray(d["out"]), rtol=2e-7, atol=1e-6)
  gx, gi, gs = jax.grad(lambda x, i, s: jnp.sum(quant.pact_signed(x, i, s, 8) * r),
                        argnums=(0, 1, 2))(x, lo, hi)
  np.testing.assert_array_equal(gx, np.asarray(d["grad_X"], np.float32))
  np.testing.assert_allclose(gi, d["grad_clip_val_inf"][0], rtol=1e-6)
  np.testing.assert_allclose(gs, d["grad_clip_val_sup"][0], rtol=1e-6)
  np.testing.assert_allclose(quant.pact_signed_scale(lo, hi, 8), d["s_a_property"], rtol=1e-7)


def test_bias_quantizer_matches_reference(golden_quantizers):
  d = golden_quantizers["bias"]
  b = jnp.asarray(d["b"], jnp.float32)
  s_b = jnp.float32(d["s_a"]) * jnp.asarray(d["s_w"], jnp.float32)
  r = jnp.asarray(d["R"], jnp.float32)
  np.testing.assert_allclose(quant.quantize_bias(b, s_b), np.asarray(d["out"]), rtol=1e-6, atol=0)
  gb = jax.grad(lambda b: jnp.sum(quant.quantize_bias(b, s_b) * r))(b)
  np.testing.assert_allclose(gb, np.asarray(d["grad_b"]), rtol=1e-6, atol=1e-12)
  # A pruned channel (s_w = 0) has an exactly zero bias.
  assert float(quant.quantize_bias(b, s_b)[3]) == 0.0


def test_quantizers_reject_bad_bits():
  with pytest.raises(ValueError, match="bits > 0"):
    quant.pact(jnp.ones(2), 1.0, 0)
  with pytest.raises(ValueError, match="bits > 0"):
    quant.weight_codes(jnp.ones((2, 2)), 0)


def _mixture_case():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 6, 6, 8)) * 3.0
  # Values exactly on the clips and at 0 exercise the boundaries of the gradient masks.
  x = x.at[0, 0, 0, :3].set(jnp.asarray([0.0, 2.0, 6.0]))
  r = jax.random.normal(jax.random.PRNGKey(1), x.shape)
  clips = jnp.asarray([2.0, 3.5, 6.0])
  theta = jax.nn.softmax(jnp.asarray([0.1, 0.5, -0.3]))
  return x, r, clips, theta, (2, 4, 8)


def _copies(x, clips, theta, bits):
  y = jnp.zeros_like(x)
  for j, b in enumerate(bits):
    y = y + theta[j] * quant.pact(x, clips[j], b)
  return y


def test_pact_mixture_matches_sum_of_copies():
  x, r, clips, theta, bits = _mixture_case()
  yc = _copies(x, clips, theta, bits)
  yf = quant.pact_mixture(x, clips, theta, bits)
  # Same values up to the order of a three-term float32 sum.
  np.testing.assert_allclose(yf, yc, rtol=2e-7, atol=2e-7)
  loss = lambda f: lambda *a: jnp.sum(f(*a, bits) * r)
  gc = jax.grad(loss(_copies), argnums=(0, 1, 2))(x, clips, theta)
  gf = jax.grad(loss(quant.pact_mixture), argnums=(0, 1, 2))(x, clips, theta)
  for name, a, b in zip(("x", "clips", "theta"), gf, gc):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, err_msg=name)
  # Under jit and vmap (the sweep's member axis) too.
  gv = jax.jit(jax.vmap(jax.grad(loss(quant.pact_mixture), argnums=2), in_axes=(None, None, 0)))(
      x, clips, jnp.stack([theta, theta[::-1]]))
  np.testing.assert_allclose(gv[0], gc[2], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(
      gv[1], jax.grad(loss(_copies), argnums=2)(x, clips, theta[::-1]), rtol=1e-6, atol=1e-6)


def test_pact_mixture_one_precision_is_pact():
  x, r, clips, _, _ = _mixture_case()
  one = jnp.ones((1,))
  np.testing.assert_array_equal(quant.pact_mixture(x, clips[2:], one, (8,)),
                                quant.pact(x, clips[2], 8))
  gx = jax.grad(lambda x: jnp.sum(quant.pact_mixture(x, clips[2:], one, (8,)) * r))(x)
  np.testing.assert_array_equal(gx, jax.grad(lambda x: jnp.sum(quant.pact(x, clips[2], 8) * r))(x))


def test_pact_mixture_rejects_bad_arguments():
  x = jnp.ones((2, 3))
  with pytest.raises(ValueError, match="bit-widths > 0"):
    quant.pact_mixture(x, jnp.ones(2), jnp.ones(2), (0, 8))
  with pytest.raises(ValueError, match=r"must both have shape \(2,\)"):
    quant.pact_mixture(x, jnp.ones(3), jnp.ones(2), (4, 8))


def test_pact_mixture_one_hot_is_exactly_pact_under_jit():
  """Fixed mode (one-hot theta) gives pact()'s exact values, which the integer export reproduces:
  the copies divide by their scalar k like torch (no reciprocal-multiply rewrite by XLA)."""
  x, _, _, _, _ = _mixture_case()
  clips = jnp.asarray([4.64, 2.254], jnp.float32)  # traced below, like trained clips
  fused = jax.jit(lambda x, c: quant.pact_mixture(x, c, jnp.asarray([1.0, 0.0]), (4, 8)))(x, clips)
  ref = jax.jit(lambda x, c: quant.pact(x, c[0], 4))(x, clips)
  np.testing.assert_array_equal(fused, ref)
  c0 = np.float32(4.64)
  k = np.float32(15.0) / (c0 + np.float32(quant.PACT_EPS))
  np.testing.assert_array_equal(fused, np.floor(k * np.clip(np.asarray(x), np.float32(0), c0)) / k)


def test_pact_mixture_relu_is_relu_of_the_mixture():
  x, r, clips, theta, bits = _mixture_case()
  x = x.at[1, 0, 0, :2].set(jnp.asarray([0.004, 0.3]))  # q = 0 at every precision / only at 2 bits
  f_sep = lambda x, c, t: jnp.sum(jax.nn.relu(_copies(x, c, t, bits)) * r)
  f_fused = lambda x, c, t: jnp.sum(quant.pact_mixture(x, c, t, bits, relu=True) * r)
  np.testing.assert_allclose(quant.pact_mixture(x, clips, theta, bits, relu=True),
                             jax.nn.relu(_copies(x, clips, theta, bits)), rtol=2e-7, atol=2e-7)
  for a, b in zip(jax.grad(f_fused, argnums=(0, 1, 2))(x, clips, theta),
                  jax.grad(f_sep, argnums=(0, 1, 2))(x, clips, theta)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
  # The ReLU blocks the gradient where every copy is 0 although PACT alone would pass it.
  gx = jax.grad(f_fused)(x, clips, theta)
  assert float(gx[1, 0, 0, 0]) == 0.0 and float(gx[1, 0, 0, 1]) != 0.0
