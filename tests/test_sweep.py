"""Sweep driver: members match single runs, strategies agree, NaN isolation, config validation."""

import json
import os

import jax
import numpy as np
import pytest

import test_sweep_helpers as H  # sets up the persistent compile cache first
from jpq_jax import sweep


def _losses(workdir, phase="search", key="train_loss"):
  out = []
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      r = json.loads(line)
      if r["phase"] == phase:
        out.append(r[key])
  return np.asarray(out, dtype=np.float64)  # (epochs, members)


@pytest.fixture(scope="module")
def warm():
  return H.shared_run("warm")


@pytest.fixture(scope="module")
def loop3():
  return H.shared_run("loop3")


@pytest.fixture(scope="module")
def vmap3():
  return H.shared_run("vmap3")


def _arch(m):
  return {n: l["w_bits_hist"] for n, l in m["layers"].items()}


def test_members_equal_single_runs(warm, loop3, tmp_path):
  """Members of a 3-member sweep follow exactly the trajectories of single-member runs."""
  wd3, res3 = loop3
  l3 = _losses(wd3)
  c = H.tiny_config(lambdas=H.LAMBDAS[2:])
  c.warmup.checkpoint = os.path.join(warm[0], "warmup")
  single2 = (str(tmp_path / "single2"), None)
  single2 = (single2[0], sweep.run_sweep(c, single2[0], progress=False))
  for k, (wd1, res1) in ((0, warm), (2, single2)):
    np.testing.assert_allclose(_losses(wd1)[:, 0], l3[:, k], rtol=1e-6, atol=1e-7)
    m1, m3 = res1["members"][0], res3["members"][k]
    assert m1["lambda"] == m3["lambda"] == H.LAMBDAS[k]
    assert _arch(m1) == _arch(m3)
    np.testing.assert_allclose(m1["costs_argmax"]["size"], m3["costs_argmax"]["size"])
    np.testing.assert_allclose(m1["test_acc"], m3["test_acc"], atol=1e-6)


def test_vmap_equals_loop(loop3, vmap3):
  """The vmapped sweep agrees with the loop (float32 roundoff of the batched convs only; it can
  move a weight across a quantization step, so the tolerance is loose). The tiny model is barely
  trained (test accuracy ~0.2 on a small test set): a few samples flip, and loop and vmap accuracies
  of one member were measured 0.025 and 0.039 apart across library versions, hence atol 0.05."""
  np.testing.assert_allclose(_losses(vmap3[0]), _losses(loop3[0]), rtol=1e-2, atol=1e-3)
  np.testing.assert_allclose(_losses(vmap3[0], key="cost_argmax"),
                             _losses(loop3[0], key="cost_argmax"), rtol=5e-2)
  for m1, m3 in zip(loop3[1]["members"], vmap3[1]["members"]):
    np.testing.assert_allclose(m1["test_acc"], m3["test_acc"], atol=0.05)


def test_member_chunks_equal_vmap(vmap3, tmp_path):
  """``sweep.member_chunk=2``: 3 members as a chunk of 2 and a chunk of 1, each one vmapped
  program; the sweep agrees with the one-program vmap (float32 roundoff of other batch shapes)."""
  c = H.tiny_config(strategy="vmap")
  c.warmup.checkpoint = os.path.join(H.shared_run("warm")[0], "warmup")
  c.sweep.member_chunk = 2
  wd = str(tmp_path / "chunked")
  res = sweep.run_sweep(c, wd, progress=False)
  assert res["strategy"] == "vmap" and len(res["members"]) == 3
  np.testing.assert_allclose(_losses(wd), _losses(vmap3[0]), rtol=1e-2, atol=1e-3)
  for a, b in zip(res["members"], vmap3[1]["members"]):
    assert a["lambda"] == b["lambda"] and a["status"] == b["status"]
    np.testing.assert_allclose(a["test_acc"], b["test_acc"], atol=0.05)
  bad = H.tiny_config(strategy="sharded")
  bad.sweep.member_chunk = 2
  with pytest.raises(sweep.ConfigError, match="sweep.member_chunk"):
    sweep.validate_config(bad)


