"""Fault injection: preemption (real SIGKILLs) and exact resume, checkpoint integrity, determinism.

Kill points are chosen deterministically with ``debug.kill_at`` (the sweep SIGKILLs itself at a
checkpoint's ``before_save`` / ``during_save`` / ``after_save``, or before a training step), plus
one kill sent from this process at a time chosen by watching the checkpoint directory. Every
interrupted run is resumed (CPU, strategy ``loop``) and must end bit for bit equal to an
uninterrupted run: ``results.json`` (less wall-clock times), ``pareto.json``, ``metrics.jsonl``
and the fine-tuned weights in ``final/``.

The default suite runs one chain of kills (each resume is killed again at the next point); the full
matrix, one fresh run per point, is ``-m slow``.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import test_sweep_helpers as H  # sets up the persistent compile cache first
from jpq_jax import checkpoint as C
from jpq_jax import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Wall-clock fields: the only ones allowed to differ between an interrupted and a clean run.
CLOCK = ("train_time_s", "sweep_time_s")


# ---- helpers --------------------------------------------------------------------------------------------
def _launch(cfg_path, workdir, *overrides):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.Popen([sys.executable, "-m", "jpq_jax.cli", "sweep", "--config", cfg_path,
                           "--workdir", workdir, "--no-progress", *overrides], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _run(cfg_path, workdir, *overrides, timeout=H.SUBPROCESS_TIMEOUT_S):
  p = _launch(cfg_path, workdir, *overrides)
  out = p.communicate(timeout=timeout)[0].decode(errors="replace")
  return p.returncode, out


def _snapshot(workdir):
  """Everything a finished run computed, without wall-clock fields."""
  with open(os.path.join(workdir, "results.json")) as f:
    res = json.load(f)
  members = [{k: v for k, v in m.items() if k not in CLOCK} for m in res["members"]]
  with open(os.path.join(workdir, "pareto.json")) as f:
    front = json.load(f)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    metrics = [json.loads(l) for l in f if l.strip()]
  n = len(members)
  model, _, sample = sweep.build_model_from_config(res_config(workdir), res["num_classes"],
                                                   tuple(res["input_shape"]))
  final = C.load_tree(os.path.join(workdir, "final"),
                      sweep.fixed_variables_template(model, sample, n))
  final = {jax.tree_util.keystr(p): np.asarray(v)
           for p, v in jax.tree_util.tree_leaves_with_path(final)}
  return {"members": members, "front": front, "metrics": metrics, "final": final}


def res_config(workdir):
  with open(os.path.join(workdir, "config.json")) as f:
    return json.load(f)["config"]


def _differences(a, b):
  """Human-readable differences between two snapshots (empty: bit-for-bit identical)."""
  out = []
  for key in ("members", "front", "metrics"):
    if a[key] != b[key]:
      if key == "members":
        for k, (x, y) in enumerate(zip(a[key], b[key])):
          out += [f"member {k} {f}: {x.get(f)!r} != {y.get(f)!r}" for f in sorted(set(x) | set(y))
                  if x.get(f) != y.get(f)]
        if len(a[key]) != len(b[key]):
          out.append("member count differs")
      else:
        out.append(f"{key} differ")
  if sorted(a["final"]) != sorted(b["final"]):
    out.append("final/ leaves differ")
  else:
    out += [f"final/{k} differs" for k in a["final"]
            if a["final"][k].tobytes() != b["final"][k].tobytes()
            or a["final"][k].dtype != b["final"][k].dtype]
  return out


@pytest.fixture(scope="module")
def cfg_path(tmp_path_factory):
  return H.write_tiny_config(tmp_path_factory.mktemp("cfg") / "tiny.py")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An uninterrupted run of the tiny config, warm-up included (in-process: same computation)."""
  wd = str(tmp_path_factory.mktemp("reference") / "run")
  sweep.run_sweep(H.tiny_config(), wd, progress=False)
  return wd, _snapshot(wd)


def _kill_and_resume(cfg_path, wd, points, figures):
  """Kill ``wd``'s run at each point in turn (each resume is killed at the next), then finish it."""
  for point in points:
    rc, out = _run(cfg_path, wd, f"debug.kill_at={point}")
    figures["tried"] += 1
    assert rc == -signal.SIGKILL, f"{point}: not killed (rc {rc})\n{out[-2000:]}"
    assert not os.path.exists(os.path.join(wd, "results.json")) or point.startswith("done"), point
    figures["killed"] += 1
  rc, out = _run(cfg_path, wd)
  assert rc == 0, out[-3000:]
  figures["resumed"] += len(points)


def _print_figures(title, f):
  print(f"\n{title}: kill points tried {f['tried']}, killed {f['killed']}, resumed "
        f"{f['resumed']}, identical {f['identical']}")


