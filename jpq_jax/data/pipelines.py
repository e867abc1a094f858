"""The user's own pipelines as a sweep's data: grain datasets, sources, epoch -> batches factories.

:func:`user_dataset` builds a :class:`~jpq_jax.data.Dataset` from what the user has, per split:

* a ``grain.MapDataset`` (or any random-access source: ``len`` and ``[i] -> (image, label)``):
  jpq's grain loader shuffles it per epoch, shards it by process, augments and batches it, with
  every guarantee of the built-in datasets (order a pure function of ``(seed, epoch)``, exact
  mid-epoch resume);
* a :class:`BatchStream`: ``factory(epoch) -> iterator of (x, y)`` *global* batches, used as it
  comes (the factory owns the order; for an exact resume its epoch ``e`` must be a pure function
  of ``e``, and a resumed epoch skips the batches already done);
* an in-memory :class:`~jpq_jax.data.Split`.

Then ``run_sweep(config, workdir, dataset=user_dataset(...))``.
"""

from __future__ import annotations

import itertools
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from jpq_jax.data import augment as augment_lib
from jpq_jax.data.core import DataError, Dataset, Split
from jpq_jax.data.sources import SourceSplit

__all__ = ["BatchStream", "StreamLoader", "user_dataset"]


class BatchStream:
  """A split given as ``factory(epoch) -> iterator of (x, y)`` global batches.

  Args:
    factory: ``factory(epoch)`` returns an iterator of ``(x, y)``: ``x`` ``(B, H, W, C)`` uint8
      (scaled by 1/255) or float32, ``y`` ``(B,)`` integer labels. For training, every batch has
      ``train.batch_size`` examples (the global batch; with several processes each takes its
      slice); for evaluation, batches of at most ``train.eval_batch_size``.
    num_examples: examples per epoch (the sweep's checks and logs).
    steps_per_epoch: batches per training epoch (needed for a training split).
  """

  def __init__(self, factory: Callable[[int], Iterator], num_examples: int,
               steps_per_epoch: Optional[int] = None):
    if not callable(factory):
      raise TypeError(f"factory must be callable (epoch -> iterator), got {type(factory).__name__}")
    self.factory = factory
    self.num_examples = int(num_examples)
    self.steps_per_epoch = None if steps_per_epoch is None else int(steps_per_epoch)
    self._first = None

  def __len__(self) -> int:
    """Examples per epoch."""
    return self.num_examples

  def first_batch(self) -> tuple:
    """The first batch of epoch 0 (read once, kept for the shape checks)."""
    if self._first is None:
      try:
        x, y = next(iter(self.factory(0)))
      except StopIteration:
        raise DataError("the batch stream's epoch 0 yields no batch") from None
      self._first = (np.asarray(x), np.asarray(y))
    return self._first

  def check(self, num_classes: int, input_shape: Optional[Sequence[int]], where: str) -> None:
    """Checks the first batch: shapes, dtype, labels (see :func:`jpq_jax.data.core.validate_split`).

    Args:
      num_classes: labels must lie in ``[0, num_classes)``.
      input_shape: expected ``(H, W, C)``, or None.
      where: the split's name for the messages.

    Raises:
      DataError: no examples, a malformed first batch.
    """
    if self.num_examples <= 0:
      raise DataError(f"{where}: num_examples must be positive, got {self.num_examples}")
    x, y = self.first_batch()
    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
      raise DataError(f"{where}: batches must be (x (B, H, W, C), y (B,)), got {x.shape} and "
                      f"{y.shape}")
    if x.dtype not in (np.uint8, np.float32):
      raise DataError(f"{where}: x must be uint8 images or float32 features, got {x.dtype}")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
      raise DataError(f"{where}: examples have shape {tuple(x.shape[1:])}, expected "
                      f"{tuple(input_shape)}")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
      raise DataError(f"{where}: labels of the first batch out of range [0, {num_classes})")


