"""Unit tests of the cost models on hand-built layer tables (no Flax model involved).

Covers the reference's single-layer golden values, exact per-consumer effects of pruning (residual
groups, depthwise, flatten), gradient behaviour (detached vs attached Cin_eff), finite differences,
the NE16 straight-through gradients, layer-wise granularity and unquantized inputs.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jpq_jax import choice, costs
from jpq_jax.arch import GroupTheta
from jpq_jax.table import GroupRecord, LayerRecord, LayerTable

W4 = (0, 2, 4, 8)


def grp(name, kind, channels, w=W4, a=(8,), granularity="channel"):
  return GroupRecord(name=name, path=(name,), kind=kind, channels=channels,
                     w_precisions=() if kind == "input" else w, a_precisions=a,
                     granularity=granularity)


def lay(name, kind, cin, cout, k, out_hw, w_group, in_group, in_mult=1):
  return LayerRecord(name=name, path=(name,), kind=kind, cin=cin, cout=cout, kernel=(k, k),
                     stride=(1, 1), out_hw=out_hw, feature_groups=cin if kind == "depthwise" else 1,
                     w_group=w_group, in_group=in_group, in_mult=in_mult)


def onehot_theta(table, bits=None, a_bits=None):
  """One-hot theta: every channel at ``bits[group]`` (per-channel list or int; default max)."""
  bits = bits or {}
  a_bits = a_bits or {}
  out = {}
  for g in table.groups:
    w = a = None
    if g.kind != "input":
      b = bits.get(g.name, max(g.w_precisions))
      b = np.full((g.channels,), b) if np.ndim(b) == 0 else np.asarray(b)
      w = jnp.asarray((b[None, :] == np.asarray(g.w_precisions)[:, None]).astype(np.float32))
    if g.a_precisions:
      ab = a_bits.get(g.name, max(g.a_precisions))
      a = jnp.asarray((np.asarray(g.a_precisions) == ab).astype(np.float32))
    out[g.name] = GroupTheta(w=w, a=a)
  return out


# A small network with every structural case: a singleton group (A), a residual group (R: r1 and
# the shortcut r2 share it), a depthwise conv joined to its producer's group, a flatten (in_mult 4)
# and an unprunable classifier group.
NET = LayerTable(
    layers=(
        lay("a", "conv", 3, 8, 3, (8, 8), "A", "in"),
        lay("r1", "conv", 8, 8, 3, (8, 8), "R", "A"),
        lay("r2", "conv", 3, 8, 1, (8, 8), "R", "in"),
        lay("dw", "depthwise", 8, 8, 3, (8, 8), "R", "R"),
        lay("b", "conv", 8, 8, 1, (2, 2), "B", "R"),
        lay("out", "dense", 32, 5, 1, (1, 1), "O", "B", in_mult=4),
    ),
    groups=(grp("in", "input", 3), grp("A", "hidden", 8), grp("R", "hidden", 8),
            grp("B", "hidden", 8), grp("O", "output", 5, w=(2, 4, 8), a=())),
)
NAMES = [l.name for l in NET.layers]


def per_layer(name, theta, table=NET):
  return np.asarray(jnp.stack(costs.get_cost(name).layers(table, theta)), np.float64)


# ---- golden single layer (reference MixPrec_Conv2d) ----------------------------------------------
GOLDEN_TABLE = LayerTable(
    layers=(lay("conv", "conv", 4, 8, 3, (6, 6), "g", "in"),),
    groups=(grp("in", "input", 4, a=(2, 4, 8)), grp("g", "hidden", 8, a=(2, 4, 8))),
)


@pytest.mark.parametrize("case", ["T1_train", "T0.5_train", "T1_eval"])
def test_golden_single_layer(golden_conv, case):
  c = golden_conv[case]
  alpha_w = jnp.asarray(golden_conv["inputs"]["alpha_w"], jnp.float32)
  alpha_in = jnp.asarray(golden_conv["inputs"]["alpha_in"], jnp.float32)
  t, train = c["temperature"], c["mode"] == "train"

  def theta_of(aw):
    return {"in": GroupTheta(a=choice.sample_theta(alpha_in, t, train=train)),
            "g": GroupTheta(w=choice.sample_theta(aw, t, train=train),
                            a=jnp.asarray(c["theta_a"], jnp.float32))}

  th = theta_of(alpha_w)
  np.testing.assert_allclose(th["g"].w, c["theta_w"], rtol=1e-6, atol=1e-7)
  v = costs.layer_views(GOLDEN_TABLE, th)[0]
  np.testing.assert_allclose(v.cout_eff, c["out_features_eff"], rtol=1e-6)
  np.testing.assert_allclose(v.p_eff, c["effective_precision_w"], rtol=1e-6)
  size = costs.get_cost("size")
  np.testing.assert_allclose(size(GOLDEN_TABLE, th), c["get_size_cin4"], rtol=1e-6)
  np.testing.assert_allclose(costs.get_cost("macs")(GOLDEN_TABLE, th), c["get_macs_layer_cin4_6x6"],
                             rtol=1e-6)
  g = jax.grad(lambda aw: size(GOLDEN_TABLE, theta_of(aw)))(alpha_w)
  ref = np.asarray(c["grad_get_size_wrt_alpha_w"])
  np.testing.assert_allclose(g, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


# ---- pruning lowers each consumer's cost by exactly the expected amount --------------------------
def _delta(name, prune_group, k):
  base = onehot_theta(NET)
  bits = np.full((NET.group(prune_group).channels,), 8)
  bits[:k] = 0
  return per_layer(name, base) - per_layer(name, onehot_theta(NET, {prune_group: bits}))


@pytest.mark.parametrize("k", [1, 3])
def test_pruning_effect_on_consumers(k):
  kk = 9  # 3x3 kernels
  # Group A (singleton): its own layer a loses k output channels, its consumer r1 k inputs.
  exp_a = {"a": 3 * k * kk * 8, "r1": k * 8 * kk * 8}
  d = _delta("size", "A", k)
  np.testing.assert_allclose(d, [exp_a.get(n, 0) for n in NAMES], rtol=1e-5, atol=1e-3)
  # Residual group R: r1, r2 and the depthwise lose outputs; b (consumer) and the depthwise (its
  # input is R too) lose inputs; the classifier behind B is untouched.
  exp_r = {"r1": 8 * k * kk * 8, "r2": 3 * k * 8, "dw": k * kk * 8, "b": k * 8 * 8}
  d = _delta("size", "R", k)
  np.testing.assert_allclose(d, [exp_r.get(n, 0) for n in NAMES], rtol=1e-4, atol=1e-2)
  # Group B feeds the classifier through a flatten of 4 positions: 4 inputs per pruned channel.
  exp_b = {"b": 8 * k * 8, "out": 4 * k * 5 * 8}
  d = _delta("size", "B", k)
  np.testing.assert_allclose(d, [exp_b.get(n, 0) for n in NAMES], rtol=1e-5, atol=1e-3)
  # MACs, bitops (8x8 bits) and MPIC (2.1 MACs/cycle at a8/w8) follow the same structure.
  hw = {"a": 64, "r1": 64, "r2": 64, "dw": 64, "b": 4, "out": 1}
  macs = {n: exp_a.get(n, 0) / 8 * hw[n] for n in NAMES}
  for name, scale, rtol in (("macs", 1.0, 1e-5), ("bitops", 64.0, 1e-5), ("mpic", 1 / 2.1, 1e-5)):
    np.testing.assert_allclose(_delta(name, "A", k), [macs[n] * scale for n in NAMES], rtol=rtol,
                               atol=1e-2)
  np.testing.assert_allclose(_delta("params", "R", k), [exp_r.get(n, 0) / 8 for n in NAMES],
                             rtol=1e-5, atol=1e-3)


def test_ne16_pruning_hand_values():
  # Layer a: (Ho, Wo, Ko, Ki) = (8, 8, 8, 3), dense 3x3, 8-bit weights:
  # n_sp = 9, n_in = 1, one remainder iteration of k = Ko:
  # iter(k) = (31 + 6 + (6 + 8k) + 2) + (9 + k) + 13.
  it = lambda k: (31 + 6 + 6 + 8 * k + 2) + 9 + k + 13
  base = onehot_theta(NET)
  np.testing.assert_allclose(per_layer("ne16", base)[0], 9 * it(8))
  bits = np.full((8,), 8)
  bits[:3] = 0
  pruned = per_layer("ne16", onehot_theta(NET, {"A": bits}))
  np.testing.assert_allclose(pruned[0], 9 * it(5))
  # r1's input shrinks 8 -> 5 channels, still one 16-channel input tile: unchanged.
  np.testing.assert_allclose(pruned[1:], per_layer("ne16", base)[1:])
  # Mixed precisions: 4 channels at 2 bit and 4 at 8 bit are two sub-layers of Ko = 4.
  bits = np.array([2] * 4 + [8] * 4)
  it_w = lambda k, w: (31 + 6 + 6 + w * k + 2) + 9 + k + 13
  np.testing.assert_allclose(per_layer("ne16", onehot_theta(NET, {"A": bits}))[0],
                             9 * (it_w(4, 2) + it_w(4, 8)))


def test_ne16_straight_through_gradients():
  # A dense 1x1 layer (Ho = Wo = 1) with Ko = 40.5 expected channels and Ki = 40 inputs:
  # n_body = floor(40.5/32) = 1, k_rem = 8.5, n_in = ceil(40/16) = 3,
  # iter(k) = n_in * (19 + 6 + (6 + k) + 2) + 9 + ceil(4k / 4) + 13.
  table = LayerTable(
      layers=(lay("fc", "dense", 40, 64, 1, (1, 1), "O", "H"),),
      groups=(grp("in", "input", 3), grp("H", "hidden", 40, w=(0, 8)),
              grp("O", "output", 64, w=(8,), a=())))

  def f(wo, wh):
    th = {"in": GroupTheta(a=jnp.ones(1)), "H": GroupTheta(w=wh, a=jnp.ones(1)),
          "O": GroupTheta(w=wo)}
    return costs.get_cost("ne16")(table, th)

  wo = jnp.full((1, 64), 40.5 / 64)
  wh = jnp.stack([jnp.zeros(40), jnp.ones(40)])
  it = lambda k, kc: 3 * (33 + k) + 9 + kc + 13
  np.testing.assert_allclose(f(wo, wh), it(32, 32) + it(8.5, 9), rtol=1e-6)
  g_o, g_h = jax.grad(f, argnums=(0, 1))(wo, wh)
  # d/dKo: iter(32) * dn_body + d iter(k_rem)/dk_rem = 249 + (n_in + 4); every theta column adds 1.
  np.testing.assert_allclose(g_o, np.full((1, 64), 249 + 3 + 4), rtol=1e-6)
  # d/dKi through n_in (identity STE): n_body * (33 + 32) + (33 + 8.5); Ki = 40 - sum theta_0.
  np.testing.assert_allclose(g_h[0], np.full((40,), -(65 + 41.5)), rtol=1e-6)
  np.testing.assert_allclose(g_h[1], 0.0)


# ---- gradient behaviour ----------------------------------------------------------------------------
def _grad(name, theta):
  return jax.grad(lambda th: costs.get_cost(name)(NET, th))(theta)


def test_size_detaches_cin_and_others_do_not():
  th = onehot_theta(NET)
  gs, gn = _grad("size", th), _grad("size_nodetach", th)
  # Size: no gradient to activation thetas; group A's gradient comes from layer a only.
  for g in NET.groups:
    if th[g.name].a is not None:
      np.testing.assert_array_equal(gs[g.name].a, 0.0)
  own = jax.grad(lambda t: costs.get_cost("size").layers(NET, t)[0])(th)
  np.testing.assert_allclose(gs["A"].w, own["A"].w, rtol=1e-6)
  # No detach: pruning a channel of A also removes r1's 8 x 9 weights at 8 bit (-576 per channel).
  np.testing.assert_allclose(gn["A"].w[0] - gs["A"].w[0], np.full(8, -8 * 9 * 8), rtol=1e-5)
  np.testing.assert_allclose(gn["A"].w[1:], gs["A"].w[1:], rtol=1e-5)
  # MPIC, bitops, MACs, NE16 reach the producer's theta through Cin_eff; MPIC and bitops also
  # reach the input activation theta; NE16 ignores activations.
  for name in ("mpic", "bitops", "macs", "ne16"):
    g = _grad(name, th)
    own = jax.grad(lambda t: costs.get_cost(name).layers(NET, t)[0])(th)
    assert not np.allclose(g["A"].w[0], own["A"].w[0]), name
  for name in ("mpic", "bitops"):
    assert np.abs(_grad(name, th)["in"].a).sum() > 0
  for g in NET.groups:
    if th[g.name].a is not None:
      np.testing.assert_array_equal(_grad("ne16", th)[g.name].a, 0.0)


def _random_alpha(key):
  alpha = {}
  for g in NET.groups:
    key, k1, k2 = jax.random.split(key, 3)
    ent = {}
    if g.kind != "input":
      ent["w"] = jax.random.normal(k1, (len(g.w_precisions), g.channels))
    if g.a_precisions:
      ent["a"] = jax.random.normal(k2, (len(g.a_precisions),))
    alpha[g.name] = ent
  return alpha


def _theta_of(alpha):
  return {k: GroupTheta(w=jax.nn.softmax(v["w"], 0) if "w" in v else None,
                        a=jax.nn.softmax(v["a"]) if "a" in v else None) for k, v in alpha.items()}


@pytest.mark.parametrize("name", ["size", "size_nodetach", "params", "macs", "bitops", "mpic"])
def test_gradients_match_finite_differences(name):
  # NET has only 8-bit activations; widen the input quantizer to exercise theta_in in the LUTs.
  table = LayerTable(layers=NET.layers, groups=(grp("in", "input", 3, a=(2, 4, 8)),) + NET.groups[1:])
  cost = costs.get_cost(name)
  alpha = _random_alpha(jax.random.PRNGKey(0))
  alpha["in"] = {"a": jnp.array([0.3, -0.2, 0.5])}
  if name == "size":
    # The reference detaches Cin_eff: difference the cost with every layer's Cin_eff frozen at
    # the base point.
    cin0 = [v.cin_eff for v in costs.layer_views(table, _theta_of(alpha))]

    def frozen(a):
      vs = costs.layer_views(table, _theta_of(a))
      return sum(cost.fn(dataclasses.replace(v, cin_eff=c)) for v, c in zip(vs, cin0))
    f = jax.jit(frozen)
  else:
    f = jax.jit(lambda a: cost(table, _theta_of(a)))
  g = jax.grad(lambda a: cost(table, _theta_of(a)))(alpha)
  eps = 1e-2
  for i in range(3):
    d = _random_alpha(jax.random.PRNGKey(100 + i))
    d["in"] = {"a": jax.random.normal(jax.random.PRNGKey(200 + i), (3,))}
    plus = jax.tree_util.tree_map(lambda x, y: x + eps * y, alpha, d)
    minus = jax.tree_util.tree_map(lambda x, y: x - eps * y, alpha, d)
    fd = (float(f(plus)) - float(f(minus))) / (2 * eps)
    an = sum(float(jnp.vdot(x, y)) for x, y in zip(jax.tree_util.tree_leaves(g),
                                                    jax.tree_util.tree_leaves(d)))
    np.testing.assert_allclose(an, fd, rtol=2e-2, atol=1e-3 * abs(float(f(alpha))))


# ---- granularity, unquantized inputs, errors --------------------------------------------------------
def test_layerwise_granularity_zero_bit_is_not_pruning():
  table = LayerTable(layers=(lay("c", "conv", 3, 8, 3, (4, 4), "L", "in"),),
                     groups=(grp("in", "input", 3), grp("L", "hidden", 8, granularity="layer")))
  th_l = jnp.array([0.4, 0.1, 0.2, 0.3])
  th = {"in": GroupTheta(a=jnp.ones(1)),
        "L": GroupTheta(w=jnp.broadcast_to(th_l[:, None], (4, 8)), a=jnp.ones(1))}
  assert float(costs.effective_channels(table, th)["L"]) == 8.0
  p_eff = float(jnp.dot(th_l, jnp.array([0.0, 2, 4, 8])))
  np.testing.assert_allclose(costs.get_cost("size")(table, th), 3 * 8 * 9 * p_eff, rtol=1e-6)
  macs = 3 * 8 * 9 * 16
  # MPIC per-layer: N_w = theta_w * C, normalised by C (+1e-6).
  cyc = macs * (0.1 / 2.5 + 0.2 / 2.3 + 0.3 / 2.1)
  np.testing.assert_allclose(costs.get_cost("mpic")(table, th), cyc, rtol=1e-5)


def test_unquantized_input_counts_as_8_bit():
  table = LayerTable(layers=(lay("c", "conv", 3, 8, 3, (4, 4), "G", "in"),),
                     groups=(grp("in", "input", 3, a=()), grp("G", "hidden", 8)))
  th = onehot_theta(table, {"G": 4})
  np.testing.assert_allclose(costs.get_cost("mpic")(table, th), 3 * 8 * 9 * 16 / 2.3, rtol=1e-6)
  np.testing.assert_allclose(costs.get_cost("bitops")(table, th), 3 * 8 * 9 * 16 * 32, rtol=1e-6)


def test_table_without_layers_is_a_clear_error():
  empty = LayerTable(layers=(), groups=(grp("in", "input", 3),))
  with pytest.raises(ValueError, match="no searchable layer"):
    costs.validate_cost("size", empty)
  with pytest.raises(ValueError, match="no searchable layer"):
    costs.get_cost("mpic")(empty, {})


def test_bad_theta_shape_is_a_clear_error():
  th = onehot_theta(NET)
  th["A"] = GroupTheta(w=jnp.ones((3, 8)), a=th["A"].a)
  with pytest.raises(ValueError, match=r"theta\['A'\]\.w must have shape \(4, 8\)"):
    costs.get_cost("size")(NET, th)
  del th["A"]
  with pytest.raises(ValueError, match="no entry for group 'A'"):
    costs.all_costs(NET, th)