# ---- kill anywhere, resume exactly ----------------------------------------------------------------------
# tiny config: warm-up 2 epochs (checkpoint steps 1-2), search 3 (3 = initial state, 4-6),
# fine-tune 2 (7 = initial state, 8-9), done (10).
CHAIN = ("warmup:1:during_save", "search:0:before_save", "search:1:step2",
         "finetune:0:during_save")


def test_kill_chain_resumes_bit_for_bit(cfg_path, reference, tmp_path):
  """Four real SIGKILLs in one run (warm-up write, between warm-up and search, mid-epoch of the
  search, during the fine-tuning's first write), each resume killed again: the end result is the
  uninterrupted run's, bit for bit."""
  wd = str(tmp_path / "chain")
  figures = dict(tried=0, killed=0, resumed=0, identical=0)
  _kill_and_resume(cfg_path, wd, CHAIN, figures)
  diffs = _differences(_snapshot(wd), reference[1])
  figures["identical"] = len(CHAIN) if not diffs else 0
  _print_figures("kill chain", figures)
  assert not diffs, diffs[:6]


MATRIX = (
    "warmup:0:step1", "warmup:1:before_save", "warmup:1:during_save", "warmup:2:after_save",
    "search:0:before_save", "search:0:during_save", "search:1:step3", "search:2:during_save",
    "search:3:after_save", "finetune:0:before_save", "finetune:1:during_save",
    "finetune:2:after_save", "done:0:before_save", "done:0:during_save",
)


def _timed_external_kill(cfg_path, wd, step=5, delay=0.3):
  """SIGKILL from this process ``delay`` s after checkpoint ``step`` appears (mid-search)."""
  p = _launch(cfg_path, wd)
  ckdir = os.path.join(wd, "checkpoints")
  deadline = time.time() + H.SUBPROCESS_TIMEOUT_S
  while time.time() < deadline and p.poll() is None:
    if os.path.isdir(os.path.join(ckdir, str(step))):
      time.sleep(delay)
      p.send_signal(signal.SIGKILL)
      break
    time.sleep(0.02)
  p.wait()
  return p.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_kill_matrix_resumes_bit_for_bit(cfg_path, reference, tmp_path):
  """One fresh run per kill point over every phase and checkpoint stage, plus a timed external
  kill; every resumed run equals the uninterrupted one bit for bit."""
  figures = dict(tried=0, killed=0, resumed=0, identical=0)
  failures = {}
  for i, point in enumerate(MATRIX):
    wd = str(tmp_path / f"p{i}")
    _kill_and_resume(cfg_path, wd, (point,), figures)
    diffs = _differences(_snapshot(wd), reference[1])
    if diffs:
      failures[point] = diffs[:4]
    else:
      figures["identical"] += 1
  wd = str(tmp_path / "external")
  figures["tried"] += 1
  if _timed_external_kill(cfg_path, wd):
    figures["killed"] += 1
    rc, out = _run(cfg_path, wd)
    assert rc == 0, out[-3000:]
    figures["resumed"] += 1
    diffs = _differences(_snapshot(wd), reference[1])
    if diffs:
      failures["external"] = diffs[:4]
    else:
      figures["identical"] += 1
  _print_figures("kill matrix", figures)
  assert not failures, failures
  assert figures["killed"] == figures["tried"] == len(MATRIX) + 1


