"""Orbax checkpoints of a whole sweep, and restoring one member as a standalone model.

A sweep checkpoint is one Orbax step holding two items:

* ``state``: the pytree of the phase (the warm-up :class:`~jpq_jax.train.TrainState`, or the
  members' states stacked on a leading member axis), saved with ``StandardSave`` and restored with an
  *abstract target* (``jax.ShapeDtypeStruct`` leaves in the same pytree) so that optax states come
  back as their NamedTuple types;
* ``meta``: JSON (phase, epochs done, member list, timings, which tells how to build that target).

Steps are numbered by the total number of finished epochs over all phases, so they only grow. Saves
are asynchronous (training continues while the previous epoch is written); :meth:`SweepCheckpointer.close`
waits for them.

Integrity. Orbax writes a step into a temporary directory and renames it when complete, so a process
killed mid-write leaves no step behind, only a temporary directory that is ignored. A committed
step gets a manifest (``jpq_manifest.json``: size and CRC-32 of every file) as part of its commit:
Orbax's post-finalization callback writes it as soon as the asynchronous write is finalized (a
synchronous save writes it before returning). Every step also carries, inside its JSON metadata,
the CRC-32 of every saved array's bytes. When the manager opens the directory, steps are verified
newest first: a step with a manifest against its files; a step without one (killed in the moment
between Orbax's rename and the manifest) is *unverified* and is read back whole and checked
against the array checksums of its metadata before it is used (then given its manifest). A
damaged, truncated or unreadable step is moved aside to ``<directory>_corrupt/`` with a one-line
warning naming the step and the file, and the run resumes from the newest good step; when no
good step is left, :class:`CheckpointCorruptError` says so and what to do. Every saved tree
also records its structure (key paths, shapes, dtypes); restoring into a different structure
(another model, member count or precision set) raises :class:`CheckpointMismatchError` naming
the difference instead of restoring part of it. The checksums detect damage (disk, copies, a
killed writer), not tampering: whoever can edit a file can rewrite its checksum.

The finished sweep also writes ``final/`` (the fine-tuned members, stacked) that
:func:`restore_member` reads: ``model, variables, table = jpq_jax.restore_member(workdir, k)``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
import zlib
from typing import Any, Dict, List, Mapping, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["SweepCheckpointer", "save_tree", "load_tree", "restore_member", "abstract_like",
           "CheckpointMismatchError", "CheckpointCorruptError", "tree_signature",
           "check_signature", "write_manifest", "verify_manifest", "content_checksums",
           "verify_tree", "storage_error"]

MANIFEST = "jpq_manifest.json"
_TREE_KEY = "_tree"  # the saved state's structure, stored inside the step's JSON metadata
_CONTENT_KEY = "_content"  # [shape, dtype, crc32] of every saved array, inside the JSON metadata
# Orbax's step metadata, which it rewrites (commit time) when it renames the step into place: not in
# the manifest (written just before the rename); verify_step checks that it is readable JSON.
_REWRITTEN_AT_COMMIT = ("_CHECKPOINT_METADATA",)


class CheckpointMismatchError(ValueError):
  """A checkpoint's tree (key paths, shapes, dtypes) differs from the structure asked for."""


class CheckpointCorruptError(ValueError):
  """A saved file differs from its manifest (truncated, corrupted or missing)."""


# ---- structure signatures -------------------------------------------------------------------------------
def tree_signature(tree: Any) -> Dict[str, List[Any]]:
  """``{key path: [shape, dtype]}`` of every leaf of ``tree`` (arrays or ``ShapeDtypeStruct``).

  Args:
    tree: pytree whose leaves are arrays, ``jax.ShapeDtypeStruct``s or values that
      ``np.asarray`` accepts.

  Returns:
    Dict from each leaf's key path (``jax.tree_util.keystr``) to ``[shape as a list of ints, dtype
    name]``, e.g. ``{"['params']['w']": [[3, 8], 'float32']}``; JSON-serialisable.
  """
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    dtype = leaf.dtype if hasattr(leaf, "dtype") else np.asarray(leaf).dtype
    out[jax.tree_util.keystr(path)] = [list(np.shape(leaf)), np.dtype(dtype).name]
  return out


