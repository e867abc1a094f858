"""The paper's baselines in the sweep driver (``config.method``) and PIT (jpq_jax.pit).

Every method runs once on the tiny demo config (shared warm-up, a few steps per epoch); the runs are
cached per process (:func:`method_run`) so tests/test_compare_cli.py reuses them.
"""

import os

import jax
import numpy as np
import pytest

import test_sweep_helpers as H
from jpq_jax import checkpoint as ckpt_lib
import jpq_jax as jpq
from jpq_jax import export, pit, sweep
from jpq_jax.arch import get_path
from jpq_jax.layers import Ctx

_RUNS = {}


def method_run(method):
  """``(workdir, results)`` of ``method`` on the tiny config (run once per process)."""
  if method not in _RUNS:
    c = H.tiny_config()
    c.method = method
    c.fixed_bits = (4, 6)  # activations off the default 8 bits: restores must use them
    c.warmup.checkpoint = os.path.join(H.shared_run("warm")[0], "warmup")
    c.pit.search.epochs = 2
    c.pit.finetune.epochs = 2
    # A large alpha step so that a few steps really prune (Adam moves alpha ~lr per step).
    c.pit.search.arch_optimizer.lr = 0.25
    c.pit.strength = 1e-3
    if method == "pit":
      c.sweep.lambdas = (1e-4, 1e-3)
    wd = H.scratch_dir(f"jpq_test_{method}_")
    _RUNS[method] = (wd, sweep.run_sweep(c, wd, progress=False))
  return _RUNS[method]


@pytest.mark.parametrize("method", sweep.METHODS)
def test_method_recorded(method):
  wd, res = method_run(method)
  assert res["method"] == method
  assert all(not m["failed"] and m["test_acc"] is not None for m in res["members"])
  for f in ("results.json", "pareto.json", "config.json"):
    assert os.path.exists(os.path.join(wd, f))
  times = res["times_s"]
  assert res["train_time_s"] == pytest.approx(sum(v for p, v in times.items() if p != "warmup"))


def test_fixed_is_fixed_everywhere():
  wd, res = method_run("fixed")
  assert res["fixed_bits"] == [4, 6] and len(res["members"]) == 1  # lambda is irrelevant
  assert "finetune" not in res["times_s"]  # the duplicate fine-tuning is skipped
  m = res["members"][0]
  for l in m["layers"].values():
    assert {b: c for b, c in l["w_bits_hist"].items() if c} == {"4": l["cout"]}
    assert l["a_bits"] in (6, None)  # None: the classifier's unquantized output
  assert m["costs_argmax"]["size"] == 4 * m["costs_argmax"]["params"]
  # The standalone member is built with the method's precisions (4-bit weights, 6-bit
  # activations), so it scores what the sweep measured.
  model, variables, _ = jpq.restore_member(wd, 0)
  assert set(np.unique(np.asarray(jax.tree_util.tree_leaves(variables["precision"])[0]))) <= {4, 6}
  ds = sweep.load_dataset(H.tiny_config())
  logits = model.apply(variables, np.asarray(ds.test.x), Ctx.fixed()).value
  acc = float(np.mean(np.argmax(np.asarray(logits), -1) == ds.test.y))
  np.testing.assert_allclose(acc, m["test_acc"], atol=2.5 / len(ds.test.y))


def test_mixprec_and_layerwise():
  _, res = method_run("mixprec")
  for m in res["members"]:
    for l in m["layers"].values():
      assert l["kept"] == l["cout"] and "0" not in l["w_bits_hist"]
  _, res = method_run("layerwise")
  assert res["granularity"] == "layer"
  for m in res["members"]:
    for l in m["layers"].values():
      assert len([c for c in l["w_bits_hist"].values() if c]) == 1  # one bit-width per layer


