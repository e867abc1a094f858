"""A convolutional autoencoder searched end to end (the ``reconstruction`` task): sweep, front,
restore, export; the front is cost (x) vs the validation MSE, minimised."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import test_sweep_helpers as H  # sets up the persistent compile cache first
import jpq_jax
from jpq_jax import export, pareto, sweep
from jpq_jax.checkpoint import restore_member


@pytest.fixture(scope="module")
def ae_run():
  c = H.tiny_config(lambdas=(0.0, 3e-3))
  c.name = "tiny_ae"
  c.model.name = "demo_ae"  # the digits as their own targets
  c.task.name = "reconstruction"
  c.warmup.epochs = 1
  c.search.epochs = 2
  c.finetune.epochs = 1
  wd = H.scratch_dir("jpq_test_ae_")
  return wd, sweep.run_sweep(c, wd, progress=False)


def test_results_record_the_task_and_its_direction(ae_run):
  wd, res = ae_run
  assert res["task"]["name"] == "reconstruction" and res["task"]["monitor"] == "loss"
  assert res["task"]["metrics"]["loss"] == {"label": "MSE", "higher_is_better": False,
                                            "percent": False}
  assert res["pareto_metric"] == "val_loss"
  for m in res["members"]:
    assert m["status"] == "ok" and "val_acc" not in m and "test_acc" not in m
    assert 0 < m["val_loss"] < 1 and 0 < m["test_mae"] < 1
  recs = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  assert {"val_loss", "val_mae", "train_task"} <= set(recs[-1]) and "val_acc" not in recs[-1]


def test_front_is_cost_vs_validation_loss(ae_run, tmp_path, monkeypatch):
  wd, res = ae_run
  doc = json.load(open(os.path.join(wd, "pareto.json")))
  assert doc["metric"] == "val_loss" and doc["higher_is_better"] is False
  ok = [m for m in res["members"] if pareto.is_healthy(m)]
  # Non-dominated on (cost, val_loss), both minimised.
  expect = sorted((m for m in ok if not any(
      o["costs_argmax"]["size"] <= m["costs_argmax"]["size"] and o["val_loss"] <= m["val_loss"]
      and (o["costs_argmax"]["size"], o["val_loss"]) != (m["costs_argmax"]["size"], m["val_loss"])
      for o in ok)), key=lambda m: m["costs_argmax"]["size"])
  assert [r["member"] for r in doc["front"]] == [m["member"] for m in expect]
  assert [r["value"] for r in doc["front"]] == [m["val_loss"] for m in expect]
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  figs, close = [], plt.close
  monkeypatch.setattr(plt, "close", figs.append)
  pareto.plot_front(res, str(tmp_path / "p.png"))
  ax = figs[0].axes[0]
  assert (ax.get_xlabel(), ax.get_ylabel()) == ("size [kB]", "test MSE (lower is better)")
  close(figs[0])
  assert "val MSE" in pareto.format_front(res).splitlines()[0]


def test_restore_and_export_a_non_classifier(ae_run, tmp_path):
  wd, res = ae_run
  k = pareto.front_of_results(res)[0]["member"]
  model, variables, table = restore_member(wd, k)
  x = jnp.asarray(sweep.load_dataset(H.tiny_config()).test.x)
  with jax.default_matmul_precision("highest"):
    out = np.asarray(jax.jit(lambda v, x: model.apply(v, x, jpq_jax.Ctx.fixed()).value)(
        variables, x))
  assert out.shape == x.shape
  np.testing.assert_allclose(np.mean((out - np.asarray(x)) ** 2), res["members"][k]["test_loss"],
                             rtol=1e-4)
  bundle = export.export_member(wd, k, str(tmp_path / "bundle"))
  assert table.layer("out").cout == 1
  got = export.run_bundle(export.load_bundle(str(tmp_path / "bundle")), np.asarray(x))
  assert got.shape == out.shape and bundle.manifest["layers"]["out"]["kind"] == "conv"
  # The integer inference reproduces the fixed-mode network (a one-code flip at a floor
  # boundary may move a few pixels; see test_export's tolerance).
  close = np.abs(got - out) <= 1e-4
  assert close.mean() > 0.99 and np.abs(got - out).max() < 0.05 * (out.max() - out.min())
