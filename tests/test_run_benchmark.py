"""experiments/run_benchmark.py: the configs of every run of a protocol (no training here)."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def rb():
  spec = importlib.util.spec_from_file_location(
      "run_benchmark", os.path.join(ROOT, "experiments", "run_benchmark.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_cpu_protocol_runs_and_settings(rb):
  """``cpu`` is the sixth version: every run, the split of the 15 epochs after the warm-up, the
  selection window, the cosine last phase, the fixed runs' equal budget."""
  assert rb.PROTOCOLS["cpu"] is rb.CPU_V6_PROTOCOL is rb.PROTOCOLS["cpu_v6"]
  cfgs = rb.run_configs("cifar10_resnet8", "cpu", "/data/c10.zip")
  assert list(cfgs) == list(rb.CPU_PROTOCOL["runs"])
  j = cfgs["joint"]
  assert j.method == "joint" and tuple(j.sweep.lambdas) == rb.CPU_PROTOCOL["lambdas"]
  assert j.data.data_dir == "/data/c10.zip"
  assert j.data.options.train_size == rb.CPU_PROTOCOL["data"]["train_size"]
  assert (j.search.epochs, j.finetune.epochs) == (6, 9)
  assert j.finetune.schedule.kind == "cosine" and j.search.schedule.kind == "exp"
  assert j.pit.search.epochs == 6 and j.pit.finetune.epochs == 9
  for r, bits in (("w8a8", (8, 8)), ("w4a8", (4, 8)), ("w2a8", (2, 8))):
    assert cfgs[r].method == "fixed" and tuple(cfgs[r].fixed_bits) == bits
    # The same budget as the joint search after the warm-up: search + fine-tune epochs.
    assert cfgs[r].search.epochs == rb.CPU_PROTOCOL["fixed_search_epochs"] == 15
    assert cfgs[r].search.schedule.kind == "cosine"
  assert cfgs["pit_mixprec"].pit.strength == rb.CPU_PROTOCOL["pit_strength"]
  # Search phases select their last epoch, fine-tuning phases their best validation epoch of the
  # last four, fixed runs keep the reference rule.
  from jpq_jax import train as T  # pylint: disable=import-outside-toplevel
  for r in ("joint", "pit_mixprec"):
    c = cfgs[r]
    assert T.earlystop_start(c.search.epochs, c.train.earlystop_start) == c.search.epochs - 2
    assert T.earlystop_start(c.pit.search.epochs, c.train.earlystop_start) == c.pit.search.epochs - 2
  assert cfgs["w8a8"].train.earlystop_start == 20
  assert len({c.name for c in cfgs.values()}) == len(cfgs)
  assert {c.sweep.xla_options for c in cfgs.values()} == {"auto"}


def test_cpu_v2_protocol_keeps_its_settings(rb):
  """The second version (its runs in experiments/results/cifar10_cpu/v2_*) stays as it ran."""
  from jpq_jax import train as T  # pylint: disable=import-outside-toplevel
  cfgs = rb.run_configs("cifar10_resnet8", "cpu_v2", "")
  j = cfgs["joint"]
  assert (j.search.epochs, j.finetune.epochs, j.pit.search.epochs) == (10, 5, 10)
  assert j.finetune.schedule.kind == "exp" and cfgs["w8a8"].search.schedule.kind == "exp"
  assert cfgs["w8a8"].pit.search.epochs == 8
  assert T.earlystop_start(j.finetune.epochs, j.train.earlystop_start) == -1


def test_code_path_options_reach_every_run(rb):
  cfgs = rb.run_configs("cifar10_resnet8", "cpu", "", extra_runs=("joint_mpic",),
                        xla_options="default", activation_mixture="copies")
  assert {c.sweep.xla_options for c in cfgs.values()} == {"default"}
  assert {c.model.activation_mixture for c in cfgs.values()} == {"copies"}


