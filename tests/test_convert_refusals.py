"""jpq_jax.searchable on small plain Flax models: what it accepts (no mode argument, nested
modules, the user's initializers, export) and what it refuses, naming the module path and op; and
the errors of jpq functions given a plain model or a jpq model holding a standard Flax layer."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jpq_jax as jpq
from jpq_jax.convert import ConversionError

X = jnp.linspace(0.0, 1.0, 2 * 8 * 8 * 1).reshape(2, 8, 8, 1)


class Block(nn.Module):
  @nn.compact
  def __call__(self, x, training: bool):
    y = nn.Conv(4, (3, 3), use_bias=False, name="conv")(x)
    y = nn.BatchNorm(use_running_average=not training, momentum=0.8, epsilon=1e-3, name="bn")(y)
    return nn.relu(x + y)


class Tiny(nn.Module):
  """No BatchNorm, no mode argument; custom initializers."""

  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Conv(4, (3, 3), bias_init=nn.initializers.constant(0.5))(x))
    h = nn.max_pool(h, (2, 2), (2, 2))
    h = h.reshape((h.shape[0], -1))
    return nn.Dense(3)(h)


class Nested(nn.Module):
  @nn.compact
  def __call__(self, x, training: bool = False):
    h = nn.relu(nn.Conv(4, (3, 3), name="stem")(x))
    h = Block(name="block")(h, training)
    return nn.Dense(3, name="head")(jnp.mean(h, axis=(1, 2)))


def test_no_mode_argument_and_the_users_initializers():
  net = jpq.searchable(Tiny(), X)
  v = jax.jit(lambda x: net.init(jax.random.PRNGKey(0), x, jpq.Ctx.float()))(X)
  np.testing.assert_array_equal(v["params"]["Conv_0"]["bias"], 0.5)
  t = jpq.trace_table(net, X)
  assert [l.name for l in t.layers] == ["Conv_0", "Dense_0"]
  assert t.layer("Dense_0").in_mult == 16 and t.layer("Dense_0").cin == 64
  user_v = Tiny().init(jax.random.PRNGKey(1), X)
  fv = jpq.convert_variables(net, user_v)
  np.testing.assert_allclose(net.apply(fv, X, jpq.Ctx.float()).value, Tiny().apply(user_v, X),
                             rtol=1e-6)


def test_nested_modules_training_argument_export():
  user = Nested()
  net = jpq.searchable(user, X)
  t = jpq.trace_table(net, X)
  assert [l.name for l in t.layers] == ["stem", "block.conv", "head"]
  # The block's residual add ties its conv to the stem; its BatchNorm settings are kept.
  assert t.layer("block.conv").w_group == t.layer("stem").w_group == "g_stem"
  assert t.layer("block.conv").bn and t.layer("block.conv").bn_eps == 1e-3
  uv = user.init(jax.random.PRNGKey(0), X)
  fv = jpq.convert_variables(net, uv)
  assert set(fv["batch_stats"]) == {"block.conv"}
  out, st = net.apply(fv, X, jpq.Ctx.float(train=True), mutable=["batch_stats"])
  ref, ust = user.apply(uv, X, training=True, mutable=["batch_stats"])
  np.testing.assert_allclose(out.value, ref, rtol=1e-5, atol=1e-6)
  # momentum 0.8 kept: the running mean moved by 20% of the batch mean.
  np.testing.assert_allclose(st["batch_stats"]["block.conv"]["BatchNorm_0"]["mean"],
                             ust["batch_stats"]["block"]["bn"]["mean"], rtol=1e-5, atol=1e-7)
  sv = jpq.to_search(net, fv, X, table=t)
  fx = jpq.to_fixed(sv, t)
  bundle = jpq.export.export_model(net, fx, t, X)
  logits = jpq.export.run_bundle(bundle, np.asarray(X))
  fake = net.apply(fx, X, jpq.Ctx.fixed()).value
  np.testing.assert_allclose(logits, fake, rtol=1e-4, atol=1e-4)


class Concat(nn.Module):
  @nn.compact
  def __call__(self, x):
    a = nn.Conv(4, (3, 3), name="a")(x)
    b = nn.Conv(4, (3, 3), name="b")(x)
    return nn.Dense(3)(jnp.concatenate([a, b], -1).mean((1, 2)))


class Attention(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = nn.Conv(4, (3, 3))(x).reshape(2, 64, 4)
    return nn.MultiHeadDotProductAttention(num_heads=1, name="attn")(h)


class ChannelMix(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = nn.Conv(4, (3, 3), name="c")(x)
    h = SumChannels(name="mixer")(h)
    return nn.Dense(3)(h.reshape(2, -1))


class SumChannels(nn.Module):
  def __call__(self, x):
    return jnp.flip(x, axis=-1)


class OwnWeights(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = nn.Conv(4, (3, 3))(x)
    w = self.param("w", nn.initializers.ones, (4,))
    return nn.Dense(3)((h * w).mean((1, 2)))


class LooseBN(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = nn.relu(nn.Conv(4, (3, 3))(x))
    h = nn.BatchNorm(use_running_average=True, name="late_bn")(h)
    return nn.Dense(3)(h.mean((1, 2)))


class Grouped(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = nn.Conv(4, (3, 3))(x)
    h = nn.Conv(4, (3, 3), feature_group_count=2, name="grouped")(h)
    return nn.Dense(3)(h.mean((1, 2)))


@pytest.mark.parametrize("model, match", [
    (Concat(), r"'concatenate'.*different layers|'concatenate'"),
    (Attention(), r"attn: .*MultiHeadDotProductAttention is a layer the conversion does not know"),
    (ChannelMix(), r"mixer: operation 'rev'.*reverses the channel axis"),
    (OwnWeights(), r"params.*'w'.*custom layer with its own weights"),
    (LooseBN(), r"late_bn: nn.BatchNorm that does not directly follow an nn.Conv"),
    (Grouped(), r"grouped: grouped nn.Conv \(feature_group_count=2"),
])
def test_refused_at_conversion_naming_path_and_op(model, match):
  with pytest.raises(ConversionError, match=match):
    jpq.searchable(model, X)


def test_plain_model_given_to_jpq_functions_gets_a_clear_error():
  with pytest.raises(TypeError, match=r"Nested is a plain Flax model.*'training'.*searchable"):
    jpq.trace_table(Nested(), X)
  v = Nested().init(jax.random.PRNGKey(0), X)
  with pytest.raises(TypeError, match="plain Flax model"):
    jpq.to_search(Nested(), v, X)
  with pytest.raises(TypeError, match="plain Flax model"):
    jpq.trace_table(Tiny(), X)


class JpqWithFlaxConv(nn.Module):
  """A jpq model with a standard nn.Conv on h.value: used to run unquantized and uncosted."""

  @nn.compact
  def __call__(self, x, ctx):
    sp = jpq.SearchSpace()
    h = jpq.InputQuantizer(sp, name="input_q")(x, ctx)
    h = jpq.Conv(4, 3, jpq.Group(4, sp, name="g0"), name="c0")(h, ctx)
    h = h.replace(value=nn.Conv(4, (3, 3), name="sneaky")(h.value))
    h = h.map(jpq.ops.global_avg_pool).flatten()
    return jpq.Dense(3, jpq.Group(3, sp, output=True, name="g1"), name="out")(h, ctx)


def test_standard_flax_layer_inside_a_jpq_model_is_refused():
  with pytest.raises(ValueError, match=r"sneaky: standard Flax layer nn.Conv inside a jpq_jax "
                                       r"model.*unquantized"):
    jpq.trace_table(JpqWithFlaxConv(), X)


def test_searchable_refuses_a_jpq_model_and_bad_space():
  with pytest.raises(TypeError, match="looks like a jpq model"):
    jpq.searchable(jpq.models.DemoNet(), X)
  with pytest.raises(TypeError, match="SearchSpace"):
    jpq.searchable(Tiny(), X, space=(0, 2, 4, 8))
