"""Search layers reproduce one reference MixPrec conv layer (shared/golden/mixprec_conv_layer.json)
in all three cases, and the layers' modes, collections and errors behave as documented."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jpq_jax as jpq
from jpq_jax import choice

SPACE = jpq.SearchSpace(w_precisions=(0, 2, 4, 8), a_precisions=(2, 4, 8), input_clip_init=1.0)


class OneConv(nn.Module):
  """The golden setup: input quantizer (PACT clip 1, {2,4,8}) -> one searchable conv 4->8."""
  space: jpq.SearchSpace = SPACE

  @nn.compact
  def __call__(self, x, ctx):
    q = jpq.InputQuantizer(self.space, name="inq")(x, ctx)
    g = jpq.Group(8, self.space, name="g")
    return q, jpq.Conv(8, 3, g, padding=1, use_bias=True, name="conv")(q, ctx)


def _nchw(a):
  return np.asarray(a).transpose(0, 3, 1, 2)


# Both ways of computing the activation mixture must reproduce the reference.
@pytest.fixture(scope="module", params=["fused", "copies"])
def setup(golden_conv, request):
  inp = golden_conv["inputs"]
  x = jnp.asarray(np.asarray(inp["x"], np.float32).transpose(0, 2, 3, 1))
  m = OneConv(dataclasses.replace(SPACE, activation_mixture=request.param))
  v = m.init(jax.random.PRNGKey(0), x, jpq.Ctx.search())
  params = {"inq": dict(v["params"]["inq"]), "g": dict(v["params"]["g"]),
            "conv": {"kernel": jnp.asarray(np.asarray(inp["weight"], np.float32).transpose(2, 3, 1, 0)),
                     "bias": jnp.asarray(inp["bias"], jnp.float32)}}
  arch = {"inq": {"alpha_a": jnp.asarray(inp["alpha_in"], jnp.float32)},
          "g": {"alpha_w": jnp.asarray(inp["alpha_w"], jnp.float32),
                "alpha_a": jnp.asarray(inp["alpha_a"], jnp.float32)}}
  r = jnp.asarray(np.asarray(inp["R"], np.float32).transpose(0, 2, 3, 1))
  return m, x, params, arch, r


def test_default_init_matches_reference(golden_conv, setup):
  m, x, _, _, _ = setup
  v = m.init(jax.random.PRNGKey(0), x, jpq.Ctx.search())
  d = golden_conv["default_init"]
  np.testing.assert_allclose(v["arch"]["g"]["alpha_w"], d["alpha_w"], rtol=1e-7)
  np.testing.assert_allclose(v["arch"]["g"]["alpha_a"], d["alpha_a"], rtol=1e-7)
  np.testing.assert_allclose(jax.nn.softmax(v["arch"]["g"]["alpha_w"], axis=0),
                             d["theta_w_at_construction"], rtol=1e-6)
  np.testing.assert_allclose(v["params"]["g"]["clip"], [6.0, 6.0, 6.0])
  np.testing.assert_allclose(v["params"]["inq"]["clip"], [1.0, 1.0, 1.0])


@pytest.mark.parametrize("case", ["T1_train", "T0.5_train", "T1_eval"])
def test_conv_layer_matches_reference(golden_conv, setup, case):
  m, x, params, arch, r = setup
  c = golden_conv[case]
  ctx = jpq.Ctx.search(c["temperature"], train=c["mode"] == "train")
  variables = {"params": params, "arch": arch}
  q, y = m.apply(variables, x, ctx)
  tol = dict(rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(_nchw(q.value), c["x_q"], **tol)
  np.testing.assert_allclose(_nchw(y.value), c["output"], **tol)
  np.testing.assert_allclose(float(q.s_a), c["bias_s_a"], rtol=1e-6)

  # thetas as the cost functions see them are the ones the layer used.
  table = jpq.trace_table(m, x)
  th = jpq.thetas(variables, table, ctx)
  np.testing.assert_allclose(th["g"].w, c["theta_w"], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(th["g"].a, c["theta_a"], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(th["inq"].a, c["theta_in"], rtol=1e-6, atol=1e-7)
  tw = th["g"].w
  np.testing.assert_allclose(8 - tw[0].sum(), c["out_features_eff"], rtol=1e-6)

  # Effective weight, per-precision copies and effective bias.
  kernel = params["conv"]["kernel"]
  w_hat = sum(tw[i] * jpq.quant.quantize_weight(kernel, p) for i, p in enumerate((0, 2, 4, 8)))
  np.testing.assert_allclose(w_hat.transpose(3, 2, 0, 1), c["effective_weight_q_w"], **tol)
  s_w = 0.0
  for i, p in enumerate((0, 2, 4, 8)):
    np.testing.assert_array_equal(
        np.asarray(jpq.quant.quantize_weight(kernel, p)).transpose(3, 2, 0, 1),
        np.asarray(c["per_precision_weight"][f"{p}bit"], np.float32))
    np.testing.assert_allclose(jpq.quant.weight_scale(kernel, p), c["s_w_per_precision"][f"{p}bit"],
                               rtol=1e-7)
    s_w = s_w + tw[i] * jpq.quant.weight_scale(kernel, p)
  np.testing.assert_allclose(s_w, c["bias_s_w"], rtol=1e-6)
  b_hat = jpq.quant.quantize_bias(params["conv"]["bias"], q.s_a * s_w)
  np.testing.assert_allclose(b_hat, c["effective_bias_q_b"], rtol=1e-5, atol=1e-7)
  z = jax.lax.conv_general_dilated(q.value, w_hat, (1, 1), ((1, 1), (1, 1)),
                                   dimension_numbers=("NHWC", "HWIO", "NHWC")) + b_hat
  np.testing.assert_allclose(_nchw(z), c["conv_out_before_act_quant"], rtol=1e-5, atol=1e-5)

  # Gradients of sum(output * R) w.r.t. logits, weight, bias, clips and input.
  def f(params, arch, x):
    return jnp.sum(m.apply({"params": params, "arch": arch}, x, ctx)[1].value * r)

  gp, ga, gx = jax.grad(f, argnums=(0, 1, 2))(params, arch, x)
  gg = c["grad_of_sum_output_times_R"]
  gtol = dict(rtol=2e-5, atol=2e-5)
  np.testing.assert_allclose(ga["g"]["alpha_w"], gg["alpha_w"], **gtol)
  np.testing.assert_allclose(ga["g"]["alpha_a"], gg["alpha_a"], **gtol)
  np.testing.assert_allclose(ga["inq"]["alpha_a"], gg["alpha_in"], **gtol)
  np.testing.assert_allclose(gp["conv"]["kernel"].transpose(3, 2, 0, 1), gg["weight"], **gtol)
  np.testing.assert_allclose(gp["conv"]["bias"], gg["bias"], **gtol)
  np.testing.assert_allclose(_nchw(gx), gg["x"], **gtol)
  for j, b in enumerate((2, 4, 8)):
    np.testing.assert_allclose(gp["g"]["clip"][j], gg[f"clip_a_{b}bit"][0], **gtol)
    np.testing.assert_allclose(gp["inq"]["clip"][j], gg[f"clip_in_{b}bit"][0], **gtol)


def test_theta_sampling_modes():
  alpha = choice.init_logits((0, 2, 4, 8), 3)
  t = jnp.float32(1.0)
  soft = choice.sample_theta(alpha, t, train=True)
  np.testing.assert_allclose(soft[:, 0], [0.1504, 0.1931, 0.2479, 0.4087], atol=1e-4)
  hard = choice.sample_theta(alpha, t, train=True, sampling="hard")
  np.testing.assert_array_equal(hard[:, 0], [0, 0, 0, 1])
  ev = choice.sample_theta(alpha, t, train=False)
  np.testing.assert_array_equal(ev, hard)
  # Straight-through: the hard choice passes the softmax gradient.
  g_soft = jax.grad(lambda a: jnp.sum(choice.sample_theta(a, t, train=True) * jnp.arange(4.)[:, None]))(alpha)
  g_hard = jax.grad(lambda a: jnp.sum(choice.sample_theta(a, t, train=True, sampling="hard")
                                      * jnp.arange(4.)[:, None]))(alpha)
  np.testing.assert_allclose(g_soft, g_hard, rtol=1e-6)
  key = jax.random.PRNGKey(3)
  g1 = choice.sample_theta(alpha, t, train=True, sampling="gumbel", key=key)
  g2 = choice.sample_theta(alpha, t, train=True, sampling="gumbel", key=key)
  np.testing.assert_array_equal(g1, g2)  # explicit key: reproducible
  np.testing.assert_allclose(g1.sum(0), 1.0, rtol=1e-6)
  gh = choice.sample_theta(alpha, t, train=True, sampling="gumbel_hard", key=key)
  assert set(np.unique(np.asarray(gh))) <= {0.0, 1.0}
  with pytest.raises(ValueError, match="PRNG key"):
    choice.sample_theta(alpha, t, train=True, sampling="gumbel")
  with pytest.raises(ValueError, match="unknown sampling"):
    choice.sample_theta(alpha, t, train=True, sampling="nope")


def test_temperature_is_traced_not_baked():
  """One compile serves every temperature."""
  alpha = choice.init_logits((0, 2, 4, 8), 4)
  traces = []

  @jax.jit
  def f(t):
    traces.append(1)
    return choice.sample_theta(alpha, t, train=True)

  a, b = f(jnp.float32(1.0)), f(jnp.float32(0.1))
  assert len(traces) == 1
  assert not np.allclose(a, b)


def test_gumbel_noise_shared_within_group():
  """Layers of one group see one Gumbel sample; thetas() reproduces it."""

  class Two(nn.Module):
    @nn.compact
    def __call__(self, x, ctx):
      h = jpq.InputQuantizer(SPACE, name="inq")(x, ctx)
      g = jpq.Group(4, SPACE, name="g")
      a = jpq.Conv(4, 1, g, name="a")(h, ctx)
      b = jpq.Conv(4, 1, g, name="b")(h, ctx)
      return jpq.Add(g, name="add")(a, b, ctx=ctx), g.theta_w(ctx)

  m = Two()
  x = jnp.ones((1, 2, 2, 3))
  v = m.init(jax.random.PRNGKey(0), x, jpq.Ctx.search())
  ctx = jpq.Ctx.search(1.0, train=True, sampling="gumbel", key=jax.random.PRNGKey(7))
  _, th = m.apply(v, x, ctx)
  table = jpq.trace_table(m, x)
  np.testing.assert_allclose(jpq.thetas(v, table, ctx)["g"].w, th, rtol=1e-6)


def test_precision_validation_errors():
  with pytest.raises(ValueError, match="empty"):
    jpq.SearchSpace(w_precisions=())
  with pytest.raises(ValueError, match="repeated"):
    jpq.SearchSpace(w_precisions=(2, 2, 8))
  with pytest.raises(ValueError, match="unknown precision"):
    jpq.SearchSpace(w_precisions=(0, 3.5, 8))
  with pytest.raises(ValueError, match="unknown precision"):
    jpq.SearchSpace(a_precisions=(64,))
  with pytest.raises(ValueError, match="0 bits"):
    jpq.SearchSpace(a_precisions=(0, 8))
  with pytest.raises(ValueError, match="granularity"):
    jpq.SearchSpace(granularity="tensor")


class Tiny(nn.Module):
  space: jpq.SearchSpace = jpq.SearchSpace()
  out_bits: tuple = None
  bad_add: bool = False

  @nn.compact
  def __call__(self, x, ctx):
    sp = self.space
    h = jpq.InputQuantizer(sp, name="inq")(x, ctx)
    g1, g2 = jpq.Group(4, sp, name="g1"), jpq.Group(4, sp, name="g2")
    a = jpq.Conv(4, 3, g1, use_bn=True, use_bias=False, name="a")(h, ctx)
    b = jpq.Conv(4, 3, g2 if self.bad_add else g1, use_bn=True, use_bias=False, name="b")(a, ctx)
    h = jpq.Add(g1, name="add")(a, b, ctx=ctx)
    h = h.map(lambda v: v.mean((1, 2), keepdims=True)).flatten()
    return jpq.Dense(3, jpq.Group(3, sp, output=True, w_precisions=self.out_bits, name="gout"),
                     name="out")(h, ctx)


def test_bad_input_errors():
  x = jnp.ones((2, 5, 5, 2))
  with pytest.raises(ValueError, match="0-bit option"):
    Tiny(out_bits=(0, 2, 8)).init(jax.random.PRNGKey(0), x, jpq.Ctx.search())
  with pytest.raises(ValueError, match="one sharing group"):
    Tiny(bad_add=True).init(jax.random.PRNGKey(0), x, jpq.Ctx.search())
  m = Tiny()
  v = m.init(jax.random.PRNGKey(0), x, jpq.Ctx.search())
  with pytest.raises(ValueError, match="'precision' collection"):
    m.apply({"params": v["params"]}, x, jpq.Ctx.fixed())
  with pytest.raises(ValueError, match="unknown mode"):
    jpq.Ctx(mode="int8")
  # Conversion with a channel mismatch.
  fv = m.init(jax.random.PRNGKey(0), x, jpq.Ctx.float())
  wrong = jnp.ones((2, 6, 6, 3))
  with pytest.raises(ValueError, match="shape mismatch|does not match"):
    jpq.to_search(m, fv, wrong)


def test_modes_and_collections():
  m = Tiny()
  x = jax.random.uniform(jax.random.PRNGKey(1), (2, 5, 5, 2))
  fv = m.init(jax.random.PRNGKey(0), x, jpq.Ctx.float())
  assert set(fv) == {"params", "batch_stats"}
  assert "BatchNorm_0" in fv["params"]["a"]
  sv = jpq.to_search(m, fv, x)
  assert set(sv) == {"params", "arch"}
  assert "BatchNorm_0" not in sv["params"]["a"] and "bias" in sv["params"]["a"]
  assert sv["arch"]["g1"]["alpha_w"].shape == (4, 4)
  assert sv["arch"]["gout"]["alpha_w"].shape == (3, 3)  # classifier: (2, 4, 8), no 0 bit
  assert "alpha_a" not in sv["arch"]["gout"]  # output not quantized
  table = jpq.trace_table(m, x)
  fx = jpq.to_fixed(sv, table)
  assert set(fx["precision"]["g1"]) == {"w_bits", "a_bits"}

  # jit + grad keep the collections' structure (state is data).
  def loss(params, arch):
    return jnp.sum(m.apply({"params": params, "arch": arch}, x, jpq.Ctx.search(0.5, train=True)).value ** 2)

  gp, ga = jax.jit(jax.grad(loss, argnums=(0, 1)))(sv["params"], sv["arch"])
  assert jax.tree_util.tree_structure(gp) == jax.tree_util.tree_structure(sv["params"])
  assert jax.tree_util.tree_structure(ga) == jax.tree_util.tree_structure(sv["arch"])
  assert float(jnp.abs(ga["g1"]["alpha_w"]).sum()) > 0


def test_folding_is_exact_in_float():
  """Folded conv == conv followed by BatchNorm with running statistics."""
  k = jax.random.normal(jax.random.PRNGKey(0), (3, 3, 2, 4))
  b = jax.random.normal(jax.random.PRNGKey(1), (4,))
  sc, be = jnp.asarray([1.5, 0.5, 2.0, 1.0]), jnp.asarray([0.1, -0.2, 0.3, 0.0])
  mu, var = jnp.asarray([0.3, -1.0, 0.0, 2.0]), jnp.asarray([1.0, 0.25, 4.0, 0.5])
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 5, 5, 2))
  conv = lambda k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))
  ref = (conv(k) + b - mu) / jnp.sqrt(var + 1e-5) * sc + be
  kf, bf = jpq.fold_batchnorm(k, b, sc, be, mu, var, 1e-5)
  np.testing.assert_allclose(conv(kf) + bf, ref, rtol=1e-5, atol=1e-5)


def test_conversion_compensates_weights():
  m = Tiny()
  x = jnp.ones((1, 5, 5, 2))
  fv = m.init(jax.random.PRNGKey(0), x, jpq.Ctx.float())
  sv = jpq.to_search(m, fv, x)
  nc = jpq.to_search(m, fv, x, compensate=False)
  ratio = sv["params"]["a"]["kernel"] / nc["params"]["a"]["kernel"]
  np.testing.assert_allclose(ratio, 1 / (1 - 0.15040), rtol=1e-4)  # (0,2,4,8): theta_0 = 0.1504
  # The classifier's set (2,4,8) has no 0 bit: no compensation.
  np.testing.assert_allclose(sv["params"]["out"]["kernel"], nc["params"]["out"]["kernel"])


@pytest.mark.parametrize("name,shape,abits", [("demo", (4, 8, 8, 1), (2, 4, 8)),
                                               ("demo", (4, 8, 8, 1), (8,)),
                                               ("dscnn", (2, 49, 10, 1), (2, 4, 8))])
def test_fused_mixture_and_relu_match_the_copies(name, shape, abits):
  """A whole model in search mode, fused mixture (ReLU inside its VJP) vs the literal sum of PACT
  copies followed by a separate ReLU: same loss and gradients up to float32 rounding."""
  from jpq_jax.models import get_model  # pylint: disable=import-outside-toplevel
  x = jax.random.uniform(jax.random.PRNGKey(0), shape)
  grads = []
  for how in ("fused", "copies"):
    kw = dict(input_signed=True, input_precisions=(8,)) if name == "dscnn" else {}
    model = get_model(name, jpq.SearchSpace(a_precisions=abits, activation_mixture=how, **kw))
    v = model.init(jax.random.PRNGKey(1), x, jpq.Ctx.search())

    def loss(params, arch, model=model):
      out = model.apply({"params": params, "arch": arch}, x, jpq.Ctx.search(0.7, train=False))
      return jnp.sum(jnp.sin(out.value))

    grads.append(jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(v["params"], v["arch"]))
  for a, b in zip(jax.tree_util.tree_leaves(grads[0]), jax.tree_util.tree_leaves(grads[1])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_classifier_without_output_group_warns():
  # A classifier whose last group is a hidden one gets its logits clipped at 0 by unsigned PACT.
  class Net(nn.Module):
    output: bool

    @nn.compact
    def __call__(self, x, ctx):
      sp = jpq.SearchSpace()
      h = jpq.InputQuantizer(sp, name="input_q")(x, ctx).flatten()
      return jpq.Dense(3, jpq.Group(3, sp, output=self.output, name="gout"), name="d")(h, ctx)

  x = jnp.zeros((1, 4, 4, 1))
  with pytest.warns(UserWarning, match="hidden group 'gout'.*output=True"):
    jpq.trace_table(Net(output=False), x)
  import warnings
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    jpq.trace_table(Net(output=True), x)


def test_nchw_input_warns():
  from jpq_jax.models import DemoNet
  with pytest.warns(UserWarning, match=r"looks like NCHW.*transpose\(0, 2, 3, 1\)"):
    DemoNet().init(jax.random.PRNGKey(0), jnp.zeros((2, 1, 8, 8)), jpq.Ctx.float())
  import warnings
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    DemoNet().init(jax.random.PRNGKey(0), jnp.zeros((2, 8, 8, 1)), jpq.Ctx.float())
