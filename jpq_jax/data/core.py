"""Core containers and checks shared by every dataset source.

A :class:`Split` is one split held in host memory as numpy arrays; a :class:`Dataset` bundles the
train/validation/test splits with what the training driver needs to know about them (classes, input
shape, class weights for the loss, the name of the training augmentation). Every :class:`Dataset` is
validated when it is built, so wrong image sizes, labels out of range and empty splits are reported
with the split's name instead of failing later inside a jitted step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import warnings
from typing import Optional, Sequence

import numpy as np

__all__ = [
    "DataError",
    "DatasetNotFoundError",
    "Split",
    "Dataset",
    "cache_dir",
    "cache_key",
    "class_weights",
    "seeded_partition",
    "source_stamp",
    "subset",
    "validate_split",
]


class DataError(ValueError):
  """Raised for malformed data: wrong shapes or dtypes, labels out of range, empty splits."""


class DatasetNotFoundError(FileNotFoundError):
  """Raised when a dataset is not present locally; the message says how to get it."""


@dataclasses.dataclass
class Split:
  """One split held in host memory.

  Attributes:
    x: ``(N, H, W, C)`` array, ``uint8`` for images (the loader scales them by 1/255) or
      ``float32`` for features that are used as they are (MFCCs, the demo digits).
    y: ``(N,)`` ``int32`` labels in ``[0, num_classes)``.
  """

  x: np.ndarray
  y: np.ndarray

  def __len__(self) -> int:
    """Number of examples."""
    return int(self.y.shape[0])

  def take(self, index: np.ndarray) -> "Split":
    """Returns the examples at ``index`` (a copy), in that order.

    Args:
      index: integer index array.

    Returns:
      A new :class:`Split`.
    """
    index = np.asarray(index)
    return Split(self.x[index], self.y[index])


@dataclasses.dataclass
class Dataset:
  """A dataset with its protocol-level metadata.

  Attributes:
    name: dataset name as given to :func:`jpq_jax.data.load`.
    train: training split.
    val: validation split (early stopping / model selection).
    test: test split.
    num_classes: number of classes.
    input_shape: ``(H, W, C)`` of one example as the model sees it.
    class_weights: ``(num_classes,)`` float32 weights for a class-weighted cross-entropy, or None.
    augment: name of the training augmentation (see :mod:`jpq_jax.data.augment`), or None.
    extra_tests: additional evaluation splits, e.g. ``{'mlperf_subset': Split}``.
    class_names: optional list of class names, index = label.
  """

  name: str
  train: Split
  val: Split
  test: Split
  num_classes: int
  input_shape: tuple
  class_weights: Optional[np.ndarray] = None
  augment: Optional[str] = None
  extra_tests: dict = dataclasses.field(default_factory=dict)
  class_names: Optional[list] = None

  def __post_init__(self):
    self.input_shape = tuple(int(d) for d in self.input_shape)
    splits = {"train": self.train, "val": self.val, "test": self.test}
    splits.update({f"extra_tests[{k!r}]": v for k, v in self.extra_tests.items()})
    for split_name, split in splits.items():
      validate_split(split, self.num_classes, self.input_shape, f"{self.name}/{split_name}")
    if self.class_weights is not None:
      self.class_weights = np.asarray(self.class_weights, np.float32)
      if self.class_weights.shape != (self.num_classes,):
        raise DataError(f"{self.name}: class_weights has shape {self.class_weights.shape}, "
                        f"expected ({self.num_classes},)")

  def summary(self) -> str:
    """One-line description of the split sizes, used in logs.

    Returns:
      A string like ``cifar10: train 40000, val 10000, test 10000, 10 classes, input (32, 32, 3)``.
    """
    extra = "".join(f", {k} {len(v)}" for k, v in self.extra_tests.items())
    return (f"{self.name}: train {len(self.train)}, val {len(self.val)}, test {len(self.test)}"
            f"{extra}, {self.num_classes} classes, input {self.input_shape}")


def validate_split(split: Split, num_classes: int, input_shape: Optional[Sequence[int]],
                   where: str) -> None:
  """Checks one split and raises :class:`DataError` with a clear message if it is malformed.

  Args:
    split: the split to check.
    num_classes: labels must lie in ``[0, num_classes)``.
    input_shape: expected ``(H, W, C)`` of one example, or None to skip the check.
    where: name used in the messages, e.g. ``'cifar10/train'``.

  Raises:
    DataError: empty split, wrong rank/shape/dtype, length mismatch or labels out of range.
  """
  if not isinstance(split, Split) and hasattr(split, "check"):
    # A streamed split (jpq_jax.data.sources): checked without reading it all.
    split.check(num_classes, input_shape, where)
    return
  x, y = split.x, split.y
  if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
    raise DataError(f"{where}: x and y must be numpy arrays, got {type(x).__name__}, "
                    f"{type(y).__name__}")
  if y.ndim != 1 or x.ndim != 4:
    raise DataError(f"{where}: expected x of shape (N, H, W, C) and y of shape (N,), got "
                    f"{x.shape} and {y.shape}")
  if x.shape[0] != y.shape[0]:
    raise DataError(f"{where}: {x.shape[0]} inputs but {y.shape[0]} labels")
  if y.shape[0] == 0:
    raise DataError(f"{where}: the split is empty (0 examples); check the source files and the "
                    "split/subset options")
  if x.dtype not in (np.uint8, np.float32):
    raise DataError(f"{where}: x must be uint8 images or float32 features, got {x.dtype}")
  if not np.issubdtype(y.dtype, np.integer):
    raise DataError(f"{where}: labels must be integers, got {y.dtype}")
  if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
    raise DataError(f"{where}: examples have shape {tuple(x.shape[1:])}, expected "
                    f"{tuple(input_shape)} (wrong image size? resize the images or pass "
                    "image_size=...)")
  lo, hi = int(y.min()), int(y.max())
  if lo < 0 or hi >= num_classes:
    bad = int(np.sum((y < 0) | (y >= num_classes)))
    raise DataError(f"{where}: {bad} labels out of range [0, {num_classes}) (min {lo}, max {hi})")


def seeded_partition(n: int, sizes: Sequence[int], seed: int, tag: int = 0) -> list:
  """Splits ``range(n)`` into disjoint random parts of the given sizes.

  The permutation is a pure function of ``(seed, tag, n)``, so the same seed always gives the same
  train/validation split whatever else the program did before (unlike a global RNG).

  Args:
    n: number of items.
    sizes: sizes of all parts but the last; the last part gets the rest.
    seed: non-negative integer seed.
    tag: distinguishes independent uses of the same seed.

  Returns:
    A list of ``len(sizes) + 1`` sorted int64 index arrays.

  Raises:
    DataError: if the sizes do not fit into ``n``.
  """
  if sum(sizes) > n or any(s < 0 for s in sizes):
    raise DataError(f"cannot split {n} examples into parts of sizes {list(sizes)} + rest")
  perm = np.random.default_rng([int(seed), 0x5EED, int(tag)]).permutation(n)
  bounds = np.cumsum([0, *sizes])
  parts = [perm[a:b] for a, b in zip(bounds[:-1], bounds[1:])] + [perm[bounds[-1]:]]
  # Sorting keeps the source order inside each part, which makes subsets easy to reason about.
  return [np.sort(p) for p in parts]


def subset(split: Split, size: Optional[int], seed: int, tag: int = 1) -> Split:
  """Takes a seeded random subset of ``size`` examples (the whole split if size is None).

  Args:
    split: the split.
    size: number of examples to keep, or None.
    seed: seed of the subset.
    tag: distinguishes the subsets of different splits.

  Returns:
    The subset (the split itself if ``size`` is None or not smaller than the split).

  Raises:
    DataError: if ``size`` is not positive.
  """
  if size is None or int(size) >= len(split):
    return split
  if int(size) <= 0:
    raise DataError(f"subset size must be positive, got {size}")
  keep, _ = seeded_partition(len(split), [int(size)], seed, tag=1000 + tag)
  return split.take(keep)


def class_weights(y: np.ndarray, num_classes: int) -> np.ndarray:
  """Class weights ``w_k = sum(counts) / count_k`` (METHOD.md §6.1, the GSC loss).

  Args:
    y: training labels.
    num_classes: number of classes.

  Returns:
    ``(num_classes,)`` float32 weights.

  Raises:
    DataError: if a class has no training example (its weight would be infinite).
  """
  counts = np.bincount(np.asarray(y), minlength=num_classes).astype(np.float64)
  if np.any(counts == 0):
    missing = np.flatnonzero(counts == 0).tolist()
    raise DataError(f"classes {missing} have no training example; cannot compute class weights")
  return (counts.sum() / counts).astype(np.float32)


def cache_dir(override: Optional[str] = None) -> str:
  """Directory for cached decoded arrays and features.

  Args:
    override: explicit directory; otherwise ``$JPQ_JAX_CACHE`` or ``~/.cache/jpq_jax``.

  Returns:
    The directory path (created if missing).
  """
  path = override or os.environ.get("JPQ_JAX_CACHE") or os.path.join(
      os.path.expanduser("~"), ".cache", "jpq_jax")
  os.makedirs(path, exist_ok=True)
  return path


def cache_key(*parts) -> str:
  """Short stable hash of ``parts`` (their ``repr``), used in cache file names.

  Args:
    *parts: anything with a stable ``repr`` (paths, sizes, mtimes, parameters).

  Returns:
    A 16-character hex digest.
  """
  return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def source_stamp(path: str) -> tuple:
  """What identifies a file or directory tree's content for caching: sizes and modification times.

  Args:
    path: file or directory.

  Returns:
    ``(abspath, size, mtime_ns)`` for a file, ``(abspath, file count, total size, latest mtime_ns,
    digest)`` for a directory, where ``digest`` hashes every file's relative path and size: moving
    a file to another class or split folder keeps count, sizes and times but changes the labels.
  """
  path = os.path.abspath(path)
  if os.path.isfile(path):
    st = os.stat(path)
    return (path, st.st_size, st.st_mtime_ns)
  total, latest, count = 0, 0, 0
  digest = hashlib.sha1()
  for dirpath, dirnames, filenames in os.walk(path):
    dirnames.sort()
    for f in sorted(filenames):
      full = os.path.join(dirpath, f)
      st = os.stat(full)
      total, latest, count = total + st.st_size, max(latest, st.st_mtime_ns), count + 1
      digest.update(f"{os.path.relpath(full, path)}\0{st.st_size}\n".encode())
  return (path, count, total, latest, digest.hexdigest())


def save_cache(path: str, **arrays) -> None:
  """Writes arrays to an uncompressed ``.npz`` atomically (write to a temp file, then rename).

  Uncompressed so that loading is a plain read; atomic so that a killed job never leaves a
  truncated cache that a later run would trust.

  A failure to write (read-only or full disk) only warns.

  Args:
    path: destination ``.npz`` path.
    **arrays: arrays to store.
  """
  tmp = f"{path}.tmp{os.getpid()}.npz"
  try:
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
  except OSError as e:
    # A read-only or full cache directory must not stop training: the data is in memory anyway.
    warnings.warn(f"could not write the data cache {path}: {e}")
    if os.path.exists(tmp):
      os.remove(tmp)


def load_cache(path: str) -> Optional[dict]:
  """Reads a cache written by :func:`save_cache`.

  Args:
    path: the ``.npz`` path.

  Returns:
    A dict of arrays, or None if the file is missing or unreadable.
  """
  if not os.path.exists(path):
    return None
  try:
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in f.files}
  except (OSError, ValueError):
    return None
