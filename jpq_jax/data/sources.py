"""Random-access sources: splits that are read example by example instead of held in memory.

A *source* is anything with ``len(source)`` and ``source[i] -> (image, label)`` (the protocol of
``grain.sources.RandomAccessDataSource`` and of ``grain.MapDataset``). :class:`SourceSplit` turns
one into a split the loaders understand: it knows the shape of one example, gathers a batch of
indices into arrays, and takes lazy subsets (``data.options.train_size``, a seeded validation
fraction) by index, so nothing but the examples of the current batches is ever in memory.

Sources here:

* :class:`TfdsSource` -- one split of a prepared TFDS dataset (``tfds.data_source``, array_record,
  no TensorFlow), with the image and label keys and an optional resize;
* :class:`ArrayRecordImages` -- raw ``uint8`` images with their labels in array_record files
  (:func:`write_array_record_images`), the cheapest streamed format to decode;
* :class:`FileSource` -- image files with labels, decoded with Pillow when read: the hook for an
  image folder too large for memory (e.g. ImageNet's ``train/<class>/<image>``);
* :class:`FunctionSource` -- ``fn(i) -> (image, label)`` for anything else.

Every source is picklable (worker processes re-open files on first use) and reads nothing at
construction, so building a dataset of any size costs no time and no memory.
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

import numpy as np

from jpq_jax.data.core import DataError, Split

__all__ = [
    "ArrayRecordImages",
    "FileSource",
    "FunctionSource",
    "IndexedSource",
    "SourceSplit",
    "TfdsSource",
    "gather",
    "resize_image",
    "write_array_record_images",
]


def resize_image(image: np.ndarray, size: Optional[int]) -> np.ndarray:
  """Resizes one ``(H, W, C)`` uint8 image to ``size x size`` (bilinear, Pillow), if needed.

  Args:
    image: the image (2-D grayscale images get a channel axis).
    size: the square output size, or None to keep the image as it is.

  Returns:
    ``(size, size, C)`` uint8 (or the image with a channel axis when ``size`` is None).
  """
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[:, :, None]
  if size is None or image.shape[:2] == (size, size):
    return image
  from PIL import Image  # pylint: disable=import-outside-toplevel
  c = image.shape[2]
  pil = Image.fromarray(image[:, :, 0] if c == 1 else image)
  out = np.asarray(pil.resize((size, size), Image.BILINEAR), np.uint8)
  return out[:, :, None] if out.ndim == 2 else out


class FunctionSource:
  """A source computed by a function: ``source[i] = fn(i)``.

  Args:
    n: number of examples.
    fn: picklable ``fn(i) -> (image, label)`` (for worker processes: a module-level function).
  """

  def __init__(self, n: int, fn: Callable[[int], tuple]):
    self.n = int(n)
    self.fn = fn

  def __len__(self) -> int:
    """Number of examples."""
    return self.n

  def __getitem__(self, i: int) -> tuple:
    """Example ``i`` as ``(image, label)``."""
    return self.fn(int(i))


class IndexedSource:
  """The examples of ``source`` at ``index``, in that order (a lazy subset).

  Args:
    source: a random-access source.
    index: int64 indices into it.
  """

  def __init__(self, source, index: np.ndarray):
    self.source = source
    self.index = np.asarray(index, np.int64)

  def __len__(self) -> int:
    """Number of examples."""
    return int(self.index.shape[0])

  def __getitem__(self, i: int) -> tuple:
    """Example ``i`` of the subset."""
    return self.source[int(self.index[int(i)])]


class _ReopenedOnUnpickle:
  """A source whose open reader (``self._source``) is not pickled: a grain worker process
  re-opens the files on first use instead of receiving a file handle."""

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_source"] = None
    return state


class TfdsSource(_ReopenedOnUnpickle):
  """One split of a prepared TFDS dataset, read through ``tfds.data_source`` (no TensorFlow).

  Args:
    name: TFDS name with its config, e.g. ``'cifar100'`` or ``'imagenet2012/subset'``.
    split: TFDS split string, e.g. ``'train'`` or ``'train[:90%]'``.
    data_dir: the TFDS data directory where it is prepared in the array_record format.
    image_key, label_key: feature keys of the image and the label.
    image_size: square resize (bilinear) of every image, or None to keep them as stored.
  """

  def __init__(self, name: str, split: str, data_dir: str, *, image_key: str = "image",
               label_key: str = "label", image_size: Optional[int] = None):
    self.name, self.split, self.data_dir = name, split, data_dir
    self.image_key, self.label_key = image_key, label_key
    self.image_size = None if image_size is None else int(image_size)
    self._source = None
    self._len = None

  def _open(self):
    if self._source is None:
      import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
      self._source = tfds.data_source(self.name, split=self.split, data_dir=self.data_dir,
                                      download=False)
    return self._source


  def __len__(self) -> int:
    """Number of examples."""
    if self._len is None:
      self._len = len(self._open())
    return self._len

  def __getitem__(self, i: int) -> tuple:
    """Example ``i`` as ``(uint8 image (H, W, C), int label)``.

    Raises:
      DataError: the record has no such image or label key (the message lists its keys).
    """
    ex = self._open()[int(i)]
    try:
      image, label = ex[self.image_key], ex[self.label_key]
    except KeyError as e:
      raise DataError(f"tfds:{self.name}: no feature {e.args[0]!r} in its records (keys "
                      f"{sorted(ex)}); set data.options.image_key / label_key") from None
    return resize_image(image, self.image_size), int(label)


class ArrayRecordImages(_ReopenedOnUnpickle):
  """Raw images with labels in array_record files (see :func:`write_array_record_images`).

  Each record is the label (int32, little endian) followed by the image's ``H*W*C`` bytes.

  Args:
    paths: the array_record file(s), read in order.
    shape: ``(H, W, C)`` of every image.
  """

  def __init__(self, paths, shape: Sequence[int]):
    self.paths = [os.fspath(p) for p in ([paths] if isinstance(paths, (str, os.PathLike))
                                         else paths)]
    self.shape = tuple(int(d) for d in shape)
    self._source = None

  def _open(self):
    if self._source is None:
      import grain  # pylint: disable=import-outside-toplevel
      self._source = grain.sources.ArrayRecordDataSource(self.paths)
    return self._source


  def __len__(self) -> int:
    """Number of examples."""
    return len(self._open())

  def __getitem__(self, i: int) -> tuple:
    """Example ``i`` as ``(uint8 image, int label)``."""
    rec = self._open()[int(i)]
    label = int(np.frombuffer(rec[:4], "<i4")[0])
    return np.frombuffer(rec[4:], np.uint8).reshape(self.shape), label


def write_array_record_images(path: str, x: np.ndarray, y: np.ndarray) -> None:
  """Writes images and labels to a new array_record file (read by :class:`ArrayRecordImages`).

  Args:
    path: the array_record file to write.
    x: ``(N, H, W, C)`` uint8 images.
    y: ``(N,)`` integer labels.

  Raises:
    DataError: not uint8 NHWC images or a label count that differs.
  """
  x, y = np.asarray(x), np.asarray(y)
  if x.dtype != np.uint8 or x.ndim != 4 or len(x) != len(y):
    raise DataError(f"expected (N, H, W, C) uint8 images and (N,) labels, got {x.dtype} "
                    f"{x.shape} and {y.shape}")
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
  # group_size:1 keeps every record its own chunk: a random read decodes one image, not a group.
  writer = array_record_module.ArrayRecordWriter(os.fspath(path), "group_size:1")
  try:
    for image, label in zip(x, y):
      writer.write(np.int32(label).astype("<i4").tobytes() + image.tobytes())
  finally:
    writer.close()


class FileSource:
  """Image files with their labels, decoded (Pillow) when read: a streamed image folder.

  Args:
    paths: one file per example (``.jpg``, ``.png``, ...).
    labels: the label of each.
    image_size: square resize (bilinear) of every image; needed unless all images have one size
      (or a ``decode`` or the loader's augmentation callable gives them one).
    grayscale: one channel instead of RGB.
    decode: ``decode(file bytes) -> uint8 (H, W, C) image`` instead of Pillow's decoding with
      ``image_size``/``grayscale`` (e.g. resize the shorter side and crop the centre; picklable for
      worker processes).
  """

  def __init__(self, paths: Sequence[str], labels: Sequence[int], *,
               image_size: Optional[int] = None, grayscale: bool = False,
               decode: Optional[Callable[[bytes], np.ndarray]] = None):
    if len(paths) != len(labels):
      raise DataError(f"{len(paths)} image files but {len(labels)} labels")
    self.paths = [os.fspath(p) for p in paths]
    self.labels = np.asarray(labels, np.int32)
    self.image_size = None if image_size is None else int(image_size)
    self.grayscale = bool(grayscale)
    self.decode = decode

  def __len__(self) -> int:
    """Number of examples."""
    return len(self.paths)

  def __getitem__(self, i: int) -> tuple:
    """Example ``i`` as ``(uint8 image, int label)``.

    Raises:
      DataError: the file is not a readable image (names it).
    """
    # The image-folder reader's decoding (16-bit PNGs kept in range, same resize).
    from jpq_jax.data.images import decode_image  # pylint: disable=import-outside-toplevel
    path = self.paths[int(i)]
    try:
      with open(path, "rb") as f:
        raw = f.read()
      image = (decode_image(raw, self.image_size, self.grayscale) if self.decode is None
               else np.asarray(self.decode(raw), np.uint8))
    except (OSError, ValueError, SyntaxError) as e:  # Pillow's errors for unreadable files
      raise DataError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    return image, int(self.labels[int(i)])


class SourceSplit:
  """A split read from a random-access source, one batch at a time (nothing held in memory).

  Args:
    source: ``len(source)`` and ``source[i] -> (image, label)``; images ``(H, W, C)`` uint8 (the
      loaders scale them by 1/255) or float32 (used as they are).
    example_shape: ``(H, W, C)`` of every image; default: read from example 0.
    normalize: ``(mean, std)`` per channel applied after the 1/255 scaling (e.g. ImageNet's), or
      None.
  """

  def __init__(self, source, example_shape: Optional[Sequence[int]] = None,
               normalize: Optional[tuple] = None):
    self.source = source
    # A given shape may be the shape *after* the loader's per-example callable (images of varying
    # sizes cropped to it); a shape read from example 0 is the stored one.
    self.shape_given = example_shape is not None
    if example_shape is None:
      if len(source) == 0:
        raise DataError("cannot read the example shape of an empty source")
      example_shape = np.shape(_image_of(source[0]))
      if len(example_shape) == 2:
        example_shape = tuple(example_shape) + (1,)
    self.example_shape = tuple(int(d) for d in example_shape)
    self.normalize = None if normalize is None else (
        np.asarray(normalize[0], np.float32), np.asarray(normalize[1], np.float32))

  def __len__(self) -> int:
    """Number of examples."""
    return len(self.source)

  def take(self, index: np.ndarray) -> "SourceSplit":
    """The examples at ``index``, in that order (lazy: nothing is read).

    Args:
      index: integer index array.

    Returns:
      A new :class:`SourceSplit` over an :class:`IndexedSource`.
    """
    out = SourceSplit(IndexedSource(self.source, index), self.example_shape, self.normalize)
    out.shape_given = self.shape_given
    return out

  def gather(self, index: np.ndarray, transform: Optional[Callable] = None) -> tuple:
    """Reads the examples at ``index`` into arrays.

    Args:
      index: integer index array.
      transform: optional ``transform(j, image) -> image`` applied to the ``j``-th example read,
        before the shape check (the loader's per-example augmentation callable).

    Returns:
      ``(x, y)``: ``(B, H, W, C)`` images in the source's dtype and ``(B,)`` int32 labels.

    Raises:
      DataError: an example whose shape is not :attr:`example_shape` (a missing resize).
    """
    images, labels = [], []
    for j, i in enumerate(np.asarray(index).tolist()):
      image, label = self.source[i]
      image = np.asarray(image)
      if transform is not None:
        image = np.asarray(transform(j, image))
      if image.ndim == 2:
        image = image[:, :, None]
      if image.shape != self.example_shape:
        raise DataError(f"example {i} has shape {image.shape}, expected {self.example_shape} "
                        "(images of several sizes: set image_size=... to resize them, or crop "
                        "them to example_shape in the augmentation callable)")
      images.append(image)
      labels.append(label)
    return np.stack(images), np.asarray(labels, np.int32)

  def check(self, num_classes: int, input_shape: Optional[Sequence[int]], where: str) -> None:
    """Checks the split as far as it can without reading it all (its length and example 0).

    Args:
      num_classes: labels must lie in ``[0, num_classes)``.
      input_shape: expected ``(H, W, C)``, or None.
      where: the split's name for the messages.

    Raises:
      DataError: empty split, wrong example shape or dtype, label 0 out of range.
    """
    if len(self) == 0:
      raise DataError(f"{where}: the split is empty (0 examples)")
    if input_shape is not None and self.example_shape != tuple(input_shape):
      raise DataError(f"{where}: examples have shape {self.example_shape}, expected "
                      f"{tuple(input_shape)} (set image_size=... to resize them)")
    image, label = self.source[0]
    image = np.asarray(image)
    if image.dtype not in (np.uint8, np.float32):
      raise DataError(f"{where}: images must be uint8 or float32, got {image.dtype}")
    if not self.shape_given:
      self.gather(np.arange(1))  # the stored shape must be the example shape
    if not 0 <= int(label) < num_classes:
      raise DataError(f"{where}: label {int(label)} of example 0 out of range [0, {num_classes})")


def _image_of(example) -> np.ndarray:
  """The image of an ``(image, label)`` example."""
  return np.asarray(example[0])


def gather(split, index: np.ndarray, transform: Optional[Callable] = None) -> tuple:
  """``(x, y)`` of the examples at ``index`` of an in-memory :class:`Split` or a
  :class:`SourceSplit`.

  Args:
    split: the split.
    index: integer index array.
    transform: optional ``transform(j, image) -> image`` of the ``j``-th example.

  Returns:
    ``(x, y)`` arrays (``x`` in the split's dtype, ``y`` as stored).
  """
  if isinstance(split, Split):
    x = split.x[index]
    if transform is not None:
      x = np.stack([np.asarray(transform(j, img)) for j, img in enumerate(x)]).astype(
          x.dtype, copy=False)
    return x, split.y[index]
  return split.gather(index, transform)
