"""CIFAR-10 with the reference protocol (METHOD.md §9.1), from TFDS or from an offline image folder.

Protocol: the 50k training images are split 80/20 into train (40,000) and validation (10,000) by a
permutation that is a pure function of the seed; the test split is the full 10k test set; inputs are
uint8 images that the loader scales to [0, 1] (no mean/std normalisation); the training augmentation
is ``'cifar'`` (rotation ±15°, translation 10%, horizontal flip). The reference also evaluates its
validation split with the training augmentation (METHOD.md §13.14); whether to do so is the driver's
choice (build the validation :class:`~jpq_jax.data.Loader` with ``augment=dataset.augment``).

With ``mlperf_index=<perf_samples_idxs.npy>`` the MLPerf Tiny test subset is added as
``extra_tests['mlperf_subset']``. The indices refer to the original order of the test batch; the
TFDS source restores that order from the ``id`` feature (``test_00042``), the image-folder copy has
lost it and therefore refuses the option.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from jpq_jax.data import tfds_io
from jpq_jax.data.core import DataError, Dataset, Split, seeded_partition
from jpq_jax.data.images import read_image_folder

__all__ = ["CIFAR10_CLASSES", "load_cifar10", "image_protocol", "find_offline_cifar10"]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck"]

# File names of the offline copy that a data_dir may contain.
OFFLINE_NAMES = ("cifar10-jpeg.zip", "cifar10-jpeg", "cifar10_jpeg")


def image_protocol(name: str, train_full: Split, test: Split, *, num_classes: int, seed: int,
                   val_fraction: float, augment: Optional[str], class_names: Optional[list] = None,
                   val: Optional[Split] = None, extra_tests: Optional[dict] = None) -> Dataset:
  """Builds a :class:`Dataset` from a full training split by a seeded train/validation split.

  Args:
    name: dataset name.
    train_full: all training examples.
    test: the test split.
    num_classes: number of classes.
    seed: seed of the train/validation split.
    val_fraction: fraction of ``train_full`` held out for validation (ignored if ``val`` is given).
    augment: training augmentation name.
    class_names: class names.
    val: an explicit validation split (then ``train_full`` is all training data).
    extra_tests: additional evaluation splits.

  Returns:
    The dataset.

  Raises:
    DataError: invalid fraction.
  """
  if val is None:
    if not 0.0 < val_fraction < 1.0:
      raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n = len(train_full)
    val_idx, train_idx = seeded_partition(n, [int(round(val_fraction * n))], seed)
    train, val = train_full.take(train_idx), train_full.take(val_idx)
  else:
    train = train_full
  return Dataset(name=name, train=train, val=val, test=test, num_classes=num_classes,
                 input_shape=tuple(train.x.shape[1:]) if isinstance(train, Split)
                 else train.example_shape, class_weights=None, augment=augment,
                 extra_tests=dict(extra_tests or {}), class_names=class_names)


def find_offline_cifar10(data_dir: Optional[str]) -> Optional[str]:
  """The offline image-folder source that ``data_dir`` designates, if any.

  Args:
    data_dir: a ``.zip``, an image-folder directory (with ``train/`` and ``test/``), or a directory
      that contains ``cifar10-jpeg.zip``; anything else (e.g. a TFDS data_dir) gives None.

  Returns:
    The path of the zip or folder, or None.
  """
  if not data_dir or not os.path.exists(data_dir):
    return None
  if os.path.isfile(data_dir):
    return data_dir
  if os.path.isdir(os.path.join(data_dir, "train")) and os.path.isdir(
      os.path.join(data_dir, "test")):
    return data_dir
  for n in OFFLINE_NAMES:
    if os.path.exists(os.path.join(data_dir, n)):
      return os.path.join(data_dir, n)
  return None


def _from_tfds(data_dir: Optional[str], download: bool) -> tuple[Split, Split]:
  how = ("  * or an offline copy in the image-folder layout: load('cifar10', "
         "data_dir='/path/to/cifar10-jpeg.zip') (a .zip or a folder with train/<class>/*.jpg and "
         "test/<class>/*.jpg), or load('folder:/path/to/folder_or_zip')")
  builder = tfds_io.get_builder("cifar10", data_dir, download=download, how_to_get=how)
  out = []
  for split in ("train", "test"):
    d = tfds_io.read_split(builder, split, ("id", "image", "label"))
    # TFDS stores examples shuffled; the ids give back the original order (MLPerf indices and a
    # seeded split that does not depend on the storage order rely on it).
    order = np.argsort([tfds_io.to_text(i) for i in d["id"]], kind="stable")
    x = np.stack(d["image"]).astype(np.uint8)[order]
    y = np.asarray(d["label"], np.int32)[order]
    out.append(Split(x, y))
  return out[0], out[1]


def _from_folder(path: str, use_cache: bool, cache_path: Optional[str]) -> tuple[Split, Split]:
  splits, _ = read_image_folder(path, class_names=CIFAR10_CLASSES, use_cache=use_cache,
                                cache_path=cache_path)
  missing = {"train", "test"} - set(splits)
  if missing:
    raise DataError(f"{path}: the CIFAR-10 image folder has no {sorted(missing)} split "
                    f"(found {sorted(splits)})")
  return Split(*splits["train"]), Split(*splits["test"])


def load_cifar10(data_dir: Optional[str] = None, seed: int = 14, *, val_fraction: float = 0.2,
                 mlperf_index: Optional[str] = None, download: bool = False,
                 use_cache: bool = True, cache_path: Optional[str] = None,
                 name: str = "cifar10") -> Dataset:
  """Loads CIFAR-10 with the reference protocol.

  Args:
    data_dir: a TFDS data directory (default: TFDS's), or an offline image-folder copy (a ``.zip``,
      a folder with ``train/`` and ``test/``, or a directory holding ``cifar10-jpeg.zip``).
    seed: seed of the 80/20 train/validation split.
    val_fraction: validation fraction of the 50k training images.
    mlperf_index: path of MLPerf Tiny's ``perf_samples_idxs.npy`` (adds ``'mlperf_subset'``).
    download: let TFDS download and prepare the data if missing (internet + TensorFlow).
    use_cache: cache decoded images of an image-folder source.
    cache_path: cache directory override.
    name: name recorded in the dataset.

  Returns:
    The dataset (train 40,000, val 10,000, test 10,000 with the defaults).

  Raises:
    DatasetNotFoundError: no local copy; the message lists the ways to get one.
    DataError: malformed data, or ``mlperf_index`` with an image-folder source.
  """
  offline = find_offline_cifar10(data_dir)
  if offline is not None:
    if mlperf_index is not None:
      raise DataError("mlperf_index needs the original test-set order, which the image-folder copy "
                      f"{offline!r} does not keep; use the TFDS source for the MLPerf subset")
    train_full, test = _from_folder(offline, use_cache, cache_path)
  else:
    train_full, test = _from_tfds(data_dir, download)
  extra = {}
  if mlperf_index is not None:
    idx = np.load(mlperf_index).astype(np.int64).ravel()
    if idx.size == 0 or idx.min() < 0 or idx.max() >= len(test):
      raise DataError(f"{mlperf_index}: indices must lie in [0, {len(test)})")
    extra["mlperf_subset"] = test.take(idx)
  return image_protocol(name, train_full, test, num_classes=10, seed=seed,
                        val_fraction=val_fraction, augment="cifar", class_names=CIFAR10_CLASSES,
                        extra_tests=extra)
