"""Checkpoint integrity: the newest step is never trusted unverified; final/ is always rebuilt.

Each damage of a work directory killed between two saves (the cases of the integrity audit):
flipped bytes, a truncated state file, a deleted ``meta/metadata`` (with and without the step's
manifest), both kept steps truncated, a damaged or deleted ``final/``, a bundle whose checksum
field was deleted, and a disk that fills up. Each is detected, moved aside with a one-line warning
naming the step and the file, and the run finishes bit for bit as an undamaged one; when no good
step is left, one error line says so and what to do.
"""

import io
import json
import os
import shutil
import signal
import warnings

import numpy as np
import pytest

import test_sweep_helpers as H  # sets up the persistent compile cache first
# The tiny config file and the uninterrupted reference run of the reliability tests.
from test_reliability import cfg_path, reference  # pylint: disable=unused-import
from test_reliability import _differences, _run, _snapshot
from jpq_jax import checkpoint as C
from jpq_jax import cli, export, sweep


@pytest.fixture(scope="module")
def killed(cfg_path, tmp_path_factory):
  """A run SIGKILLed right after committing search epoch 2 (step 5; step 4 is the one before)."""
  wd = str(tmp_path_factory.mktemp("killed") / "run")
  rc, out = _run(cfg_path, wd, "debug.kill_at=search:2:after_save")
  assert rc == -signal.SIGKILL, out[-2000:]
  ck = os.path.join(wd, "checkpoints")
  assert sorted(int(n) for n in os.listdir(ck) if n.isdigit()) == [4, 5]
  return wd


def _state_file(step_dir):
  files = [os.path.join(r, n) for r, _, ns in os.walk(os.path.join(step_dir, "state")) for n in ns]
  return max(files, key=os.path.getsize)


def _flip16(path):
  with open(path, "rb") as f:
    data = bytearray(f.read())
  mid = len(data) // 2
  for i in range(mid, mid + 16):
    data[i] ^= 0xA5
  with open(path, "wb") as f:
    f.write(data)


def _truncate(path):
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:len(data) // 2])


def test_the_manifest_is_written_when_orbax_commits(tmp_path):
  """Orbax's own finalization writes the manifest: with nothing of jpq's waiting on the save (no
  later save, no wait, no close: a run killed during the next epoch), the step has it."""
  ck = C.SweepCheckpointer(str(tmp_path / "ck"), async_save=True)
  state = {"w": np.arange(1000, dtype=np.float32), "n": np.int32(3)}
  ck.save(1, state, {"phase": "search", "epoch": 1})
  ck.manager.wait_until_finished()  # Orbax only, not ck.wait()
  assert os.path.exists(str(tmp_path / "ck" / "1" / C.MANIFEST))
  ck.close()
  # The step's metadata also holds the checksum of every array: verifiable without a manifest.
  os.remove(str(tmp_path / "ck" / "1" / C.MANIFEST))
  C.SweepCheckpointer(str(tmp_path / "ck")).close()  # read back, verified, manifest written
  assert os.path.exists(str(tmp_path / "ck" / "1" / C.MANIFEST))


def _without_manifest(step_dir):
  os.remove(os.path.join(step_dir, C.MANIFEST))


DAMAGES = {
    "flip16_no_manifest": lambda d: (_without_manifest(d), _flip16(_state_file(d))),
    "flip16_with_manifest": lambda d: _flip16(_state_file(d)),
    "truncate_no_manifest": lambda d: (_without_manifest(d), _truncate(_state_file(d))),
    "truncate_with_manifest": lambda d: _truncate(_state_file(d)),
    "meta_deleted_no_manifest": lambda d: (_without_manifest(d),
                                           os.remove(os.path.join(d, "meta", "metadata"))),
}


# The default suite runs the silent case (a flipped bit without a manifest: only the array
# checksums can catch it) and a damaged step with its manifest; the other damages run with -m slow.
DEFAULT_DAMAGES = ("flip16_no_manifest", "truncate_with_manifest")


@pytest.mark.parametrize("how", [h if h in DEFAULT_DAMAGES else pytest.param(h, marks=pytest.mark.slow)
                                 for h in sorted(DAMAGES)])
def test_damaged_newest_step_falls_back_and_finishes_identically(killed, reference, tmp_path, how):
  wd = str(tmp_path / "run")
  shutil.copytree(killed, wd)
  DAMAGES[how](os.path.join(wd, "checkpoints", "5"))
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    sweep.run_sweep(H.tiny_config(), wd, progress=False)
  msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)
          and "damaged" in str(w.message)]
  assert len(msgs) == 1, msgs
  assert "step 5 is damaged" in msgs[0] and "falling back to step 4" in msgs[0], msgs[0]
  assert "\n" not in msgs[0]
  want = "meta/metadata" if how.startswith("meta") else "state"
  assert want in msgs[0], msgs[0]
  assert os.listdir(os.path.join(wd, "checkpoints_corrupt"))
  diffs = _differences(_snapshot(wd), reference[1])
  assert not diffs, (how, diffs[:6])


