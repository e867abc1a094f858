"""ImageNet (ILSVRC 2012) from an image folder, with the reference's protocol (METHOD.md §9.4).

Layout (a directory or a ``.zip``, optionally under one wrapping directory): ``train/<wnid>/*.JPEG``
and ``val/<wnid>/*.JPEG``, i.e. the official validation images sorted into class folders (what
the usual ``valprep.sh`` / torchvision's ``ImageFolder`` preparation gives). Labels are the
positions of the wnids in sorted order, as an ``ImageFolder`` over ``train/`` numbers them (the
standard 0..999 of ILSVRC 2012).

Protocol: a seeded 10% of the training images is the validation split, the official validation
set is the test split, 1000 classes. Images are decoded with Pillow (RGB, grayscale and CMYK
JPEGs converted) and stored as ``image_size x image_size`` uint8:

* validation and test: torchvision's evaluation transform, ``Resize(256)`` (the shorter side,
  bilinear) then ``CenterCrop(224)``; at another ``image_size`` S the shorter side goes to
  ``round(S * 256 / 224)``.
* train: the shorter side resized to S, then the centred S x S square. The training augmentation
  ``'imagenet'`` (:mod:`jpq_jax.data.augment`) draws torchvision's ``RandomResizedCrop(S)`` and
  the horizontal flip from that square, per batch.

Two deliberate differences from the reference's pipeline, both forced by the in-memory data path
(every split is one uint8 array): the random crop is drawn from the centred square of the image
at S pixels, not from the whole image at full resolution (for a 4:3 photo it never sees the
outer eighths of the long side); and the whole split must fit in host memory, 150 kB per image at
224 px (the full 1.28M training images are ~190 GB). ``train_per_class`` keeps a seeded subset of
every class's training images before anything is decoded; the full dataset needs a streaming
source (``data.name = "tfds:imagenet2012"`` where the TFDS data-source path is available).

The ImageNet mean/std normalisation is not done here: the images stay in [0, 1] as every other
dataset's, and :class:`jpq_jax.models.ResNet50` normalises them.
"""

from __future__ import annotations

import concurrent.futures
import os
import zipfile
from typing import Optional

import numpy as np

from jpq_jax.data.core import (DataError, Dataset, DatasetNotFoundError, Split, cache_dir,
                               cache_key, load_cache, save_cache, seeded_partition, source_stamp)
from jpq_jax.data.images import list_image_folder

__all__ = ["NUM_CLASSES", "IMAGE_SIZE", "eval_size", "decode_center", "load_imagenet"]

NUM_CLASSES = 1000
IMAGE_SIZE = 224
# Bump when the decoded format changes so that stale caches are not reused.
_CACHE_VERSION = 1
# Separates the per-class subset draw from the train/validation partition of the same seed.
_SUBSET_TAG = 0x1A9


def eval_size(image_size: int) -> int:
  """The shorter side the evaluation transform resizes to before its centre crop.

  Args:
    image_size: the crop (the model's input size).

  Returns:
    ``round(image_size * 256 / 224)``: 256 for 224 (torchvision's ``Resize(256)``).
  """
  return int(round(image_size * 256 / 224))


def decode_center(data: bytes, resize: int, crop: int) -> np.ndarray:
  """Decodes an image, resizes its shorter side, and takes the centred square crop.

  torchvision's ``Resize(resize)`` then ``CenterCrop(crop)`` on a PIL image: the longer side is
  scaled by the same factor (truncated to whole pixels), bilinear with Pillow's antialiasing; the
  crop's offset is ``round((side - crop) / 2)``.

  Args:
    data: the encoded file.
    resize: the shorter side after resizing.
    crop: the square crop (``<= resize``).

  Returns:
    ``(crop, crop, 3)`` uint8 RGB.

  Raises:
    OSError, ValueError: Pillow cannot read the image.
  """
  import io  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  with Image.open(io.BytesIO(data)) as img:
    # No JPEG draft mode (DCT downscaling while decoding): faster, but not the pixels
    # torchvision's PIL loader gives.
    img = img.convert("RGB")
    w, h = img.size
    if w <= h:
      nw, nh = resize, int(resize * h / w)
    else:
      nw, nh = int(resize * w / h), resize
    if (nw, nh) != (w, h):
      img = img.resize((nw, nh), Image.BILINEAR)
    top, left = int(round((nh - crop) / 2.0)), int(round((nw - crop) / 2.0))
    arr = np.asarray(img.crop((left, top, left + crop, top + crop)), dtype=np.uint8)
  return arr


