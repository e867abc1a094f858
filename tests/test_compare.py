"""Front comparison and cost reduction at iso-accuracy (jpq_jax.compare)."""

import json
import math
import os

import pytest

from jpq_jax import compare


def _write_run(tmp, name, pts, failed=(), times=None):
  d = tmp / name
  d.mkdir()
  members = [{"member": i, "lambda": 0.0, "failed": False, "status": "ok", "test_acc": a,
              "val_acc": a, "costs_argmax": {"size": c}} for i, (c, a) in enumerate(pts)]
  for c, a in failed:
    members.append({"member": len(members), "failed": True, "status": "failed", "test_acc": a,
                    "val_acc": a, "costs_argmax": {"size": c}})
  (d / "results.json").write_text(json.dumps({
      "name": name, "pareto_cost": "size", "cost_units": {"size": "bits"},
      "times_s": times or {"search": 10.0, "finetune": 5.0}, "members": members}))
  return str(d)


def test_front_and_interpolation():
  pts = [{"cost": 100, "accuracy": 0.5}, {"cost": 400, "accuracy": 0.9},
         {"cost": 300, "accuracy": 0.4}, {"cost": 200, "accuracy": 0.7}]
  front = compare.pareto_front(pts)
  assert [p["cost"] for p in front] == [100, 200, 400]
  assert compare.cost_at_accuracy(front, 0.45) == 100
  # Halfway between 200 (0.7) and 400 (0.9) in accuracy: geometric mean of the costs.
  assert math.isclose(compare.cost_at_accuracy(front, 0.8), math.sqrt(200 * 400), rel_tol=1e-12)
  assert compare.cost_at_accuracy(front, 0.95) is None


def test_iso_accuracy_reports_and_files(tmp_path):
  joint = _write_run(tmp_path, "joint", [(1000, 0.80), (2000, 0.85), (4000, 0.88)],
                     failed=[(10, 0.99)])
  w8 = _write_run(tmp_path, "w8a8", [(8000, 0.86)], times={"search": 30.0})
  w2 = _write_run(tmp_path, "w2a8", [(2000, 0.70)])
  runs = [compare.load_run(p) for p in (joint, w8, w2)]
  assert runs[0].failed == 1  # the failed member is left out of the front
  out = tmp_path / "cmp"
  comp = compare.write_comparison(runs, str(out))
  by = {c["baseline"]: c for c in comp["comparisons"]}
  # At 86%: between 2000 (85%) and 4000 (88%) at t = 1/3 -> 2000 * 2^(1/3).
  expect = 2000 * 2 ** (1 / 3)
  assert math.isclose(by["w8a8"]["headline"]["method_cost"], expect, rel_tol=1e-9)
  assert math.isclose(by["w8a8"]["headline"]["reduction"], 1 - expect / 8000, rel_tol=1e-9)
  # At 70% the joint front's cheapest point (1000 bits, 80%) already suffices.
  assert math.isclose(by["w2a8"]["headline"]["reduction"], 0.5)
  for f in ("compare.md", "compare.json", "compare.png"):
    assert os.path.getsize(out / f) > 0
  md = (out / "compare.md").read_text()
  assert "w8a8 (headline)" in md and "kB" in md
  assert comp["runs"][1]["train_time_s"] == 30.0


def test_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="no finished sweep"):
    compare.load_run(str(tmp_path))
  a = compare.load_run(_write_run(tmp_path, "a", [(1, 0.5)]))
  with pytest.raises(ValueError, match="at least two"):
    compare.compare_runs([a])
  with pytest.raises(ValueError, match="cost 'ne16' not in the results"):
    compare.load_run(str(tmp_path / "a"), cost="ne16")


def test_runs_of_different_tasks_are_not_compared(tmp_path):
  runs = []
  for name, dataset in (("a", "cifar10"), ("b", "folder:/data/x")):
    d = _write_run(tmp_path, name, [(1, 0.5), (2, 0.6)])
    res = json.loads((tmp_path / name / "results.json").read_text())
    res.update(dataset=dataset, model="resnet8")
    (tmp_path / name / "results.json").write_text(json.dumps(res))
    runs.append(compare.load_run(d))
  assert runs[0].task == {"dataset": "cifar10", "model": "resnet8"}
  with pytest.raises(ValueError, match="different datasets or models"):
    compare.iso_accuracy(runs[1], runs[0])
