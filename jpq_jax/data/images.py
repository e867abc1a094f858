"""Offline image-folder source: ``<split>/<class>/<image>`` in a directory or straight from a .zip.

This is the layout of ``tfds.folder_dataset.ImageFolder`` and of the offline CIFAR-10 copy
(``shared/data/cifar10-jpeg.zip``). Images are decoded with Pillow (no TensorFlow). Decoding 60k
small JPEGs takes a few seconds, so the decoded uint8 arrays are cached as an uncompressed ``.npz``
in the user cache directory (see :func:`jpq_jax.data.core.cache_dir`), keyed by the source's path,
size and modification time; a second load is a plain file read.
"""

from __future__ import annotations

import io
import os
import zipfile
from typing import Optional

import numpy as np

from jpq_jax.data.core import (DataError, DatasetNotFoundError, cache_dir, cache_key, load_cache,
                               save_cache, source_stamp)

__all__ = ["IMAGE_EXTENSIONS", "list_image_folder", "read_image_folder", "decode_image",
           "stream_image_folder"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm")

# Bump when the decoded format changes so that stale caches are not reused.
_CACHE_VERSION = 1


def _is_image(name: str) -> bool:
  return name.lower().endswith(IMAGE_EXTENSIONS) and not os.path.basename(name).startswith(".")


def list_image_folder(path: str) -> tuple[dict, str]:
  """Lists the images of an image folder or zip, grouped by split and class.

  A single top-level directory that wraps the splits (``cifar10/train/...``) is skipped.

  Args:
    path: directory or ``.zip`` file.

  Returns:
    ``(files, root)``: ``files[split][class]`` is the sorted list of member names (zip) or file
    paths (directory); ``root`` is the wrapping prefix that was skipped ('' if none).

  Raises:
    DatasetNotFoundError: the path does not exist.
    DataError: no image in the ``split/class/image`` layout was found.
  """
  if not os.path.exists(path):
    raise DatasetNotFoundError(f"image folder {path!r} does not exist; expected a directory or a "
                               ".zip laid out as <split>/<class>/<image> (e.g. train/cat/0001.jpg)")
  if zipfile.is_zipfile(path):
    with zipfile.ZipFile(path) as zf:
      names = [n for n in zf.namelist() if not n.endswith("/") and _is_image(n)]
  elif os.path.isdir(path):
    names = []
    for dirpath, _, filenames in os.walk(path):
      rel = os.path.relpath(dirpath, path)
      for f in filenames:
        if _is_image(f):
          names.append(f if rel == "." else f"{rel}/{f}".replace(os.sep, "/"))
  else:
    raise DataError(f"{path!r} is neither a directory nor a zip file")
  parts = [n.split("/") for n in names]
  root = ""
  # Skip one wrapping directory when every file sits one level deeper than split/class/image.
  if parts and all(len(p) == 4 for p in parts) and len({p[0] for p in parts}) == 1:
    root = parts[0][0] + "/"
    parts = [p[1:] for p in parts]
  files: dict = {}
  for name, p in zip(names, parts):
    if len(p) != 3:
      continue
    split, label, _ = p
    files.setdefault(split, {}).setdefault(label, []).append(name)
  if not files:
    raise DataError(f"no images found in {path!r} in the layout <split>/<class>/<image> "
                    f"(extensions {IMAGE_EXTENSIONS})")
  for split in files.values():
    for label in split:
      split[label].sort()
  return files, root


def decode_image(data: bytes, image_size: Optional[int], grayscale: bool) -> np.ndarray:
  """Decodes one image file's bytes with Pillow.

  Args:
    data: the encoded file.
    image_size: resize to ``image_size x image_size`` (bilinear) if given.
    grayscale: convert to one channel instead of RGB.

  Returns:
    ``(H, W, C)`` uint8 array.
  """
  from PIL import Image  # pylint: disable=import-outside-toplevel
  with Image.open(io.BytesIO(data)) as img:
    if img.mode.startswith("I;16"):
      # 16-bit grayscale: Pillow's convert() clips at 255 (nearly every pixel white); keep the
      # high byte instead, the 8-bit image of the same picture.
      img = Image.fromarray((np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8))  # mode L
    img = img.convert("L" if grayscale else "RGB")
    if image_size is not None and img.size != (image_size, image_size):
      img = img.resize((image_size, image_size), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
  return arr[..., None] if arr.ndim == 2 else arr


def _classes(path: str, files: dict, class_names: Optional[list]) -> list:
  """The class order of an image folder (default: sorted folder names), checked.

  Raises:
    DataError: a class outside ``class_names``, fewer than 2 classes, a class without training
      images.
  """
  found = sorted({c for split in files.values() for c in split})
  if class_names is None:
    class_names = found
  unknown = sorted(set(found) - set(class_names))
  if unknown:
    raise DataError(f"{path}: class folders {unknown} are not among the classes {class_names}")
  if len(found) < 2:
    raise DataError(f"{path}: only {len(found)} class folder ({found}) holds images; a classifier "
                    "needs at least 2 (layout <split>/<class>/<image>)")
  if "train" in files:
    untrained = sorted(set(found) - set(files["train"]))
    if untrained:
      raise DataError(f"{path}: class(es) {untrained} have no images in train/ (empty or missing "
                      "folders; images nested deeper than <split>/<class>/ are not read)")
  return list(class_names)


def stream_image_folder(path: str, *, image_size: Optional[int] = None, grayscale: bool = False,
                        class_names: Optional[list] = None) -> tuple[dict, list]:
  """The splits of an image folder as streamed sources: nothing is decoded until it is read.

  For folders too large for memory (ImageNet's ``train/<class>/<image>``): each split is a
  :class:`~jpq_jax.data.SourceSplit` over a :class:`~jpq_jax.data.FileSource` that decodes an
  image when the loader reads it (the same decoding as :func:`read_image_folder`).

  Args:
    path: a directory laid out as ``<split>/<class>/<image>`` (not a zip).
    image_size: resize every image to this square size; if None all images must share one size.
    grayscale: one channel instead of RGB.
    class_names: class order (label = position); default: sorted class directory names.

  Returns:
    ``(splits, class_names)``: ``splits[name]`` is a ``SourceSplit``.

  Raises:
    DatasetNotFoundError: the path does not exist.
    DataError: a zip, no images, or the class problems of :func:`read_image_folder`.
  """
  # pylint: disable-next=import-outside-toplevel
  from jpq_jax.data.sources import FileSource, SourceSplit
  files, _ = list_image_folder(path)
  if not os.path.isdir(path):
    raise DataError(f"{path}: streaming reads image files from a directory; extract the zip "
                    "first (or leave stream off to decode it into memory)")
  class_names = _classes(path, files, class_names)
  splits = {}
  for split, by_class in sorted(files.items()):
    items = [(class_names.index(c), n) for c in sorted(by_class) for n in by_class[c]]
    src = FileSource([os.path.join(path, n) for _, n in items], [lab for lab, _ in items],
                     image_size=image_size, grayscale=grayscale)
    splits[split] = SourceSplit(src)
  return splits, class_names


def read_image_folder(path: str, *, image_size: Optional[int] = None, grayscale: bool = False,
                      class_names: Optional[list] = None, use_cache: bool = True,
                      cache_path: Optional[str] = None) -> tuple[dict, list]:
  """Reads every split of an image folder or zip into uint8 arrays.

  Args:
    path: directory or ``.zip`` laid out as ``<split>/<class>/<image>``.
    image_size: resize every image to this square size; if None all images must share one size.
    grayscale: decode to one channel instead of RGB.
    class_names: class order (label = position); default: sorted class directory names.
    use_cache: read/write the decoded arrays from/to the cache directory.
    cache_path: cache directory override (default :func:`jpq_jax.data.core.cache_dir`).

  Returns:
    ``(splits, class_names)`` where ``splits[name] = (x, y)``, ``x`` ``(N, H, W, C)`` uint8 and
    ``y`` ``(N,)`` int32.

  Raises:
    DatasetNotFoundError: the path does not exist.
    DataError: no images, images of different sizes, an unreadable image (named), fewer than 2
      classes, a class without training images, or a class outside ``class_names``.
  """
  files, _ = list_image_folder(path)
  class_names = _classes(path, files, class_names)
  cache_file = None
  if use_cache:
    key = cache_key(_CACHE_VERSION, source_stamp(path), image_size, grayscale, list(class_names))
    base = os.path.splitext(os.path.basename(os.path.abspath(path)))[0]
    cache_file = os.path.join(cache_dir(cache_path), f"imagefolder-{base}-{key}.npz")
    cached = load_cache(cache_file)
    if cached is not None:
      splits = {k[2:]: (cached[k], cached["y_" + k[2:]]) for k in cached if k.startswith("x_")}
      return splits, list(class_names)

  zf = zipfile.ZipFile(path) if zipfile.is_zipfile(path) else None
  try:
    def read(name: str) -> bytes:
      if zf is not None:
        return zf.read(name)
      with open(os.path.join(path, name), "rb") as f:
        return f.read()

    splits = {}
    for split, by_class in sorted(files.items()):
      items = [(class_names.index(c), n) for c in sorted(by_class) for n in by_class[c]]
      def decode(name: str) -> np.ndarray:
        try:
          return decode_image(read(name), image_size, grayscale)
        except (OSError, ValueError, SyntaxError) as e:  # Pillow's errors for unreadable files
          raise DataError(f"{path}: {name!r} is not a readable image ({type(e).__name__}: {e}); "
                          "remove or replace it") from None

      first = decode(items[0][1])
      x = np.empty((len(items), *first.shape), np.uint8)
      y = np.empty((len(items),), np.int32)
      for i, (label, name) in enumerate(items):
        img = first if i == 0 else decode(name)
        if img.shape != first.shape:
          raise DataError(f"{path}: image {name!r} has shape {img.shape} but {items[0][1]!r} has "
                          f"{first.shape}; pass image_size=... to resize all images (jpq sweep: "
                          "data.options.image_size=N)")
        x[i], y[i] = img, label
      splits[split] = (x, y)
  finally:
    if zf is not None:
      zf.close()
  if cache_file is not None:
    arrays = {}
    for split, (x, y) in splits.items():
      arrays["x_" + split], arrays["y_" + split] = x, y
    save_cache(cache_file, **arrays)
  return splits, list(class_names)
