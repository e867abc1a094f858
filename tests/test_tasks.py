"""Tasks (jpq_jax.tasks): losses, metrics, directions, config errors; pareto/compare of a loss."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest

import test_sweep_helpers as H  # sets up the persistent compile cache first
from jpq_jax import compare, pareto, sweep, tasks, train
from jpq_jax.sweep.phases import Phase


class MeanAbsTask(tasks.Regression):
  """A user's task named by import path (``test_tasks:MeanAbsTask``): selects on the MAE."""
  name = "mean_abs"
  selection = "mae"


def _logits():
  rng = np.random.default_rng(0)
  return jnp.asarray(rng.standard_normal((6, 4)), jnp.float32), jnp.asarray([0, 1, 2, 3, 1, 0])


def test_classification_is_the_cross_entropy_and_accuracy():
  logits, y = _logits()
  x = jnp.zeros((6, 2))
  task = tasks.get_task("classification")
  s, n = task.loss(logits, x, y)
  lg = np.asarray(logits, np.float64)
  logp = lg - lg.max(-1, keepdims=True)
  logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
  ref = -np.mean(logp[np.arange(6), np.asarray(y)])
  np.testing.assert_allclose(float(s / n), ref, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(s), np.asarray(train.cross_entropy(logits, y)[0]))
  acc = float(np.mean(np.argmax(np.asarray(logits), -1) == np.asarray(y)))
  assert float(task.train_metrics(logits, x, y)["acc"]) == acc
  mask = jnp.asarray([1, 1, 1, 1, 0, 0], jnp.float32)
  out = task.finish({k: np.asarray(v) for k, v in task.eval_sums(logits, x, y, mask).items()})
  assert list(out) == ["acc", "loss"]
  np.testing.assert_allclose(out["acc"], np.mean(np.argmax(np.asarray(logits)[:4], -1)
                                                 == np.asarray(y)[:4]))
  assert task.selection == "acc" and task.metrics["acc"].higher_is_better
  assert not task.metrics["loss"].higher_is_better and task.metrics["acc"].percent


def test_classification_options_label_smoothing_and_class_weights():
  logits, y = _logits()
  x = jnp.zeros((6, 2))
  smooth = tasks.get_task("classification", {"label_smoothing": 0.1})
  np.testing.assert_array_equal(np.asarray(smooth.loss(logits, x, y)[0]),
                                np.asarray(train.cross_entropy(logits, y, None, 0.1)[0]))
  # Evaluation has no smoothing: its loss is the plain cross-entropy's.
  ev = smooth.eval_sums(logits, x, y, jnp.ones((6,)))
  np.testing.assert_allclose(float(ev["loss_sum"]), float(train.cross_entropy(logits, y)[0]))
  w = [1.0, 2.0, 0.5, 1.0]
  weighted = tasks.get_task("classification", {"class_weights": w})
  s, n = weighted.loss(logits, x, y)
  s_ref, n_ref = train.cross_entropy(logits, y, jnp.asarray(w))
  assert float(s) == float(s_ref) and float(n) == float(n_ref) == sum(w[i] for i in [0, 1, 2, 3, 1, 0])

  class DS:  # what prepare reads of a dataset
    name, num_classes, class_weights = "d", 4, np.asarray([3.0, 1.0, 1.0, 1.0], np.float32)

  bound = tasks.get_task("classification", {"class_weights": True}).prepare(DS())
  np.testing.assert_array_equal(bound.cw, DS.class_weights)
  assert bound.options == {"label_smoothing": 0.0, "class_weights": True}
  with pytest.raises(tasks.TaskError, match="2 class_weights for the 4 classes"):
    tasks.get_task("classification", {"class_weights": [1.0, 2.0]}).prepare(DS())
  with pytest.raises(tasks.TaskError, match="label_smoothing must be in"):
    tasks.get_task("classification", {"label_smoothing": 1.5})


