"""The keep-alive improvement (``SearchSpace.keep_alive``): no group can be pruned away.

With ``keep_alive = k`` the last ``k`` output channels of every prunable group lose their 0-bit
option in every reader of the logits (layers, costs, freeze, conversion), so even a huge lambda
leaves each group at least ``k`` channels, where the reference (``k = 0``) prunes whole residual
groups and the network predicts one class (experiments/results/cifar10_cpu).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jpq_jax as jpq
import test_sweep_helpers as H
from jpq_jax import choice, sweep
from jpq_jax import train as T
from jpq_jax.models import DemoNet

X = np.random.RandomState(0).rand(4, 8, 8, 1).astype(np.float32)
PRUNABLE = ("g_res", "g_block_a", "g_down")


def _model(keep):
  return DemoNet(space=jpq.SearchSpace(keep_alive=keep), width=4)


def _prune_everything(arch, table, strength=50.0):
  """arch logits that prefer 0 bits for every channel of every prunable group."""
  arch = jax.tree_util.tree_map(jnp.asarray, arch)
  for g in table.groups:
    if g.prunable:
      node = arch
      for p in g.path:
        node = node[p]
      node["alpha_w"] = node["alpha_w"].at[g.zero_index].set(strength)
  return arch


def test_keep_alive_logits():
  a = jnp.zeros((4, 5))
  np.testing.assert_array_equal(choice.keep_alive_logits(a, 0, 0), a)  # the reference
  np.testing.assert_array_equal(choice.keep_alive_logits(a, None, 2), a)  # no 0-bit option
  np.testing.assert_array_equal(choice.keep_alive_logits(jnp.zeros((4,)), 0, 2), jnp.zeros((4,)))
  m = np.asarray(choice.keep_alive_logits(a, 1, 2))
  assert np.isneginf(m[1, 3:]).all() and (m[1, :3] == 0).all()
  assert (np.delete(m, 1, axis=0) == 0).all()
  assert np.isneginf(np.asarray(choice.keep_alive_logits(a, 1, 9))[1]).all()  # k > C: all kept
  th = np.asarray(choice.sample_theta(choice.keep_alive_logits(a, 0, 1), 1.0, train=True))
  np.testing.assert_allclose(th[:, -1], [0, 1 / 3, 1 / 3, 1 / 3], rtol=1e-6)
  np.testing.assert_allclose(th[:, 0], [0.25] * 4)


@pytest.mark.parametrize("keep", [0, 1, 3])
def test_freeze_keeps_the_last_channels(keep):
  model = _model(keep)
  fv = model.init(jax.random.PRNGKey(1), X, jpq.Ctx.float())
  table = jpq.trace_table(model, X)
  sv = jpq.to_search(model, fv, X, table=table)
  arch = _prune_everything(sv["arch"], table)
  prec = jpq.freeze(arch, table)
  for name in PRUNABLE:
    node = prec
    for p in table.group(name).path:  # a group's variables live at its module path
      node = node[p]
    bits = np.asarray(node["w_bits"])
    assert (bits[:len(bits) - keep] == 0).all() and (bits[len(bits) - keep:] > 0).all(), (name, bits)
  # Layers (training and evaluation mode, every sampling) and the costs' thetas agree.
  v = {**sv, "arch": arch}
  for ctx in (jpq.Ctx.search(1.0, train=True), jpq.Ctx.search(1.0, train=False),
              jpq.Ctx.search(0.5, train=True, sampling="gumbel", key=jax.random.PRNGKey(3))):
    th = jpq.thetas(v, table, ctx)
    for name in PRUNABLE:
      w = np.asarray(th[name].w)
      g = table.group(name)
      assert (w[g.zero_index, g.channels - keep:] == 0).all()
      if keep == 0:
        assert (w[g.zero_index] > 0.9).all()
  size = jpq.costs.get_cost("size")
  cost = float(size(table, jpq.thetas(v, table, jpq.Ctx.search(1.0, train=False))))
  fixed = float(size(table, jpq.thetas({**fv, "precision": prec}, table, jpq.Ctx.fixed())))
  assert cost == pytest.approx(fixed)
  if keep:
    assert cost > 0


def test_search_step_gradients_are_finite():
  model = _model(1)
  fv = model.init(jax.random.PRNGKey(1), X, jpq.Ctx.float())
  table = jpq.trace_table(model, X)
  sv = jpq.to_search(model, fv, X, table=table)
  sv = {**sv, "arch": _prune_everything(sv["arch"], table, 3.0)}
  tx = T.make_optimizer({"name": "adam", "lr": 1e-3, "wd": 1e-4},
                        {"name": "sgd", "lr": 1e-2, "momentum": 0.9})
  y = jnp.arange(4) % 10

  def loss(params):
    ctx = jpq.Ctx.search(jnp.float32(0.5), train=True)
    out = model.apply(params, X, ctx)
    c = jpq.costs.get_cost("size")(table, jpq.thetas(params, table, ctx))
    return optax.softmax_cross_entropy_with_integer_labels(out.value, y).mean() + 1.0 * c

  g = jax.jit(jax.grad(loss))(sv)
  assert all(np.isfinite(np.asarray(l)).all() for l in jax.tree_util.tree_leaves(g))
  ga = np.asarray(g["arch"]["g_block_a"]["alpha_w"])
  assert ga[0, -1] == 0 and np.abs(ga[0, :-1]).sum() > 0  # the masked logit learns nothing
  step = jax.jit(T.make_train_step(model, table, "search", tx, cost="size"))
  s0 = T.init_state("search", sv, tx, key=jax.random.PRNGKey(1), lam=1.0)
  s1, m = step(s0, X, y, jnp.float32(1.0), jnp.float32(1.0), jnp.float32(0.0))
  assert bool(m["ok"]) and np.isfinite(float(m["loss"]))


def test_conversion_does_not_scale_kept_channels():
  """The conversion divides by ``1 - theta_0``; a kept channel has theta_0 = 0."""
  fv = _model(0).init(jax.random.PRNGKey(1), X, jpq.Ctx.float())
  ref = jpq.to_search(_model(0), fv, X)
  kept = jpq.to_search(_model(2), fv, X)
  k_ref = np.asarray(ref["params"]["block_a"]["kernel"])
  k_kept = np.asarray(kept["params"]["block_a"]["kernel"])
  np.testing.assert_array_equal(k_kept[..., :-2], k_ref[..., :-2])
  th0 = float(jax.nn.softmax(choice.init_logits((0, 2, 4, 8)))[0])
  np.testing.assert_allclose(k_kept[..., -2:], k_ref[..., -2:] * (1.0 - th0), rtol=1e-6)


def test_sweep_member_with_keep_alive_is_not_degenerate(tmp_path):
  """Lambda 1 prunes every group of the reference (test_reliability_faults); with
  ``model.keep_alive=1`` the same member keeps a channel per group and is a valid network."""
  c = H.tiny_config(lambdas=(1.0,))
  c.warmup.checkpoint = os.path.join(H.shared_run("warm")[0], "warmup")
  c.model.keep_alive = 1
  res = sweep.run_sweep(c, str(tmp_path / "run"), progress=False)
  m = res["members"][0]
  assert m["status"] == "ok" and not m["degenerate_groups"], m["status"]
  assert m["costs_argmax"]["size"] > 0
  bad = H.tiny_config()
  bad.model.keep_alive = -1
  with pytest.raises(sweep.ConfigError, match="model.keep_alive"):
    sweep.validate_config(bad)