def check_signature(saved: Optional[Mapping[str, Any]], target: Any, where: str) -> None:
  """Refuse a restore whose target structure differs from the saved one.

  Args:
    saved: the saved :func:`tree_signature` (None: an old checkpoint without one; not checked).
    target: the restore target (abstract or concrete pytree).
    where: what is restored, for the message.

  Raises:
    CheckpointMismatchError: naming the member count, the missing/unexpected leaves and the first
      shape or dtype differences.
  """
  if saved is None:
    return
  want = tree_signature(target)
  saved = {k: [list(v[0]), v[1]] for k, v in saved.items()}
  if saved == want:
    return
  missing = [k for k in want if k not in saved]
  extra = [k for k in saved if k not in want]
  diffs = [(k, saved[k], want[k]) for k in want if k in saved and saved[k] != want[k]]
  parts = []
  # The member axis leads every leaf of a sweep state: one differing leading size on every leaf is
  # a different member count, said as such rather than as hundreds of shape differences.
  lead = {(tuple(a[0][:1]), tuple(b[0][:1])) for _, a, b in diffs if a[0][1:] == b[0][1:]}
  if diffs and len(lead) == 1 and all(a[0][1:] == b[0][1:] and a[1] == b[1] for _, a, b in diffs):
    (s_n,), (w_n,) = next(iter(lead))
    parts.append(f"member count: the checkpoint holds {s_n} members, this run has {w_n} (the "
                 "sweep driver re-pads the sharded strategy's member axis to this run's devices "
                 "by itself: this is another lambdas x seeds grid)")
    diffs = []
  if missing:
    parts.append(f"{len(missing)} leaves missing from the checkpoint (e.g. {missing[:3]}): another "
                 "model or architecture")
  if extra:
    parts.append(f"{len(extra)} saved leaves this run does not have (e.g. {extra[:3]})")
  for k, a, b in diffs[:4]:
    what = "dtype" if a[0] == b[0] else "shape"
    parts.append(f"{what} of {k}: saved {a[0]} {a[1]}, expected {b[0]} {b[1]}")
  if len(diffs) > 4:
    parts.append(f"... and {len(diffs) - 4} more shape/dtype differences (another model, member "
                 "count, channel count or precision set)")
  raise CheckpointMismatchError(
      f"{where} does not match the structure being restored: " + "; ".join(parts)
      + ". Refusing a partial restore: use the same config (model, precisions, lambdas x seeds) "
      "or a new work directory")


# ---- content checksums ----------------------------------------------------------------------------------
def _leaf_crc(a: np.ndarray) -> int:
  return zlib.crc32(np.ascontiguousarray(a).tobytes())


def content_checksums(tree: Any) -> Optional[List[List[Any]]]:
  """``[shape, dtype, crc32]`` of every array leaf's bytes, sorted: a checksum of a tree's values.

  Sorted (a multiset), so that it can be compared with a tree read back without its original
  structure (Orbax restores an untargeted tree as nested dicts, in another leaf order).

  Args:
    tree: pytree of host arrays (numpy, or process-local jax arrays).

  Returns:
    The sorted list, or None when a leaf is spread over processes (not checksummed here).
  """
  out = []
  for leaf in jax.tree_util.tree_leaves(tree):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      return None
    a = np.asarray(leaf)
    out.append([list(a.shape), a.dtype.name, _leaf_crc(a)])
  return sorted(out, key=lambda r: (r[2], r[1], r[0]))


