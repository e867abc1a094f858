"""jpq_jax.searchable: plain Flax ResNet-8 / DS-CNN (tests/plain_flax.py) convert to the same layer
table, sharing groups, costs and float/search/fixed logits as the hand-written jpq models, on the
same weights. One jitted function per model computes every mode (a ResNet-8 compiles in ~10 s)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jpq_jax as jpq
from jpq_jax import costs
from jpq_jax.models import DSCNN, ResNet8
from plain_flax import PlainDSCNN, PlainResNet8

CASES = {"resnet8": (PlainResNet8, ResNet8, (2, 32, 32, 3)),
         "dscnn": (PlainDSCNN, DSCNN, (2, 49, 10, 1))}


def _group_map(t_net, t_ref):
  """Converted group name -> hand-written group name, matched by their member layers."""
  by_members = {tuple(sorted(l.name for l in t_ref.layers_of(g.name))): g.name
                for g in t_ref.groups if g.kind != "input"}
  out = {t_net.groups[0].name: t_ref.groups[0].name}  # the input quantizers
  for g in t_net.groups:
    if g.kind != "input":
      out[g.name] = by_members[tuple(sorted(l.name for l in t_net.layers_of(g.name)))]
  return out


def _rename(tree, gmap):
  return {gmap.get(k, k): v for k, v in tree.items()}


def _perturb_bn(uv, key):
  """Non-trivial BatchNorm state, so that folding is actually exercised."""
  leaves, tdef = jax.tree_util.tree_flatten_with_path(uv)
  keys = jax.random.split(key, len(leaves))
  out = []
  for (path, a), k in zip(leaves, keys):
    name = jax.tree_util.keystr(path)
    if "bn" in name and ("scale" in name or "var" in name):
      a = a * jax.random.uniform(k, a.shape, minval=0.5, maxval=1.5)
    elif "bn" in name and ("mean" in name or "bias" in name):
      a = a + 0.1 * jax.random.normal(k, a.shape)
    out.append(a)
  return jax.tree_util.tree_unflatten(tdef, out)


@pytest.fixture(scope="module", params=sorted(CASES))
def pair(request):
  plain_cls, ref_cls, shape = CASES[request.param]
  ref = ref_cls()
  x = jax.random.uniform(jax.random.PRNGKey(0), shape, minval=-1.0, maxval=1.0)
  user = plain_cls()
  net = jpq.searchable(user, x, ref.space)
  uv = _perturb_bn(jax.jit(user.init)(jax.random.PRNGKey(1), x), jax.random.PRNGKey(2))
  fv = jpq.convert_variables(net, uv)
  t_net, t_ref = jpq.trace_table(net, x), jpq.trace_table(ref, x)
  gmap = _group_map(t_net, t_ref)
  inv = {v: k for k, v in gmap.items()}
  # Search variables of the hand-written model from the same float weights, with random logits
  # (a non-trivial architecture); the converted model gets the same ones under its group names.
  sv_ref = jpq.to_search(ref, fv, x, table=t_ref)
  arch = jax.tree_util.tree_map(
      lambda a: a + jax.random.normal(jax.random.PRNGKey(3), a.shape), sv_ref["arch"])
  sv_ref = {"params": sv_ref["params"], "arch": arch}
  sv_net = jpq.to_search(net, fv, x, table=t_net)
  sv_net = {"params": {**sv_net["params"], **_rename(
      {k: v for k, v in sv_ref["params"].items() if k in inv}, inv)}, "arch": _rename(arch, inv)}
  fx_ref = jpq.to_fixed(sv_ref, t_ref)
  fx_net = {"params": sv_net["params"], "precision": _rename(fx_ref["precision"], inv)}
  rng = {"dropout": jax.random.PRNGKey(4)}

  def run(model, fv, sv, fx, x):
    f_eval = model.apply(fv, x, jpq.Ctx.float()).value
    f_train, st = model.apply(fv, x, jpq.Ctx.float(train=True), mutable=["batch_stats"], rngs=rng)
    s_eval = model.apply(sv, x, jpq.Ctx.search(1.0)).value
    s_train = model.apply(sv, x, jpq.Ctx.search(0.7, train=True), rngs=rng).value
    fixed = model.apply(fx, x, jpq.Ctx.fixed()).value
    return dict(f_eval=f_eval, f_train=f_train.value, stats=st["batch_stats"], s_eval=s_eval,
                s_train=s_train, fixed=fixed)

  out_net = jax.jit(run, static_argnums=0)(net, fv, sv_net, fx_net, x)
  out_ref = jax.jit(run, static_argnums=0)(ref, fv, sv_ref, fx_ref, x)
  return dict(name=request.param, user=user, uv=uv, net=net, ref=ref, x=x, t_net=t_net,
              t_ref=t_ref, gmap=gmap, sv_net=sv_net, sv_ref=sv_ref, fx_net=fx_net, fx_ref=fx_ref,
              out_net=out_net, out_ref=out_ref)


def _assert_same_table_and_groups(pair):
  """A converted model's layer table and sharing groups equal the hand-written model's (``pair``:
  the tables ``t_net``/``t_ref``, the group-name map ``gmap`` and the model ``name``)."""
  t_net, t_ref, gmap = pair["t_net"], pair["t_ref"], pair["gmap"]
  assert [l.name for l in t_net.layers] == [l.name for l in t_ref.layers]
  for a, b in zip(t_net.layers, t_ref.layers):
    a = dataclasses.replace(a, w_group=gmap[a.w_group], in_group=gmap[a.in_group])
    assert a == b, (a, b)
  assert len(t_net.groups) == len(t_ref.groups)
  for g in t_net.groups:
    h = t_ref.group(gmap[g.name])
    assert dataclasses.replace(g, name=h.name, path=h.path) == h
  # The sharing groups of METHOD.md §2.6, as partitions of the layers.
  parts = sorted(sorted(l.name for l in t_net.layers_of(g.name)) for g in t_net.searchable_groups)
  if pair["name"] == "resnet8":
    assert ["conv1", "inputblock_conv1"] in parts and ["conv2x", "conv2y"] in parts
    assert ["conv3x", "conv3y"] in parts and len(parts) == 7
  else:
    assert ["depthwise1", "inputlayer"] in parts and ["pointwise4"] in parts and len(parts) == 6


def test_layer_table_and_sharing_groups_equal(pair):
  _assert_same_table_and_groups(pair)


def test_every_cost_model_equal(pair):
  t_net, t_ref, gmap = pair["t_net"], pair["t_ref"], pair["gmap"]
  th_ref = jpq.thetas(pair["sv_ref"], t_ref, jpq.Ctx.search(1.0))
  th_net = jpq.thetas(pair["sv_net"], t_net, jpq.Ctx.search(1.0))
  names = costs.list_costs()
  assert {"size", "mpic", "ne16", "bitops"} <= set(names)
  for name in names:
    try:
      costs.validate_cost(name, t_ref)
    except ValueError:
      with pytest.raises(ValueError):
        costs.validate_cost(name, t_net)
      continue
    a = float(costs.get_cost(name)(t_net, th_net))
    b = float(costs.get_cost(name)(t_ref, th_ref))
    assert a > 0 and a == pytest.approx(b, rel=1e-6), name
  # Frozen (fixed-mode) costs too.
  fa = jpq.thetas(pair["fx_net"], t_net, jpq.Ctx.fixed())
  fb = jpq.thetas(pair["fx_ref"], t_ref, jpq.Ctx.fixed())
  assert float(costs.get_cost("size")(t_net, fa)) == pytest.approx(
      float(costs.get_cost("size")(t_ref, fb)), rel=1e-6)


@pytest.mark.parametrize("what", ["f_eval", "f_train", "s_eval", "s_train", "fixed"])
def test_logits_equal_in_every_mode(pair, what):
  a, b = np.asarray(pair["out_net"][what]), np.asarray(pair["out_ref"][what])
  assert np.isfinite(a).all() and np.abs(b).max() > 1e-3
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


def test_float_mode_is_the_users_model_and_batch_stats_map_back(pair):
  user, uv, x = pair["user"], pair["uv"], pair["x"]
  def run(uv, x):
    ev = user.apply(uv, x)
    tr, st = user.apply(uv, x, train=True, mutable=["batch_stats"],
                        rngs={"dropout": jax.random.PRNGKey(4)})
    return ev, tr, st

  ev, out, st = jax.jit(run)(uv, x)
  np.testing.assert_allclose(pair["out_net"]["f_eval"], ev, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(pair["out_net"]["f_train"], out, rtol=1e-5, atol=1e-6)
  back = jpq.convert_variables(pair["net"], {"params": uv["params"], "batch_stats": st["batch_stats"]})
  for k, v in back["batch_stats"].items():
    np.testing.assert_allclose(pair["out_net"]["stats"][k]["BatchNorm_0"]["mean"],
                               v["BatchNorm_0"]["mean"], rtol=1e-5, atol=1e-6)