def test_hardware_runs_rescale_lambdas(rb):
  cfgs = rb.run_configs("cifar10_resnet8", "cpu", "", extra_runs=("joint_mpic", "joint_ne16"))
  scale = rb.all8_costs(cfgs["joint"])
  # The published all-8-bit ResNet-8 figures (METHOD.md; tests/test_costs.py).
  assert scale["size"] == pytest.approx(618880)
  assert scale["ne16"] == pytest.approx(155241)
  for cost in ("mpic", "ne16"):
    c = cfgs[f"joint_{cost}"]
    assert c.search.cost == cost and c.sweep.pareto_cost == cost
    want = [l * scale["size"] / scale[cost] for l in rb.CPU_PROTOCOL["hw_lambdas"][cost]]
    assert list(c.sweep.lambdas) == pytest.approx(want)
    # lambda * cost of the all-8-bit net is the same as with the size cost
    assert c.sweep.lambdas[0] * scale[cost] == pytest.approx(
        rb.CPU_PROTOCOL["hw_lambdas"][cost][0] * scale["size"])


def test_unknown_run(rb):
  with pytest.raises(ValueError, match="unknown run"):
    rb.run_configs("cifar10_resnet8", "cpu", "", extra_runs=("jiont",))


def test_keepalive_run_is_joint_with_one_kept_channel(rb):
  """The named improvement's run differs from ``joint`` only by ``model.keep_alive``."""
  for protocol in ("cpu_v1", "full"):
    assert "joint_keepalive" not in rb.run_configs("cifar10_resnet8", protocol, "")
    cfgs = rb.run_configs("cifar10_resnet8", protocol, "", extra_runs=("joint_keepalive",))
    j, k = cfgs["joint"].to_dict(), cfgs["joint_keepalive"].to_dict()
    assert k["model"].pop("keep_alive") == 1 and j["model"].pop("keep_alive") == 0
    assert k.pop("name").endswith("joint_keepalive") and j.pop("name").endswith("_joint")
    assert k == j


def test_cpu_protocol_v2_settings_seed_and_overrides(rb):
  """The CPU protocol's named options reach the searching runs only; --seed and --set apply to
  every run; the first CPU protocol stays available unchanged (reference semantics)."""
  from jpq_jax import sweep  # pylint: disable=import-outside-toplevel
  cfgs = rb.run_configs("cifar10_resnet8", "cpu_v2", "", seed=15,
                        overrides=rb.parse_overrides(["train.eval_batch_size=128"]))
  for r, c in cfgs.items():
    sweep.validate_config(c)
    assert c.seed == 15 and tuple(c.sweep.seeds) == (15,) and c.train.eval_batch_size == 128
    assert c.warmup.train_size == rb.CPU_PROTOCOL["warmup_train_size"]
    searching = c.method != "fixed"
    assert c.search.incremental_strength == searching
    assert c.search.final_temperature == (0.01 if searching else 0.0)
    assert c.model.keep_alive == (1 if c.method == "joint" else 0)
  v1 = rb.run_configs("cifar10_resnet8", "cpu_v1", "")
  assert v1["joint"].search.final_temperature == 0.0 and v1["joint"].warmup.train_size == 0
  assert not v1["joint"].search.incremental_strength and v1["joint"].model.keep_alive == 0
  assert tuple(v1["joint"].sweep.lambdas) == (3.5e-6, 5e-6, 7e-6, 1e-5)
  full = rb.run_configs("cifar10_resnet8", "full", "")
  assert full["joint"].search.final_temperature == 0.0 and full["joint"].warmup.train_size == 0
  with pytest.raises(ValueError, match="no such config field"):
    rb.run_configs("cifar10_resnet8", "cpu", "", overrides={"search.nope.x": 1})
  with pytest.raises(ValueError, match="expected <field>=<value>"):
    rb.parse_overrides(["search.final_temperature"])
  assert rb.parse_overrides(["a.b=1e-6", "c=true", "d=text"]) == {"a.b": 1e-6, "c": True,
                                                                  "d": "text"}