def verify_tree(tree: Any, expected: Optional[List[List[Any]]], where: str) -> None:
  """Check a tree read back against the :func:`content_checksums` saved with it.

  Args:
    tree: the restored pytree (any structure).
    expected: the saved checksums (None: nothing to check).
    where: what is checked, for the message.

  Raises:
    CheckpointCorruptError: the values differ from the saved ones (naming the first array's shape).
  """
  if expected is None:
    return
  got = content_checksums(tree)
  if got is None:
    return
  want = [[list(r[0]), r[1], int(r[2])] for r in expected]
  if got != want:
    bad = [r for r in want if r not in got]
    what = f" (e.g. an array of shape {bad[0][0]} {bad[0][1]})" if bad else ""
    raise CheckpointCorruptError(f"{where}: the saved arrays differ from their checksums{what}")


_STORAGE_ERRNOS = {28: "no space left on device", 122: "disk quota exceeded",
                   13: "permission denied", 1: "operation not permitted",
                   30: "read-only file system"}
_STORAGE_TEXT = {"no space left on device": "no space left on device",
                 "disk quota exceeded": "disk quota exceeded",
                 "permission denied": "permission denied",
                 "read-only file system": "read-only file system",
                 "resource_exhausted": "no space left on device"}


def storage_error(exc: BaseException) -> Optional[str]:
  """The storage cause of an exception (disk full, permissions, read-only), or None.

  Walks ``exc``'s cause/context chain (Orbax and TensorStore wrap the OS error several times) for
  an :class:`OSError` with one of those errnos, else for their message text.

  Args:
    exc: the exception.

  Returns:
    ``"<cause>: <path>"`` (the path when one is known), or None when the exception is not about
    storage.
  """
  seen, e = set(), exc
  texts = []
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in _STORAGE_ERRNOS:
      path = e.filename or ""
      return f"{_STORAGE_ERRNOS[e.errno]}" + (f": {path}" if path else "")
    texts.append(str(e))
    e = e.__cause__ or e.__context__
  low = " ".join(texts).lower()
  for key, cause in _STORAGE_TEXT.items():
    if key in low:
      import re  # pylint: disable=import-outside-toplevel
      m = re.search(r"(/[^\s'\"\]\[,:]+)", " ".join(texts))
      return cause + (f": {m.group(1)}" if m else "")
  return None


# ---- manifests ------------------------------------------------------------------------------------------
def _crc(path: str) -> int:
  crc = 0
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 22), b""):
      crc = zlib.crc32(chunk, crc)
  return crc


def write_manifest(directory: str, extra: Optional[Mapping[str, Any]] = None) -> None:
  """Write ``jpq_manifest.json`` (size and CRC-32 of every file) into a completed checkpoint.

  Written atomically (temporary file + rename), so a manifest is either absent or whole.

  Args:
    directory: the checkpoint directory; every file under it (recursively) is listed by its
      relative path, except the manifest itself and its temporary files.
    extra: optional additional top-level entries of the manifest (e.g. ``{"step": 3}`` or
      ``{"tree": tree_signature(...)}``); they are merged after ``format`` and ``files``.

  Returns:
    None; the manifest ``{"format": 1, "files": {relative path: [size, crc32]}, **extra}`` is
    written to ``<directory>/jpq_manifest.json``.
  """
  files = {}
  for root, _, names in os.walk(directory):
    for name in names:
      full = os.path.join(root, name)
      rel = os.path.relpath(full, directory)
      if rel == MANIFEST or rel.startswith(MANIFEST + ".") or rel in _REWRITTEN_AT_COMMIT:
        continue
      files[rel] = [os.path.getsize(full), _crc(full)]
  doc = {"format": 1, "files": files, **dict(extra or {})}
  tmp = os.path.join(directory, MANIFEST + f".tmp{os.getpid()}")
  with open(tmp, "w") as f:
    json.dump(doc, f)
  os.replace(tmp, os.path.join(directory, MANIFEST))


