"""The paper's models: parameter and MAC counts (METHOD.md §8), sharing groups (§2.6), all three
modes, and exact zeros in hard-pruned channels in fixed mode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jpq_jax as jpq
from jpq_jax.models import DSCNN, DemoNet, ResNet8, ResNet18, get_model

CASES = {
    "resnet8": (ResNet8(), (1, 32, 32, 3), 78_058, 12_501_632),
    "dscnn": (DSCNN(), (1, 49, 10, 1), 23_756, 2_656_768),
    "resnet18": (ResNet18(), (1, 64, 64, 3), 11_271_432, 2_221_772_800),
}


def _count(tree):
  return int(sum(np.prod(a.shape) for a in jax.tree_util.tree_leaves(tree)))


@pytest.mark.parametrize("name", sorted(CASES))
def test_parameter_and_mac_counts(name):
  model, shape, n_params, macs = CASES[name]
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  v = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, jpq.Ctx.float()), x)
  assert _count(v["params"]) == n_params
  table = jpq.trace_table(model, x)
  assert table.macs == macs


def _groups(table):
  return {g.name: sorted(l.name for l in table.layers_of(g.name)) for g in table.groups
          if g.kind != "input"}


def test_sharing_groups():
  t = jpq.trace_table(ResNet8(), jnp.zeros((1, 32, 32, 3)))
  assert _groups(t) == {
      "g_stage1": ["conv1", "inputblock_conv1"], "g_stage2": ["conv2x", "conv2y"],
      "g_stage3": ["conv3x", "conv3y"], "g_convblock1": ["convblock1_conv1"],
      "g_convblock2": ["convblock2_conv1"], "g_convblock3": ["convblock3_conv1"], "g_out": ["out"]}
  t = jpq.trace_table(DSCNN(), jnp.zeros((1, 49, 10, 1)))
  assert _groups(t) == {
      "g_inputlayer": ["depthwise1", "inputlayer"], "g_pointwise1": ["depthwise2", "pointwise1"],
      "g_pointwise2": ["depthwise3", "pointwise2"], "g_pointwise3": ["depthwise4", "pointwise3"],
      "g_pointwise4": ["pointwise4"], "g_out": ["out"]}
  assert t.layer("depthwise1").kind == "depthwise" and t.layer("depthwise1").in_group == "g_inputlayer"
  assert t.group("input_q").signed
  t = jpq.trace_table(ResNet18(), jnp.zeros((1, 64, 64, 3)))
  g = _groups(t)
  assert g["g_stage1"] == ["bb_1_0_conv2", "bb_1_1_conv2", "conv1"]
  assert g["g_stage2"] == ["bb_2_0_conv2", "bb_2_0_downsample", "bb_2_1_conv2"]
  assert g["g_bb_3_1_conv1"] == ["bb_3_1_conv1"]
  assert g["g_out"] == ["fc"]
  # Layers are listed in call order; the classifier sees the flattened last stage.
  assert t.layers[0].name == "conv1" and t.layers[-1].name == "fc"
  assert t.layers[-1].in_group == "g_stage4"
  assert "bb_2_0_downsample" in t.format()


def test_resnet18_all_modes_shapes():
  m = ResNet18()
  x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
  for ctx in (jpq.Ctx.float(), jpq.Ctx.search(), jpq.Ctx.fixed()):
    out = jax.eval_shape(lambda x: m.apply(m.init(jax.random.PRNGKey(0), x, ctx), x, ctx).value, x)
    assert out.shape == (2, 200)


@pytest.mark.parametrize("name", ["resnet8", "dscnn"])
def test_all_modes_run_and_pruned_channels_are_exact_zeros(name):
  model, shape, _, _ = CASES[name]
  x = jax.random.uniform(jax.random.PRNGKey(0), (2,) + shape[1:])
  fv = model.init(jax.random.PRNGKey(1), x, jpq.Ctx.float())
  out, st = model.apply(fv, x, jpq.Ctx.float(train=True), mutable=["batch_stats"],
                        rngs={"dropout": jax.random.PRNGKey(2)})
  assert out.value.shape == (2, model.num_classes)
  fv = {"params": fv["params"], "batch_stats": st["batch_stats"]}
  sv = jpq.to_search(model, fv, x)
  y = model.apply(sv, x, jpq.Ctx.search(1.0, train=True), rngs={"dropout": jax.random.PRNGKey(2)})
  assert np.isfinite(np.asarray(y.value)).all()
  table = jpq.trace_table(model, x)
  # Prune channels 0..3 of the first hidden group and give others 2 and 4 bits.
  g = table.searchable_groups[0]
  prec = jpq.freeze(sv["arch"], table)
  node = prec[g.path[0]]
  bits = np.full((g.channels,), 8, np.int32)
  bits[:4] = 0
  bits[4:8] = 2
  bits[8:12] = 4
  node["w_bits"] = jnp.asarray(bits)
  fixed = {"params": sv["params"], "precision": prec}

  # Capture every layer's output in fixed mode via intermediates of the group's producers.
  first = table.layers_of(g.name)[0]
  captured = {}

  def grab(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if tuple(context.module.scope.path) == first.path and context.method_name == "__call__":
      captured["y"] = out
    return out

  import flax.linen as nn
  with nn.intercept_methods(grab):
    y = model.apply(fixed, x, jpq.Ctx.fixed())
  assert np.isfinite(np.asarray(y.value)).all()
  yv = np.asarray(captured["y"].value)
  assert np.all(yv[..., :4] == 0.0), "hard-pruned channels must output exact zeros"
  assert np.any(yv[..., 4:] != 0.0)
  summary = jpq.precision_summary(prec, table)[g.name]
  assert summary["kept"] == g.channels - 4
  assert summary["w_bits_hist"][0] == 4 and summary["w_bits_hist"][2] == 4


def test_get_model_errors():
  with pytest.raises(ValueError, match="unknown model"):
    get_model("vgg")
  assert isinstance(get_model("demo"), DemoNet)
