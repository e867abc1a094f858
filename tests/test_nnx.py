"""jpq_jax.nnx: a plain Flax NNX ResNet-8 (and, slow, DS-CNN; tests/plain_nnx.py) converts to the
same layer table, sharing groups, costs and float/search/fixed logits as the hand-written jpq model
on the same weights; the search state is typed NNX variables (ArchLogits, Precision) that nnx.state
and an nnx.Optimizer separate from the weights; freezing, the integer export and the refusals.

The model pair runs every mode in one nnx.jit (NNX side) and one jax.jit (reference), as
tests/test_convert.py does for Linen; the other tests use the small userpkg.nnx_nets.NnxTinyNet.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import jpq_jax as jpq
from jpq_jax import costs, export
from jpq_jax import nnx as jnnx
from jpq_jax.models import DSCNN, ResNet8
from plain_nnx import NnxDSCNN, NnxResNet8
from test_convert import _assert_same_table_and_groups, _group_map, _rename
from test_export import _assert_reproduces
from userpkg.nnx_nets import NnxTinyNet


def _perturb_bn(model: nnx.Module, key) -> None:
  """Non-trivial BatchNorm state in place, so that folding is actually exercised."""
  for _, m in nnx.iter_modules(model):
    if isinstance(m, nnx.BatchNorm):
      k1, k2, k3, k4, key = jax.random.split(key, 5)
      c = m.scale[...].shape
      m.scale[...] = m.scale[...] * jax.random.uniform(k1, c, minval=0.5, maxval=1.5)
      m.var[...] = m.var[...] * jax.random.uniform(k2, c, minval=0.5, maxval=1.5)
      m.mean[...] = m.mean[...] + 0.1 * jax.random.normal(k3, c)
      m.bias[...] = m.bias[...] + 0.1 * jax.random.normal(k4, c)


CASES = {"resnet8": (NnxResNet8, ResNet8, (2, 32, 32, 3)),
         "dscnn": (NnxDSCNN, DSCNN, (2, 49, 10, 1))}


# The DS-CNN (depthwise groups) is a second compile of ~30 s: slow, the ResNet-8 runs by default.
@pytest.fixture(scope="module", params=["resnet8", pytest.param("dscnn", marks=pytest.mark.slow)])
def pair(request):
  user_cls, ref_cls, shape = CASES[request.param]
  ref = ref_cls()
  x = jax.random.uniform(jax.random.PRNGKey(0), shape, minval=-1.0, maxval=1.0)
  user = user_cls(rngs=nnx.Rngs(1))
  _perturb_bn(user, jax.random.PRNGKey(2))
  fm = jpq.nnx_searchable(user, x, ref.space)
  fv = fm.variables()
  t_net, t_ref = fm.table(), jpq.trace_table(ref, x)
  gmap = _group_map(t_net, t_ref)
  inv = {v: k for k, v in gmap.items()}
  # The reference's search variables from the same float weights, with random logits; the NNX
  # model gets the same ones under its group names.
  sv_ref = jpq.to_search(ref, fv, x, table=t_ref)
  arch = jax.tree_util.tree_map(
      lambda a: a + jax.random.normal(jax.random.PRNGKey(3), a.shape), sv_ref["arch"])
  sv_ref = {"params": sv_ref["params"], "arch": arch}
  sm0 = fm.to_search()
  sv_net = sm0.variables()
  sv_net = {"params": {**sv_net["params"], **_rename(
      {k: v for k, v in sv_ref["params"].items() if k in inv}, inv)}, "arch": _rename(arch, inv)}
  sm = jnnx.Searchable.from_variables(fm.net, sv_net, x)
  xm = sm.to_fixed()
  fx_ref = jpq.to_fixed(sv_ref, t_ref)

  key = jax.random.PRNGKey(4)  # the dropout key of both (the DS-CNN has dropout)

  @nnx.jit
  def run_nnx(fm, sm, xm, x):
    return dict(f_eval=fm(x, jpq.Ctx.float()).value,
                f_train=fm(x, jpq.Ctx.float(train=True), key=key).value,  # updates batch_stats
                s_eval=sm(x, jpq.Ctx.search(1.0)).value,
                s_train=sm(x, jpq.Ctx.search(0.7, train=True), key=key).value,
                fixed=xm(x, jpq.Ctx.fixed()).value)

  def run_ref(fv, sv, fx, x):
    rng = {"dropout": key}
    f_train, st = ref.apply(fv, x, jpq.Ctx.float(train=True), mutable=["batch_stats"], rngs=rng)
    return dict(f_eval=ref.apply(fv, x, jpq.Ctx.float()).value, f_train=f_train.value,
                stats=st["batch_stats"], s_eval=ref.apply(sv, x, jpq.Ctx.search(1.0)).value,
                s_train=ref.apply(sv, x, jpq.Ctx.search(0.7, train=True), rngs=rng).value,
                fixed=ref.apply(fx, x, jpq.Ctx.fixed()).value)

  out_nnx = run_nnx(fm, sm, xm, x)
  out_ref = jax.jit(run_ref)(fv, sv_ref, fx_ref, x)
  return dict(name=request.param, user=user, x=x, fm=fm, fv=fv, sm0=sm0, sm=sm, xm=xm, ref=ref,
              t_net=t_net,
              t_ref=t_ref, gmap=gmap, inv=inv, sv_ref=sv_ref, fx_ref=fx_ref, out_nnx=out_nnx,
              out_ref=out_ref)


def test_table_and_sharing_groups_equal(pair):
  _assert_same_table_and_groups(pair)


def test_every_cost_model_equal(pair):
  t_net, t_ref, sm = pair["t_net"], pair["t_ref"], pair["sm"]
  th_ref = jpq.thetas(pair["sv_ref"], t_ref, jpq.Ctx.search(1.0))
  names = costs.list_costs()
  assert {"size", "mpic", "ne16", "bitops"} <= set(names)
  for name in names:
    try:
      costs.validate_cost(name, t_ref)
    except ValueError:
      with pytest.raises(ValueError):
        costs.validate_cost(name, t_net)
      continue
    a = float(sm.cost(name, jpq.Ctx.search(1.0)))
    b = float(costs.get_cost(name)(t_ref, th_ref))
    assert a > 0 and a == pytest.approx(b, rel=1e-6), name
  fb = jpq.thetas(pair["fx_ref"], t_ref, jpq.Ctx.fixed())
  assert float(pair["xm"].cost("size")) == pytest.approx(
      float(costs.get_cost("size")(t_ref, fb)), rel=1e-6)


@pytest.mark.parametrize("what", ["f_eval", "f_train", "s_eval", "s_train", "fixed"])
def test_logits_equal_in_every_mode(pair, what):
  a, b = np.asarray(pair["out_nnx"][what]), np.asarray(pair["out_ref"][what])
  assert np.isfinite(a).all() and np.abs(b).max() > 1e-3
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


def test_float_mode_is_the_users_model_and_batch_stats_update(pair):
  user, x, fm = pair["user"], pair["x"], pair["fm"]
  user.eval()
  np.testing.assert_allclose(pair["out_nnx"]["f_eval"], user(x), rtol=1e-5, atol=1e-6)
  if pair["name"] != "resnet8":
    return  # the DS-CNN's training output depends on its own dropout stream
  user.train()
  np.testing.assert_allclose(pair["out_nnx"]["f_train"], user(x), rtol=1e-5, atol=1e-6)
  # The float training call inside nnx.jit updated the module's BatchStat variables in place,
  # as the user's own model updated its BatchNorm (same momentum).
  stats = fm.variables()["batch_stats"]
  ref_stats = pair["out_ref"]["stats"]
  for k, v in ref_stats.items():
    np.testing.assert_allclose(stats[k]["BatchNorm_0"]["mean"], v["BatchNorm_0"]["mean"],
                               rtol=1e-5, atol=1e-6)
  first = pair["t_net"].layers[0].name
  np.testing.assert_allclose(stats[first]["BatchNorm_0"]["var"],
                             ref_stats[first]["BatchNorm_0"]["var"], rtol=1e-5, atol=1e-6)
  assert not np.allclose(stats[first]["BatchNorm_0"]["mean"],
                         pair["fv"]["batch_stats"][first]["BatchNorm_0"]["mean"])


def test_to_search_and_to_fixed_are_the_linen_ones(pair):
  x, fm, sm0 = pair["x"], pair["fm"], pair["sm0"]
  want = jpq.to_search(fm.net, pair["fv"], x)
  got = sm0.variables()
  assert set(got) == {"params", "arch"}
  jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)
  prec = pair["xm"].variables()["precision"]
  want = _rename(pair["fx_ref"]["precision"], pair["inv"])
  jax.tree_util.tree_map(np.testing.assert_array_equal, prec, want)
  assert pair["xm"].mode == "fixed" and sm0.mode == "search" and fm.mode == "float"


# --- The small model: typed state, optimizers, freezing, export, refusals. ---


@pytest.fixture(scope="module")
def tiny():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1))
  user = NnxTinyNet(rngs=nnx.Rngs(0))
  _perturb_bn(user, jax.random.PRNGKey(1))
  fm = jpq.nnx_searchable(user, x, jpq.SearchSpace(w_precisions=(0, 2, 4, 8),
                                                    a_precisions=(2, 4, 8)))
  sm = fm.to_search()
  # Random logits (mixed bit-widths) with the first two channels of a prunable group pruned.
  zero = sm.table().group("g_stem").zero_index
  for i, (path, var) in enumerate(nnx.to_flat_state(nnx.state(sm, jnnx.ArchLogits))):
    a = 2.0 * jax.random.normal(jax.random.PRNGKey(10 + i), var[...].shape)
    if path[-2:] == ("g_stem", "alpha_w"):
      a = a.at[zero, :2].add(10.0)
    var[...] = a
  return dict(x=x, user=user, fm=fm, sm=sm)


def _leaves(tree):
  return sorted(jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree))


def test_search_state_is_typed_nnx_variables(tiny):
  sm = tiny["sm"]
  v = sm.variables()
  arch = nnx.to_pure_dict(nnx.state(sm, jnnx.ArchLogits))
  assert set(arch) == {"arch"} and _leaves(arch["arch"]) == _leaves(v["arch"])
  params = nnx.to_pure_dict(nnx.state(sm, nnx.Param))
  assert set(params) == {"params"} and _leaves(params["params"]) == _leaves(v["params"])
  assert not nnx.state(sm, nnx.BatchStat)  # folded away
  graphdef, p, a, rest = nnx.split(sm, nnx.Param, jnnx.ArchLogits, ...)
  assert all(isinstance(v, nnx.RngState) for _, v in nnx.to_flat_state(rest))  # dropout stream
  back = nnx.merge(graphdef, p, a, rest)
  np.testing.assert_array_equal(back(tiny["x"], jpq.Ctx.search()).value,
                                sm(tiny["x"], jpq.Ctx.search()).value)
  fx = sm.to_fixed()
  prec = nnx.to_pure_dict(nnx.state(fx, jnnx.Precision))["precision"]
  jax.tree_util.tree_map(np.testing.assert_array_equal, prec,
                         jpq.freeze(v["arch"], sm.table()))
  assert not nnx.state(fx, jnnx.ArchLogits)


def test_optimizer_over_params_does_not_touch_the_logits(tiny):
  sm = nnx.clone(tiny["sm"])
  x, y = tiny["x"], jnp.array([1, 3])
  before = sm.variables()

  def loss(m):
    logits = m(x, jpq.Ctx.search(1.0, train=True)).value
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  w_opt = nnx.Optimizer(sm, optax.sgd(0.1), wrt=nnx.Param)
  a_opt = nnx.Optimizer(sm, optax.sgd(0.1), wrt=jnnx.ArchLogits)

  @nnx.jit
  def step(m, w_opt, a_opt):
    gw = nnx.grad(loss, argnums=nnx.DiffState(0, nnx.Param))(m)
    w_opt.update(m, gw)
    mid = nnx.to_pure_dict(nnx.state(m, jnnx.ArchLogits))
    ga = nnx.grad(loss, argnums=nnx.DiffState(0, jnnx.ArchLogits))(m)
    a_opt.update(m, ga)
    return mid

  mid = step(sm, w_opt, a_opt)
  after = sm.variables()
  # The weight optimizer moved the weights and left the logits as they were ...
  jax.tree_util.tree_map(np.testing.assert_array_equal, mid["arch"], before["arch"])
  changed = jax.tree_util.tree_map(lambda a, b: bool(np.any(a != b)), after["params"],
                                   before["params"])
  assert any(jax.tree_util.tree_leaves(changed))
  # ... and the logits' optimizer moved the logits.
  assert any(bool(np.any(a != b)) for a, b in zip(jax.tree_util.tree_leaves(after["arch"]),
                                                  jax.tree_util.tree_leaves(before["arch"])))


def test_freeze_then_integer_export_reproduces_fixed_mode(tiny):
  sm, x = tiny["sm"], tiny["x"]
  fx = sm.to_fixed()
  table = fx.table()
  prec = fx.variables()["precision"]
  assert any(int(np.sum(np.asarray(prec[g.name]["w_bits"]) == 0)) > 0
             for g in table.searchable_groups), "random logits pruned nothing"
  # Fixed mode is the search model's evaluation-mode argmax architecture.
  np.testing.assert_allclose(fx(x, jpq.Ctx.fixed()).value, sm(x, jpq.Ctx.search(1.0)).value,
                             rtol=1e-5, atol=1e-6)
  xs = jax.random.normal(jax.random.PRNGKey(5), (16, 8, 8, 1))
  ref = np.asarray(fx(xs, jpq.Ctx.fixed()).value)
  bundle = fx.export()
  got = export.run_bundle(bundle, np.asarray(xs))
  _assert_reproduces(got, ref)
  assert set(bundle.manifest["layers"]) == {l.name for l in table.layers}
  assert "blocks.0.dw" in bundle.manifest["layers"]  # the depthwise conv, by its NNX path
  assert float(fx.cost("size")) < float(sm.to_fixed().cost("size", jpq.Ctx.fixed())) + 1e-3


def test_float_training_call_updates_batch_stats_and_needs_its_mode(tiny):
  fm, x = nnx.clone(tiny["fm"]), tiny["x"]
  before = fm.variables()["batch_stats"]
  a = fm(x, jpq.Ctx.float(train=True), key=jax.random.PRNGKey(0)).value
  b = fm(x, jpq.Ctx.float(train=True), key=jax.random.PRNGKey(1)).value
  assert not np.allclose(a, b)  # dropout draws from the key
  after = fm.variables()["batch_stats"]
  assert not np.allclose(after["stem"]["BatchNorm_0"]["mean"],
                         before["stem"]["BatchNorm_0"]["mean"])
  with pytest.raises(ValueError, match="search mode needs 'arch'.*float mode.*to_search"):
    fm(x, jpq.Ctx.search())
  with pytest.raises(ValueError, match="to_fixed: the module is in float mode"):
    fm.to_fixed()
  with pytest.raises(TypeError, match="jpq_jax.Ctx"):
    fm(x, True)


class _WithLayerNorm(nnx.Module):
  def __init__(self, rngs):
    self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
    self.norm = nnx.LayerNorm(4, rngs=rngs)

  def __call__(self, x):
    return self.norm(self.conv(x)).mean(axis=(1, 2))


class _Scale(nnx.Module):
  def __init__(self):
    self.w = nnx.Param(jnp.ones((4,)))

  def __call__(self, x):
    return x * self.w[...]


class _WithCustomParam(nnx.Module):
  def __init__(self, rngs):
    self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
    self.scale = _Scale()

  def __call__(self, x):
    return self.scale(self.conv(x)).mean(axis=(1, 2))


class _Concat(nnx.Module):
  def __init__(self, rngs):
    self.a = nnx.Conv(1, 4, (3, 3), rngs=rngs)
    self.b = nnx.Conv(1, 4, (3, 3), rngs=rngs)
    self.head = nnx.Linear(8, 2, rngs=rngs)

  def __call__(self, x):
    return self.head(jnp.concatenate([self.a(x), self.b(x)], -1).mean(axis=(1, 2)))


class _Shared(nnx.Module):
  def __init__(self, rngs):
    self.conv = nnx.Conv(4, 4, (3, 3), rngs=rngs)
    self.stem = nnx.Conv(1, 4, (3, 3), rngs=rngs)

  def __call__(self, x):
    return self.conv(self.conv(self.stem(x))).mean(axis=(1, 2))


class _Dilated(nnx.Module):
  def __init__(self, rngs):
    self.conv = nnx.Conv(1, 4, (3, 3), kernel_dilation=2, rngs=rngs)

  def __call__(self, x):
    return self.conv(x).mean(axis=(1, 2))


class _DenseOn4D(nnx.Module):
  def __init__(self, rngs):
    self.head = nnx.Linear(1, 2, rngs=rngs)

  def __call__(self, x):
    return self.head(x)


@pytest.mark.parametrize("cls,match", [
    (_WithLayerNorm, r"^norm: flax.nnx.LayerNorm is a layer the conversion does not know"),
    (_WithCustomParam, r"^scale/w: a Param variable outside .*in _Scale"),
    (_Concat, r"operation 'concatenate'.*combines tensors of different layers"),
    (_Shared, r"^conv: nnx.Conv is called more than once"),
    (_Dilated, r"^conv: nnx.Conv with kernel_dilation=2 is not supported"),
    (_DenseOn4D, r"^head: nnx.Linear on a rank-4 tensor"),
])
def test_unsupported_models_are_refused_with_their_path(cls, match):
  with pytest.raises(jpq.ConversionError, match=match):
    jpq.nnx_searchable(cls(nnx.Rngs(0)), jnp.zeros((1, 8, 8, 1)))


def test_wrong_inputs_are_refused():
  with pytest.raises(TypeError, match="a Linen model is converted by jpq_jax.searchable"):
    jpq.nnx_searchable(nn.Dense(3), jnp.zeros((1, 4)))
  with pytest.raises(TypeError, match="NnxTinyNet is a Flax NNX module.*jpq_jax.nnx_searchable"):
    jpq.searchable(NnxTinyNet(rngs=nnx.Rngs(0)), jnp.zeros((1, 8, 8, 1)))
  m = jpq.nnx_searchable(NnxTinyNet(rngs=nnx.Rngs(0)), jnp.zeros((1, 8, 8, 1)))
  with pytest.raises(TypeError, match="already converted"):
    jpq.nnx_searchable(m, jnp.zeros((1, 8, 8, 1)))
  with pytest.raises(ValueError, match="unknown collections.*'bogus'"):
    jnnx.Searchable.from_variables(m.net, {"params": {}, "bogus": {}})
  with pytest.raises(ValueError, match="does not match the NNX model|no value at"):
    jnnx.float_variables_from_state(m.net, {"stem": {"kernel": np.zeros((3, 3, 1, 8))}})


class _TrainArg(nnx.Module):
  """Mode passed as arguments, as some NNX users write it, instead of model.train()/eval()."""

  def __init__(self, rngs):
    self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(4, rngs=rngs)
    self.drop = nnx.Dropout(0.5, rngs=rngs)
    self.head = nnx.Linear(4, 3, rngs=rngs)

  def __call__(self, x, train: bool = False):
    h = nnx.relu(self.bn(self.conv(x), use_running_average=not train))
    h = self.drop(h, deterministic=not train)
    return self.head(h.mean(axis=(1, 2)))


def test_mode_arguments_of_nnx_layers_are_left_to_the_ctx():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 8, 8, 1))
  user = _TrainArg(nnx.Rngs(0))
  _perturb_bn(user, jax.random.PRNGKey(1))
  m = jpq.nnx_searchable(user, x)
  assert [l.name for l in m.table().layers] == ["conv", "head"]
  np.testing.assert_allclose(m(x, jpq.Ctx.float()).value, user(x), rtol=1e-5, atol=1e-6)