def verify_manifest(directory: str) -> Optional[Dict[str, Any]]:
  """Check a checkpoint directory against its manifest.

  Args:
    directory: the checkpoint directory holding ``jpq_manifest.json``.

  Returns:
    The manifest, or None when the directory has none (not verifiable).

  Raises:
    CheckpointCorruptError: the manifest is unreadable (invalid JSON, no ``files`` entry, or
      entries that are not ``{path: [size, crc]}``), or naming the first (in sorted order)
      missing, truncated or corrupted file.
  """
  path = os.path.join(directory, MANIFEST)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      doc = json.load(f)
    files = doc["files"]
    entries = sorted((str(rel), int(size), int(crc)) for rel, (size, crc) in files.items())
  except (ValueError, KeyError, TypeError, AttributeError) as e:
    # Invalid JSON, no "files", or entries that are not {path: [size, crc]}.
    raise CheckpointCorruptError(f"{path}: unreadable manifest ({type(e).__name__}: {e})") from None
  for rel, size, crc in entries:
    full = os.path.join(directory, rel)
    if not os.path.exists(full):
      raise CheckpointCorruptError(f"{directory}: file {rel!r} is missing")
    got = os.path.getsize(full)
    if got != size:
      raise CheckpointCorruptError(f"{directory}: file {rel!r} is truncated or extended ({got} "
                                   f"bytes, {size} when saved)")
    if _crc(full) != crc:
      raise CheckpointCorruptError(f"{directory}: file {rel!r} is corrupted (checksum differs)")
  return doc


def abstract_like(tree: Any) -> Any:
  """The abstract restore target (shapes, dtypes, no data) of a pytree of arrays.

  Leaves without a sharding are restored whole onto this process's first device: with several
  processes (``jax.distributed``) every process then reads the full value, and the sweep driver
  spreads it over the global mesh itself; Orbax's default device (``jax.devices()[0]``) would belong
  to process 0 only.

  Args:
    tree: pytree of arrays (or anything ``np.asarray`` accepts) and/or ``jax.ShapeDtypeStruct``s.

  Returns:
    A pytree of the same structure with ``jax.ShapeDtypeStruct`` leaves: a ``ShapeDtypeStruct``
    that already has a sharding is kept as is; every other leaf gets its shape and dtype and a
    ``SingleDeviceSharding`` on ``jax.local_devices()[0]``.
  """
  local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def leaf(x):
    if isinstance(x, jax.ShapeDtypeStruct):
      return x if x.sharding is not None else jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=local)
    # The dtype without a host copy where the leaf has one (a jax.Array spread over processes
    # cannot be copied to one host at all).
    dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
    return jax.ShapeDtypeStruct(np.shape(x), dtype, sharding=local)

  return jax.tree_util.tree_map(leaf, tree)


def _for_save(tree: Any) -> Any:
  # Process-local arrays go to Orbax as host numpy, which it writes from process 0 only (with several
  # processes every process holds the same values); arrays spread over processes stay jax Arrays,
  # of which every process writes its own shards.
  return jax.tree_util.tree_map(
      lambda a: a if isinstance(a, jax.Array) and not a.is_fully_addressable
      else np.asarray(jax.device_get(a)), tree)