def test_candidate_protocols_and_overrides_win_over_the_selection_window(rb):
  """cpu_v3 splits 6 + 9 epochs with a sharper start and moves the window; cpu_v4 anneals every
  method's last phase (cosine); a --set of train.earlystop_start is not overwritten by the
  protocol's window (it was before 2026-12-01)."""
  from jpq_jax import sweep  # pylint: disable=import-outside-toplevel
  from jpq_jax import train as T  # pylint: disable=import-outside-toplevel
  v3 = rb.run_configs("cifar10_resnet8", "cpu_v3", "")
  j = v3["joint"]
  assert (j.search.epochs, j.finetune.epochs, j.search.temperature) == (6, 9, 0.2)
  assert T.earlystop_start(j.search.epochs, j.train.earlystop_start) == 4  # the last search epoch
  assert v3["w8a8"].search.epochs == 15 and v3["w8a8"].search.temperature == 1.0
  v4 = rb.run_configs("cifar10_resnet8", "cpu_v4", "",
                      overrides={"train.earlystop_start": 3})
  for r, c in v4.items():
    sweep.validate_config(c)
    assert c.train.earlystop_start == 3, r
    if c.method == "fixed":
      assert c.search.schedule.kind == "cosine" and c.finetune.schedule.kind == "exp", r
    else:
      assert c.search.schedule.kind == "exp" and c.finetune.schedule.kind == "cosine", r
      assert c.pit.finetune.schedule.kind == "cosine", r
  v5 = rb.run_configs("cifar10_resnet8", "cpu_v5", "")
  j = v5["joint"]
  assert (j.search.epochs, j.finetune.epochs, j.search.temperature) == (6, 9, 1.0)
  assert j.finetune.schedule.kind == "cosine" and j.search.final_temperature == 0.01
  assert T.earlystop_start(j.search.epochs, j.train.earlystop_start) == 4
  assert v5["w8a8"].search.epochs == 15 and v5["w8a8"].search.schedule.kind == "cosine"


def test_cpu_v6_adds_a_small_lambda_sweep_of_the_same_joint_config(rb):
  """cpu_v6 is cpu_v5 plus ``joint_small``: the same config as ``joint`` but for its lambdas, so
  the two sweeps' members are the members of one sweep (the report merges them)."""
  cfgs = rb.run_configs("cifar10_resnet8", "cpu_v6", "")
  assert list(cfgs) == ["joint", "joint_small", "w8a8", "w4a8", "w2a8", "pit_mixprec"]
  j, s = cfgs["joint"].to_dict(), cfgs["joint_small"].to_dict()
  assert tuple(j["sweep"].pop("lambdas")) == rb.CPU_V5_PROTOCOL["lambdas"]
  assert tuple(s["sweep"].pop("lambdas")) == (1.6e-5, 3.2e-5)
  assert s.pop("name").endswith("joint_small") and j.pop("name").endswith("_joint")
  assert s == j
  v5 = rb.run_configs("cifar10_resnet8", "cpu_v5", "")
  for r in ("joint", "w8a8", "w2a8", "pit_mixprec"):  # everything else is v5's
    assert cfgs[r].to_dict() == v5[r].to_dict(), r
  with pytest.raises(ValueError, match="needs a protocol with small_lambdas"):
    rb.run_configs("cifar10_resnet8", "cpu_v5", "", extra_runs=("joint_small",))


def _finished(d, name, method, pts, lambdas, config=None):
  import json  # pylint: disable=import-outside-toplevel
  os.makedirs(d)
  members = [{"member": i, "lambda": lam, "failed": False, "status": "ok", "test_acc": a,
              "val_acc": a, "costs_argmax": {"size": c}}
             for i, ((c, a), lam) in enumerate(zip(pts, lambdas))]
  with open(os.path.join(d, "results.json"), "w") as f:
    json.dump({"name": name, "method": method, "pareto_cost": "size",
               "cost_units": {"size": "bits"}, "times_s": {"search": 1.0}, "members": members}, f)
  if config is not None:
    with open(os.path.join(d, "config.json"), "w") as f:
      json.dump({"config": dict(config, name=name, sweep={"lambdas": list(lambdas)})}, f)