def test_regression_and_reconstruction_mse_mae():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((5, 4, 4, 1)), jnp.float32)
  out = x + 0.5
  rec = tasks.get_task("reconstruction")
  s, n = rec.loss(out, x, jnp.zeros((5,), jnp.int32))
  np.testing.assert_allclose(float(s / n), 0.25, rtol=1e-6)
  mask = jnp.asarray([1, 1, 1, 0, 0], jnp.float32)
  sums = rec.eval_sums(out.at[3:].add(10.0), x, jnp.zeros((5,), jnp.int32), mask)  # padded rows
  m = rec.finish({k: np.asarray(v) for k, v in sums.items()})
  np.testing.assert_allclose([m["loss"], m["mae"]], [0.25, 0.5], rtol=1e-6)
  assert rec.selection == "loss" and not rec.metrics["loss"].higher_is_better
  assert rec.describe()["metrics"]["loss"] == {"label": "MSE", "higher_is_better": False,
                                               "percent": False}
  reg = tasks.get_task("regression")  # the label as a number; an (N, 1) output is squeezed
  y = jnp.asarray([0, 1, 2, 3, 4])
  s, n = reg.loss(jnp.asarray([[0.0], [1.0], [2.0], [3.0], [6.0]]), x, y)
  np.testing.assert_allclose(float(s / n), 4.0 / 5)
  with pytest.raises(ValueError, match=r"output has shape \(5, 10\) but its target \(the input\)"):
    rec.loss(jnp.zeros((5, 10)), x, y)


def test_get_task_errors_and_import_path():
  with pytest.raises(tasks.TaskError, match="unknown task 'nope'; registered"):
    tasks.get_task("nope")
  with pytest.raises(tasks.TaskError, match="cannot import module 'no_such_pkg.tasks'"):
    tasks.get_task("no_such_pkg.tasks:Mine")
  with pytest.raises(tasks.TaskError, match="module 'test_tasks' has no 'Missing'"):
    tasks.get_task("test_tasks:Missing")
  with pytest.raises(tasks.TaskError, match="does not take option 'smoothing'") as e:
    tasks.get_task("classification", {"smoothing": 0.1})
  assert e.value.option == "smoothing"
  with pytest.raises(tasks.TaskError, match="target must be 'label' or 'input'"):
    tasks.get_task("regression", {"target": "x"})
  mine = tasks.get_task("test_tasks:MeanAbsTask", {"target": "input"})
  assert mine.selection == "mae" and mine.target == "input"
  with pytest.raises(tasks.TaskError, match="already registered"):
    tasks.register_task("classification", tasks.Classification)


@pytest.mark.parametrize("over,match", [
    ({"task.name": "nope"}, "task.name"),
    ({"task.name": "no_such_pkg:T"}, "task.name"),
    ({"task.options.smoothing": 0.1}, "task.options.smoothing"),
    ({"task.options.label_smoothing": 2.0}, "task.options.label_smoothing"),
    ({"task.name": "reconstruction", "train.monitor": "acc"}, "train.monitor"),
    ({"task.name": "reconstruction", "sweep.pareto_metric": "val_acc"}, "sweep.pareto_metric"),
    ({"sweep.pareto_metric": "train_acc"}, "sweep.pareto_metric"),
    ({"task.name": "reconstruction", "train.label_smoothing": 0.1}, "train.label_smoothing"),
    ({"train.label_smoothing": 0.1, "task.options.label_smoothing": 0.2},
     "task.options.label_smoothing"),
])
def test_task_config_errors_name_the_field(over, match):
  c = H.tiny_config()
  for field, value in over.items():
    *parents, leaf = field.split(".")
    node = c
    for p in parents:
      node = node[p]
    with node.unlocked() if hasattr(node, "unlocked") else _null():
      node[leaf] = value
  with pytest.raises(sweep.ConfigError, match=match.replace(".", r"\.")):
    sweep.validate_config(c)


class _null:
  def __enter__(self):
    return self

  def __exit__(self, *a):
    return False