def test_no_good_step_left_is_one_clear_error(killed, tmp_path, capsys, cfg_path):
  wd = str(tmp_path / "run")
  shutil.copytree(killed, wd)
  for s in ("4", "5"):
    d = os.path.join(wd, "checkpoints", s)
    _without_manifest(d)
    _truncate(_state_file(d))
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    rc = cli.main(["sweep", "--config", cfg_path, "--workdir", wd, "--no-progress"])
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2
  assert len(err) == 1 and "no good checkpoint left" in err[0] and "remove" in err[0], err


def test_damaged_or_missing_final_is_rebuilt(reference, tmp_path, capsys):
  for how in ("truncate", "delete"):
    wd = str(tmp_path / how)
    shutil.copytree(reference[0], wd)
    final = os.path.join(wd, "final")
    if how == "truncate":
      _truncate(_state_file_final(final))
      with pytest.raises(C.CheckpointCorruptError, match="rerun `jpq sweep`"):
        export.export_member(wd, 0, str(tmp_path / f"b_{how}"))
    else:
      shutil.rmtree(final)
    capsys.readouterr()
    sweep.run_sweep(H.tiny_config(), wd, progress=False)
    err = capsys.readouterr().err
    assert "rebuilding it from checkpoint step" in err, err
    diffs = _differences(_snapshot(wd), reference[1])
    assert not diffs, (how, diffs[:6])
    export.export_member(wd, 0, str(tmp_path / f"ok_{how}"))


def _state_file_final(final):
  files = [os.path.join(r, n) for r, _, ns in os.walk(final) for n in ns if n != C.MANIFEST]
  return max(files, key=os.path.getsize)


def test_bundle_without_its_checksum_needs_the_explicit_flag(reference, tmp_path):
  path = export.export_member(reference[0], 0, str(tmp_path / "b")).save(str(tmp_path / "b"))
  mpath = os.path.join(path, export.MANIFEST)
  with open(mpath) as f:
    doc = json.load(f)
  doc.pop("manifest_sha256")
  doc["nodes"] = doc.get("nodes")  # (an edit that would otherwise go unnoticed)
  with open(mpath, "w") as f:
    json.dump(doc, f)
  with pytest.raises(export.BundleError, match="no manifest_sha256"):
    export.load_bundle(path)
  assert export.load_bundle(path, allow_unverified=True).manifest is not None


def test_disk_full_is_one_line_and_keeps_earlier_steps(tmp_path, cfg_path, capsys, monkeypatch):
  wd = str(tmp_path / "run")
  real = C.SweepCheckpointer.save
  calls = {"n": 0}

  def full(self, step, state, meta):
    calls["n"] += 1
    if calls["n"] == 4:
      cause = OSError(28, "No space left on device", os.path.join(self.directory, f"{step}.tmp"))
      raise ValueError("Tensorstore write failed: RESOURCE_EXHAUSTED [...]") from cause
    return real(self, step, state, meta)

  monkeypatch.setattr(C.SweepCheckpointer, "save", full)
  rc = cli.main(["sweep", "--config", cfg_path, "--workdir", wd, "--no-progress"])
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 1
  assert len(err) == 1 and "no space left on device" in err[0] and "checkpoints" in err[0], err
  monkeypatch.setattr(C.SweepCheckpointer, "save", real)
  assert C.SweepCheckpointer(os.path.join(wd, "checkpoints")).latest_step() == 3
  # With the debug flag, the traceback.
  monkeypatch.setenv("JPQ_TRACEBACK", "1")
  assert C.storage_error(ValueError("x")) is None
  assert "read-only" in C.storage_error(OSError(30, "Read-only file system", "/x"))


def test_torn_metrics_line_is_dropped_with_a_warning(killed, reference, tmp_path, capsys):
  """A kill during a metrics.jsonl write leaves a torn last line: the resume drops it, says so,
  and finishes bit for bit as the reference (the epoch is after the checkpoint: trained again)."""
  wd = str(tmp_path / "run")
  shutil.copytree(killed, wd)
  with open(os.path.join(wd, "metrics.jsonl"), "a") as f:
    f.write('{"phase": "search", "epoch": 2, "ckpt": 6, "lr_factor": 0.98, "tempera')
  capsys.readouterr()
  sweep.run_sweep(H.tiny_config(), wd, progress=False)
  assert "dropped 1 unreadable line" in capsys.readouterr().err
  diffs = _differences(_snapshot(wd), reference[1])
  assert not diffs, diffs[:6]


def test_finished_run_on_a_read_only_directory_reads_its_results(reference, tmp_path,
                                                                  monkeypatch, capsys):
  wd = str(tmp_path / "ro")
  shutil.copytree(reference[0], wd)
  before = {f: os.path.getmtime(os.path.join(wd, f)) for f in ("results.json", "config.json")}
  monkeypatch.setattr(sweep, "_writable", lambda d: False)
  res = sweep.run_sweep(H.tiny_config(), wd, progress=False)
  assert "is read-only" in capsys.readouterr().err
  assert len(res["members"]) == len(reference[1]["members"])
  assert before == {f: os.path.getmtime(os.path.join(wd, f)) for f in before}
  empty = str(tmp_path / "ro_empty")
  os.makedirs(empty)
  with pytest.raises(OSError, match="read-only and holds no readable finished run"):
    sweep.run_sweep(H.tiny_config(), empty, progress=False)
