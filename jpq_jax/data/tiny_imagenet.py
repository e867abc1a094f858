"""Tiny ImageNet (METHOD.md §9.3): a TFDS builder for the official archive and a direct reader.

The official archive ``tiny-imagenet-200.zip`` (http://cs231n.stanford.edu/tiny-imagenet-200.zip)
holds ``tiny-imagenet-200/`` with ``wnids.txt``, ``train/<wnid>/images/<wnid>_<k>.JPEG`` (500 per
class, 100k) and ``val/images/val_<k>.JPEG`` labelled by ``val/val_annotations.txt`` (10k); its test
images have no labels and are not used. Labels are the positions of the wnids in *sorted* order
(what an ImageFolder over ``train/`` gives).

Protocol: the official validation set is the test split; the 100k training images are split 90/10
into train/validation by a seeded permutation; 64x64 uint8 RGB images; training augmentation
``'flip'`` (horizontal flip, no normalisation).

Two ways in, neither needs TensorFlow:

* :class:`TinyImagenet`, a TFDS builder (``tfds.builder('tiny_imagenet')`` once this module is
  imported) that prepares ``array_record`` data from the archive (manual_dir or download) and stores
  the JPEG bytes as they are; read back with ``as_data_source``.
* :func:`read_tiny_imagenet`, which decodes the zip (or the extracted directory) straight into
  arrays with Pillow and caches them as ``.npz``.

A few images of the archive are grayscale; both paths give them three channels.
"""

from __future__ import annotations

import io
import os
import zipfile
from typing import Optional

import numpy as np

from jpq_jax.data import tfds_io
from jpq_jax.data.cifar import image_protocol
from jpq_jax.data.core import (DataError, Dataset, DatasetNotFoundError, Split, cache_dir,
                               cache_key, load_cache, save_cache, source_stamp)
from jpq_jax.data.images import decode_image

__all__ = ["ARCHIVE_NAME", "URL", "TinyImagenetArchive", "read_tiny_imagenet",
           "load_tiny_imagenet", "get_builder_class"]

ARCHIVE_NAME = "tiny-imagenet-200.zip"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
IMAGE_SIZE = 64

_CACHE_VERSION = 1


class TinyImagenetArchive:
  """Uniform access to the official layout in a zip or an extracted directory.

  Args:
    path: ``tiny-imagenet-200.zip``, the extracted ``tiny-imagenet-200/`` directory, or a directory
      that contains either.

  Raises:
    DatasetNotFoundError: nothing in the official layout was found.
  """

  def __init__(self, path: str):
    self._zip = None
    self._dir = None
    if os.path.isdir(path):
      for cand in (path, os.path.join(path, "tiny-imagenet-200")):
        if os.path.exists(os.path.join(cand, "wnids.txt")):
          self._dir = cand
          break
      else:
        if os.path.exists(os.path.join(path, ARCHIVE_NAME)):
          path = os.path.join(path, ARCHIVE_NAME)
    if self._dir is None:
      if not (os.path.isfile(path) and zipfile.is_zipfile(path)):
        raise DatasetNotFoundError(
            f"{path!r} is not the Tiny ImageNet archive: expected {ARCHIVE_NAME} (from {URL}), "
            "its extracted tiny-imagenet-200/ directory, or a directory containing either")
      self._zip = zipfile.ZipFile(path)  # pylint: disable=consider-using-with
      names = self._zip.namelist()
      wnids = [n for n in names if n.endswith("wnids.txt")]
      if not wnids:
        raise DatasetNotFoundError(f"{path!r} has no wnids.txt: not the Tiny ImageNet archive")
      self._prefix = wnids[0][:-len("wnids.txt")]
      self._names = [n[len(self._prefix):] for n in names if n.startswith(self._prefix)]
    else:
      self._prefix = ""
      self._names = []
      for dirpath, _, files in os.walk(self._dir):
        rel = os.path.relpath(dirpath, self._dir).replace(os.sep, "/")
        self._names += [f if rel == "." else f"{rel}/{f}" for f in files]

  def read(self, name: str) -> bytes:
    """Reads one member.

    Args:
      name: path relative to ``tiny-imagenet-200/``, e.g. ``'wnids.txt'``.

    Returns:
      The member's bytes.
    """
    if self._zip is not None:
      return self._zip.read(self._prefix + name)
    with open(os.path.join(self._dir, name), "rb") as f:
      return f.read()

  def close(self) -> None:
    """Closes the zip file, if any."""
    if self._zip is not None:
      self._zip.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def wnids(self) -> list:
    """The class ids, sorted (label = position)."""
    return sorted(self.read("wnids.txt").decode().split())

  def examples(self, split: str) -> list:
    """``(member name, wnid)`` pairs of a split, sorted by name.

    Args:
      split: ``'train'`` or ``'val'``.

    Returns:
      The list of examples.

    Raises:
      DataError: unknown split or an image without annotation.
    """
    names = sorted(self._names)
    if split == "train":
      out = []
      for n in names:
        p = n.split("/")
        if len(p) == 4 and p[0] == "train" and p[2] == "images" and p[3].lower().endswith(".jpeg"):
          out.append((n, p[1]))
      return out
    if split == "val":
      ann = {}
      for line in self.read("val/val_annotations.txt").decode().splitlines():
        fields = line.split("\t")
        if len(fields) >= 2:
          ann[fields[0]] = fields[1]
      out = []
      for n in names:
        p = n.split("/")
        if len(p) == 3 and p[:2] == ["val", "images"] and p[2].lower().endswith(".jpeg"):
          if p[2] not in ann:
            raise DataError(f"val image {p[2]} has no entry in val/val_annotations.txt")
          out.append((n, ann[p[2]]))
      return out
    raise DataError(f"unknown Tiny ImageNet split {split!r}")


