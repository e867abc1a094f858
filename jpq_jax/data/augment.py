"""Training augmentations in numpy, deterministic for (seed, epoch, batch index).

Two augmentations are known by name:

* ``'cifar'`` -- the reference CIFAR-10 transform (METHOD.md §9.1): ``RandomRotation(15)`` then
  ``RandomAffine(0, translate=(0.1, 0.1))`` then ``RandomHorizontalFlip(0.5)``. Like torchvision,
  the rotation angle is uniform in [-15°, 15°] about the image centre with nearest-neighbour
  sampling and zero fill, the translation is uniform in [-10%, 10%] of the width/height rounded to
  whole pixels (zero fill), and the flip has probability 0.5. Because the translation is a whole
  number of pixels and the flip is exact, the three steps are applied as one nearest-neighbour
  resampling, which gives exactly the result of applying them one after the other.
* ``'flip'`` -- horizontal flip with probability 0.5 (Tiny ImageNet at 64 px, METHOD.md §9.3).
* ``'imagenet'`` -- torchvision's ``RandomResizedCrop(size)`` then ``RandomHorizontalFlip(0.5)``
  (ImageNet, METHOD.md §9.4): a box of area U(0.08, 1) of the image's and aspect ratio
  log-uniform in [3/4, 4/3] (10 tries, else the whole image clamped to that ratio, centred) is
  resized to the image's own size (bilinear, with Pillow's antialiasing when it shrinks). The
  output keeps the stored size, so the split's stored images (:mod:`jpq_jax.data.imagenet`) are
  the crop's source.

The random parameters of a batch come from ``numpy.random.default_rng([seed, epoch, batch, tag])``,
so a resumed run sees the same augmented images. The loader draws them for the *global* batch and
each process takes its slice, which makes the result independent of the number of processes.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["AUGMENTATIONS", "augment_rng", "sample_params", "apply", "augment_batch"]

AUGMENTATIONS = ("cifar", "flip", "imagenet")

# Separates the augmentation stream from the shuffling stream of the same (seed, epoch).
_AUG_TAG = 0xA06


def augment_rng(seed: int, epoch: int, batch_index: int) -> np.random.Generator:
  """The random generator of one (global) batch.

  Args:
    seed: run seed.
    epoch: epoch number.
    batch_index: index of the batch within the epoch.

  Returns:
    A fresh ``numpy.random.Generator``.
  """
  return np.random.default_rng([int(seed), int(epoch), int(batch_index), _AUG_TAG])


def sample_params(name: str, n: int, hw: tuple, rng: np.random.Generator) -> dict:
  """Draws the per-example parameters of ``n`` examples.

  Args:
    name: augmentation name, one of :data:`AUGMENTATIONS`.
    n: number of examples.
    hw: ``(H, W)`` of the images (the translation range depends on it).
    rng: random generator.

  Returns:
    A dict of ``(n,)`` arrays: ``flip`` (bool) and, for ``'cifar'``, ``angle`` (degrees), ``tx``,
    ``ty`` (whole pixels); for ``'imagenet'``, the crop box ``top``, ``left``, ``height``,
    ``width`` (pixels).

  Raises:
    ValueError: unknown augmentation name.
  """
  if name == "flip":
    return {"flip": rng.random(n) < 0.5}
  if name == "imagenet":
    top, left, height, width = _random_resized_boxes(n, hw, rng)
    return {"top": top, "left": left, "height": height, "width": width,
            "flip": rng.random(n) < 0.5}
  if name == "cifar":
    h, w = hw
    # Draw order mirrors the transform order: rotation, translation, flip.
    angle = rng.uniform(-15.0, 15.0, n)
    tx = np.round(rng.uniform(-0.1 * w, 0.1 * w, n)).astype(np.int64)
    ty = np.round(rng.uniform(-0.1 * h, 0.1 * h, n)).astype(np.int64)
    flip = rng.random(n) < 0.5
    return {"angle": angle, "tx": tx, "ty": ty, "flip": flip}
  raise ValueError(f"unknown augmentation {name!r}; known: {AUGMENTATIONS}")


# torchvision's RandomResizedCrop defaults.
_RRC_SCALE = (0.08, 1.0)
_RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)
_RRC_TRIES = 10


def _random_resized_boxes(n: int, hw: tuple, rng: np.random.Generator) -> tuple:
  """torchvision's ``RandomResizedCrop.get_params`` for ``n`` images of size ``hw``, vectorised.

  Every example draws its 10 tries at once (area, then log-ratio, as torchvision draws them); the
  first try that fits is kept, its position drawn uniformly; an example none of whose tries fit
  gets torchvision's fallback (the largest centred box of a ratio inside the range).

  Returns:
    ``(top, left, height, width)``, each ``(n,)`` int64.
  """
  h, w = int(hw[0]), int(hw[1])
  area = h * w
  target = area * rng.uniform(*_RRC_SCALE, (n, _RRC_TRIES))
  ratio = np.exp(rng.uniform(np.log(_RRC_RATIO[0]), np.log(_RRC_RATIO[1]), (n, _RRC_TRIES)))
  cw = np.rint(np.sqrt(target * ratio)).astype(np.int64)
  ch = np.rint(np.sqrt(target / ratio)).astype(np.int64)
  fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
  first = np.argmax(fits, axis=1)
  rows = np.arange(n)
  ok = fits[rows, first]
  ch, cw = ch[rows, first], cw[rows, first]
  # Fallback (torchvision): the whole image, narrowed to the ratio range, centred.
  in_ratio = w / h
  if in_ratio < _RRC_RATIO[0]:
    fw, fh = w, int(round(w / _RRC_RATIO[0]))
  elif in_ratio > _RRC_RATIO[1]:
    fh, fw = h, int(round(h * _RRC_RATIO[1]))
  else:
    fw, fh = w, h
  ch, cw = np.where(ok, ch, fh), np.where(ok, cw, fw)
  # Positions are drawn for every example (fallbacks included) so the draw count is fixed.
  u_top, u_left = rng.random(n), rng.random(n)
  top = np.where(ok, np.floor(u_top * (h - ch + 1)).astype(np.int64), (h - fh) // 2)
  left = np.where(ok, np.floor(u_left * (w - cw + 1)).astype(np.int64), (w - fw) // 2)
  return top, left, ch, cw


_POOL = (None, None)  # (process id, executor)


def _pool():
  """Threads for the per-image resizes (Pillow releases the GIL while it resizes), created once
  per process (a forked child does not inherit the parent's threads)."""
  global _POOL  # pylint: disable=global-statement
  import os  # pylint: disable=import-outside-toplevel
  if _POOL[0] != os.getpid():
    import concurrent.futures  # pylint: disable=import-outside-toplevel
    _POOL = (os.getpid(), concurrent.futures.ThreadPoolExecutor(
        max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="jpq-augment"))
  return _POOL[1]


def _resized_crops(x: np.ndarray, params: dict) -> np.ndarray:
  """Crops each image to its box and resizes it back to ``(H, W)`` (Pillow, bilinear), flipped.

  The images are independent, so they are resized on a few threads (a 224-px batch of 128 takes
  ~0.2 s on one core); the result does not depend on the thread count.
  """
  from PIL import Image  # pylint: disable=import-outside-toplevel
  b, h, w, c = x.shape
  out = np.empty_like(x)

  def one(i: int) -> None:
    box = (int(params["left"][i]), int(params["top"][i]),
           int(params["left"][i] + params["width"][i]), int(params["top"][i] + params["height"][i]))
    if x.dtype == np.uint8:
      img = Image.fromarray(x[i] if c > 1 else x[i, ..., 0])
      res = np.asarray(img.resize((w, h), Image.BILINEAR, box=box)).reshape(h, w, c)
    else:  # float images: one 32-bit float plane per channel (Pillow's mode "F")
      res = np.stack([np.asarray(Image.fromarray(x[i, ..., k].astype(np.float32)).resize(
          (w, h), Image.BILINEAR, box=box)) for k in range(c)], axis=-1)
    out[i] = res[:, ::-1] if params["flip"][i] else res

  for _ in _pool().map(one, range(b)):  # consumes the results, so a worker's error is raised
    pass
  return out


def apply(x: np.ndarray, name: str, params: dict) -> np.ndarray:
  """Applies an augmentation with given parameters to a batch.

  Args:
    x: ``(B, H, W, C)`` batch (any dtype; uint8 stays uint8).
    name: augmentation name.
    params: output of :func:`sample_params` for ``B`` examples.

  Returns:
    The augmented batch, same shape and dtype (a new array).

  Raises:
    ValueError: unknown augmentation name.
  """
  if name == "flip":
    out = x.copy()
    out[params["flip"]] = out[params["flip"], :, ::-1]
    return out
  if name == "imagenet":
    return _resized_crops(x, params)
  if name != "cifar":
    raise ValueError(f"unknown augmentation {name!r}; known: {AUGMENTATIONS}")
  b, h, w, _ = x.shape
  rows, cols = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64),
                           indexing="ij")
  rows, cols = rows[None], cols[None]
  # Walk back from the output pixel to the source pixel: undo the flip, then the translation,
  # then the rotation.
  flip = params["flip"][:, None, None]
  cols = np.where(flip, (w - 1) - cols, cols)
  rows = rows - params["ty"][:, None, None]
  cols = cols - params["tx"][:, None, None]
  cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
  theta = np.deg2rad(params["angle"])[:, None, None]
  cos, sin = np.cos(theta), np.sin(theta)
  dy, dx = rows - cy, cols - cx
  # Positive angles turn the picture counter-clockwise on screen (torchvision's convention).
  src_c = cx + cos * dx - sin * dy
  src_r = cy + sin * dx + cos * dy
  src_r = np.rint(src_r).astype(np.int64)
  src_c = np.rint(src_c).astype(np.int64)
  inside = (src_r >= 0) & (src_r < h) & (src_c >= 0) & (src_c < w)
  bi = np.broadcast_to(np.arange(b)[:, None, None], inside.shape)
  out = x[bi, np.clip(src_r, 0, h - 1), np.clip(src_c, 0, w - 1)]
  out[~inside] = 0
  return out


def augment_batch(x: np.ndarray, name: Optional[str], seed: int, epoch: int,
                  batch_index: int) -> np.ndarray:
  """Augments one batch deterministically in ``(seed, epoch, batch_index)``.

  Args:
    x: ``(B, H, W, C)`` batch.
    name: augmentation name, or None for no augmentation (returns ``x``).
    seed: run seed.
    epoch: epoch number.
    batch_index: batch index within the epoch.

  Returns:
    The augmented batch.
  """
  if name is None:
    return x
  params = sample_params(name, x.shape[0], x.shape[1:3], augment_rng(seed, epoch, batch_index))
  return apply(x, name, params)
