"""The grain loader's steps as grain transforms: read a batch, augment it, scale it.

An element of the pipeline is one *local batch* (this process's part of global batch ``step``),
carried as a dict: ``step``, ``n_global`` (examples in the global batch), ``offset`` (where this
process's part starts in it), ``x``, ``y``. Every transform is a pure function of the element and
of the ``(seed, epoch)`` it was built with, so the batches do not depend on how many workers
compute them nor in which order.

* :class:`ReadBatch` -- the indices of the step from the epoch's order, gathered from the split,
  each example through the user's augmentation callable ``fn(image, rng) -> image`` if there is
  one (``rng`` from ``(seed, epoch, position in the epoch)``, so it does not depend on the batch
  size or the process count; it may crop images of varying size to the example shape);
* :class:`AugmentBatch` -- a named augmentation (parameters drawn per *global* batch from
  ``(seed, epoch, step)``, exactly as :class:`jpq_jax.data.Loader` draws them);
* :class:`ScaleBatch` -- uint8 to float32 in [0, 1] (then ``(x - mean) / std`` if the split has a
  normalization).

:func:`apply_cifar` computes the ``'cifar'`` augmentation with far fewer full-size operations than
:func:`jpq_jax.data.augment.apply` and gives the same bits (tested): the rotation's products are
formed per row and per column, where they are the same numbers, before being broadcast.
"""

from __future__ import annotations

from typing import Callable, Optional

import grain
import numpy as np

from jpq_jax.data import augment as augment_lib
from jpq_jax.data.sources import gather

__all__ = ["AugmentBatch", "ReadBatch", "ScaleBatch", "apply_cifar", "apply_augmentation"]

# Separates the user augmentation's stream from the shuffling and the named augmentations.
_USER_AUG_TAG = 0xA07


def apply_cifar(x: np.ndarray, params: dict) -> np.ndarray:
  """The ``'cifar'`` augmentation, bit for bit :func:`jpq_jax.data.augment.apply`, faster.

  The reference walks every output pixel back through flip, translation and rotation on full
  ``(B, H, W)`` grids. The terms ``cos * dx`` and ``sin * dx`` depend on the column only, and
  ``sin * dy``, ``cos * dy`` on the row only, so they are computed on ``(B, W)`` and ``(B, H)``
  vectors (the same float64 products) and only the two final sums are full-size, summed in the
  reference's order; the gather is one ``take`` on the flattened batch with a zero pixel appended
  for the points that fall outside.

  Args:
    x: ``(B, H, W, C)`` batch.
    params: :func:`jpq_jax.data.augment.sample_params` of ``'cifar'`` for ``B`` examples.

  Returns:
    The augmented batch, same shape and dtype.
  """
  b, h, w, c = x.shape
  cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
  cols = np.arange(w, dtype=np.float64)[None, :]
  rows = np.arange(h, dtype=np.float64)[None, :]
  cols = np.where(params["flip"][:, None], (w - 1) - cols, cols)
  rows = rows - params["ty"][:, None]
  cols = cols - params["tx"][:, None]
  theta = np.deg2rad(params["angle"])[:, None]
  cos, sin = np.cos(theta), np.sin(theta)
  dy, dx = rows - cy, cols - cx
  src_c = np.rint((cx + cos * dx)[:, None, :] - (sin * dy)[:, :, None]).astype(np.int64)
  src_r = np.rint((cy + sin * dx)[:, None, :] + (cos * dy)[:, :, None]).astype(np.int64)
  inside = (src_r >= 0) & (src_r < h) & (src_c >= 0) & (src_c < w)
  flat = (np.arange(b)[:, None, None] * h + src_r) * w + src_c
  flat = np.where(inside, flat, b * h * w)  # the appended zero pixel
  pixels = np.concatenate([x.reshape(b * h * w, c), np.zeros((1, c), x.dtype)])
  return pixels.take(flat.reshape(-1), axis=0).reshape(b, h, w, c)


def apply_augmentation(x: np.ndarray, name: str, params: dict) -> np.ndarray:
  """A named augmentation with given parameters (:func:`apply_cifar` for ``'cifar'``).

  Args:
    x: ``(B, H, W, C)`` batch.
    name: one of :data:`jpq_jax.data.augment.AUGMENTATIONS`.
    params: its parameters for ``B`` examples.

  Returns:
    The augmented batch.
  """
  if name == "cifar":
    return apply_cifar(x, params)
  return augment_lib.apply(x, name, params)