class SweepCheckpointer:
  """Epoch- and phase-boundary checkpoints of a sweep (Orbax ``CheckpointManager``).

  Opening the directory verifies the committed steps newest first (against their manifests, or,
  without one, by reading them back against their array checksums) and moves damaged ones aside
  with a warning, so :meth:`latest_step` is the newest good step.

  Args:
    directory: where the steps go (``<workdir>/checkpoints``).
    keep: number of most recent steps kept.
    async_save: write in the background.

  Raises:
    CheckpointCorruptError: every committed step is damaged (moved aside; the message says how to
      start over).
  """

  def __init__(self, directory: str, keep: int = 2, async_save: bool = True):
    import threading  # pylint: disable=import-outside-toplevel
    self.directory = os.path.abspath(directory)
    self.async_save = bool(async_save)
    self.is_main = jax.process_index() == 0
    self.quarantined: List[int] = []
    self._lock = threading.Lock()
    self._unmanifested: List[int] = []
    if self.is_main:
      self.quarantined = self._drop_corrupt_steps()
    if jax.process_count() > 1:  # the others open the directory once process 0 has cleaned it
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      multihost_utils.sync_global_devices("jpq_checkpoint_verified")
    # The manifest is part of the commit: written by Orbax's background thread right after it
    # finalizes the step, not when the next save starts (a whole epoch later).
    # (Synchronous saves write it themselves before save() returns; Orbax takes the callback only
    # with its asynchronous checkpointer.)
    async_opts = (ocp.AsyncOptions(post_finalization_callback=self._write_manifests)
                  if self.async_save else None)
    options = ocp.CheckpointManagerOptions(max_to_keep=max(int(keep), 1),
                                           enable_async_checkpointing=bool(async_save),
                                           create=True, async_options=async_opts)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "meta"))

  # -- integrity --
  def _committed_steps(self) -> List[int]:
    if not os.path.isdir(self.directory):
      return []
    # Orbax renames a step's temporary directory to the bare step number when it commits it.
    return sorted(int(n) for n in os.listdir(self.directory)
                  if n.isdigit() and os.path.isdir(os.path.join(self.directory, n)))

  def verify_step(self, step: int) -> None:
    """Check a committed step: its files against its manifest, or, without a manifest, its
    arrays read back against the checksums in its metadata (then the manifest is written).

    Raises:
      CheckpointCorruptError: naming the step and what is wrong.
    """
    d = os.path.join(self.directory, str(step))
    has_manifest = verify_manifest(d) is not None
    meta_file = os.path.join(d, "meta", "metadata")  # where Orbax's JsonSave puts it
    if not os.path.exists(meta_file):
      raise CheckpointCorruptError(f"{d}: metadata file meta/metadata is missing")
    try:
      with open(meta_file) as f:
        meta = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
      raise CheckpointCorruptError(f"{d}: metadata file meta/metadata is not valid JSON "
                                   f"({e})") from None
    for rel in _REWRITTEN_AT_COMMIT:
      f = os.path.join(d, rel)
      if os.path.exists(f):
        try:
          with open(f) as fh:
            json.load(fh)
        except (ValueError, UnicodeDecodeError) as e:
          raise CheckpointCorruptError(f"{d}: Orbax's {rel} is not valid JSON ({e})") from None
    if has_manifest:
      return
    expected = meta.get(_CONTENT_KEY) if isinstance(meta, dict) else None
    if expected is None or jax.process_count() > 1:
      return  # saved before array checksums existed, or shards of several processes: trusted
    try:
      ckptr = ocp.StandardCheckpointer()
      try:
        raw = ckptr.restore(os.path.join(d, "state"))
      finally:
        ckptr.close()
    except Exception as e:  # pylint: disable=broad-except
      # Orbax/TensorStore report a truncated or garbled array file as many kinds of errors.
      first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
      raise CheckpointCorruptError(f"{d}: state unreadable ({type(e).__name__}: {first})") from None
    verify_tree(raw, expected, f"{d}: state arrays (no manifest, read back)")
    write_manifest(d, {"step": step})  # verified: no need to read it back again

  def _drop_corrupt_steps(self) -> List[int]:
    """Move damaged steps newer than the newest good one aside; returns their numbers."""
    dropped = []
    aside = self.directory.rstrip("/") + "_corrupt"
    for step in reversed(self._committed_steps()):
      try:
        self.verify_step(step)
        break
      except CheckpointCorruptError as e:
        # Moved, not deleted: the files may still be worth a look, and Orbax must not see the step
        # (the run would resume from it, and saving that step number again would fail).
        os.makedirs(aside, exist_ok=True)
        shutil.move(os.path.join(self.directory, str(step)),
                    os.path.join(aside, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"))
        dropped.append(step)
        older = [s for s in self._committed_steps() if s < step]
        to = f"step {older[-1]}" if older else "nothing (no older step)"
        reason = str(e).replace(os.path.join(self.directory, str(step)) + ": ", "")
        warnings.warn(f"checkpoint step {step} is damaged ({reason}); moved it to {aside}, "
                      f"falling back to {to}", RuntimeWarning, stacklevel=3)
    if dropped and not self._committed_steps():
      raise CheckpointCorruptError(
          f"no good checkpoint left in {self.directory}: step(s) {sorted(dropped)} are damaged "
          f"(moved to {aside}); to train this run again from the start, remove "
          f"{self.directory} (a finished warm-up in the work directory's warmup/ is reused)")
    return dropped

  def _write_manifests(self) -> None:
    # Orbax's post-finalization callback runs in its background thread once a step's files are
    # final but before it renames the temporary directory to the step number: the manifest written
    # there is committed by the same rename, atomically with the step. Called from the main thread
    # (after Orbax finished every pending save) it covers synchronous saves and any step left.
    with self._lock:
      pending, self._unmanifested = self._unmanifested, []
      if not self.is_main:
        return
      for step in pending:
        d = os.path.join(self.directory, str(step))
        if os.path.isdir(d):
          if not os.path.exists(os.path.join(d, MANIFEST)):
            write_manifest(d, {"step": step})
          continue
        tmp = self._temporary_dir(step)
        if tmp is not None:
          write_manifest(tmp, {"step": step})
        # else: max_to_keep removed it already

  def _temporary_dir(self, step: int) -> Optional[str]:
    """Orbax's temporary directory of ``step`` (written, not yet renamed), or None."""
    try:
      names = os.listdir(self.directory)
    except OSError:
      return None
    tmps = [n for n in names if n.startswith(f"{step}.") and "tmp" in n
            and os.path.isdir(os.path.join(self.directory, n))]
    return os.path.join(self.directory, sorted(tmps)[-1]) if tmps else None

  # -- API --
  def latest_step(self) -> Optional[int]:
    """Most recent complete (and, where a manifest exists, verified) step, or None."""
    return self.manager.latest_step()

  def save(self, step: int, state: Any, meta: Mapping) -> None:
    """Save (asynchronously) ``state`` and ``meta`` as ``step``.

    With several processes every process must call this (Orbax synchronises them); process 0
    writes ``meta`` and the process-local arrays.
    """
    # Orbax waits for the previous save before starting this one anyway; waiting here first makes
    # sure the previous step's manifest is on disk (its callback normally wrote it long ago).
    self.manager.wait_until_finished()
    self._write_manifests()
    meta = dict(meta)
    meta[_TREE_KEY] = tree_signature(state)
    content = content_checksums(state)
    if content is not None:
      meta[_CONTENT_KEY] = content
    with self._lock:
      self._unmanifested.append(step)
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    meta=ocp.args.JsonSave(meta)),
                      force=True)
    if not self.async_save:  # already committed
      self._write_manifests()

  def _raw_meta(self, step: int) -> Dict[str, Any]:
    out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(out["meta"])

  def meta(self, step: Optional[int] = None) -> Optional[Dict[str, Any]]:
    """The JSON metadata of ``step`` (default: latest), or None when there is no checkpoint."""
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    out = self._raw_meta(step)
    out.pop(_TREE_KEY, None)
    out.pop(_CONTENT_KEY, None)
    return out

  def saved_signature(self, step: int) -> Optional[Dict[str, List[Any]]]:
    """The :func:`tree_signature` of the state saved as ``step`` (None: saved without one).

    Args:
      step: a committed step.

    Returns:
      ``{key path: [shape, dtype name]}`` as saved, or None for a checkpoint written before
      signatures were stored.
    """
    return self._raw_meta(step).get(_TREE_KEY)

  def restore(self, step: int, target: Any) -> Any:
    """The ``state`` of ``step`` restored into the structure of ``target`` (abstract or concrete).

    Raises:
      CheckpointMismatchError: the saved structure differs from ``target``'s (nothing restored).
    """
    check_signature(self._raw_meta(step).get(_TREE_KEY), target,
                    f"checkpoint step {step} in {self.directory}")
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_like(target))))
    return out["state"]

  def wait(self) -> None:
    """Block until pending asynchronous saves are on disk (and have their manifests)."""
    self.manager.wait_until_finished()
    self._write_manifests()

  def close(self) -> None:
    """Wait for pending saves, write their manifests and release the manager."""
    self.manager.wait_until_finished()
    self._write_manifests()
    self.manager.close()