class _Reader:
  """Reads members of the folder or zip; a zip is opened once per thread (ZipFile is not
  thread-safe for concurrent reads of one handle)."""

  def __init__(self, path: str):
    import threading  # pylint: disable=import-outside-toplevel
    self.path = path
    self.is_zip = zipfile.is_zipfile(path)
    self._local = threading.local()
    self._opened = []

  def read(self, name: str) -> bytes:
    if self.is_zip:
      zf = getattr(self._local, "zf", None)
      if zf is None:
        zf = self._local.zf = zipfile.ZipFile(self.path)  # pylint: disable=consider-using-with
        self._opened.append(zf)
      return zf.read(name)
    with open(os.path.join(self.path, name), "rb") as f:
      return f.read()

  def close(self) -> None:
    for zf in self._opened:
      zf.close()
    self._opened = []


def _decode_all(reader: _Reader, names: list, resize: int, crop: int, workers: int) -> np.ndarray:
  x = np.empty((len(names), crop, crop, 3), np.uint8)

  def one(i: int) -> None:
    try:
      x[i] = decode_center(reader.read(names[i]), resize, crop)
    except (OSError, ValueError, SyntaxError) as e:  # Pillow's errors for unreadable files
      raise DataError(f"{reader.path}: {names[i]!r} is not a readable image "
                      f"({type(e).__name__}: {e}); remove or replace it") from None

  # Pillow releases the GIL while it decodes and resizes, so threads use every core.
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    for f in [pool.submit(one, i) for i in range(len(names))]:
      f.result()
  return x


def _examples(by_class: dict, wnids: list) -> tuple[list, np.ndarray]:
  names, labels = [], []
  for w in sorted(by_class):
    names += by_class[w]
    labels += [wnids.index(w)] * len(by_class[w])
  return names, np.asarray(labels, np.int32)


