"""Datasets and the host-side input pipeline (METHOD.md §9).

Public API:

* :func:`load` -- a :class:`Dataset` (train/val/test splits plus the protocol metadata) for
  ``'demo'``/``'digits'``, ``'cifar10'``, ``'speech_commands'``, ``'tiny_imagenet'``,
  ``'imagenet'`` (an image folder), ``'folder:<path>'`` (in host memory) or any prepared TFDS
  dataset ``'tfds:<builder>'`` (streamed);
* :class:`Loader` -- deterministic, sharded, prefetched batches of one in-memory split, with the
  training augmentation; :class:`GrainLoader` -- the same batches (bit for bit) from a grain
  pipeline with worker threads or processes, for in-memory and streamed splits
  (:class:`SourceSplit` over a TFDS, array_record, image-file or user source); :func:`make_loader`
  picks one (``data.loader``);
* :func:`user_dataset` / :class:`BatchStream` -- the user's own grain datasets or epoch -> batches
  factories as a sweep's data;
* :class:`DataError` / :class:`DatasetNotFoundError` -- malformed or missing data.

Submodules: :mod:`~jpq_jax.data.augment` (numpy augmentations), :mod:`~jpq_jax.data.mfcc` (speech
features), :mod:`~jpq_jax.data.images` (image folders and zips), :mod:`~jpq_jax.data.cifar`,
:mod:`~jpq_jax.data.speech`, :mod:`~jpq_jax.data.tiny_imagenet` (with its TFDS builder),
:mod:`~jpq_jax.data.imagenet` (ILSVRC 2012 image folder),
:mod:`~jpq_jax.data.digits`, :mod:`~jpq_jax.data.tfds_io`, :mod:`~jpq_jax.data.sources`
(random-access sources), :mod:`~jpq_jax.data.transforms` (grain transforms),
:mod:`~jpq_jax.data.grain_loader`, :mod:`~jpq_jax.data.pipelines`, :mod:`~jpq_jax.data.tfds_stream`.

Nothing here imports TensorFlow, TFDS or grain at import time, and nothing touches an accelerator.
"""

from jpq_jax.data.api import DATASETS, load, load_folder
from jpq_jax.data.core import DataError, Dataset, DatasetNotFoundError, Split, class_weights
from jpq_jax.data.loader import Loader, epoch_order
from jpq_jax.data.pipelines import BatchStream, user_dataset
from jpq_jax.data.sources import (ArrayRecordImages, FileSource, FunctionSource, SourceSplit,
                                  TfdsSource, write_array_record_images)

# The grain loader imports grain: loaded when first named (PEP 562), so that
# ``import jpq_jax.data`` stays as light as it was.
_LAZY = {"GrainLoader": "jpq_jax.data.grain_loader", "make_loader": "jpq_jax.data.grain_loader",
         "LOADERS": "jpq_jax.data.grain_loader"}


def __getattr__(name):
  """Loads the grain-based names on first use."""
  if name in _LAZY:
    import importlib  # pylint: disable=import-outside-toplevel
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'jpq_jax.data' has no attribute {name!r}")


__all__ = [
    "ArrayRecordImages",
    "BatchStream",
    "DATASETS",
    "DataError",
    "Dataset",
    "DatasetNotFoundError",
    "FileSource",
    "FunctionSource",
    "GrainLoader",
    "LOADERS",
    "Loader",
    "SourceSplit",
    "Split",
    "TfdsSource",
    "class_weights",
    "epoch_order",
    "load",
    "load_folder",
    "make_loader",
    "user_dataset",
    "write_array_record_images",
]