def save_tree(path: str, tree: Any) -> None:
  """Save a pytree synchronously to ``path`` (overwrites); call it on every process.

  Process-local arrays are written as host numpy (from process 0); arrays spread over processes
  stay jax Arrays, whose shards every process writes. Process 0 then writes a manifest recording
  the files and the tree's :func:`tree_signature`, which :func:`load_tree` checks.

  Args:
    path: checkpoint directory (made absolute; an existing checkpoint there is replaced).
    tree: pytree of arrays to save.

  Returns:
    None, once the checkpoint (and, on process 0, its manifest) is on disk.
  """
  ckptr = ocp.StandardCheckpointer()
  tree = _for_save(tree)
  ckptr.save(os.path.abspath(path), tree, force=True)
  ckptr.wait_until_finished()
  ckptr.close()
  if jax.process_index() == 0:
    write_manifest(os.path.abspath(path), {"tree": tree_signature(tree)})


def load_tree(path: str, target: Any = None) -> Any:
  """Load a pytree saved by :func:`save_tree` (into ``target``'s structure when given).

  Args:
    path: checkpoint directory written by :func:`save_tree`.
    target: optional pytree (abstract or concrete) giving the structure, shapes and dtypes to
      restore into; None restores the tree as saved. Its structure is checked against the saved
      signature only when the checkpoint has a manifest.

  Returns:
    The restored pytree (in ``target``'s structure when given; leaves without a sharding in
    ``target`` are placed on this process's first local device, see :func:`abstract_like`).

  Raises:
    FileNotFoundError: no such checkpoint.
    CheckpointCorruptError: a file differs from the manifest written at save time, or the manifest
      is unreadable.
    CheckpointMismatchError: ``target``'s structure differs from the saved one.
  """
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"no checkpoint at {path!r}")
  doc = verify_manifest(path)
  if target is not None and doc is not None:
    check_signature(doc.get("tree"), target, f"checkpoint {path}")
  ckptr = ocp.StandardCheckpointer()
  out = ckptr.restore(os.path.abspath(path), abstract_like(target) if target is not None else None)
  ckptr.close()
  return out


