"""Datasets and the host-side input pipeline (METHOD.md §9).

Public API:

* :func:`load` -- a :class:`Dataset` (train/val/test :class:`Split` arrays in host memory plus the
  protocol metadata) for ``'demo'``/``'digits'``, ``'cifar10'``, ``'speech_commands'``,
  ``'tiny_imagenet'``, ``'imagenet'`` (an image folder) or ``'folder:<path>'``;
* :class:`Loader` -- deterministic, sharded, prefetched batches of one split, with the training
  augmentation;
* :class:`DataError` / :class:`DatasetNotFoundError` -- malformed or missing data.

Submodules: :mod:`~jpq_jax.data.augment` (numpy augmentations), :mod:`~jpq_jax.data.mfcc` (speech
features), :mod:`~jpq_jax.data.images` (image folders and zips), :mod:`~jpq_jax.data.cifar`,
:mod:`~jpq_jax.data.speech`, :mod:`~jpq_jax.data.tiny_imagenet` (with its TFDS builder),
:mod:`~jpq_jax.data.imagenet` (ILSVRC 2012 image folder),
:mod:`~jpq_jax.data.digits`, :mod:`~jpq_jax.data.tfds_io`.

Nothing here imports TensorFlow or TFDS at import time, and nothing touches an accelerator.
"""

from jpq_jax.data.api import DATASETS, load, load_folder
from jpq_jax.data.core import DataError, Dataset, DatasetNotFoundError, Split, class_weights
from jpq_jax.data.loader import Loader, epoch_order

__all__ = [
    "DATASETS",
    "DataError",
    "Dataset",
    "DatasetNotFoundError",
    "Loader",
    "Split",
    "class_weights",
    "epoch_order",
    "load",
    "load_folder",
]
