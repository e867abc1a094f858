"""What a running sweep prints: the header before compiling, a bar (or a line) per epoch.

Printed to stderr by process 0 when ``progress`` is on; nothing here changes what is computed.
"""

from __future__ import annotations

import sys
import time

import jax
import numpy as np


def _cost_text(name: str, values) -> str:
  """``size 35.7-77.4 kB``: a cost's range over the members, in the unit a user reads."""
  from jpq_jax import costs as creg  # pylint: disable=import-outside-toplevel
  from jpq_jax.pareto import display_scale  # pylint: disable=import-outside-toplevel
  v = np.asarray(values, np.float64)
  v = v[np.isfinite(v)]
  if not len(v):
    return f"{name} -"
  scale, unit = display_scale(creg.cost_unit(name))
  v = v * scale
  lo, hi = float(v.min()), float(v.max())
  rng = f"{lo:.4g}" if lo == hi else f"{lo:.4g}-{hi:.4g}"
  return f"{name} {rng}{' ' + unit if unit else ''}"


class _PhaseProgress:
  """Progress of one phase: a tqdm bar on a terminal, one line per epoch otherwise (logs).

  The first training step of a phase compiles it (seconds to minutes): the bar says
  ``compiling...`` then, and its clock restarts after that step, so the ETA is that of the steps,
  not of the compilation.

  Args:
    phase: the phase name.
    epochs: the phase's epochs; ``start_epoch`` / ``start_step``: where this invocation starts.
    steps: training steps per epoch.
    enabled: whether to show anything (process 0, ``progress=True``).
    stream: where to write (default ``sys.stderr``).
  """

  def __init__(self, phase: str, epochs: int, start_epoch: int, steps: int, start_step: int,
               enabled: bool, stream=None):
    self.phase, self.epochs, self.enabled = phase, epochs, enabled
    self.stream = stream if stream is not None else sys.stderr
    self.total = max((epochs - start_epoch) * steps - start_step, 0)
    self.bar = None
    self.compiled = False
    self.t_epoch = time.perf_counter()
    if not enabled:
      return
    isatty = getattr(self.stream, "isatty", None)
    if isatty is not None and isatty():
      try:
        from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
        self.bar = tqdm(total=self.total, desc=f"{phase:8s}", dynamic_ncols=True, leave=True,
                        file=self.stream, unit="step")
      except ImportError:
        self.bar = None

  def before_step(self) -> None:
    """Call before every training step (the first one compiles)."""
    if not self.enabled or self.compiled:
      return
    self._t_compile = time.perf_counter()
    if self.bar is not None:
      self.bar.set_postfix_str("compiling...")
    else:
      print(f"{self.phase}: compiling the training step...", file=self.stream, flush=True)

  def after_step(self) -> None:
    """Call after every training step."""
    if not self.enabled:
      return
    if not self.compiled:
      self.compiled = True
      took = time.perf_counter() - self._t_compile
      if self.bar is not None:
        self.bar.reset(total=self.total)  # the rate (and ETA) of the steps, not of the compile
        self.bar.set_postfix_str(f"compiled in {took:.0f} s")
      else:
        print(f"{self.phase}: compiled ({took:.1f} s, first step included)", file=self.stream,
              flush=True)
    if self.bar is not None:
      self.bar.update(1)

  def epoch(self, epoch: int, text: str) -> None:
    """Call at the end of an epoch with its summary (units included)."""
    if not self.enabled:
      return
    now = time.perf_counter()
    if self.bar is not None:
      self.bar.set_postfix_str(text)
    else:
      print(f"{self.phase} epoch {epoch + 1}/{self.epochs} ({now - self.t_epoch:.1f} s): {text}",
            file=self.stream, flush=True)
    self.t_epoch = now

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()
      self.bar = None