class ReadBatch(grain.transforms.Map):
  """Step -> the element of this process's part of global batch ``step`` (indices gathered).

  The user's per-example augmentation callable runs here, on each example as it is read, before
  the examples are stacked: it may receive images of any size (e.g. a streamed image folder) and
  crop them to the split's example shape (ImageNet's random resized crop).

  Args:
    split: an in-memory :class:`~jpq_jax.data.Split` or a :class:`~jpq_jax.data.SourceSplit`.
    order: the epoch's example order.
    global_batch: examples per global batch.
    batch_size, process_index, process_count: this process's part (as
      :meth:`jpq_jax.data.Loader.batch_indices`).
    example_fn: the user's ``fn(image, rng) -> image``, or None.
    seed, epoch: the run seed and the epoch (``example_fn``'s generators).
  """

  def __init__(self, split, order: np.ndarray, global_batch: int, batch_size: int,
               process_index: int, process_count: int, example_fn: Optional[Callable] = None,
               seed: int = 0, epoch: int = 0):
    self.split, self.order, self.global_batch = split, order, int(global_batch)
    self.batch_size, self.pi, self.pc = int(batch_size), int(process_index), int(process_count)
    self.example_fn, self.seed, self.epoch = example_fn, int(seed), int(epoch)

  def map(self, element):
    """Reads one local batch.

    Args:
      element: the step (an int).

    Returns:
      ``{'step', 'n_global', 'offset', 'x', 'y'}``.
    """
    step = int(element)
    g = self.global_batch
    idx = self.order[step * g:(step + 1) * g]
    if len(idx) == g:
      start, size = self.pi * self.batch_size, self.batch_size
    else:  # the last, incomplete global batch: the first processes get one extra example each
      base, extra = divmod(len(idx), self.pc)
      start, size = self.pi * base + min(self.pi, extra), base + (self.pi < extra)
    transform = None
    if self.example_fn is not None:
      first = step * g + start  # the example's position in the epoch: its generator's seed

      def transform(j, image):
        return self.example_fn(image, np.random.default_rng(
            [self.seed, self.epoch, first + j, _USER_AUG_TAG]))
    x, y = gather(self.split, idx[start:start + size], transform)
    return {"step": step, "n_global": len(idx), "offset": start, "x": x, "y": y}


class AugmentBatch(grain.transforms.Map):
  """Augments one element with a named augmentation.

  Args:
    augment: an augmentation name (:data:`jpq_jax.data.augment.AUGMENTATIONS`).
    seed, epoch: the run seed and the epoch.
  """

  def __init__(self, augment: str, seed: int, epoch: int):
    self.augment, self.seed, self.epoch = augment, int(seed), int(epoch)

  def map(self, element):
    """Augments ``element['x']``.

    Args:
      element: a :class:`ReadBatch` element.

    Returns:
      The element with the augmented ``x``.
    """
    x, offset = element["x"], element["offset"]
    # Drawn for the whole global batch, then sliced: the process count does not change them.
    rng = augment_lib.augment_rng(self.seed, self.epoch, element["step"])
    params = augment_lib.sample_params(self.augment, element["n_global"], x.shape[1:3], rng)
    params = {k: v[offset:offset + len(x)] for k, v in params.items()}
    return dict(element, x=apply_augmentation(x, self.augment, params))


class ScaleBatch(grain.transforms.Map):
  """uint8 images to float32 in [0, 1] (float features unchanged), then the normalization.

  Args:
    normalize: ``(mean, std)`` per channel, or None.
  """

  def __init__(self, normalize: Optional[tuple] = None):
    self.normalize = normalize

  def map(self, element):
    """Scales one element.

    Args:
      element: a :class:`ReadBatch` element.

    Returns:
      ``(x, y)``: float32 NHWC and int32 labels.
    """
    x = element["x"]
    if x.dtype == np.uint8:
      x = x.astype(np.float32) * np.float32(1.0 / 255.0)
    else:
      x = x.astype(np.float32, copy=False)
    if self.normalize is not None:
      mean, std = self.normalize
      x = (x - mean) / std
    return x, np.asarray(element["y"]).astype(np.int32)


def is_user_augment(augment) -> bool:
  """Whether ``augment`` is the user's callable (not a name nor None).

  Args:
    augment: the loader's ``augment`` argument.

  Returns:
    True for a callable.
  """
  return callable(augment) and not isinstance(augment, str)


UserAugment = Callable[[np.ndarray, np.random.Generator], np.ndarray]