def _decode_split(archive: TinyImagenetArchive, split: str, wnids: list) -> Split:
  examples = archive.examples(split)
  if not examples:
    raise DataError(f"Tiny ImageNet: the {split!r} split of the archive is empty")
  x = np.empty((len(examples), IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
  y = np.empty((len(examples),), np.int32)
  for i, (name, wnid) in enumerate(examples):
    img = decode_image(archive.read(name), None, grayscale=False)
    if img.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
      raise DataError(f"Tiny ImageNet image {name!r} has shape {img.shape}, expected "
                      f"({IMAGE_SIZE}, {IMAGE_SIZE}, 3)")
    if wnid not in wnids:
      raise DataError(f"Tiny ImageNet image {name!r} has class {wnid!r}, not in wnids.txt")
    x[i], y[i] = img, wnids.index(wnid)
  return Split(x, y)


def read_tiny_imagenet(path: str, *, use_cache: bool = True,
                       cache_path: Optional[str] = None) -> tuple[Split, Split, list]:
  """Decodes the official archive into arrays (cached).

  Args:
    path: archive, extracted directory, or a directory containing either.
    use_cache: read/write the decoded arrays from/to the cache directory.
    cache_path: cache directory override.

  Returns:
    ``(train, official_val, wnids)``.

  Raises:
    DatasetNotFoundError: no archive at ``path``.
    DataError: malformed archive.
  """
  cache_file = None
  if use_cache:
    key = cache_key(_CACHE_VERSION, source_stamp(path))
    cache_file = os.path.join(cache_dir(cache_path), f"tiny_imagenet-{key}.npz")
    cached = load_cache(cache_file)
    if cached is not None:
      return (Split(cached["x_train"], cached["y_train"]), Split(cached["x_val"], cached["y_val"]),
              [str(w) for w in cached["wnids"]])
  with TinyImagenetArchive(path) as archive:
    wnids = archive.wnids()
    train = _decode_split(archive, "train", wnids)
    val = _decode_split(archive, "val", wnids)
  if cache_file is not None:
    save_cache(cache_file, x_train=train.x, y_train=train.y, x_val=val.x, y_val=val.y,
               wnids=np.asarray(wnids))
  return train, val, wnids


_BUILDER_CLASS = None


def get_builder_class():
  """The TFDS builder class, defined (and so registered as ``'tiny_imagenet'``) on first use.

  Defining it lazily keeps ``import jpq_jax.data`` from importing TFDS.

  Returns:
    The :class:`TinyImagenet` ``GeneratorBasedBuilder`` subclass.
  """
  global _BUILDER_CLASS  # pylint: disable=global-statement
  if _BUILDER_CLASS is not None:
    return _BUILDER_CLASS
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  class TinyImagenet(tfds.core.GeneratorBasedBuilder):
    """Tiny ImageNet 200 from the official archive (train 100k, validation 10k)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release (jpq_jax)."}
    # No checksums file ships with this builder; locating one (TFDS's default) would also need the
    # optional importlib_resources package.
    code_path = None
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Place {ARCHIVE_NAME} (from {URL}) in the manual_dir "
        "(default <data_dir>/downloads/manual/).")

    def _info(self):
      # Built directly (not dataset_info_from_configs) because this builder ships no metadata
      # files next to its module.
      return tfds.core.DatasetInfo(
          builder=self,
          description="Tiny ImageNet: 200 classes of 64x64 images (train 100k, val 10k).",
          features=tfds.features.FeaturesDict({
              # The JPEG bytes of the archive are stored as they are, which avoids re-encoding
              # (and TensorFlow, which TFDS needs to encode arrays).
              "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
                                           encoding_format="jpeg"),
              "label": tfds.features.ClassLabel(num_classes=200),
              "wnid": tfds.features.Text(),
              "file_name": tfds.features.Text(),
          }),
          supervised_keys=("image", "label"),
          homepage="http://cs231n.stanford.edu/",
      )

    def _split_generators(self, dl_manager):
      manual = dl_manager.manual_dir / ARCHIVE_NAME if dl_manager.manual_dir else None
      path = str(manual) if manual is not None and manual.exists() else str(
          dl_manager.download(URL))
      return {"train": self._generate_examples(path, "train"),
              "validation": self._generate_examples(path, "val")}

    def _generate_examples(self, path, split):
      from PIL import Image  # pylint: disable=import-outside-toplevel
      with TinyImagenetArchive(path) as archive:
        wnids = archive.wnids()
        for name, wnid in archive.examples(split):
          data = archive.read(name)
          with Image.open(io.BytesIO(data)) as img:
            if img.mode != "RGB" or img.size != (IMAGE_SIZE, IMAGE_SIZE):
              # Grayscale (or odd) images are stored losslessly as RGB PNG so that every
              # decoder returns (64, 64, 3).
              buf = io.BytesIO()
              img.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE)).save(buf, format="PNG")
              data = buf.getvalue()
          file_name = name.split("/")[-1]
          yield file_name, {"image": data, "label": wnids.index(wnid), "wnid": wnid,
                            "file_name": file_name}

  _BUILDER_CLASS = TinyImagenet
  return TinyImagenet


def _from_tfds(data_dir: Optional[str], download: bool) -> tuple[Split, Split, list]:
  get_builder_class()  # registers the builder with TFDS
  how = ("  * or the official archive, read directly: load('tiny_imagenet', "
         f"data_dir='/path/to/{ARCHIVE_NAME}') (or its extracted directory); for download=True "
         f"without internet put {ARCHIVE_NAME} in <data_dir>/downloads/manual/")
  builder = tfds_io.get_builder("tiny_imagenet", data_dir, download=download, how_to_get=how)
  out = []
  for split in ("train", "validation"):
    d = tfds_io.read_split(builder, split, ("image", "label", "wnid", "file_name"))
    order = np.argsort([tfds_io.to_text(n) for n in d["file_name"]], kind="stable")
    imgs = [np.asarray(i) for i in d["image"]]
    # Some decoders keep grayscale images at one channel: broadcast them to RGB.
    imgs = [np.repeat(i.reshape(*i.shape[:2], -1), 3, axis=-1) if i.ndim == 2 or i.shape[-1] == 1
            else i for i in imgs]
    out.append(Split(np.stack(imgs).astype(np.uint8)[order],
                     np.asarray(d["label"], np.int32)[order]))
    if split == "train":
      pairs = {(int(l), tfds_io.to_text(w)) for l, w in zip(d["label"], d["wnid"])}
  wnids = [w for _, w in sorted(pairs)]
  return out[0], out[1], wnids


def load_tiny_imagenet(data_dir: Optional[str] = None, seed: int = 14, *,
                       val_fraction: float = 0.1, download: bool = False, use_cache: bool = True,
                       cache_path: Optional[str] = None, name: str = "tiny_imagenet") -> Dataset:
  """Loads Tiny ImageNet at 64 px with the reference protocol.

  Args:
    data_dir: the archive, its extracted directory or a directory containing either; or a TFDS
      data directory where ``tiny_imagenet`` is prepared (default: TFDS's).
    seed: seed of the 90/10 train/validation split.
    val_fraction: validation fraction of the training images.
    download: prepare with TFDS if missing (archive in manual_dir, or internet).
    use_cache: cache decoded images of the direct reader.
    cache_path: cache directory override.
    name: name recorded in the dataset.

  Returns:
    The dataset (train 90,000, val 10,000, test 10,000 on the real archive).

  Raises:
    DatasetNotFoundError: no local copy; the message says how to get one.
  """
  direct = data_dir is not None and (
      os.path.isfile(data_dir) or os.path.exists(os.path.join(data_dir, "wnids.txt")) or
      os.path.exists(os.path.join(data_dir, "tiny-imagenet-200", "wnids.txt")) or
      os.path.exists(os.path.join(data_dir, ARCHIVE_NAME)))
  if direct:
    train_full, test, wnids = read_tiny_imagenet(data_dir, use_cache=use_cache,
                                                 cache_path=cache_path)
  else:
    train_full, test, wnids = _from_tfds(data_dir, download)
  return image_protocol(name, train_full, test, num_classes=200, seed=seed,
                        val_fraction=val_fraction, augment="flip", class_names=wnids)