def epoch_text(phase, train, val, hard_cost, flags, n: int, cost: str, metrics=None,
               monitor: str = "acc") -> str:
  """One epoch's summary over the members: ranges, with units.

  Args:
    phase: the phase.
    train, val: the epoch's training and validation metrics (``(n_pad,)`` host arrays).
    hard_cost: the argmax cost of the search's members (None in other phases).
    flags: the members' flags (:func:`jpq_jax.sweep.executors._host_flags`).
    n: the real members (the first ``n``); ``cost``: the name of the search cost.
    metrics: the task's ``{name: jpq_jax.tasks.Metric}`` (default: classification's accuracy).
    monitor: the validation metric shown (the task's own selection metric).

  Returns:
    A line such as ``train_loss 0.412-0.530, val_acc 91.2-93.0%, size 35.7-77.4 kB, T 0.84, 0/8
    failed``.
  """
  ok = ~flags["failed"][:n]

  def rng(v, fmt):
    v = np.asarray(v, np.float64)[:n][ok]
    v = v[np.isfinite(v)]
    if not len(v):
      return "-"
    lo, hi = fmt(v.min()), fmt(v.max())
    return lo if lo == hi else f"{lo}-{hi}"

  shown = monitor if monitor in val else next(iter(val))
  pct = metrics[shown].percent if metrics is not None and shown in metrics else shown == "acc"
  if pct:
    val_part = f"val_{shown} {rng(100 * np.asarray(val[shown]), lambda x: f'{x:.1f}')}%"
  else:
    val_part = f"val_{shown} {rng(val[shown], lambda x: f'{x:.4g}')}"
  parts = [f"train_loss {rng(train['loss'], lambda x: f'{x:.3f}')}", val_part]
  if hard_cost is not None:
    parts.append(_cost_text(cost, np.asarray(hard_cost)[:n][ok]))
  if phase == "search":
    parts.append(f"T {float(np.max(flags['temperature'][:n])):.3g}")
  parts.append(f"{int((~ok).sum())}/{n} failed" if n > 1 else ("failed" if not ok[0] else "ok"))
  return ", ".join(parts)


def _task_text(sw) -> str:
  """``, task reconstruction (epochs selected on val loss, lower is better)``; empty for the
  default classification."""
  task = getattr(sw, "task", None)
  if task is None or task.name == "classification":
    return ""
  from jpq_jax.sweep.build import monitor_of  # pylint: disable=import-outside-toplevel
  m = monitor_of(sw.cfg, task)
  way = "higher" if task.metrics[m].higher_is_better else "lower"
  return f", task {task.name} (epochs selected on val {m}, {way} is better)"


def header_text(sw) -> str:
  """What this invocation will run, printed before anything compiles.

  Args:
    sw: the set-up :class:`~jpq_jax.sweep.driver.Sweep` (config, dataset, members, strategy,
      steps per epoch, work directory).

  Returns:
    The header's lines.
  """
  cfg, ds = sw.cfg, sw.dataset
  shape = "x".join(str(d) for d in ds.input_shape)
  sizes = "/".join(str(len(sp)) if sp is not None else "-" for sp in (ds.train, ds.val, ds.test))
  lams = ", ".join(f"{m['lam']:.3g}" for m in sw.members)
  seeds = sorted({int(m["seed"]) for m in sw.members})
  dev = jax.devices()
  phases = [("warm-up", cfg.warmup.epochs), ("search", cfg.search.epochs),
            ("fine-tune", cfg.finetune.epochs)]
  if sw.method == "fixed":
    phases = [("warm-up", cfg.warmup.epochs), ("QAT", cfg.search.epochs)]
  if cfg.warmup.get("checkpoint"):
    phases[0] = ("warm-up", f"from {cfg.warmup.checkpoint}")
  elif cfg.warmup.get("user_checkpoint"):
    phases[0] = ("warm-up", f"from your model's {cfg.warmup.user_checkpoint}")
  return "\n".join([
      f"jpq sweep: {cfg.get('name', 'sweep')}: method {sw.method}, model {cfg.model.name}, "
      f"dataset {cfg.data.name} ({sizes} train/val/test examples, {shape}, "
      f"{ds.num_classes} classes)",
      f"  {sw.n} member{'s' if sw.n != 1 else ''}: lambda {lams} "
      f"(seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}), "
      f"cost {cfg.search.cost}" + _task_text(sw),
      f"  strategy {sw.strategy} on {len(dev)} {dev[0].platform} device(s), "
      f"{jax.process_count()} process(es)",
      "  epochs: " + ", ".join(f"{k} {v}" for k, v in phases)
      + f"; {sw.steps} steps of batch {cfg.train.batch_size} per epoch",
      f"  work directory: {sw.workdir}"])
