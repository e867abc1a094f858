"""Interruption as a first-class event: SIGINT (Ctrl-C) and SIGTERM (preemptible clusters).

The sweep runs in a subprocess (the CLI, as a user runs it) and sends itself the signal before a
chosen training step (``debug.signal_at``), so the signal goes through the real handler at a
deterministic point. The process must stop at that step boundary, save its state there, say where
it stopped and exit with 128 + the signal number; the rerun of the same command must say where it
continues and end bit for bit equal to an uninterrupted run (``test_reliability``'s snapshot:
results less wall-clock times, front, ``metrics.jsonl``, the fine-tuned weights).
"""

import os
import signal

import pytest

import test_sweep_helpers as H  # sets up the persistent compile cache first  # pylint: disable=unused-import
from test_reliability import cfg_path, reference  # pylint: disable=unused-import
from test_reliability import _differences, _run, _snapshot
from jpq_jax import sweep


def _interrupted(cfg_path, wd, point, signame):
  rc, out = _run(cfg_path, wd, f"debug.signal_at={point}:{signame}")
  return rc, out


def test_sigint_mid_search_then_sigterm_mid_finetune_resume_bit_for_bit(cfg_path, reference,
                                                                          tmp_path):
  """Ctrl-C at step 2 of search epoch 1, then SIGTERM at step 1 of fine-tune epoch 1 of the
  resumed run: both stop there with their messages and exit codes, both resumes announce the
  point, and the finished run is the uninterrupted one bit for bit."""
  wd = str(tmp_path / "run")
  rc, out = _interrupted(cfg_path, wd, "search:1:step2", "SIGINT")
  assert rc == 128 + signal.SIGINT, out[-3000:]
  assert "SIGINT received: stopping at the next training step" in out, out[-2000:]
  assert ("interrupted at search epoch 1 step 2 (SIGINT); rerun the same command to resume"
          in out), out[-2000:]
  assert "Traceback" not in out, out[-3000:]
  assert os.path.isdir(os.path.join(wd, "checkpoints_interrupted"))
  assert not os.path.exists(os.path.join(wd, "results.json"))

  rc, out = _interrupted(cfg_path, wd, "finetune:1:step1", "SIGTERM")
  assert rc == 128 + signal.SIGTERM, out[-3000:]
  assert "at search epoch 1 step 2 (saved when it was interrupted)" in out, out[-2000:]
  assert "interrupted at finetune epoch 1 step 1 (SIGTERM)" in out, out[-2000:]

  rc, out = _run(cfg_path, wd)
  assert rc == 0, out[-3000:]
  assert "at finetune epoch 1 step 1 (saved when it was interrupted)" in out, out[-2000:]
  # The mid-epoch state is dropped once the run has gone past it.
  assert not os.path.exists(os.path.join(wd, "checkpoints_interrupted"))
  diffs = _differences(_snapshot(wd), reference[1])
  assert not diffs, diffs[:6]


@pytest.mark.slow
def test_sigterm_in_first_warmup_epoch_and_at_epoch_start(cfg_path, reference, tmp_path):
  """SIGTERM before any epoch checkpoint exists (warm-up epoch 0, step 1), then at the first step
  of an epoch (nothing beyond the epoch checkpoint to save): both resume exactly."""
  wd = str(tmp_path / "run")
  rc, out = _interrupted(cfg_path, wd, "warmup:0:step1", "SIGTERM")
  assert rc == 128 + signal.SIGTERM, out[-3000:]
  assert "interrupted at warmup epoch 0 step 1 (SIGTERM)" in out, out[-2000:]
  rc, out = _interrupted(cfg_path, wd, "search:2:step0", "SIGTERM")
  assert rc == 128 + signal.SIGTERM, out[-3000:]
  assert "resuming" in out and "at warmup epoch 0 step 1" in out, out[-2000:]
  assert "interrupted at search epoch 2 (SIGTERM)" in out, out[-2000:]
  rc, out = _run(cfg_path, wd)
  assert rc == 0, out[-3000:]
  assert "at search epoch 2, from checkpoint step" in out, out[-2000:]
  diffs = _differences(_snapshot(wd), reference[1])
  assert not diffs, diffs[:6]


def test_in_process_run_raises_sweep_interrupted(tmp_path):
  """From Python, the stop is a SweepInterrupted naming the point; the handlers are restored."""
  before = signal.getsignal(signal.SIGTERM)
  c = H.tiny_config(lambdas=H.LAMBDAS[:1])
  c.warmup.checkpoint = os.path.join(H.shared_run("warm")[0], "warmup")
  c.debug.signal_at = "search:0:step3:SIGTERM"
  with pytest.raises(sweep.SweepInterrupted) as info:
    sweep.run_sweep(c, str(tmp_path / "run"), progress=False)
  e = info.value
  assert (e.phase, e.epoch, e.step, e.signum, e.saved) == ("search", 0, 3, signal.SIGTERM, True)
  assert str(e).startswith("interrupted at search epoch 0 step 3 (SIGTERM)")
  assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("bad", ["search:1:step2", "search:x:step2:SIGINT", "search:1:2:SIGINT",
                                 "search:1:step2:SIGHUP"])
def test_signal_at_validated(bad):
  c = H.tiny_config()
  c.debug.signal_at = bad
  with pytest.raises(sweep.ConfigError, match="debug.signal_at"):
    sweep.validate_config(c)


@pytest.mark.slow
def test_grain_loader_run_resumed_mid_epoch_equals_the_numpy_loaders(cfg_path, reference, tmp_path):
  """The grain loader (2 worker threads), stopped mid-epoch and resumed, ends bit for bit as the
  uninterrupted run of the numpy loader: same batches, same resume point."""
  wd = str(tmp_path / "run")
  grain = ("data.loader=grain", "data.workers=2")
  rc, out = _run(cfg_path, wd, *grain, "debug.signal_at=search:1:step2:SIGTERM")
  assert rc == 128 + signal.SIGTERM, out[-3000:]
  rc, out = _run(cfg_path, wd, *grain)
  assert rc == 0, out[-3000:]
  assert "at search epoch 1 step 2 (saved when it was interrupted)" in out, out[-2000:]
  diffs = _differences(_snapshot(wd), reference[1])
  assert not diffs, diffs[:6]
