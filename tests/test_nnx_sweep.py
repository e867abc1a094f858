"""A Flax NNX model in the sweep by import path (``model.name = "userpkg.nnx_nets:NnxTinyNet"``):
the driver runs it on its Linen form, checkpoints it with Orbax, and ``restore_member`` gives back
an NNX module whose outputs are the member's fixed-mode outputs. Also the NNX user checkpoint
(``warmup.user_checkpoint``) that starts a search from the user's own NNX weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jpq_jax as jpq
from jpq_jax import checkpoint, sweep
from jpq_jax import nnx as jnnx
from jpq_jax.sweep import build
from test_sweep_helpers import scratch_dir, tiny_config
from userpkg.nnx_nets import NnxTinyNet


@pytest.fixture(scope="module")
def nnx_run():
  c = tiny_config(lambdas=(1e-5, 1e-3))
  c.model.name = "userpkg.nnx_nets:NnxTinyNet"
  c.model.kwargs = {"width": 8}
  wd = scratch_dir("jpq_test_nnx_sweep_")
  return wd, sweep.run_sweep(c, wd, progress=False)


def test_nnx_sweep_runs_and_restore_member_gives_an_nnx_module(nnx_run):
  wd, res = nnx_run
  assert len(res["members"]) == 2
  model, variables, table = jpq.restore_member(wd, 1)
  assert isinstance(model, jnnx.Searchable) and model.mode == "fixed"
  assert isinstance(model.net, jnnx.LinenNet)
  assert [l.name for l in table.layers] == ["stem", "blocks.0.dw", "blocks.0.pw", "head"]
  # The NNX module holds the member's variables, typed ...
  prec = nnx.to_pure_dict(nnx.state(model, jnnx.Precision))["precision"]
  jax.tree_util.tree_map(np.testing.assert_array_equal, prec, variables["precision"])
  assert not nnx.state(model, jnnx.ArchLogits)
  # ... and computes the member's fixed-mode outputs.
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 8, 8, 1))
  got = np.asarray(model(x, jpq.Ctx.fixed()).value)
  want = np.asarray(model.net.apply(variables, x, jpq.Ctx.fixed()).value)
  np.testing.assert_array_equal(got, want)
  assert got.shape == (2, 10) and np.isfinite(got).all()
  # The member's size and test accuracy in results.json are the NNX module's.
  assert float(model.cost("size")) == pytest.approx(res["members"][1]["costs_argmax"]["size"],
                                                    rel=1e-5)
  ds = sweep.load_dataset(tiny_config())
  logits = nnx.jit(lambda m, x: m(x, jpq.Ctx.fixed()).value)(model, jnp.asarray(ds.test.x))
  acc = float(np.mean(np.argmax(np.asarray(logits), -1) == ds.test.y))
  # Batch 359 here vs padded 128 in the sweep: roundoff may flip a near-tie prediction or two.
  np.testing.assert_allclose(acc, res["members"][1]["test_acc"], atol=2.5 / len(ds.test.y))
  # jpq export restores the Linen form (as_nnx=False) and exports it.
  bundle = jpq.export.export_member(wd, 1, None)
  np.testing.assert_array_equal(np.argmax(jpq.export.run_bundle(bundle, np.asarray(x)), 1),
                                np.argmax(got, 1))


def test_nnx_user_checkpoint_gives_the_float_variables(tmp_path):
  x = jnp.zeros((1, 8, 8, 1))
  user = NnxTinyNet(width=8, rngs=nnx.Rngs(3))
  user.bn.mean[...] = user.bn.mean[...] + 0.5
  model = jpq.nnx_searchable(user, x)
  checkpoint.save_tree(str(tmp_path / "u"),
                       nnx.to_pure_dict(nnx.state(user, nnx.Any(nnx.Param, nnx.BatchStat))))
  got = build.user_float_variables(model.net, str(tmp_path / "u"))
  jax.tree_util.tree_map(np.testing.assert_array_equal, got, model.variables())
  assert float(got["batch_stats"]["stem"]["BatchNorm_0"]["mean"][0]) == 0.5