def test_chunked_executor_is_vmap_in_pieces():
  """The executor itself, on a toy step: chunks of 2 over 5 members give vmap's values exactly."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  step = lambda s, x, y, lam, lr, poison: (s * lr + lam * x.sum() + poison, {"loss": s + y.sum()})
  ev = lambda p, e, t, x, y, m: {"n": p * t + m.sum()}
  end = lambda s, m: s + m
  outs = []
  for chunk in (0, 2):
    ex = sweep.make_executor("vmap", step, ev, end, 5, member_chunk=chunk)
    assert isinstance(ex, sweep.ChunkedExecutor) == bool(chunk)
    ex.set_states(jnp.arange(5, dtype=jnp.float32))
    x = jnp.arange(4, dtype=jnp.float32)
    m = ex.train_step(x, x, np.arange(5, dtype=np.float32), np.float32(2.0),
                      np.ones(5, np.float32))
    e = ex.evaluate(x, x, np.ones(4, np.float32), lambda s: (s, s, s))
    ex.end_epoch(np.arange(5, dtype=np.float32))
    ex.map(lambda s: s * 3)
    outs.append((np.asarray(ex.stacked()), np.asarray(m["loss"]), np.asarray(e["n"])))
  for a, b in zip(*outs):
    np.testing.assert_array_equal(a, b)
  assert outs[1][0].shape == (5,)


def test_nan_member_isolated(warm, loop3, tmp_path):
  """A member forced to NaN is frozen and reported failed; the others are unchanged."""
  wd = str(tmp_path / "nan")
  c = H.tiny_config(strategy="loop")
  c.warmup.checkpoint = os.path.join(warm[0], "warmup")
  c.debug.nan_member = 1
  c.debug.nan_epoch = 1
  res = sweep.run_sweep(c, wd, progress=False)
  ms, ref = res["members"], loop3[1]["members"]
  assert ms[1]["failed"] and ms[1]["test_acc"] is None
  assert not ms[0]["failed"] and not ms[2]["failed"]
  l, lref = _losses(wd), _losses(loop3[0])
  for k in (0, 2):
    np.testing.assert_allclose(l[:, k], lref[:, k], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(ms[k]["test_acc"], ref[k]["test_acc"], atol=1e-6)
  with open(os.path.join(wd, "pareto.json")) as f:
    assert 1 not in [r["member"] for r in json.load(f)["front"]]
  # The failed member is not exported by mistake (the CLI's --member defaults to 0).
  from jpq_jax import cli, export
  with pytest.raises(export.BundleError, match=r"member 1 .* did not train .*front's members"):
    export.export_member(wd, 1, str(tmp_path / "b1"))
  assert cli.main(["export", wd, "--member", "1", "--out", str(tmp_path / "b1")]) == 2
  assert cli.main(["export", wd, "--member", "1", "--out", str(tmp_path / "b1"),
                   "--allow-failed"]) == 0


def test_results_files(loop3):
  wd, res = loop3
  for f in ("config.json", "metrics.jsonl", "results.json", "pareto.json", "pareto.csv",
            "pareto.png"):
    assert os.path.exists(os.path.join(wd, f)), f
  m = res["members"][0]
  assert {"size", "mpic", "ne16", "bitops"} <= set(m["costs_argmax"])
  assert set(m["costs_soft"]) == set(m["costs_argmax"])
  assert m["val_acc"] is not None and m["test_acc"] is not None
  assert all("kept" in l and "mean_w_bits" in l for l in m["layers"].values())
  with open(os.path.join(wd, "config.json")) as f:
    meta = json.load(f)
  assert meta["versions"]["jax"] and meta["config"]["sweep"]["lambdas"] == list(H.LAMBDAS)


def test_restore_member(loop3):
  """One line restores a member as a standalone fixed model with its accuracy."""
  import jax.numpy as jnp
  import jpq_jax
  from jpq_jax.checkpoint import restore_member
  wd, res = loop3
  model, variables, table = restore_member(wd, 2)
  ds = sweep.load_dataset(H.tiny_config())
  logits = model.apply(variables, jnp.asarray(ds.test.x), jpq_jax.Ctx.fixed()).value
  acc = float(np.mean(np.argmax(np.asarray(logits), -1) == ds.test.y))
  # Batch 359 here vs padded 128 in the sweep: roundoff may flip a near-tie prediction or two.
  np.testing.assert_allclose(acc, res["members"][2]["test_acc"], atol=2.5 / len(ds.test.y))
  assert set(variables) == {"params", "precision"} and table.layers
  with pytest.raises(IndexError):
    restore_member(wd, 3)


@pytest.mark.parametrize("field,value,match", [
    ("sweep.lambdas", (), "sweep.lambdas"),
    ("sweep.lambdas", (1e-5, -1.0), "sweep.lambdas"),
    ("search.cost", "nope", "search.cost"),
    ("model.w_precisions", (0, 3, 3), "model.w_precisions"),
    ("model.a_precisions", (0, 8), "model.a_precisions"),
    ("sweep.strategy", "warp", "sweep.strategy"),
    ("train.monitor", "f1", "train.monitor"),
    ("sweep.member_chunk", -2, "sweep.member_chunk"),
    ("search.arch_optimizer.lr", -1.0, "search.arch_optimizer.lr"),
    ("search.temperature_decay", -5.0, "search.temperature_decay"),
    ("search.final_temperature", 2.0, "search.final_temperature"),
    ("search.final_temperature", -0.1, "search.final_temperature"),
    ("train.patience", -1, "train.patience"),
    ("sweep.checkpoint_keep", 0, "sweep.checkpoint_keep"),
    ("warmup.train_size", -3, "warmup.train_size"),
])
def test_invalid_config_names_field(field, value, match):
  c = H.tiny_config()
  node = c
  *parents, leaf = field.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value
  with pytest.raises(sweep.ConfigError, match=match.replace(".", r"\.")):
    sweep.validate_config(c)


def test_unknown_config_field_is_refused():
  """A field the schema does not have (a typo in a config file) names itself and the known ones."""
  c = H.tiny_config()
  c.serch = {"epochs": 3}
  with pytest.raises(sweep.ConfigError, match=r"'serch'.*unknown field.*'search'"):
    sweep.validate_config(c)
  c = H.tiny_config()
  c.search.epoch = 3
  with pytest.raises(sweep.ConfigError, match=r"'search.epoch'.*known in 'search'.*'epochs'"):
    sweep.validate_config(c)
  c = H.tiny_config()
  with c.data.options.unlocked():
    c.data.options.anything = 1  # free-form: the dataset checks its own options
  sweep.validate_config(c)


def test_every_shipped_config_validates():
  """The configs under experiments/configs pass the schema (the GSC config's multistep schedule
  was refused as 'unknown field factors' by the first schema check)."""
  import glob  # pylint: disable=import-outside-toplevel
  from jpq_jax.cli import load_config  # pylint: disable=import-outside-toplevel
  paths = sorted(glob.glob(os.path.join(H.ROOT, "experiments", "configs", "*.py")))
  assert len(paths) >= 4
  for p in paths:
    sweep.validate_config(load_config(p))


@pytest.mark.parametrize("schedule,match", [
    ({"kind": "multistep", "milestones": (5,), "factor": (0.5,)}, "unknown field for a 'multistep'"),
    ({"kind": "multistep", "milestones": (5, 8), "factors": (0.5,)}, "1 factors for 2 milestones"),
    ({"kind": "step", "gamma": 0.1}, r"needs \['step_size'\]"),
    ({"kind": "poly"}, "unknown schedule 'poly'"),
    ({"kind": "exp", "gama": 0.9}, r"'search.schedule.gama'.*its fields are \['kind', 'gamma'\]"),
])
def test_schedule_fields_checked_per_kind(schedule, match):
  c = H.tiny_config()
  c.search.schedule = schedule
  with pytest.raises(sweep.ConfigError, match=match):
    sweep.validate_config(c)


def test_final_temperature_sets_the_decay():
  c = H.tiny_config()
  assert sweep.temperature_decay_of(c) == c.search.temperature_decay
  c.search.final_temperature = 0.01
  c.search.epochs = 10
  np.testing.assert_allclose(sweep.temperature_decay_of(c), np.log(100.0) / 10)
  np.testing.assert_allclose(np.exp(-10 * sweep.temperature_decay_of(c)), 0.01, rtol=1e-12)


def test_batch_not_divisible_by_devices():
  c = H.tiny_config(strategy="sharded")
  c.sweep.data_devices = 2
  c.train.batch_size = 15
  with pytest.raises(sweep.ConfigError, match=r"train\.batch_size"):
    sweep.validate_config(c, n_devices=2)


def test_workdir_of_another_run(loop3):
  c = H.tiny_config()
  c.sweep.lambdas = (1e-6,)
  with pytest.raises(sweep.ConfigError, match="another run"):
    sweep.validate_config(c, loop3[0])


def test_auto_strategy_rule():
  assert sweep.choose_strategy("auto", 1, "cpu") == "loop"
  assert sweep.choose_strategy("auto", 1, "gpu") == "vmap"
  assert sweep.choose_strategy("auto", 8, "tpu") == "sharded"
  assert sweep.choose_strategy("vmap", 1, "cpu") == "vmap"


def test_finished_sweep_rebuilds_missing_or_damaged_results(loop3, tmp_path, capsys):
  """A finished sweep whose results.json is lost or truncated gets it back by rerunning."""
  import shutil
  wd, res = loop3
  c = H.tiny_config(strategy="loop")
  c.warmup.checkpoint = os.path.join(H.shared_run("warm")[0], "warmup")
  for damage in ("missing", "truncated"):
    copy = str(tmp_path / damage)
    shutil.copytree(wd, copy)
    path = os.path.join(copy, "results.json")
    if damage == "missing":
      os.remove(path)
    else:
      with open(path, "r+") as f:
        f.truncate(300)
    again = sweep.run_sweep(c, copy, progress=False)
    assert ("is missing" if damage == "missing" else "is not valid JSON") in capsys.readouterr().err
    for a, b in zip(again["members"], res["members"]):
      assert a["lambda"] == b["lambda"] and a["costs_argmax"] == b["costs_argmax"]
      assert a["layers"] == b["layers"]
      np.testing.assert_allclose(a["test_acc"], b["test_acc"], atol=1e-9)
      np.testing.assert_allclose(a["val_acc"], b["val_acc"], atol=1e-9)
    with open(path) as f:
      assert len(json.load(f)["members"]) == len(res["members"])
    assert not [n for n in os.listdir(copy) if ".tmp" in n]  # the atomic write left no temporaries


def test_rerun_keeps_the_run_record(loop3, tmp_path, capsys):
  """Rerunning a finished sweep (or resuming one) appends to config.json's ``resumed`` list and
  keeps what the run was started with; an unreadable config.json is reported, then rewritten."""
  import shutil
  wd, _ = loop3
  c = H.tiny_config(strategy="loop")
  c.warmup.checkpoint = os.path.join(H.shared_run("warm")[0], "warmup")
  copy = str(tmp_path / "again")
  shutil.copytree(wd, copy)
  path = os.path.join(copy, "config.json")
  with open(path) as f:
    before = json.load(f)
  before["versions"]["jax"] = "0.0.1-started-with"  # as if trained by another version
  with open(path, "w") as f:
    json.dump(before, f)
  for _ in range(2):
    sweep.run_sweep(c, copy, progress=False)
  with open(path) as f:
    after = json.load(f)
  resumed = after.pop("resumed")
  assert after == before
  assert len(resumed) == 2 and all(r["versions"]["jax"] == jax.__version__ for r in resumed)
  assert all(r["strategy"] == "loop" and "argv" in r and r["time"] for r in resumed)
  with open(path, "w") as f:
    f.write('{"config": {"na')  # truncated
  sweep.run_sweep(c, copy, progress=False)
  assert "config.json is unreadable" in capsys.readouterr().err
  with open(path) as f:
    assert json.load(f)["config"]["sweep"]["lambdas"] == list(H.LAMBDAS)