# ---- checkpoint integrity -------------------------------------------------------------------------------
def _damage(step_dir, how):
  """Flip a byte in (``corrupt``) or cut in half (``truncate``) the largest array file of a step."""
  files = [os.path.join(r, n) for r, _, ns in os.walk(os.path.join(step_dir, "state")) for n in ns]
  big = max(files, key=os.path.getsize)
  with open(big, "rb") as f:
    data = bytearray(f.read())
  if how == "corrupt":
    data[len(data) // 2] ^= 0xFF
  else:
    data = data[:len(data) // 2]
  with open(big, "wb") as f:
    f.write(data)


@pytest.mark.slow  # the default suite checks the same fallback in test_integrity.py
def test_damaged_latest_checkpoint_falls_back(cfg_path, reference, tmp_path):
  """A corrupted and a truncated latest checkpoint are detected (manifest checksums), moved aside
  with a warning, and the run resumes from the previous good step: the end result is unchanged."""
  wd0 = str(tmp_path / "killed")
  rc, out = _run(cfg_path, wd0, "debug.kill_at=search:2:during_save")
  assert rc == -signal.SIGKILL, out[-2000:]
  ck = os.path.join(wd0, "checkpoints")
  # Step 5 (search epoch 2) was being written: uncommitted, ignored; step 4 is the latest.
  assert C.SweepCheckpointer(ck).latest_step() == 4
  assert os.path.exists(os.path.join(ck, "4", C.MANIFEST))
  for how in ("corrupt", "truncate"):
    wd = str(tmp_path / how)
    shutil.copytree(wd0, wd)
    _damage(os.path.join(wd, "checkpoints", "4"), how)
    with pytest.raises(C.CheckpointCorruptError, match="truncated" if how == "truncate"
                       else "corrupted"):
      C.verify_manifest(os.path.join(wd, "checkpoints", "4"))
    with pytest.warns(RuntimeWarning, match=r"step 4 is damaged .*falling back to step 3"):
      sweep.run_sweep(H.tiny_config(), wd, progress=False)
    assert os.listdir(os.path.join(wd, "checkpoints_corrupt"))
    diffs = _differences(_snapshot(wd), reference[1])
    assert not diffs, (how, diffs[:6])


def test_corrupt_saved_tree_is_refused(reference, tmp_path):
  """``warmup/`` and ``final/`` (save_tree) carry a manifest too: a damaged one fails loudly."""
  final = str(tmp_path / "final")
  shutil.copytree(os.path.join(reference[0], "final"), final)
  files = [os.path.join(r, n) for r, _, ns in os.walk(final) for n in ns if n != C.MANIFEST]
  big = max(files, key=os.path.getsize)
  with open(big, "r+b") as f:
    f.truncate(os.path.getsize(big) - 1)
  with pytest.raises(C.CheckpointCorruptError, match="truncated"):
    C.load_tree(final)


def _fake_state(members=3, precisions=4, extra_leaf=False, dtype=np.float32):
  tree = {"params": {"conv": {"kernel": np.ones((members, 3, 3, 1, 8), dtype)}},
          "arch": {"g": {"w_logits": np.zeros((members, precisions, 8), np.float32)}},
          "step": np.zeros((members,), np.int32)}
  if extra_leaf:
    tree["params"]["conv2"] = {"kernel": np.ones((members, 3, 3, 8, 8), dtype)}
  return tree


@pytest.mark.parametrize("target,match", [
    (dict(members=2), r"member count: the checkpoint holds 3 members, this run has 2"),
    (dict(precisions=3), r"shape of \['arch'\]\['g'\]\['w_logits'\]: saved \[3, 4, 8\]"),
    (dict(extra_leaf=True), r"missing from the checkpoint .*conv2"),
    (dict(dtype=np.float16), r"dtype of \['params'\]\['conv'\]\['kernel'\]"),
])
def test_restore_into_other_structure_is_refused(tmp_path, target, match):
  """Restoring into another member count, precision set, model or dtype names the mismatch and
  restores nothing (sweep checkpoints and save_tree alike)."""
  ck = C.SweepCheckpointer(str(tmp_path / "ck"), async_save=False)
  ck.save(1, _fake_state(), {"phase": "search", "epoch": 0})
  ck.wait()
  assert "_tree" not in ck.meta(1)
  np.testing.assert_array_equal(ck.restore(1, _fake_state())["step"], 0)
  with pytest.raises(C.CheckpointMismatchError, match=match):
    ck.restore(1, _fake_state(**target))
  ck.close()
  C.save_tree(str(tmp_path / "tree"), _fake_state())
  with pytest.raises(C.CheckpointMismatchError, match=match):
    C.load_tree(str(tmp_path / "tree"), _fake_state(**target))


def test_restore_member_other_model_refused(reference):
  """A finished sweep's ``final/`` restored as another model / member count is refused."""
  wd = reference[0]
  cfg = res_config(wd)
  other = dict(cfg, model=dict(cfg["model"], name="resnet8"))
  model, _, sample = sweep.build_model_from_config(other, 10, (8, 8, 1))
  with pytest.raises(C.CheckpointMismatchError, match="missing from the checkpoint"):
    C.load_tree(os.path.join(wd, "final"), sweep.fixed_variables_template(model, sample, 3))
  model, _, sample = sweep.build_model_from_config(cfg, 10, (8, 8, 1))
  with pytest.raises(C.CheckpointMismatchError, match="holds 3 members, this run has 2"):
    C.load_tree(os.path.join(wd, "final"), sweep.fixed_variables_template(model, sample, 2))


# ---- determinism ----------------------------------------------------------------------------------------
def test_same_config_and_seed_same_front(reference, tmp_path):
  """Two uninterrupted runs of the same config and seed give bit-identical results and fronts
  (CPU; the resume tests above cover 'across a resume')."""
  wd = str(tmp_path / "again")
  sweep.run_sweep(H.tiny_config(), wd, progress=False)
  again = _snapshot(wd)
  assert not _differences(again, reference[1])
  assert again["front"]["front"], "empty front"
