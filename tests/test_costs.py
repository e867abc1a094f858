"""Cost models on the paper's traced models: METHOD.md §14.3 sanity values, vmap/jit, registry,
reports.

Tables come from :func:`jpq_jax.trace_table` (abstract tracing). The ``arch`` collection is filled
with the reference's initial logits ``p / max(p)`` (what ``model.init`` does) instead of running
``model.init`` eagerly, which takes tens of seconds on the test machine; its structure is checked
against the model's abstract init.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jpq_jax
from jpq_jax import choice, costs, models
from jpq_jax.arch import set_path
from jpq_jax.layers import SearchSpace


def init_arch(table):
  """The ``arch`` collection of a freshly initialised model (reference init rule)."""
  arch = {}
  for g in table.groups:
    ent = {}
    if g.kind != "input":
      ent["alpha_w"] = choice.init_logits(g.w_precisions,
                                          g.channels if g.granularity == "channel" else None)
    if g.a_precisions:
      ent["alpha_a"] = choice.init_logits(g.a_precisions)
    set_path(arch, g.path, ent)
  return arch


def _setup(model, shape):
  x = jnp.zeros(shape)
  table = jpq_jax.trace_table(model, x)
  arch = init_arch(table)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, jpq_jax.Ctx.search()))
  assert (jax.tree_util.tree_map(lambda a: a.shape, shapes["arch"]) ==
          jax.tree_util.tree_map(lambda a: a.shape, arch))
  th_eval = jpq_jax.thetas({"arch": arch}, table, jpq_jax.Ctx.search(1.0, train=False))
  th_soft = jpq_jax.thetas({"arch": arch}, table, jpq_jax.Ctx.search(1.0, train=True))
  return table, arch, th_eval, th_soft


@pytest.fixture(scope="module")
def resnet8():
  space = SearchSpace(w_precisions=(0, 2, 4, 8), a_precisions=(2, 4, 8))
  return _setup(models.ResNet8(space=space, num_classes=10), (1, 32, 32, 3))


@pytest.fixture(scope="module")
def dscnn():
  space = SearchSpace(w_precisions=(0, 2, 4, 8), a_precisions=(8,), input_signed=True)
  return _setup(models.DSCNN(space, num_classes=12), (1, 49, 10, 1))


@pytest.fixture(scope="module")
def all_costs_jit():
  return jax.jit(costs.all_costs, static_argnums=0)


REQUIRED = ("size", "size_nodetach", "params", "macs", "bitops", "mpic", "mpic_energy", "ne16")


def test_resnet8_all_8bit_sanity_values(resnet8, all_costs_jit):
  table, _, th, _ = resnet8
  c = {k: float(v) for k, v in all_costs_jit(table, th).items()}
  np.testing.assert_allclose(c["size"], 618_880, rtol=1e-6)
  np.testing.assert_allclose(c["size_nodetach"], 618_880, rtol=1e-6)
  np.testing.assert_allclose(c["params"], 77_360, rtol=1e-6)
  np.testing.assert_allclose(c["macs"], 12_501_632, rtol=1e-6)
  np.testing.assert_allclose(c["bitops"], 800_104_448, rtol=1e-6)
  np.testing.assert_allclose(c["mpic"], 5_953_158, rtol=1e-6)
  np.testing.assert_allclose(c["mpic_energy"], 5_953_158 / 250e6 * 5.3825e-3, rtol=1e-6)
  np.testing.assert_allclose(c["ne16"], 155_241, rtol=1e-6)


def test_reference_costs_are_the_argmax_of_the_init(resnet8, all_costs_jit):
  """reference_costs (the scale of lambda) = every cost of the reference init's argmax network,
  which is the top-precision one; top_precision_theta builds it without any logits."""
  table, _, th, _ = resnet8
  ref = costs.reference_costs(table)
  want = {k: float(v) for k, v in all_costs_jit(table, th).items()}
  assert set(ref) == set(want)
  for k in ref:
    np.testing.assert_allclose(ref[k], want[k], rtol=1e-6)
  top = costs.top_precision_theta(table)
  for g in table.groups:
    np.testing.assert_array_equal(np.asarray(top[g.name].w) if top[g.name].w is not None else None,
                                  np.asarray(th[g.name].w) if th[g.name].w is not None else None)
  assert set(costs.reference_costs(table, ("size", "nope"))) == {"size"}


def test_resnet8_soft_init_size(resnet8, all_costs_jit):
  table, _, _, th = resnet8
  c = all_costs_jit(table, th)
  np.testing.assert_allclose(float(c["size"]), 306_209, atol=1.0)  # "about 306,209 bits"


def test_dscnn_all_8bit_sanity_values(dscnn, all_costs_jit):
  table, _, th, _ = dscnn
  assert table.group(table.layers[0].in_group).a_precisions == (8,)
  c = {k: float(v) for k, v in all_costs_jit(table, th).items()}
  np.testing.assert_allclose(c["size"], 176_128, rtol=1e-6)
  np.testing.assert_allclose(c["mpic"], 1_265_128, rtol=1e-6)
  np.testing.assert_allclose(c["ne16"], 204_838, rtol=1e-6)
  np.testing.assert_allclose(c["macs"], 2_656_768, rtol=1e-6)


def test_effective_channels_resnet8(resnet8):
  table, _, th_eval, th_soft = resnet8
  ce = costs.effective_channels(table, th_eval)
  assert {g.name: float(ce[g.name]) for g in table.groups} == {
      g.name: float(g.channels) for g in table.groups}
  cs = costs.effective_channels(table, th_soft)
  theta0 = float(jax.nn.softmax(jnp.array([0.0, 0.25, 0.5, 1.0]))[0])
  np.testing.assert_allclose(float(cs["g_stage2"]), 32 * (1 - theta0), rtol=1e-6)
  assert float(cs["g_out"]) == 10.0 and float(cs["input_q"]) == 3.0


def test_vmap_over_members_matches_single_evaluation(resnet8):
  table, arch, _, _ = resnet8
  n = 3
  keys = jax.random.split(jax.random.PRNGKey(0), n)
  archs = jax.vmap(lambda k: jax.tree_util.tree_map(
      lambda a: a + jax.random.normal(k, a.shape), arch))(keys)
  temps = jnp.array([1.0, 0.5, 2.0])

  def member(a, t):
    th = jpq_jax.thetas({"arch": a}, table, jpq_jax.Ctx.search(t, train=True))
    return costs.all_costs(table, th)

  batched = jax.jit(jax.vmap(member))(archs, temps)
  single = jax.jit(member)
  for i in range(n):
    one = single(jax.tree_util.tree_map(lambda x: x[i], archs), temps[i])
    for k in REQUIRED:
      np.testing.assert_allclose(batched[k][i], one[k], rtol=2e-5, err_msg=k)
  # And gradients of a lambda-weighted cost through vmap.
  g = jax.jit(jax.vmap(jax.grad(lambda a, t: member(a, t)["mpic"])))(archs, temps)
  assert g["g_stage1"]["alpha_w"].shape == (n, 4, 16)
  assert np.all(np.isfinite(np.asarray(g["g_stage1"]["alpha_w"])))


def test_registry_basics():
  names = costs.list_costs()
  assert set(REQUIRED) <= set(names)
  assert costs.cost_unit("size") == "bits" and costs.COST_UNITS["mpic"] == "cycles"
  assert costs.COST_UNITS["mpic_energy"] == "J" and costs.cost_unit("ne16") == "cycles"
  with pytest.raises(KeyError, match="registered costs: .*'size'"):
    costs.get_cost("no_such_cost")
  with pytest.raises(ValueError, match="already registered"):
    costs.register_cost("size", lambda v: v.cout_eff, unit="bits")


def test_register_custom_costs(resnet8):
  table, _, th, _ = resnet8
  try:
    # The MPIC LUT as a user LUT (flat keys) reproduces the built-in.
    flat = {(a, w): v for a, row in costs.MPIC_LUT.items() for w, v in row.items()}
    costs.register_lut_cost("my_mpic", flat, unit="cycles")
    np.testing.assert_allclose(costs.get_cost("my_mpic")(table, th),
                               costs.get_cost("mpic")(table, th), rtol=1e-7)
    # Cost per MAC: a * w reproduces bitops.
    costs.register_lut_cost("my_bitops", lambda a, w: a * w, mode="cost", unit="bitops")
    np.testing.assert_allclose(costs.get_cost("my_bitops")(table, th), 800_104_448, rtol=1e-6)
    # Any function of a layer: kept output channels of every layer.
    costs.register_cost("kept", lambda v: v.cout_eff, unit="channels")
    assert float(costs.bind_cost("kept", table)(th)) == sum(l.cout for l in table.layers)
    assert "kept" in costs.all_costs(table, th)
  finally:
    for n in ("my_mpic", "my_bitops", "kept"):
      if n in costs.list_costs():
        costs.unregister_cost(n)


def test_lut_missing_pair_fails_when_bound(resnet8, dscnn):
  r8, _, th, _ = resnet8
  ds = dscnn[0]
  try:
    costs.register_lut_cost("a8_only", {8: {2: 2.5, 4: 2.3, 8: 2.1}}, unit="cycles")
    costs.validate_cost("a8_only", ds)  # DS-CNN: 8-bit activations only -> complete
    with pytest.raises(ValueError, match=r"lacks .*\(2, 2\)"):
      costs.validate_cost("a8_only", r8)  # ResNet-8 searches 2/4-bit activations too
    with pytest.raises(ValueError, match="activation bits"):
      costs.bind_cost("a8_only", r8)
    with pytest.raises(ValueError, match="lacks"):
      costs.get_cost("a8_only")(r8, th)
  finally:
    costs.unregister_cost("a8_only")
  with pytest.raises(ValueError, match="must be finite and > 0"):
    costs.register_lut_cost("bad", {8: {8: 0.0}})


def test_cost_report(resnet8):
  table, _, _, th = resnet8
  rep = costs.cost_report(table, th)
  assert set(rep["units"]) >= set(REQUIRED)
  assert len(rep["theta"]["layers"]) == len(table.layers)
  np.testing.assert_allclose(rep["argmax"]["totals"]["size"], 618_880, rtol=1e-6)
  np.testing.assert_allclose(rep["argmax"]["totals"]["size_kB"], 77.36, rtol=1e-6)
  np.testing.assert_allclose(rep["theta"]["totals"]["size"], 306_209, atol=1.0)
  np.testing.assert_allclose(sum(r["costs"]["mpic"] for r in rep["theta"]["layers"]),
                             rep["theta"]["totals"]["mpic"], rtol=1e-5)
  row = rep["argmax"]["layers"][0]
  assert row["w_bits_eff"] == pytest.approx(8.0) and row["kept_channels"] == pytest.approx(16.0)
  assert row["a_in_bits_eff"] == pytest.approx(8.0)
  text = costs.format_cost_report(rep)
  for unit in ("[bits]", "kB", "[cyc]", "MACs", " J", "cycles", "bits"):
    assert unit in text, unit
  assert "inputblock_conv1" in text and "one-hot argmax" in text