class StreamLoader:
  """The loader of a :class:`BatchStream` (same interface as :class:`~jpq_jax.data.Loader`).

  Args:
    split: the stream.
    batch_size: per-process batch size (training: every global batch must have
      ``batch_size * process_count`` examples).
    seed: run seed (the named augmentation's parameters).
    shuffle: True for training (the stream's order is used as it is either way).
    augment: a named augmentation applied per global batch, or None.
    drop_remainder: training (True): exactly ``steps_per_epoch`` full batches; evaluation (False):
      batches larger than ``batch_size`` are cut.
    process_index, process_count: this process and the number of processes (default: JAX's).
    prefetch: unused (the stream prefetches itself if it wants to).

  Raises:
    DataError: a training stream without ``steps_per_epoch``.
  """

  def __init__(self, split: BatchStream, batch_size: int, *, seed: int, shuffle: bool,
               augment=None, drop_remainder: bool = True, process_index: Optional[int] = None,
               process_count: Optional[int] = None, prefetch: int = 0):
    del shuffle, prefetch
    if process_index is None or process_count is None:
      import jax  # pylint: disable=import-outside-toplevel
      process_index = jax.process_index() if process_index is None else process_index
      process_count = jax.process_count() if process_count is None else process_count
    if augment is not None and augment not in augment_lib.AUGMENTATIONS:
      raise ValueError(f"a batch stream takes a named augmentation {augment_lib.AUGMENTATIONS} or "
                       "None; augment inside the factory instead")
    self.split, self.batch_size, self.seed = split, int(batch_size), int(seed)
    self.augment, self.drop_remainder = augment, bool(drop_remainder)
    self.process_index, self.process_count = int(process_index), int(process_count)
    if self.drop_remainder and split.steps_per_epoch is None:
      raise DataError("a training BatchStream needs steps_per_epoch=...")

  @property
  def global_batch_size(self) -> int:
    """Examples per step over all processes."""
    return self.batch_size * self.process_count

  @property
  def steps_per_epoch(self) -> int:
    """Batches per epoch (training: the stream's; evaluation: from ``num_examples``)."""
    if self.drop_remainder:
      return int(self.split.steps_per_epoch)
    return -(-len(self.split) // self.global_batch_size)

  def __len__(self) -> int:
    """Same as :attr:`steps_per_epoch`."""
    return self.steps_per_epoch

  def _global_batches(self, epoch: int) -> Iterator[tuple]:
    g = self.global_batch_size
    for x, y in self.split.factory(epoch):
      x, y = np.asarray(x), np.asarray(y)
      if self.drop_remainder:
        if len(y) != g:
          raise DataError(f"the training stream yielded a batch of {len(y)} examples in epoch "
                          f"{epoch}; expected the global batch of {g} (train.batch_size)")
        yield x, y
      else:
        for i in range(0, len(y), g):
          yield x[i:i + g], y[i:i + g]

  def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Iterates over this process's part of the stream's batches of one epoch.

    Args:
      epoch: epoch number (given to the factory).
      start: first batch to yield (the batches before it are read from the stream and skipped).

    Returns:
      An iterator of ``(x, y)``: float32 NHWC (uint8 scaled to [0, 1]), int32 labels.
    """
    it = self._global_batches(epoch)
    if self.drop_remainder:
      it = itertools.islice(it, int(self.split.steps_per_epoch))
    for step, (x, y) in enumerate(it):
      if step < start:
        continue
      n = len(y)
      base, extra = divmod(n, self.process_count)
      a = self.process_index * base + min(self.process_index, extra)
      part = slice(a, a + base + (self.process_index < extra))
      if self.augment is not None:
        rng = augment_lib.augment_rng(self.seed, epoch, step)
        params = augment_lib.sample_params(self.augment, n, x.shape[1:3], rng)
        x = augment_lib.apply(x[part], self.augment, {k: v[part] for k, v in params.items()})
      else:
        x = x[part]
      x = x.astype(np.float32) * np.float32(1.0 / 255.0) if x.dtype == np.uint8 else \
          x.astype(np.float32, copy=False)
      yield x, y[part].astype(np.int32)


def _as_split(obj, where: str, normalize):
  """One split of :func:`user_dataset` as a split the loaders read."""
  if isinstance(obj, (Split, SourceSplit, BatchStream)):
    return obj
  if callable(obj) and not hasattr(obj, "__getitem__"):
    raise TypeError(f"{where}: wrap an epoch -> iterator factory in "
                    "BatchStream(factory, num_examples=..., steps_per_epoch=...)")
  if hasattr(obj, "__getitem__") and hasattr(obj, "__len__"):
    # A grain.MapDataset, a grain/TFDS data source, a list of (image, label), ...
    return SourceSplit(obj, normalize=normalize)
  raise TypeError(f"{where}: expected a grain.MapDataset or random-access source of (image, "
                  f"label), a BatchStream or a Split, got {type(obj).__name__}")


def user_dataset(train, val, test, *, num_classes: int, input_shape: Optional[Sequence[int]] = None,
                 augment=None, name: str = "user", normalize: Optional[tuple] = None,
                 class_weights: Optional[np.ndarray] = None) -> Dataset:
  """A :class:`~jpq_jax.data.Dataset` of the user's own pipelines, for ``run_sweep(dataset=...)``.

  Args:
    train, val, test: per split, a ``grain.MapDataset`` or any random-access source of
      ``(image, label)`` examples, a :class:`BatchStream`, or a :class:`~jpq_jax.data.Split`.
    num_classes: number of classes.
    input_shape: ``(H, W, C)`` of one example; default: read from the training split.
    augment: training augmentation of random-access splits: a name (``'cifar'``, ``'flip'``) or
      ``fn(image, rng) -> image`` (per example; ``rng`` is a ``numpy.random.Generator`` seeded by
      ``(seed, epoch, position in the epoch)``).
    name: the dataset's name in logs and results.
    normalize: ``(mean, std)`` per channel after the 1/255 scaling, for random-access splits.
    class_weights: optional per-class loss weights.

  Returns:
    The dataset (its splits checked as far as possible without reading them whole).

  Raises:
    TypeError: a split of an unsupported kind.
    DataError: a malformed split.
  """
  splits = {k: _as_split(v, f"{name}/{k}", normalize) for k, v in
            (("train", train), ("val", val), ("test", test))}
  if input_shape is None:
    tr = splits["train"]
    if isinstance(tr, Split):
      input_shape = tr.x.shape[1:]
    elif isinstance(tr, SourceSplit):
      input_shape = tr.example_shape
    else:
      input_shape = tr.first_batch()[0].shape[1:]
  return Dataset(name=name, train=splits["train"], val=splits["val"], test=splits["test"],
                 num_classes=int(num_classes), input_shape=tuple(input_shape),
                 class_weights=class_weights, augment=augment)
