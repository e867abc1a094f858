"""The grain loader: :class:`jpq_jax.data.Loader`'s batches, computed by a grain pipeline.

One element of the pipeline is one step's local batch: ``MapDataset.range(start, steps)`` mapped
through :class:`~jpq_jax.data.transforms.ReadBatch`, :class:`~jpq_jax.data.transforms.AugmentBatch`
and :class:`~jpq_jax.data.transforms.ScaleBatch`. Because a batch is a pure function of
``(seed, epoch, step)`` and grain keeps the order of a ``MapDataset``, the batches are the same
with 0, 1 or more workers, threads or processes, and the same as :class:`jpq_jax.data.Loader`'s
(same epoch order, same process slices, same augmentation parameters; tested bit for bit), so a
run can switch loader without changing its numbers. A resumed epoch starts its range at the
resumed step, which gives the same batches as an uninterrupted one.

Unlike :class:`jpq_jax.data.Loader` it also reads streamed splits
(:class:`jpq_jax.data.SourceSplit`: TFDS, array_record, image files), a batch at a time, takes the
user's per-example augmentation callable, and applies a split's normalization.
"""

from __future__ import annotations

from typing import Iterator, Optional

import grain
import numpy as np

from jpq_jax.data.core import Split
from jpq_jax.data.loader import Loader, _prefetched, epoch_order
from jpq_jax.data.transforms import AugmentBatch, ReadBatch, ScaleBatch, is_user_augment

__all__ = ["GrainLoader", "LOADERS", "WORKER_TYPES", "make_loader"]

WORKER_TYPES = ("threads", "processes")
LOADERS = ("auto", "numpy", "grain")


def _absl_flags_parsed() -> None:
  """Marks absl's flags parsed: grain's worker processes read flags, which a library never parses.

  Only the flags' defaults are used; a program that parsed its own flags is left as it is.
  """
  from absl import flags  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


