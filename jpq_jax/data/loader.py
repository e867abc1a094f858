"""Host-side input pipeline: deterministic shuffling, per-process sharding, augmentation, prefetch.

The order of epoch ``e`` is a pure function of ``(seed, e)``: a run resumed at epoch ``e`` sees
exactly the batches it would have seen without the interruption. With several processes
(multi-host), every epoch is cut into *global* batches of ``batch_size * process_count`` examples
and process ``p`` takes the ``p``-th slice of each, so the shards are disjoint, cover the epoch,
and every process runs the same number of steps. Augmentation parameters are drawn per global batch
from ``(seed, epoch, batch index)``, so the augmented images do not depend on the process count
either.

Everything stays in numpy on the host; a background thread prepares the next batches while the
accelerator works on the current one.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator, Optional

import numpy as np

from jpq_jax.data import augment as augment_lib
from jpq_jax.data.core import DataError, Split

__all__ = ["Loader", "epoch_order"]

# Separates the shuffling stream from the other uses of the run seed.
_SHUFFLE_TAG = 0x5F1


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
  """The example order of one epoch.

  Args:
    n: number of examples.
    seed: run seed.
    epoch: epoch number.
    shuffle: whether to shuffle; if False the order is ``0..n-1``.

  Returns:
    ``(n,)`` int64 permutation, a pure function of ``(n, seed, epoch)``.
  """
  if not shuffle:
    return np.arange(n)
  return np.random.default_rng([int(seed), int(epoch), _SHUFFLE_TAG]).permutation(n)


class Loader:
  """Iterates over one split in batches.

  Args:
    split: the data.
    batch_size: per-process (host) batch size.
    seed: run seed (shuffling and augmentation).
    shuffle: shuffle every epoch (training) or keep the order (evaluation).
    augment: augmentation name (``'cifar'``, ``'flip'``) or None.
    drop_remainder: drop the last incomplete global batch; if False the last batch may be smaller
      (and, with several processes, split as evenly as possible among them).
    process_index: this process; defaults to ``jax.process_index()``.
    process_count: number of processes; defaults to ``jax.process_count()``.
    prefetch: number of batches prepared ahead by a background thread (0: no thread).

  Raises:
    ValueError: bad batch size, process index/count or augmentation name.
    DataError: the split is empty or too small for one batch with ``drop_remainder``.
  """

  def __init__(self, split: Split, batch_size: int, *, seed: int, shuffle: bool,
               augment: Optional[str] = None, drop_remainder: bool = True,
               process_index: Optional[int] = None, process_count: Optional[int] = None,
               prefetch: int = 2):
    if process_index is None or process_count is None:
      # Imported lazily: the pipeline itself never needs JAX, only these two numbers.
      import jax  # pylint: disable=import-outside-toplevel
      process_index = jax.process_index() if process_index is None else process_index
      process_count = jax.process_count() if process_count is None else process_count
    if batch_size <= 0:
      raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    if augment is not None and augment not in augment_lib.AUGMENTATIONS:
      raise ValueError(f"unknown augmentation {augment!r}; known: {augment_lib.AUGMENTATIONS}")
    if len(split) == 0:
      raise DataError("cannot iterate over an empty split")
    self.split = split
    self.batch_size = int(batch_size)
    self.seed = int(seed)
    self.shuffle = bool(shuffle)
    self.augment = augment
    self.drop_remainder = bool(drop_remainder)
    self.process_index = int(process_index)
    self.process_count = int(process_count)
    self.prefetch = int(prefetch)
    if self.steps_per_epoch == 0:
      raise DataError(f"split of {len(split)} examples is smaller than one global batch "
                      f"({self.global_batch_size}); lower batch_size or set drop_remainder=False")

  @property
  def global_batch_size(self) -> int:
    """Examples per step over all processes."""
    return self.batch_size * self.process_count

  @property
  def steps_per_epoch(self) -> int:
    """Number of batches every process yields per epoch."""
    n, g = len(self.split), self.global_batch_size
    return n // g if self.drop_remainder else -(-n // g)

  def __len__(self) -> int:
    """Same as :attr:`steps_per_epoch`."""
    return self.steps_per_epoch

  def batch_indices(self, epoch: int) -> Iterator[tuple[int, np.ndarray, slice]]:
    """The global batches of an epoch and this process's part of each.

    Args:
      epoch: epoch number.

    Yields:
      ``(step, global_indices, local_slice)``: the example indices of the global batch and the
      slice of them that belongs to this process.
    """
    order = epoch_order(len(self.split), self.seed, epoch, self.shuffle)
    g = self.global_batch_size
    for step in range(self.steps_per_epoch):
      idx = order[step * g:(step + 1) * g]
      if len(idx) == g:
        part = slice(self.process_index * self.batch_size,
                     (self.process_index + 1) * self.batch_size)
      else:
        # Last, incomplete global batch: the first processes get one extra example each.
        base, extra = divmod(len(idx), self.process_count)
        start = self.process_index * base + min(self.process_index, extra)
        part = slice(start, start + base + (self.process_index < extra))
      yield step, idx, part

  def _make_batch(self, epoch: int, step: int, idx: np.ndarray,
                  part: slice) -> tuple[np.ndarray, np.ndarray]:
    """Gathers, augments and scales one local batch."""
    local = idx[part]
    x = self.split.x[local]
    if self.augment is not None:
      # Parameters are drawn for the whole global batch, then sliced, so that they do not depend
      # on how many processes share it.
      rng = augment_lib.augment_rng(self.seed, epoch, step)
      params = augment_lib.sample_params(self.augment, len(idx), x.shape[1:3], rng)
      params = {k: v[part] for k, v in params.items()}
      x = augment_lib.apply(x, self.augment, params)
    if x.dtype == np.uint8:
      x = x.astype(np.float32) * np.float32(1.0 / 255.0)
    else:
      x = x.astype(np.float32, copy=False)
    return x, self.split.y[local].astype(np.int32)

  def _batches(self, epoch: int, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for step, idx, part in self.batch_indices(epoch):
      if step >= start:  # the skipped batches are never gathered nor augmented
        yield self._make_batch(epoch, step, idx, part)

  def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterates over the batches of one epoch.

    Args:
      epoch: epoch number (the order and augmentation are pure functions of ``(seed, epoch)``).
      start: first batch to yield (a sweep resumed mid-epoch); batch ``i`` is the same whatever
        ``start`` is.

    Returns:
      An iterator of ``(x, y)``: ``x`` float32 NHWC (uint8 images scaled to [0, 1], augmented if
      the loader has an augmentation), ``y`` int32.
    """
    if self.prefetch <= 0:
      return self._batches(epoch, start)
    return _prefetched(self._batches(epoch, start), self.prefetch)


_DONE = object()


def _prefetched(it: Iterator, size: int) -> Iterator:
  """Runs ``it`` in a daemon thread, ``size`` items ahead; re-raises its errors in the consumer."""
  q: queue.Queue = queue.Queue(maxsize=size)
  stop = threading.Event()

  def put(item) -> bool:
    # Short timeouts so that the thread notices when the consumer has gone away.
    while not stop.is_set():
      try:
        q.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def worker():
    try:
      for item in it:
        if not put(item):
          return
      put(_DONE)
    except BaseException as e:  # pylint: disable=broad-except
      put(e)

  def consume():
    # Started on the first ``next`` so that an iterator that is never used leaves no thread.
    thread = threading.Thread(target=worker, daemon=True, name="jpq-data-prefetch")
    thread.start()
    try:
      while True:
        item = q.get()
        if item is _DONE:
          return
        if isinstance(item, BaseException):
          raise item
        yield item
    finally:
      stop.set()
      thread.join(timeout=5)

  return consume()