def test_task_configs_that_validate():
  c = H.tiny_config()
  c.sweep.pareto_metric = "test_loss"  # any <split>_<metric> of the task
  c.train.monitor = "loss"
  sweep.validate_config(c)
  c = H.tiny_config()
  c.task.name = "test_tasks:MeanAbsTask"
  c.train.monitor = "mae"
  sweep.validate_config(c)
  from jpq_jax.sweep.build import build_task, monitor_of, pareto_metric_of
  t = build_task(c)
  assert monitor_of(c, t) == "mae" and pareto_metric_of(c, t) == "val_mae"
  legacy = H.tiny_config()
  legacy.train.label_smoothing = 0.1  # a config written before tasks
  assert build_task(legacy).label_smoothing == 0.1


def test_selection_direction_of_a_lower_is_better_metric():
  ph = Phase(name="finetune", epochs=2, schedule=None, loader=None, steps=1, n=2, lams=[0.0, 0.0],
             incremental=False, monitor="mae", higher_is_better=False)
  val = {"loss": np.asarray([0.5, 0.2]), "mae": np.asarray([0.1, np.nan])}
  np.testing.assert_array_equal(ph.selection(val, np.zeros(2), None), np.float32([-0.1, -np.inf]))
  ph.monitor = "loss"  # the loss, with lambda * argmax cost in the search
  np.testing.assert_allclose(ph.selection(val, np.asarray([1.0, 0.0]), np.asarray([2.0, 5.0])),
                             [-2.5, -0.2])


# ---- pareto and compare of a lower-is-better metric -------------------------------------------------------
_REGRESSION = {"name": "regression", "options": {"target": "input"}, "selection": "loss",
               "monitor": "loss",
               "metrics": {"loss": {"label": "MSE", "higher_is_better": False, "percent": False},
                           "mae": {"label": "MAE", "higher_is_better": False, "percent": False}}}


def _results(points, name="ae"):
  ms = [{"member": k, "lambda": 10.0 ** -k, "seed": 14, "failed": False, "status": "ok",
         "costs_argmax": {"size": c}, "costs_soft": {"size": c}, "val_loss": v, "test_loss": t,
         "val_mae": v, "test_mae": t,
         "layers": {"l": {"group": "g", "cout": 4, "kept": 3, "w_bits_hist": {"0": 1, "8": 3},
                          "mean_w_bits": 8.0, "a_bits": 8}}}
        for k, (c, v, t) in enumerate(points)]
  return {"name": name, "model": "demo_ae", "dataset": "demo", "method": "joint",
          "pareto_cost": "size", "pareto_metric": "val_loss", "task": _REGRESSION,
          "cost_units": {"size": "bits"}, "members": ms}


def test_pareto_front_minimises_a_loss(tmp_path):
  res = _results([(8000, 0.10, 0.11), (4000, 0.20, 0.19), (6000, 0.30, 0.32), (2000, 0.40, 0.41)])
  front = pareto.front_of_results(res)
  assert [r["member"] for r in front] == [3, 1, 0]  # member 2 is costlier and worse than 1
  assert all(not r["higher_is_better"] for r in front) and front[0]["value"] == 0.40
  assert front[0]["val_loss"] == 0.40 and front[0]["test_loss"] == 0.41
  assert pareto.pareto_front([(1, 0.5), (2, 0.3), (3, 0.4)], higher_is_better=False) == [0, 1]
  assert pareto.metric_label(res, "test_loss") == "test MSE (lower is better)"
  assert pareto.metric_label({}, "test_acc") == "test accuracy [%]"  # older results: classification
  assert pareto.metric_label(res, "val_mae", unit=False) == "validation MAE"
  text = pareto.format_front(res)
  assert "val MSE" in text.splitlines()[0] and "chosen on validation MSE (lower is better)" in text
  assert "0.1" in text and "%" not in text
  assert "val MSE 0.1, test MSE 0.11" in pareto.format_member(res, 0)
  written = pareto.write_results(str(tmp_path), res)
  assert [r["member"] for r in written] == [3, 1, 0]
  doc = json.loads((tmp_path / "pareto.json").read_text())
  assert doc["metric"] == "val_loss" and doc["higher_is_better"] is False
  assert (tmp_path / "pareto.csv").read_text().splitlines()[0].endswith("value,val_loss,test_loss")