class GrainLoader(Loader):
  """Iterates over one split in batches through a grain pipeline.

  Args:
    split: an in-memory :class:`~jpq_jax.data.Split` or a streamed
      :class:`~jpq_jax.data.SourceSplit`.
    batch_size: per-process (host) batch size.
    seed: run seed (shuffling and augmentation).
    shuffle: shuffle every epoch (training) or keep the order (evaluation).
    augment: augmentation name (``'cifar'``, ``'flip'``), the user's ``fn(image, rng) -> image``
      (see :class:`~jpq_jax.data.transforms.AugmentBatch`), or None.
    drop_remainder: as :class:`~jpq_jax.data.Loader`.
    process_index, process_count: this process and the number of processes (default: JAX's).
    prefetch: batches prepared ahead (0 with no workers: computed when asked for).
    workers: batches computed in parallel (0: in a background thread of this process, as
      :class:`~jpq_jax.data.Loader`).
    worker_type: ``'threads'`` (no start-up cost; numpy releases the GIL in its array operations)
      or ``'processes'`` (grain's worker processes, started for each epoch; the split is pickled
      to them, cheap for streamed splits).

  Raises:
    ValueError: bad batch size, process index/count, augmentation, workers or worker type.
    DataError: the split is empty or too small for one batch with ``drop_remainder``.
  """

  def __init__(self, split, batch_size: int, *, seed: int, shuffle: bool, augment=None,
               drop_remainder: bool = True, process_index: Optional[int] = None,
               process_count: Optional[int] = None, prefetch: int = 2, workers: int = 0,
               worker_type: str = "threads"):
    user_fn = augment if is_user_augment(augment) else None
    super().__init__(split, batch_size, seed=seed, shuffle=shuffle,
                     augment=None if user_fn is not None else augment,
                     drop_remainder=drop_remainder, process_index=process_index,
                     process_count=process_count, prefetch=prefetch)
    if user_fn is not None:
      self.augment = user_fn
    if int(workers) < 0:
      raise ValueError(f"workers must be >= 0, got {workers}")
    if worker_type not in WORKER_TYPES:
      raise ValueError(f"unknown worker_type {worker_type!r}; use one of {WORKER_TYPES}")
    self.workers = int(workers)
    self.worker_type = worker_type

  def dataset(self, epoch: int, start: int = 0) -> grain.MapDataset:
    """The grain dataset of one epoch's batches from ``start`` on.

    Args:
      epoch: epoch number.
      start: first step.

    Returns:
      A ``grain.MapDataset`` whose element ``i`` is the ``(x, y)`` of step ``start + i``.
    """
    order = epoch_order(len(self.split), self.seed, epoch, self.shuffle)
    ds = grain.MapDataset.range(int(start), self.steps_per_epoch)
    user_fn = self.augment if is_user_augment(self.augment) else None
    ds = ds.map(ReadBatch(self.split, order, self.global_batch_size, self.batch_size,
                          self.process_index, self.process_count, example_fn=user_fn,
                          seed=self.seed, epoch=epoch))
    if self.augment is not None and user_fn is None:
      ds = ds.map(AugmentBatch(self.augment, self.seed, epoch))
    return ds.map(ScaleBatch(getattr(self.split, "normalize", None)))

  def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterates over the batches of one epoch (see :meth:`jpq_jax.data.Loader.epoch`).

    Args:
      epoch: epoch number.
      start: first batch to yield; batch ``i`` is the same whatever ``start`` is.

    Returns:
      An iterator of ``(x, y)``: float32 NHWC, int32 labels.
    """
    ds = self.dataset(epoch, start)
    if self.workers == 0:
      return _prefetched(iter(ds), self.prefetch) if self.prefetch > 0 else iter(ds)
    buffer = max(self.prefetch, self.workers)
    if self.worker_type == "threads":
      return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=self.workers,
                                                       prefetch_buffer_size=buffer)))
    _absl_flags_parsed()
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=1))
    return iter(it.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=self.workers, per_worker_buffer_size=max(1, buffer // self.workers))))


def make_loader(split, batch_size: int, *, kind: str = "auto", workers: int = 0,
                worker_type: str = "threads", **kwargs):
  """The loader of a split: what the sweep calls for every split.

  Args:
    split: an in-memory :class:`~jpq_jax.data.Split`, a :class:`~jpq_jax.data.SourceSplit` or a
      :class:`~jpq_jax.data.BatchStream`.
    batch_size: per-process batch size.
    kind: ``'auto'`` (numpy for in-memory splits, grain for streamed ones), ``'numpy'`` (today's
      :class:`~jpq_jax.data.Loader`, in-memory splits only) or ``'grain'``.
    workers, worker_type: the grain loader's workers (see :class:`GrainLoader`).
    **kwargs: the loader's other arguments (``seed``, ``shuffle``, ``augment``, ...).

  Returns:
    A loader with ``steps_per_epoch`` and ``epoch(epoch, start)``.

  Raises:
    ValueError: an unknown kind, or ``'numpy'`` for a split that is not in memory.
  """
  # Imported here: pipelines builds on the loader module, not the other way round.
  # pylint: disable-next=import-outside-toplevel
  from jpq_jax.data.pipelines import BatchStream, StreamLoader
  if kind not in LOADERS:
    raise ValueError(f"unknown loader {kind!r}; use one of {LOADERS}")
  if isinstance(split, BatchStream):
    return StreamLoader(split, batch_size, **kwargs)
  in_memory = isinstance(split, Split)
  if kind == "numpy" and not in_memory:
    raise ValueError(f"the numpy loader reads in-memory splits only; this split is a streamed "
                     f"{type(split).__name__}: use loader 'grain' or 'auto' (data.loader)")
  aug = kwargs.get("augment")
  if in_memory and (kind == "numpy" or (kind == "auto" and not is_user_augment(aug))):
    return Loader(split, batch_size, **kwargs)
  return GrainLoader(split, batch_size, workers=workers, worker_type=worker_type, **kwargs)

