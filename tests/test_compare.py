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


def _write_sweep(tmp, name, pts, lambdas, config):
  """A finished sweep with lambdas and a config.json (``pts``: (size bits, val acc, test acc))."""
  d = tmp / name
  d.mkdir()
  members = [{"member": i, "lambda": lam, "failed": False, "status": "ok", "test_acc": t,
              "val_acc": v, "costs_argmax": {"size": c}}
             for i, ((c, v, t), lam) in enumerate(zip(pts, lambdas))]
  (d / "results.json").write_text(json.dumps({
      "name": name, "method": "joint", "pareto_cost": "size", "cost_units": {"size": "bits"},
      "times_s": {"search": 10.0, "finetune": 5.0}, "members": members}))
  cfg = json.loads(json.dumps(config))
  cfg["name"], cfg["sweep"]["lambdas"] = name, list(lambdas)
  (d / "config.json").write_text(json.dumps({"config": cfg}))
  return str(d)


def test_merge_runs_reads_two_sweeps_as_one_front(tmp_path):
  """A sweep extended later with larger lambdas: one front, the union of the members; the small
  end then reaches a cheap baseline's accuracy that the first sweep alone did not."""
  cfg = {"method": "joint", "search": {"epochs": 6},
         "sweep": {"seeds": [14], "pareto_metric": "val_acc"}, "warmup": {"checkpoint": "/a/warmup"}}
  big = _write_sweep(tmp_path, "joint", [(8000, 0.86, 0.85), (4000, 0.85, 0.84)], (1e-6, 2e-6),
                     cfg)
  # A warm-up read from elsewhere and the sweep's own front metric ("auto" since the tasks,
  # "val_acc" before) may differ: the comparison chooses fronts on its own `select`.
  cfg_b = dict(cfg, warmup={"checkpoint": "/b/warmup"},
               sweep={"seeds": [14], "pareto_metric": "auto"})
  small = _write_sweep(tmp_path, "joint_small", [(1500, 0.80, 0.79), (900, 0.60, 0.61)],
                       (1.6e-5, 3.2e-5), cfg_b)
  w2 = _write_run(tmp_path, "w2a8", [(2000, 0.70)])
  merged = compare.merge_runs([compare.load_run(big), compare.load_run(small)], name="joint")
  assert merged.name == "joint" and len(merged.points) == 4
  assert [p["cost"] for p in merged.front] == [900, 1500, 4000, 8000]
  assert {p["run"] for p in merged.points} == {"joint", "joint_small"}
  assert merged.train_time_s == 30.0 and merged.times == {"search": 20.0, "finetune": 10.0}
  alone = compare.iso_accuracy(compare.load_run(big), compare.load_run(w2))
  both = compare.iso_accuracy(merged, compare.load_run(w2))
  assert alone["headline"]["reduction"] == 1 - 4000 / 2000  # the cheapest point of the big sweep
  assert both["headline"]["reduction"] > 0  # interpolated between 900 (61%) and 1500 (79%)
  comp = compare.compare_runs([merged, compare.load_run(w2)])
  assert comp["runs"][0]["merged_from"] == [big, small]


def test_merge_runs_refuses_other_configs_and_repeated_lambdas(tmp_path):
  cfg = {"method": "joint", "search": {"epochs": 6}, "sweep": {"seeds": [14]}}
  a = compare.load_run(_write_sweep(tmp_path, "a", [(8000, 0.86, 0.85)], (1e-6,), cfg))
  other = dict(cfg, search={"epochs": 10})
  b = compare.load_run(_write_sweep(tmp_path, "b", [(900, 0.6, 0.6)], (1.6e-5,), other))
  with pytest.raises(ValueError, match="differ in search.epochs"):
    compare.merge_runs([a, b])
  c = compare.load_run(_write_sweep(tmp_path, "c", [(7000, 0.8, 0.8)], (1e-6,), cfg))
  with pytest.raises(ValueError, match="lambda 1e-06 is trained by 'a' and 'c'"):
    compare.merge_runs([a, c])
  with pytest.raises(ValueError, match="no run"):
    compare.merge_runs([])
