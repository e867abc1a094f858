"""The README's custom-network example runs as written (float -> convert -> search step -> freeze)."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _example(marker: str) -> str:
  text = README.read_text()
  i = text.index(f"<!-- example: {marker}")
  m = re.search(r"```python\n(.*?)```", text[i:], re.S)
  assert m, f"no python block after the {marker} marker"
  return m.group(1)


def test_custom_network_example_runs(capsys, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # the example writes its bundle to the working directory
  ns: dict = {}
  exec(compile(_example("custom-network"), "README.md:custom-network", "exec"), ns)
  import jax
  import numpy as np
  grads = ns["grads"]
  # The search step produced gradients for weights and for the precision logits.
  assert float(sum(np.abs(np.asarray(g)).sum() for g in jax.tree_util.tree_leaves(grads[1]))) > 0
  assert ns["logits"].shape == (4, 10)
  summary = ns["fixed_vars"]["precision"]
  assert summary["g_res"]["w_bits"].shape == (8,)
  # The integer bundle reproduces the fixed-mode network.
  np.testing.assert_array_equal(np.argmax(ns["int_logits"], 1), np.argmax(np.asarray(ns["logits"]), 1))
  assert (tmp_path / "tiny_bundle" / "manifest.json").exists()
  out = capsys.readouterr().out
  assert "conv_b" in out and "g_res" in out


def test_deploy_onnx_example_runs(capsys, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  ns: dict = {}
  exec(compile(_example("custom-network"), "README.md:custom-network", "exec"), ns)
  exec(compile(_example("deploy-onnx"), "README.md:deploy-onnx", "exec"), ns)
  import numpy as np
  ref = np.asarray(ns["logits"])
  for name in ("ort_logits", "qonnx_logits"):
    np.testing.assert_allclose(ns[name], ref, atol=1e-4, err_msg=name)
  # Integer-only: exact residual sums, within a few % of the logit range of the float path.
  np.testing.assert_allclose(ns["int_only_logits"], ns["int_logits"],
                             atol=0.05 * float(np.abs(ref).max()))
  assert (tmp_path / "tiny.onnx").exists()
  assert "weight bytes" in capsys.readouterr().out


def test_custom_task_example_runs():
  from jpq_jax import tasks
  ns: dict = {}
  try:
    exec(compile(_example("custom-task"), "README.md:custom-task", "exec"), ns)
    task = tasks.get_task("huber", {"delta": 0.05})
    assert task.options == {"delta": 0.05, "target": "input"} and task.selection == "loss"
    import jax.numpy as jnp
    x = jnp.zeros((2, 4, 4, 1))
    s, n = task.loss(x + 1.0, x, jnp.zeros((2,), jnp.int32))  # |d| = 1 > delta: linear part
    assert abs(float(s / n) - 0.05 * (1 - 0.025)) < 1e-6
  finally:
    tasks.TASKS.pop("huber", None)


def test_own_model_example_runs(capsys):
  ns: dict = {}
  exec(compile(_example("own-model"), "README.md:own-model", "exec"), ns)
  import numpy as np
  table = ns["table"]
  # The residual add tied the two convs into one group; the classifier has its own.
  assert table.layer("Conv_0").w_group == table.layer("Conv_1").w_group
  assert float(ns["size"]) > 0 and ns["logits"].shape == (4, 10)
  fake = ns["net"].apply(ns["fixed_vars"], ns["x"], ns["jpq"].Ctx.fixed()).value
  np.testing.assert_allclose(ns["int_logits"], np.asarray(fake), rtol=1e-4, atol=1e-4)
  assert "Conv_1" in capsys.readouterr().out


def test_nnx_model_example_runs(capsys):
  ns: dict = {}
  exec(compile(_example("nnx-model"), "README.md:nnx-model", "exec"), ns)
  import numpy as np
  from flax import nnx
  jpq, model, fixed = ns["jpq"], ns["model"], ns["fixed"]
  table = fixed.table()
  assert table.layer("conv0").w_group == table.layer("conv1").w_group
  # Three steps moved the logits from their initial values; the optimizers kept their types apart.
  init = ns["MyNnxNet"](rngs=nnx.Rngs(0))
  start = jpq.nnx_searchable(init, ns["x"], jpq.SearchSpace()).to_search()
  moved = [bool(np.any(np.asarray(a) != np.asarray(b))) for a, b in zip(
      _leaves(model.variables()["arch"]), _leaves(start.variables()["arch"]))]
  assert any(moved)
  assert set(nnx.to_pure_dict(nnx.state(fixed, jpq.nnx.Precision))) == {"precision"}
  assert ns["logits"].shape == (4, 10)
  logits = np.asarray(ns["logits"])
  np.testing.assert_array_equal(np.argmax(ns["int_logits"], 1), np.argmax(logits, 1))
  np.testing.assert_allclose(ns["int_logits"], logits, rtol=1e-4, atol=1e-4)
  out = capsys.readouterr().out
  assert "ArchLogits" in out and "size (bits)" in out and "g_conv0" in out


def _leaves(tree):
  import jax
  return jax.tree_util.tree_leaves(tree)


def test_own_pipeline_example_runs(capsys, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # the example's sweep writes runs/own-pipeline here
  ns: dict = {}
  exec(compile(_example("own-pipeline"), "README.md:own-pipeline", "exec"), ns)
  from jpq_jax import data
  ds, results = ns["ds"], ns["results"]
  assert isinstance(ds.train, data.SourceSplit) and isinstance(ds.val, data.BatchStream)
  assert results["dataset"] == "user" and len(results["members"]) == 1
  assert 0.0 <= results["members"][0]["test_acc"] <= 1.0
  assert "test accuracy" in capsys.readouterr().out
  assert (tmp_path / "runs" / "own-pipeline" / "results.json").exists()