def test_plot_axis_labels_say_what_they_show(tmp_path, monkeypatch):
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  figs, close = [], plt.close
  monkeypatch.setattr(plt, "close", figs.append)
  res = _results([(8000, 0.10, 0.11), (4000, 0.20, 0.19)])
  pareto.plot_front(res, str(tmp_path / "p.png"))
  ax = figs[-1].axes[0]
  assert ax.get_ylabel() == "test MSE (lower is better)" and ax.get_xlabel() == "size [kB]"
  ys = sorted(y for line in ax.get_lines() for y in line.get_ydata())
  assert ys == [0.11, 0.19]  # the values, not percentages
  cls = dict(_results([(8000, 0.9, 0.8)]), task=None)
  for m in cls["members"]:
    m["val_acc"], m["test_acc"] = 0.9, 0.8
  cls["pareto_metric"] = "val_acc"
  pareto.plot_front(cls, str(tmp_path / "c.png"))
  assert figs[-1].axes[0].get_ylabel() == "test accuracy [%]"
  pareto.plot_member(res, 0, str(tmp_path / "m.png"))
  assert "1.00 kB" in figs[-1].axes[0].get_title() and "test MSE 0.11" in figs[-1].axes[0].get_title()
  for f in figs:
    close(f)


def test_compare_at_iso_loss(tmp_path):
  def run(name, points):
    d = tmp_path / name
    d.mkdir()
    (d / "results.json").write_text(json.dumps(_results(points, name)))
    return str(d)

  joint = compare.load_run(run("joint", [(1000, 0.40, 0.40), (2000, 0.20, 0.20),
                                         (4000, 0.10, 0.10)]))
  w8 = compare.load_run(run("w8a8", [(8000, 0.15, 0.15)]))
  assert joint.metric == "test_loss" and joint.select == "val_loss" and not joint.higher_is_better
  assert [p["cost"] for p in joint.front] == [1000, 2000, 4000]
  assert compare.cost_at_accuracy(joint.front, 0.5, higher_is_better=False) == 1000
  assert compare.cost_at_accuracy(joint.front, 0.05, higher_is_better=False) is None
  out = tmp_path / "cmp"
  comp = compare.write_comparison([joint, w8], str(out))
  head = comp["comparisons"][0]["headline"]
  # 0.15 is halfway between 0.20 (2000) and 0.10 (4000): the geometric mean of the costs.
  assert math.isclose(head["method_cost"], math.sqrt(2000 * 4000), rel_tol=1e-9)
  assert math.isclose(head["reduction"], 1 - math.sqrt(2000 * 4000) / 8000, rel_tol=1e-9)
  md = (out / "compare.md").read_text()
  assert "iso-MSE" in md and "best MSE" in md and "(lower is better)" in md and "0.1 |" in md
  assert comp["metric_label"] == "test MSE (lower is better)" and comp["higher_is_better"] is False
  with pytest.raises(ValueError, match="cannot compare"):
    compare.iso_accuracy(joint, compare.load_run(str(tmp_path / "w8a8"), metric="test_mae"))


def test_a_run_of_jpq_before_tasks_resumes(tmp_path):
  """Its config.json has train.monitor 'acc' and no task section: what 'auto' and the default task
  mean today, so the same config resumes it; another task does not."""
  c = H.tiny_config()
  old = json.loads(c.to_json_best_effort())
  old["train"]["monitor"] = "acc"
  old["sweep"]["pareto_metric"] = "val_acc"
  del old["task"]
  (tmp_path / "warmup").mkdir()  # something trained: the config is checked
  (tmp_path / "config.json").write_text(json.dumps({"config": old}))
  sweep.validate_config(c, str(tmp_path))
  c.task.name = "reconstruction"
  with pytest.raises(sweep.ConfigError, match="holds another run.*task.name"):
    sweep.validate_config(c, str(tmp_path))
