"""Stopping a sweep and resuming it mid-epoch: signals, the mid-epoch checkpoint, test kill points.

SIGINT (Ctrl-C) or SIGTERM stops a sweep at the next training step (:class:`_StopRequest`): the
state there goes to ``checkpoints_interrupted/`` with the sums of the epoch's training metrics so
far (:class:`MidEpoch`), and :class:`SweepInterrupted` is raised; a rerun continues at that step,
bit for bit. :func:`kill_point` and :func:`signal_point` are the preemption and interruption tests'
hooks (``debug.kill_at``, ``debug.signal_at``).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from typing import Any, Dict, Optional, Tuple

import jax
import numpy as np

from jpq_jax import checkpoint as ckpt_lib
from jpq_jax.sweep.config import STOP_SIGNALS
from jpq_jax.sweep.distributed import _barrier, _saveable
from jpq_jax.sweep.executors import _to_host


class SweepInterrupted(Exception):
  """A sweep stopped by SIGINT (Ctrl-C) or SIGTERM at a step boundary, its state saved.

  Rerunning the same command (or :func:`run_sweep` with the same config and work directory)
  resumes it exactly where it stopped: the result is bit for bit that of an uninterrupted run.

  Attributes:
    phase: the phase it stopped in (``warmup``, ``search``, ``finetune``, ``pit_search``, ...).
    epoch: the epoch of that phase (0-based, as in ``metrics.jsonl``).
    step: the training steps of that epoch already done.
    signum: the signal received.
    saved: whether this point was saved (False in the PIT stages, which are not checkpointed:
      their rerun restarts them).
  """

  def __init__(self, phase: str, epoch: int, step: int, signum: int, saved: bool):
    self.phase, self.epoch, self.step, self.signum, self.saved = phase, epoch, step, signum, saved
    where = f"{phase} epoch {epoch}" + (f" step {step}" if step else "")
    how = ("rerun the same command to resume" if saved else
           f"the {phase.split('_')[0]} stage is not checkpointed: rerun the same command to "
           "restart it")
    super().__init__(f"interrupted at {where} ({signal.Signals(signum).name}); {how}")


def kill_point(cfg, phase: str, epoch: int, when: str) -> None:
  """SIGKILL this process when ``cfg.debug.kill_at`` is ``<phase>:<epoch>:<when>`` (tests only).

  A real kill at a precise point, for the preemption tests (``tests/test_reliability.py``). At a
  checkpoint, ``phase`` is the one in the checkpoint's metadata (``warmup``, ``search``,
  ``finetune``, ``done``), ``epoch`` the epochs of that phase it has finished (0: the phase's
  initial state), ``when`` one of :data:`~jpq_jax.sweep.config.KILL_WHEN` (``during_save``: the
  asynchronous write has started and is not committed yet). ``<phase>:<e>:step<i>`` kills before
  training step ``i`` of epoch ``e`` (both 0-based).

  Args:
    cfg: the sweep config (a ConfigDict); ``cfg.debug.kill_at`` empty or unset: never kill.
    phase: the current phase.
    epoch: the epoch count (see above).
    when: one of :data:`~jpq_jax.sweep.config.KILL_WHEN`, or ``step<i>``.
  """
  want = str(cfg.debug.get("kill_at", "") or "")
  if want and want == f"{phase}:{epoch}:{when}":
    sys.stdout.flush()
    sys.stderr.flush()
    # SIGKILL and not an exception: nothing (no finally, no atexit, no Orbax cleanup) may run,
    # exactly as when a scheduler preempts the job.
    os.kill(os.getpid(), signal.SIGKILL)


# Signals that stop a sweep cleanly at the next training step (SIGTERM: what schedulers of

def signal_point(cfg, phase: str, epoch: int, step: int) -> None:
  """Send this process ``cfg.debug.signal_at``'s signal before training step ``step`` (tests only).

  The signal goes through the sweep's real handler, as one from a terminal or a scheduler would;
  ``signal_at`` is ``<phase>:<epoch>:step<i>:<SIGINT|SIGTERM>``.

  Args:
    cfg: the sweep config; ``cfg.debug.signal_at`` empty or unset: never.
    phase: the current phase.
    epoch: the epoch of that phase (0-based).
    step: the training step about to run (0-based).
  """
  want = str(cfg.debug.get("signal_at", "") or "")
  if want and want.rsplit(":", 1)[0] == f"{phase}:{epoch}:step{step}":
    os.kill(os.getpid(), STOP_SIGNALS[want.rsplit(":", 1)[1]])


class _StopRequest:
  """SIGINT / SIGTERM handlers that ask the sweep to stop at the next step boundary.

  The first signal only sets :attr:`signum` (the training loop checks it before every step and
  saves a checkpoint there); a second SIGINT raises ``KeyboardInterrupt`` at once, for a user
  who does not want to wait. Installed only in the main thread of a single-process run (Python
  delivers signals to the main thread). With several processes no handler is installed (a signal
  that reaches one process only could not stop them all at the same step): SIGTERM is left to
  JAX's preemption notifier, and the processes agree on the stopping step through
  ``multihost_utils.reached_preemption_sync_point``.
  """

  def __init__(self, is_main: bool):
    self.signum: Optional[int] = None
    self.is_main = is_main
    self._previous: Dict[int, Any] = {}
    self._multi = jax.process_count() > 1
    self._steps = 0

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    if self.signum is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signum = signum
    if self.is_main:
      print(f"\njpq sweep: {signal.Signals(signum).name} received: stopping at the next training "
            "step (saving a checkpoint there; press Ctrl-C again to abort without saving)",
            file=sys.stderr, flush=True)

  def __enter__(self):
    import threading  # pylint: disable=import-outside-toplevel
    if threading.current_thread() is threading.main_thread():
      wanted = () if self._multi else (signal.SIGINT, signal.SIGTERM)
      for s in wanted:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, h in self._previous.items():
      signal.signal(s, h)
    self._previous = {}
    return False

  def requested(self) -> bool:
    """Whether to stop before the next step (the same answer on every process)."""
    if not self._multi:
      return self.signum is not None
    self._steps += 1
    try:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      if multihost_utils.reached_preemption_sync_point(self._steps):
        self.signum = self.signum or signal.SIGTERM
        return True
    except RuntimeError:  # no preemption service (jax.distributed without it): never
      pass
    return False


class MidEpoch:
  """The mid-epoch checkpoint of an interrupted run (``<workdir>/checkpoints_interrupted``).

  Attributes:
    point: where a resumed run continues (``phase``, ``epoch``, ``step`` and the ``sums`` of the
      epoch's training metrics so far), until the phase's loop takes it; None when not resuming
      mid-epoch.
    checkpoint: ``(checkpointer, step)`` of the saved state, until the driver restores it.
  """

  def __init__(self, workdir: str, is_main: bool):
    self.dir = os.path.join(workdir, "checkpoints_interrupted")
    self.is_main = is_main
    self.point: Optional[Dict[str, Any]] = None
    self.checkpoint: Optional[Tuple[Any, int]] = None

  def drop(self) -> None:
    """Delete the mid-epoch checkpoint (an epoch checkpoint newer than it was saved), unless it is
    still to be restored."""
    if self.is_main and self.checkpoint is None and os.path.isdir(self.dir):
      shutil.rmtree(self.dir, ignore_errors=True)

  def take_checkpoint(self) -> Optional[Tuple[Any, int]]:
    """``(checkpointer, step)`` of the state to restore (once; the caller closes it), or None."""
    ck, self.checkpoint = self.checkpoint, None
    return ck

  def take_point(self, phase: str, epoch: int) -> Optional[Dict[str, Any]]:
    """The resume point if it is in ``phase`` at ``epoch`` (once), else None."""
    point = self.point
    if point is not None and point["phase"] == phase and point["epoch"] == epoch:
      self.point = None
      return point
    return None

  def save_and_raise(self, stop: "_StopRequest", ckpt, phase, ex, epoch, step, sums, meta,
                     t_phase, save):
    """Save the state before training step ``step`` of ``epoch``, then raise SweepInterrupted.

    The state goes to ``checkpoints_interrupted/`` (not among the epoch checkpoints, whose steps
    count epochs), with the epoch checkpoint it continues from, the step, and the sums of the
    epoch's training metrics so far; the epoch checkpoints are untouched, so a kill during this
    save loses only the partial epoch. At step 0 the state is the last epoch checkpoint's and
    nothing more is saved.

    Args:
      stop: the stop request (its signal is reported).
      ckpt: the run's epoch checkpointer (:class:`jpq_jax.checkpoint.SweepCheckpointer`).
      phase, ex, epoch, step: the phase, its executor, the epoch and the step about to run.
      sums: the sums of the epoch's training metrics so far (None at step 0).
      meta: the checkpoint metadata of the phase; ``t_phase``: when its time was last counted.
      save: whether this phase is checkpointed (False in the PIT stages).

    Raises:
      SweepInterrupted: always.
    """
    signum = stop.signum or signal.SIGTERM
    if save and step > 0:
      ckpt.wait()  # the epoch checkpoint this state continues from is committed first
      times = dict(meta.get("times", {}))
      times[phase] = times.get(phase, 0.0) + time.perf_counter() - t_phase
      host = _to_host(sums) if sums is not None else {}
      info = {"phase": phase, "epoch": int(epoch), "step": int(step),
              "resume_from": ckpt.latest_step(),
              # float32 bytes, not JSON numbers: exact, and NaN/inf (a failed member) survive.
              "sums": {k: [np.asarray(v, np.float32).tobytes().hex(), list(np.shape(v))]
                       for k, v in host.items()}}
      self.drop()
      _barrier("jpq_interrupt_save")
      ick = ckpt_lib.SweepCheckpointer(self.dir, keep=1, async_save=False)
      try:
        ick.save(int(step), _saveable(ex.stacked()), dict(meta, times=times, interrupted=info))
      finally:
        ick.close()
    raise SweepInterrupted(phase, epoch, step, signum, saved=bool(save))

  def find(self, step: Optional[int], meta: Optional[Dict[str, Any]], times: Dict[str, Any]
           ) -> Optional[Dict[str, Any]]:
    """The mid-epoch state of an interrupted run that continues epoch checkpoint ``step``, if any.

    Sets :attr:`point` and :attr:`checkpoint`; a stale or damaged one (the run went on past it, or
    a kill during its save) is ignored with a note.

    Args:
      step: the latest epoch checkpoint (None: none).
      meta: its metadata.
      times: the run's phase times so far.

    Returns:
      The phase times saved with the mid-epoch state (``times`` when it has none), or None when
      there is no usable mid-epoch state.
    """
    if not os.path.isdir(self.dir):
      return None
    try:
      ick = ckpt_lib.SweepCheckpointer(self.dir, keep=1, async_save=False)
    except ckpt_lib.CheckpointCorruptError as e:
      if self.is_main:
        print(f"jpq sweep: ignoring the damaged mid-epoch checkpoint ({e}); resuming from the "
              "last epoch checkpoint", file=sys.stderr)
      return None
    ist = ick.latest_step()
    info = (ick.meta(ist) or {}).get("interrupted") if ist is not None else None
    phase = (meta or {}).get("phase", "warmup")
    if (not info or info.get("resume_from") != step or info.get("phase") != phase
        or info.get("epoch") != int((meta or {}).get("epoch", 0))):
      ick.close()
      return None
    sums = {k: np.frombuffer(bytes.fromhex(h), np.float32).reshape(shape)
            for k, (h, shape) in info["sums"].items()}
    self.point = dict(info, sums=sums)
    self.checkpoint = (ick, ist)
    return ick.meta(ist).get("times", times)