def restore_member(workdir: str, member: int, as_nnx: Optional[bool] = None
                   ) -> Tuple[Any, Dict[str, Any], Any]:
  """A finished sweep's member as a standalone fixed-architecture model.

  A sweep of a Flax NNX model gives back an NNX module: ``model`` is then a fixed-mode
  :class:`jpq_jax.nnx.Searchable` holding the member's variables (``model(x, jpq_jax.Ctx.fixed())``;
  its Linen form is ``model.net``), and ``variables`` the same variables as Linen collections.

  Args:
    workdir: the sweep's work directory.
    member: member index (as in ``results.json``).
    as_nnx: return the NNX module for an NNX model (default) or its Linen form (False: for code that
      treats every model alike, e.g. :func:`jpq_jax.export.export_member`). True for a Linen model
      is an error.

  Returns:
    ``(model, variables, table)``: the Flax model, ``{'params', 'precision'}`` for
    ``model.apply(variables, x, jpq_jax.Ctx.fixed())``, and the layer table. A ``pit`` sweep's
    members are float networks: ``variables`` is then ``{'params', 'batch_stats'}`` with the
    member's PIT masks multiplied into every kernel (pruned output channels and the matching input
    channels of their consumers), for ``model.apply(variables, x, jpq_jax.Ctx.float())``; the
    physically smaller network is ``jpq_jax.pit.prune_physically(variables, table, masks)``.

  Raises:
    FileNotFoundError: the sweep has not finished (no ``final`` checkpoint).
    IndexError: no such member.
    CheckpointCorruptError: ``final/`` is damaged (rerunning the sweep rebuilds it).
    ValueError: ``as_nnx`` for a Linen model, or for a ``pit`` sweep.
  """
  # The sweep package's build module, not its driver (which imports this module).
  from jpq_jax.sweep import build  # pylint: disable=import-outside-toplevel
  final = os.path.join(workdir, "final")
  if not os.path.exists(final):
    raise FileNotFoundError(f"{workdir!r} has no finished sweep (no 'final' checkpoint); run or "
                            "resume the sweep first")
  cfg = build.run_config(workdir)  # the method's search space (e.g. fixed_bits), not the raw one
  from jpq_jax import pareto  # pylint: disable=import-outside-toplevel
  results = pareto.load_results(workdir)
  n = len(results["members"])
  if not 0 <= member < n:
    raise IndexError(f"member {member} out of range: the sweep has {n} members (0..{n - 1})")
  model, table, sample = build.build_model_from_config(cfg, results["num_classes"],
                                                       tuple(results["input_shape"]))
  is_nnx = type(model).__name__ == "LinenNet" and type(model).__module__ == "jpq_jax.nnx"
  if as_nnx and not is_nnx:
    raise ValueError(f"restore_member: as_nnx=True, but the sweep's model "
                     f"{cfg['model']['name']!r} is not a Flax NNX model")
  if results.get("method") == "pit":
    if is_nnx and as_nnx is not False:
      raise ValueError("restore_member: a pit sweep's members are float networks with masks; "
                       "restore them with as_nnx=False (the Linen form)")
    return model, _pit_member(model, table, sample, final, n, member), table
  target = build.fixed_variables_template(model, sample, n)
  try:
    stacked = load_tree(final, target)
  except CheckpointCorruptError as e:
    raise CheckpointCorruptError(f"{e}; rerun `jpq sweep` with the same --workdir to rebuild "
                                 "final/ from the sweep's last checkpoint") from None
  variables = jax.tree_util.tree_map(lambda x: np.asarray(x)[member], stacked)
  if is_nnx and as_nnx is not False:
    from jpq_jax import nnx as jpq_nnx  # pylint: disable=import-outside-toplevel
    return jpq_nnx.Searchable.from_variables(model, variables, sample), variables, table
  return model, variables, table


def _pit_member(model, table, sample, final: str, n: int, member: int) -> Dict[str, Any]:
  """Member ``member`` of a ``pit`` sweep's final checkpoint, masks baked into the kernels."""
  from jpq_jax import pit  # pylint: disable=import-outside-toplevel
  from jpq_jax.ctx import Ctx  # pylint: disable=import-outside-toplevel
  v = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, Ctx.float()), sample)
  target: Dict[str, Any] = {k: v[k] for k in ("params", "batch_stats")}
  target["pit_mask"] = pit.mask_tree(table, {g.name: jax.ShapeDtypeStruct((g.channels,), np.float32)
                                             for g in table.groups})
  target = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct((n,) + s.shape, s.dtype), target)
  stacked = load_tree(final, target)
  one = jax.tree_util.tree_map(lambda x: np.asarray(x)[member], stacked)
  masks = pit.masks_from_tree(one["pit_mask"], table)
  return {"params": jax.tree_util.tree_map(np.asarray,
                                           pit.bake_masks(one["params"], table, masks)),
          "batch_stats": one["batch_stats"]}
