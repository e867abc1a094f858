"""What a run writes besides its checkpoints: the metrics log, TensorBoard, the run record
(``config.json``), ``final/``, and the members' status in the results.

Everything here is written by process 0 only, except ``final/`` (Orbax: every process takes part).
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

import jax

from jpq_jax import checkpoint as ckpt_lib
from jpq_jax.sweep.distributed import _host
from jpq_jax.sweep.validation import _holds_work


class _Log:
  """``metrics.jsonl`` and TensorBoard scalars; written by process 0 only.

  TensorBoard (tensorboardX, under ``<workdir>/tensorboard``): one run per member
  (``m00_lam1e-05_seed14``) and one for the shared warm-up (``warmup``), so TensorBoard overlays the
  members on one chart per tag. Tags are ``<phase>/<metric>`` with the metrics of
  ``metrics.jsonl``: ``train_loss``, ``train_task``, the task's ``train_<m>`` (classification:
  ``train_acc``) and ``val_<m>`` (classification: ``val_acc``, ``val_loss``),
  ``temperature``, ``lambda``, ``lr_factor``, ``best_epoch`` and, in the search,
  ``cost_soft_<cost>`` / ``cost_argmax_<cost>``; plus ``final/<split>_<metric>`` and
  ``final/cost_<cost>`` of the finished member. The step is the checkpoint step (epochs done over
  all phases), which only grows across phases; on resume, events after the restored checkpoint are
  purged, as the lines of ``metrics.jsonl`` are.
  """

  def __init__(self, workdir: str, keep_until: Optional[int], enabled: bool,
               members: Sequence[Mapping[str, Any]] = (), cost: str = ""):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.tb_dir = os.path.join(workdir, "tensorboard")
    self.members = list(members)
    self.cost = cost
    self.purge_step = (keep_until if keep_until is not None else -1) + 1
    self._writers: Dict[str, Any] = {}
    self._writer_cls = None
    if not enabled:
      return
    if os.path.exists(self.path):
      # Resume: drop the lines of epochs that ran after the restored checkpoint.
      # A line that does not parse (the torn last line a kill during its write leaves) is
      # dropped with a warning: its epoch is after the restored checkpoint and is trained again.
      keep, torn = [], []
      with open(self.path) as f:
        for n, line in enumerate(f, 1):
          if not line.strip():
            continue
          try:
            rec = json.loads(line)
          except ValueError:
            torn.append(n)
            continue
          if keep_until is not None and rec.get("ckpt", -1) <= keep_until:
            keep.append(line if line.endswith("\n") else line + "\n")
      if torn:
        print(f"jpq sweep: {self.path}: dropped {len(torn)} unreadable line(s) (line "
              f"{', '.join(map(str, torn))}: a write cut short); their epochs are trained again "
              "from the checkpoint", file=sys.stderr)
      tmp = self.path + ".tmp"
      with open(tmp, "w") as f:
        f.writelines(keep)
      os.replace(tmp, self.path)
    try:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
      self._writer_cls = SummaryWriter
    except ImportError:
      # tensorboardX is a dependency; tolerate its absence (metrics.jsonl has everything).
      import warnings  # pylint: disable=import-outside-toplevel
      warnings.warn("tensorboardX is not installed: no TensorBoard summaries (metrics.jsonl only)")

  def run_name(self, k: Optional[int]) -> str:
    """The TensorBoard run of member ``k`` (None: the shared warm-up)."""
    if k is None:
      return "warmup"
    m = self.members[k]
    return f"m{k:02d}_lam{m['lam']:g}_seed{m['seed']}"

  def _writer(self, run: str):
    if run not in self._writers:
      self._writers[run] = self._writer_cls(os.path.join(self.tb_dir, run),
                                            purge_step=self.purge_step, flush_secs=30)
    return self._writers[run]

  def _scalars(self, k: Optional[int], values: Mapping[str, Any], step: int):
    w = self._writer(self.run_name(k))
    for tag, v in values.items():
      if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        w.add_scalar(tag, float(v), step)

  def write(self, rec: Mapping):
    if not self.enabled:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps(rec) + "\n")
    if self._writer_cls is None:
      return
    phase, step = rec["phase"], int(rec["ckpt"])
    per_member = {k: v for k, v in rec.items() if isinstance(v, list)}
    shared = {k: v for k, v in rec.items()
              if k not in per_member and k not in ("phase", "epoch", "ckpt")}
    n = len(next(iter(per_member.values()))) if per_member else 0
    for k in range(n):
      vals = {f"{phase}/{key}": v for key, v in shared.items()}
      for key, v in per_member.items():
        if key in ("failed", "stopped"):
          continue
        tag = f"{key}_{self.cost}" if key.startswith("cost_") else key
        vals[f"{phase}/{tag}"] = v[k]
      self._scalars(None if phase == "warmup" else k, vals, step)

  def write_final(self, results: Mapping, step: int):
    """Final task metrics and argmax costs of every member (tags ``final/...``)."""
    if not self.enabled or self._writer_cls is None:
      return
    metrics = tuple((results.get("task") or {}).get("metrics") or ("acc",))
    for k, m in enumerate(results["members"]):
      vals = {f"final/{key}": v for key, v in m.items()
              if key.startswith(("val_", "test_")) and key.endswith(tuple(f"_{x}" for x in metrics))}
      vals.update({f"final/cost_{c}": v for c, v in m["costs_argmax"].items()})
      self._scalars(k, vals, step)

  def close(self):
    for w in self._writers.values():
      w.close()
    self._writers = {}


def _finite(v) -> Optional[float]:
  """``float(v)``, or None when it is not finite (JSON has no NaN)."""
  v = float(v)
  return v if math.isfinite(v) else None


def library_versions() -> Dict[str, str]:
  """Versions of the libraries that determine the numbers."""
  out = {"python": platform.python_version(), "platform": platform.platform()}
  for mod in ("jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "numpy", "ml_collections"):
    try:
      m = __import__(mod, fromlist=["__version__"])
      out[mod] = getattr(m, "__version__", "?")
    except ImportError:
      pass
  try:
    import jpq_jax  # pylint: disable=import-outside-toplevel
    out["jpq_jax"] = getattr(jpq_jax, "__version__", "?")
  except ImportError:
    pass
  out["backend"] = jax.default_backend()
  out["devices"] = str([d.device_kind for d in jax.devices()][:4])
  out["device_count"] = str(jax.device_count())
  return out




def read_only_results(workdir: str, is_main: bool) -> Dict[str, Any]:
  """A finished run in a work directory this process cannot write: its results, read back.

  Args:
    workdir: the run's work directory.
    is_main: whether this is process 0 (which prints the note).

  Returns:
    The results of ``results.json``.

  Raises:
    OSError: (EROFS) the directory holds no readable finished run.
  """
  from jpq_jax import pareto  # pylint: disable=import-outside-toplevel
  try:
    results = pareto.load_results(workdir)
  except (FileNotFoundError, ValueError) as e:
    raise OSError(30, f"the work directory {workdir} is read-only and holds no readable "
                  f"finished run ({str(e).split(';')[0]}); copy it to a writable place to resume "
                  "it there") from None
  if is_main:
    print(f"jpq sweep: {workdir} is read-only: the finished run's results are read back, "
          "nothing is written", file=sys.stderr)
  return results


def write_final(workdir: str, final, n: int) -> None:
  """``final/``: the fine-tuned members' weights and precisions (what restore_member reads).

  Args:
    workdir: the run's work directory.
    final: the stacked final states (the member axis may be padded).
    n: the real members (the first ``n`` are written).
  """
  fin = {"params": final.params["params"], "precision": final.extra["precision"]}
  fin = jax.tree_util.tree_map(lambda a: _host(a)[:n], fin)
  ckpt_lib.save_tree(os.path.join(workdir, "final"), fin)  # on every process (Orbax)


def final_damage(workdir: str) -> Optional[str]:
  """Why ``<workdir>/final`` cannot be trusted (missing, no manifest, damaged), or None when it can."""
  d = os.path.join(workdir, "final")
  if not os.path.isdir(d):
    return f"{d} is missing"
  try:
    if ckpt_lib.verify_manifest(d) is None:
      return f"{d} has no manifest (unverifiable)"
  except ckpt_lib.CheckpointCorruptError as e:
    return f"{d} is damaged ({str(e).replace(d + ': ', '')})"
  return None


def write_run_record(workdir: str, raw_cfg, cfg, strategy: str) -> None:
  """Write ``config.json``: the run's config, versions and command; a resume appends to it.

  A fresh run writes its config (as given and resolved), library versions, strategy, command line
  and start time. A run resumed in a work directory that holds its trained state keeps that
  record (what the run was started with and by which versions) and appends this invocation's
  time, command, versions and strategy to ``resumed``: rerunning a finished sweep to read its
  results, or resuming it with a newer jpq, never rewrites its provenance.

  Args:
    workdir: the run's work directory.
    raw_cfg: the config as given; ``cfg``: as trained (its method resolved).
    strategy: the strategy this invocation runs.
  """
  from jpq_jax import pareto  # pylint: disable=import-outside-toplevel
  path = os.path.join(workdir, "config.json")
  now = time.strftime("%Y-%m-%d %H:%M:%S")
  this = {"time": now, "argv": sys.argv, "versions": library_versions(), "strategy": strategy}
  record = None
  if os.path.exists(path) and _holds_work(workdir):
    try:
      with open(path) as f:
        record = json.load(f)
    except (OSError, ValueError):
      record = None  # unreadable: written afresh below (validate_config has read what it could)
  if not isinstance(record, dict) or "config" not in record:
    record = {"config": json.loads(raw_cfg.to_json_best_effort()),
              "resolved_config": json.loads(cfg.to_json_best_effort()),
              "versions": this["versions"], "strategy": strategy, "argv": sys.argv,
              "started": now}
  else:
    record.setdefault("resumed", []).append(this)
  pareto.write_json_atomic(path, record)


def read_results(workdir: str, is_main: bool) -> Optional[Dict[str, Any]]:
  """``results.json`` of a finished sweep, or None (with a note) when missing or damaged."""
  from jpq_jax import pareto  # pylint: disable=import-outside-toplevel
  try:
    return pareto.load_results(workdir)
  except FileNotFoundError:
    why = f"{os.path.join(workdir, 'results.json')} is missing"
  except ValueError as e:  # not JSON, or not a sweep's results
    why = str(e).split(";")[0]
  if is_main:
    print(f"jpq sweep: {why}: rebuilding it from the final checkpoint", file=sys.stderr)
  return None


def annotate_status(results: Dict[str, Any], metrics_path: Optional[str] = None) -> None:
  """Give every member of ``results`` a ``status`` that says what went wrong, in place.

  ``failed: non-finite loss at search epoch 3`` (the first epoch whose ``metrics.jsonl`` record
  marks the member failed), ``degenerate: all channels of group g_a pruned (layers conv_a)``, or
  ``degenerate: non-finite cost ...``; ``ok`` otherwise. Also sets ``failed_at`` (``'<phase> epoch
  <e>'`` or None), ``degenerate_groups`` and ``nonfinite_costs`` (cost names whose value is not
  finite, written as null in ``costs_soft`` / ``costs_argmax``). Idempotent.

  Args:
    results: the results of a sweep (``members`` records with ``failed``, ``groups``, costs).
    metrics_path: the run's ``metrics.jsonl`` (for the failure epoch; optional).
  """
  members = results["members"]
  n = len(members)
  failed_at: List[Optional[str]] = [None] * n
  if metrics_path and os.path.exists(metrics_path):
    with open(metrics_path) as f:
      for line in f:
        try:
          rec = json.loads(line)
        except ValueError:
          continue
        flags = rec.get("failed")
        if not isinstance(flags, list) or len(flags) != n or rec.get("phase") == "warmup":
          continue  # (the shared warm-up and PIT's single-member stage have other member axes)
        for k, bad in enumerate(flags):
          if bad and failed_at[k] is None:
            failed_at[k] = f"{rec['phase']} epoch {rec['epoch']}"
  # PIT members are float networks: their hardware costs are null by design, not non-finite.
  float_costs = results.get("method") == "pit"
  for k, m in enumerate(members):
    gone = sorted(g for g, v in (m.get("groups") or {}).items()
                  if isinstance(v, dict) and v.get("kept") == 0)
    layers = [l for l, v in (m.get("layers") or {}).items() if v.get("group") in gone]
    bad_costs = {} if float_costs else {
        kind: sorted(c for c, v in (m.get(f"costs_{kind}") or {}).items() if v is None)
        for kind in ("soft", "argmax")}
    bad_costs = {kind: v for kind, v in bad_costs.items() if v}
    m["failed_at"] = failed_at[k] or m.get("failed_at")
    m["degenerate_groups"] = gone
    m["nonfinite_costs"] = bad_costs
    notes = []
    if gone:
      notes.append(f"all channels of group{'s' if len(gone) > 1 else ''} {', '.join(gone)} pruned"
                   f" (layers {', '.join(layers)})")
    if bad_costs:
      notes.append("non-finite cost " + ", ".join(f"{', '.join(v)} ({kind})"
                                                 for kind, v in bad_costs.items()))
    if m.get("failed"):
      head = "failed: non-finite loss" + (f" at {m['failed_at']}" if m["failed_at"] else "")
    elif notes:
      head = "degenerate: " + notes.pop(0)
    else:
      head = "ok"
    m["status"] = "; ".join([head] + notes)
