"""Pareto front extraction and result files."""

import json
import os

from jpq_jax import pareto


def test_front_basic():
  pts = [(10, 0.5), (5, 0.6), (20, 0.9), (20, 0.8), (30, 0.9), (None, 0.99), (5, 0.6), (1, 0.1)]
  assert pareto.pareto_front(pts) == [7, 1, 2]


def _results():
  ms = []
  for k, (c, a) in enumerate([(100, .9), (50, .85), (70, .8), (20, .7), (10, None)]):
    ms.append({"member": k, "lambda": 10.0 ** -k, "seed": 14, "failed": a is None,
               "status": "ok", "costs_argmax": {"size": c}, "costs_soft": {"size": c},
               "val_acc": a, "test_acc": a,
               "layers": {"l": {"group": "g", "cout": 4, "kept": 3, "w_bits_hist": {"0": 1, "8": 3},
                                "mean_w_bits": 8.0, "a_bits": 8}}})
  return {"name": "t", "model": "demo", "dataset": "demo", "pareto_cost": "size",
          "pareto_metric": "test_acc", "cost_units": {"size": "bits"}, "members": ms}


def test_write_results(tmp_path):
  front = pareto.write_results(str(tmp_path), _results())
  assert [r["member"] for r in front] == [3, 1, 0]
  for f in ("results.json", "pareto.json", "pareto.csv", "pareto.png"):
    assert os.path.getsize(tmp_path / f) > 0
  with open(tmp_path / "pareto.json") as f:
    assert len(json.load(f)["front"]) == 3
  text = pareto.format_front(_results())
  assert "3 points" in text
  assert "kept/cout" in pareto.format_member(_results(), 0)


def test_cost_default_is_the_same_everywhere(tmp_path):
  # Results that name only the search cost (no pareto_cost): the front, pareto.json, the table and
  # the plot all use it, not 'size'.
  r = _results()
  del r["pareto_cost"]
  r["search_cost"] = "mpic"
  for k, m in enumerate(r["members"]):
    m["costs_argmax"]["mpic"] = [5, 40, 30, 60, 1][k]  # a different order than size's
  assert pareto.default_cost(r) == "mpic"
  front = pareto.write_results(str(tmp_path), r)
  assert [row["member"] for row in front] == [0]
  assert {row["cost_name"] for row in front} == {"mpic"}
  with open(tmp_path / "pareto.json") as f:
    doc = json.load(f)
  assert doc["cost"] == "mpic" and doc["metric"] == "test_acc"
  assert "mpic" in pareto.format_front(r).splitlines()[0]
  assert pareto.default_cost({"members": []}) == "size"


def test_front_chosen_on_validation_reports_test():
  """The validation accuracy chooses the points (default), the test accuracy is reported beside:
  a member best on test but not on validation is not on the front."""
  res = _results()
  res.pop("pareto_metric")
  res["pareto_metric"] = "val_acc"
  res["members"][2]["val_acc"], res["members"][2]["test_acc"] = 0.95, 0.5  # 70 bits
  front = pareto.front_of_results(res)
  assert [r["member"] for r in front] == [3, 1, 2] and front[-1]["test_acc"] == 0.5
  assert all(r["metric"] == "val_acc" for r in front)
  assert "chosen on validation accuracy" in pareto.format_front(res)
  test_front = pareto.front_of_results(res, metric="test_acc")
  assert [r["member"] for r in test_front] == [3, 1, 0]
  assert "optimistic" in pareto.format_front(dict(res, pareto_metric="test_acc"))
  assert pareto.default_metric({"members": []}) == "test_acc"  # results of older jpq


def test_plots_vector_copies_and_labels(tmp_path):
  res = _results()
  pareto.plot_front(res, str(tmp_path / "p.png"))
  pareto.plot_member(res, 0, str(tmp_path / "m.png"))
  for f in ("p.png", "p.pdf", "m.png", "m.pdf"):
    assert os.path.getsize(tmp_path / f) > 1000
  assert pareto.lambda_labels([3.5e-6, 4e-6, 0.0]) == ["3.5e-06", "4e-06", "0"]
  assert len(set(pareto.lambda_labels([1.0001e-5, 1.0002e-5]))) == 2