def load_imagenet(data_dir: Optional[str] = None, seed: int = 14, *, image_size: int = IMAGE_SIZE,
                  val_fraction: float = 0.1, train_per_class: Optional[int] = None,
                  workers: Optional[int] = None, use_cache: bool = True,
                  cache_path: Optional[str] = None, name: str = "imagenet") -> Dataset:
  """Loads ImageNet from an image folder with the reference protocol (see the module docstring).

  Args:
    data_dir: the folder or ``.zip`` with ``train/<wnid>/`` and ``val/<wnid>/``.
    seed: seed of the 90/10 train/validation split and of the per-class subset.
    image_size: the model's input size S (224; smaller for tests and reduced protocols).
    val_fraction: validation fraction of the (kept) training images.
    train_per_class: keep a seeded subset of this many training images per class (before the
      validation split and before decoding); None keeps all.
    workers: decoding threads (default: the CPU count).
    use_cache: read/write the decoded arrays from/to the cache directory.
    cache_path: cache directory override.
    name: name recorded in the dataset.

  Returns:
    The dataset: uint8 ``(S, S, 3)`` images, 1000 classes, training augmentation ``'imagenet'``.

  Raises:
    DatasetNotFoundError: no ``data_dir``, or it does not exist.
    DataError: no ``train/`` or ``val/`` class folders, a ``val/`` without class folders, more than
      1000 classes, a validation class unknown to ``train/``, an unreadable image, bad options.
  """
  if not data_dir:
    raise DatasetNotFoundError(
        "imagenet: give data_dir, an image folder or .zip with train/<wnid>/*.JPEG and "
        "val/<wnid>/*.JPEG (the ILSVRC 2012 images, validation sorted into class folders); for "
        "a prepared TFDS copy use the dataset name 'tfds:imagenet2012'")
  if not isinstance(image_size, (int, np.integer)) or image_size < 8:
    raise DataError(f"imagenet: image_size must be an integer >= 8, got {image_size!r}")
  if train_per_class is not None and int(train_per_class) < 1:
    raise DataError(f"imagenet: train_per_class must be >= 1, got {train_per_class!r}")
  files, _ = list_image_folder(data_dir)
  if "train" not in files:
    raise DataError(f"{data_dir}: no train/<wnid>/ images (found splits {sorted(files)}); expected "
                    "train/<wnid>/*.JPEG and val/<wnid>/*.JPEG")
  if "val" not in files:
    raise DataError(f"{data_dir}: no val/<wnid>/ images (found splits {sorted(files)}); sort the "
                    "official validation images into class folders (e.g. with valprep.sh) as "
                    "val/<wnid>/*.JPEG")
  wnids = sorted(files["train"])
  if len(wnids) > NUM_CLASSES:
    raise DataError(f"{data_dir}: {len(wnids)} class folders in train/, more than ImageNet's "
                    f"{NUM_CLASSES}")
  unknown = sorted(set(files["val"]) - set(wnids))
  if unknown:
    raise DataError(f"{data_dir}: val/ classes {unknown[:5]} have no train/ folder")
  by_class = dict(files["train"])
  if train_per_class is not None:
    for i, w in enumerate(wnids):
      names = by_class[w]
      if len(names) > train_per_class:
        keep = seeded_partition(len(names), [int(train_per_class)], seed, tag=_SUBSET_TAG + i)[0]
        by_class[w] = [names[k] for k in keep]
  train_names, train_y = _examples(by_class, wnids)
  test_names, test_y = _examples(files["val"], wnids)
  if not 0.0 < val_fraction < 1.0:
    raise DataError(f"imagenet: val_fraction must be in (0, 1), got {val_fraction}")
  # The same seeded partition as jpq_jax.data.cifar.image_protocol, drawn on the file list so
  # that the validation images get the evaluation transform and the training ones theirs.
  n_val = int(round(val_fraction * len(train_names)))
  val_idx, train_idx = seeded_partition(len(train_names), [n_val], seed)
  if len(val_idx) == 0 or len(train_idx) == 0:
    raise DataError(f"imagenet: {len(train_names)} training images cannot be split with "
                    f"val_fraction={val_fraction} into non-empty train and validation splits")
  size = int(image_size)

  def decode():
    reader = _Reader(data_dir)
    n = workers or os.cpu_count() or 1
    big = eval_size(size)
    try:
      return {
          "train": _decode_all(reader, [train_names[i] for i in train_idx], size, size, n),
          "val": _decode_all(reader, [train_names[i] for i in val_idx], big, size, n),
          "test": _decode_all(reader, test_names, big, size, n),
      }
    finally:
      reader.close()

  labels = {"train": train_y[train_idx], "val": train_y[val_idx], "test": test_y}
  if use_cache:
    key = cache_key(_CACHE_VERSION, source_stamp(data_dir), size, val_fraction, train_per_class,
                    seed)
    cache_file = os.path.join(cache_dir(cache_path), f"imagenet-{key}.npz")
    cached = load_cache(cache_file)
    if cached is not None and all(k in cached and len(cached[k]) == len(labels[k]) for k in labels):
      xs = {k: cached[k] for k in labels}
    else:
      xs = decode()
      save_cache(cache_file, **xs)
  else:
    xs = decode()
  return Dataset(name=name, train=Split(xs["train"], labels["train"]),
                 val=Split(xs["val"], labels["val"]), test=Split(xs["test"], labels["test"]),
                 num_classes=NUM_CLASSES, input_shape=(size, size, 3), augment="imagenet",
                 class_names=wnids)