def test_pit_masks_and_export(capsys):
  wd, res = method_run("pit")
  # The model the pit method trains: the tiny config's, weights (0, 8) (resolve_method).
  model, table, _ = sweep.build_model_from_config(
      {"model": dict(H.tiny_config().model.to_dict(), w_precisions=(0, 8))}, 10, (8, 8, 1))
  fin = ckpt_lib.load_tree(os.path.join(wd, "final"))
  x = jax.random.uniform(jax.random.PRNGKey(0), (5, 8, 8, 1))
  pruned_any = False
  for k, m in enumerate(res["members"]):
    assert m["costs_argmax"]["size"] == 32 * m["costs_argmax"]["params"]  # float weights
    assert m["costs_argmax"].get("mpic") is None  # no hardware model for a float network
    masks = {g.name: np.asarray(get_path(fin["pit_mask"], g.path)["mask"])[k]
             for g in table.groups if g.kind != "input"}
    for g in table.groups:
      if g.kind == "hidden":
        assert masks[g.name].sum() >= 1 and masks[g.name][-1] == 1  # keep-alive
      elif g.kind == "output":
        assert masks[g.name].all()  # the classifier is never pruned
    pruned_any |= any(not v.all() for v in masks.values())
    variables = jax.tree_util.tree_map(lambda a: np.asarray(a)[k],
                                       {"params": fin["params"], "batch_stats": fin["batch_stats"]})
    masked = {"params": pit.bake_masks(variables["params"], table, masks),
              "batch_stats": variables["batch_stats"]}
    y_full = model.apply(masked, x, Ctx.float(False)).value
    phys = pit.prune_physically(masked, table, masks)
    y_phys = pit.apply_pruned(model, phys, x)
    np.testing.assert_allclose(np.asarray(y_phys), np.asarray(y_full), rtol=1e-5, atol=1e-5)
    assert pit.pruned_weight_count(phys) == m["costs_argmax"]["params"]
    # The one-liner restore gives the same standalone float network.
    rmodel, rvars, _ = jpq.restore_member(wd, k)
    np.testing.assert_allclose(np.asarray(rmodel.apply(rvars, x, Ctx.float(False)).value),
                               np.asarray(y_full), rtol=1e-6, atol=1e-6)
    if not all(v.all() for v in masks.values()):
      assert pit.pruned_weight_count(phys) < table.n_weights
  assert pruned_any
  # `jpq inspect` prints a PIT member (32-bit kept channels, no hardware costs).
  from jpq_jax import cli  # pylint: disable=import-outside-toplevel
  assert cli.main(["inspect", wd, "--member", "0"]) == 0
  with pytest.raises(export.BundleError, match="float networks"):
    export.export_member(wd, 0, os.path.join(wd, "bundle"))
  out = capsys.readouterr().out
  assert "member 0" in out and "32b:" in out and "params=" in out


def test_pit_theta_ste_and_cost():
  model, table, _ = sweep.build_model_from_config(
      {"model": dict(H.tiny_config().model.to_dict(), w_precisions=(0, 8))}, 10, (8, 8, 1))
  alpha = pit.init_alpha(table)
  full = pit.params_cost(table, pit.pit_theta(alpha, table))
  assert float(full) == table.n_weights  # every channel at init
  g = jax.grad(lambda a: pit.params_cost(table, pit.binary_masks(pit.pit_theta(a, table))))(alpha)
  for grp in pit.trainable_groups(table):
    gv = np.asarray(get_path(g, grp.path)["alpha_pit"])
    assert (gv[:-1] > 0).all() and gv[-1] == 0  # STE reaches alpha; the keep-alive channel is fixed
  del model


def test_pit_precision_theta_any_precision_order():
  # Precision sets keep the user's order: the top precision's row is found, not assumed last.
  def mapped(ws):
    _, table, _ = sweep.build_model_from_config(
        {"model": dict(H.tiny_config().model.to_dict(), w_precisions=ws)}, 10, (8, 8, 1))
    theta = {g.name: np.linspace(0.1, 0.9, g.channels).astype(np.float32)
             for g in table.groups if g.kind != "input"}
    return table, pit.as_precision_theta(theta, table), pit.params_cost(table, theta)

  table, fwd, cost_fwd = mapped((0, 2, 4, 8))
  _, rev, cost_rev = mapped((8, 4, 2, 0))
  for g in table.groups:
    if g.kind == "input":
      continue
    a, b = np.asarray(fwd[g.name].w), np.asarray(rev[g.name].w)
    np.testing.assert_array_equal(a, b[::-1])  # same rows, reversed order
    np.testing.assert_allclose(a.sum(0), 1.0, rtol=1e-6)
  np.testing.assert_allclose(float(cost_fwd), float(cost_rev), rtol=1e-6)


def test_pit_mixprec_pins_and_times():
  wd, res = method_run("pit_mixprec")
  st = res["train_time_s_stages"]
  assert st["pit"] > 0 and st["mixprec"] > 0
  assert res["train_time_s"] == pytest.approx(st["pit"] + st["mixprec"])
  n = len(res["members"])
  kept = res["pit"]["kept"]
  for m in res["members"]:
    assert m["train_time_s"] == pytest.approx(st["pit"] + st["mixprec"] / n)
    for l in m["layers"].values():
      # Exactly PIT's channels survive, at a non-zero precision of (2, 4, 8).
      assert l["kept"] == kept[l["group"]]["kept"]
      assert sum(c for b, c in l["w_bits_hist"].items() if b != "0") == l["kept"]
    assert m["costs_argmax"]["params"] == res["pit"]["params"]
  assert os.path.exists(os.path.join(wd, "pit.json"))


def test_bad_method_fields():
  c = H.tiny_config()
  c.method = "nope"
  with pytest.raises(sweep.ConfigError, match="'method'"):
    sweep.validate_config(c)
  c = H.tiny_config()
  c.method = "fixed"
  c.fixed_bits = (0, 8)
  with pytest.raises(sweep.ConfigError, match="fixed_bits"):
    sweep.validate_config(c)
  c = H.tiny_config()
  c.method = "pit_mixprec"
  c.search.sampling = "gumbel"
  with pytest.raises(sweep.ConfigError, match="sampling"):
    sweep.validate_config(c)
