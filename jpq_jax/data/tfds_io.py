"""Reading TFDS datasets into numpy, with TensorFlow only where TFDS really needs it.

* Already-prepared ``array_record`` data is read through ``builder.as_data_source`` (random access,
  decoded with numpy/Pillow), which works without TensorFlow for image datasets such as ``cifar10``.
* Data prepared in the older ``tfrecord`` format can only be read through ``tf.data``: that path
  imports TensorFlow lazily and says ``pip install tensorflow`` if it is missing.
* Preparing (``download=True``) needs the network and, for most builders, TensorFlow.

Whatever goes wrong while locating a dataset is turned into a :class:`DatasetNotFoundError` or an
``ImportError`` whose message says what to do, instead of a stack trace from inside TFDS.
"""

from __future__ import annotations

import importlib
import os
from typing import Optional, Sequence

import numpy as np

from jpq_jax.data.core import DatasetNotFoundError

__all__ = ["require_tensorflow", "default_data_dir", "get_builder", "read_split"]


def require_tensorflow(purpose: str) -> None:
  """Imports TensorFlow or raises an ImportError that says how to install it.

  Args:
    purpose: what needs it, e.g. ``'preparing cifar10 with TFDS'``.

  Raises:
    ImportError: TensorFlow is not installed.
  """
  try:
    importlib.import_module("tensorflow")
  except ImportError as e:
    raise ImportError(f"{purpose} needs TensorFlow, which is not installed: run "
                      "`pip install tensorflow` (CPU-only is enough), or use an offline source "
                      "(see jpq_jax.data.load's docstring)") from e


def default_data_dir() -> str:
  """The TFDS data directory used when none is given.

  Returns:
    ``$TFDS_DATA_DIR`` if set, else TFDS's default ``~/tensorflow_datasets``.
  """
  env = os.environ.get("TFDS_DATA_DIR")
  if env:
    return env
  return os.path.join(os.path.expanduser("~"), "tensorflow_datasets")


def _is_missing_tf(e: BaseException) -> bool:
  """Whether an exception (or one it was raised from) is a missing ``tensorflow`` module."""
  while e is not None:
    if isinstance(e, ModuleNotFoundError) and (e.name or "").split(".")[0] == "tensorflow":
      return True
    if "No module named 'tensorflow'" in str(e):
      return True
    e = e.__cause__ or e.__context__
  return False


def get_builder(name: str, data_dir: Optional[str], *, download: bool = False,
                how_to_get: str = ""):
  """A prepared TFDS builder, or a clear error.

  Args:
    name: TFDS name, e.g. ``'cifar10'``.
    data_dir: TFDS data directory (None: :func:`default_data_dir`).
    download: download and prepare (``array_record`` format) if not prepared.
    how_to_get: extra lines for the not-found message (offline alternatives).

  Returns:
    A ``tfds.core.DatasetBuilder`` whose data is prepared.

  Raises:
    DatasetNotFoundError: not prepared in ``data_dir`` and ``download`` is False.
    ImportError: the builder or the preparation needs TensorFlow, which is missing.
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  data_dir = data_dir or default_data_dir()
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # pylint: disable=broad-except
    if _is_missing_tf(e):
      raise ImportError(f"the TFDS builder of {name!r} needs TensorFlow even to read prepared "
                        "data: run `pip install tensorflow`" +
                        (f", or instead:\n{how_to_get}" if how_to_get else "")) from e
    raise
  if builder.is_prepared():
    return builder
  if not download:
    raise DatasetNotFoundError(
        f"dataset {name!r} is not prepared in the TFDS data_dir {data_dir!r} "
        f"(looked for {builder.data_path}). To get it:\n"
        f"  * with internet: `pip install tensorflow`, then load({name!r}, download=True, "
        f"data_dir=...) or `python -c \"import tensorflow_datasets as tfds; "
        f"tfds.builder('{name}', data_dir='DIR').download_and_prepare("
        "file_format='array_record')\"` (array_record data is then readable without TF);\n"
        "  * or pass data_dir= a TFDS data directory where it is already prepared (copy it from a "
        "machine with internet)" + (f";\n{how_to_get}" if how_to_get else ""))
  try:
    builder.download_and_prepare(file_format="array_record")
  except Exception as e:  # pylint: disable=broad-except
    if _is_missing_tf(e):
      require_tensorflow(f"preparing {name!r} with TFDS")
    raise
  return builder


def _read_all(source, keys: Sequence[str]) -> dict:
  """Reads every record of a random-access source, keeping ``keys``."""
  out = {k: [] for k in keys}
  n = len(source)
  for i in range(n):
    ex = source[i]
    for k in keys:
      out[k].append(ex[k])
  return out


def read_split(builder, split: str, keys: Sequence[str]) -> dict:
  """Reads one split of a prepared builder into lists of numpy values.

  Args:
    builder: a prepared TFDS builder (see :func:`get_builder`).
    split: split name, e.g. ``'train'``.
    keys: feature keys to keep.

  Returns:
    ``{key: list of numpy values}`` in the storage order of the split.

  Raises:
    ImportError: the data is in ``tfrecord`` format and TensorFlow is missing.
  """
  try:
    source = builder.as_data_source(split=split)
  except NotImplementedError:
    source = None  # tfrecord: not random-access, only tf.data can read it.
  if source is not None:
    return _read_all(source, keys)
  require_tensorflow(f"reading {builder.name!r} prepared in tfrecord format (prepare it with "
                     "file_format='array_record' to read it without TF)")
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  out = {k: [] for k in keys}
  for ex in tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)):
    for k in keys:
      out[k].append(ex[k])
  return out


def to_text(v) -> str:
  """Decodes a TFDS text value to str.

  Args:
    v: bytes or str.

  Returns:
    The text.
  """
  return v.decode() if isinstance(v, (bytes, np.bytes_)) else str(v)