def test_reports_merge_joint_small_into_the_joint_front(rb, tmp_path):
  """A ``joint_small`` sweep of this work directory joins the ``joint`` front borrowed from
  another one (--compare-with): one "joint" front in the report, its sweeps recorded."""
  import json  # pylint: disable=import-outside-toplevel
  cfg = {"method": "joint", "search": {"epochs": 6}}
  wd, other = tmp_path / "v6", tmp_path / "v5"
  _finished(str(other / "joint"), "j", "joint", [(600e3, 0.74), (250e3, 0.73)], (1e-6, 8e-6),
            cfg)
  _finished(str(other / "w2a8"), "w2", "fixed", [(155e3, 0.66)], (0.0,))
  _finished(str(wd / "joint_small"), "js", "joint", [(150e3, 0.70)], (1.6e-5,), cfg)
  rb.write_reports(str(wd), {"joint_small"}, {"joint": str(other / "joint"),
                                              "w2a8": str(other / "w2a8")})
  comp = json.loads((wd / "compare_size" / "compare.json").read_text())
  assert [r["name"] for r in comp["runs"]] == ["joint", "w2a8 (v5)"]
  assert comp["runs"][0]["n_points"] == 3 and len(comp["runs"][0]["merged_from"]) == 2
  # Only the small sweep's 150 kbit point reaches w2a8's accuracy below its size.
  assert comp["comparisons"][0]["headline"]["reduction"] > 0


def test_warmup_from_finds_a_warmup(rb, tmp_path):
  """--warmup-from: a warmup/ directory, a run directory or a work directory (joint first)."""
  (tmp_path / "wd" / "joint_small" / "warmup").mkdir(parents=True)
  want = str(tmp_path / "wd" / "joint_small" / "warmup")
  assert rb.find_warmup(str(tmp_path / "wd")) == want
  assert rb.find_warmup(str(tmp_path / "wd" / "joint_small")) == want
  assert rb.find_warmup(want) == want
  (tmp_path / "wd" / "joint" / "warmup").mkdir(parents=True)
  assert rb.find_warmup(str(tmp_path / "wd")) == str(tmp_path / "wd" / "joint" / "warmup")
  assert rb.find_warmup(str(tmp_path / "nothing")) is None


CIFAR_ZIP = os.path.join(ROOT, "..", "shared", "data", "cifar10-jpeg.zip")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(CIFAR_ZIP), reason="shared/data/cifar10-jpeg.zip absent")
def test_smoke_protocol_end_to_end(rb, tmp_path):
  """``--protocol smoke`` on the real CIFAR-10 copy: every run of the protocol trains from one
  shared warm-up, ``joint_small`` joins the joint front, and the size report compares it with
  every baseline; a rerun reads the finished runs back and appends its invocation."""
  import json  # pylint: disable=import-outside-toplevel
  wd = str(tmp_path / "smoke")
  argv = ["cifar10_resnet8", "--protocol", "smoke", "--data-dir", CIFAR_ZIP, "--workdir", wd]
  assert rb.main(argv) == 0
  for r in rb.SMOKE_PROTOCOL["runs"]:
    assert os.path.exists(os.path.join(wd, r, "results.json")), r
    cfg = json.load(open(os.path.join(wd, r, "config.json")))["config"]
    # One float warm-up, trained by the joint run and read by every other run.
    assert cfg["warmup"]["checkpoint"] == ("" if r == "joint" else
                                           os.path.abspath(os.path.join(wd, "joint", "warmup")))
  comp = json.load(open(os.path.join(wd, "compare_size", "compare.json")))
  names = [r["name"] for r in comp["runs"]]
  assert names[0] == "joint" and "joint_small" not in names
  assert {"w8a8", "w4a8", "w2a8", "pit_mixprec"} <= set(names)
  joint = comp["runs"][0]
  assert len(joint["merged_from"]) == 2 and joint["n_points"] + joint["failed"] == 3
  assert rb.main(argv) == 0  # finished runs are read back
  assert len(json.load(open(os.path.join(wd, "benchmark.json")))["invocations"]) == 2
