"""Any prepared TFDS dataset by name (``'tfds:<builder>[/<config>]'``), streamed, without TF.

The splits are :class:`~jpq_jax.data.SourceSplit` over ``tfds.data_source`` (array_record, random
access): nothing is read when the dataset is built but example 0 of each split (the checks), and
the loader reads the examples of each batch when it needs them. The protocol:

* train: ``train_split`` (default ``'train'``);
* test: ``test_split``; default ``'test'`` if the builder has one whose labels are set, else
  ``'validation'`` (ImageNet's test split has no labels, its validation split is the test set);
* val: ``val_split``; default ``'validation'`` when it is not the test split, else a seeded
  ``val_fraction`` of train (taken by index, lazily).

Options ``image_key``/``label_key`` (default ``'image'``/``'label'``), ``image_size`` (square
bilinear resize, needed when the images have no fixed size), ``mean``/``std`` (normalization
after the 1/255 scaling) and ``augment``.
"""

from __future__ import annotations

from typing import Optional, Sequence

from jpq_jax.data.core import DataError, Dataset, DatasetNotFoundError, seeded_partition
from jpq_jax.data.sources import SourceSplit, TfdsSource
from jpq_jax.data.tfds_io import default_data_dir

__all__ = ["load_tfds", "prepare_command"]


def prepare_command(name: str, data_dir: str) -> str:
  """The one command that prepares ``name`` in ``data_dir`` in the format read here.

  Args:
    name: TFDS name with its config.
    data_dir: the TFDS data directory.

  Returns:
    A shell command (it needs TensorFlow and, for most datasets, the network).
  """
  return (f"python -c \"import tensorflow_datasets as tfds; tfds.builder('{name}', "
          f"data_dir='{data_dir}').download_and_prepare(file_format='array_record')\"")


def _builder(name: str, data_dir: str):
  """The TFDS builder of a prepared array_record dataset, or a one-line error."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # pylint: disable=broad-except
    # Unknown names, and builders whose code needs TensorFlow, end here; the message says which.
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise DatasetNotFoundError(f"tfds:{name}: no such TFDS dataset prepared in {data_dir!r} "
                               f"({first})") from None
  if not builder.is_prepared():
    raise DatasetNotFoundError(f"tfds:{name} is not prepared in {data_dir!r}: prepare it once "
                               f"with `{prepare_command(name, data_dir)}` (TensorFlow needed to "
                               "prepare, not to read), or set data.data_dir to where it is")
  fmt = str(getattr(builder.info, "file_format", "") or "")
  if "array_record" not in fmt.lower():
    raise DatasetNotFoundError(f"tfds:{name} is prepared in {data_dir!r} as {fmt or 'tfrecord'}, "
                               f"which is not random access: prepare it again with "
                               f"`{prepare_command(name, data_dir)}`")
  return builder


def _labelled(name: str, split: str, data_dir: str, image_key: str, label_key: str) -> bool:
  """Whether example 0 of a split has a label (ImageNet's test split has -1)."""
  src = TfdsSource(name, split, data_dir, image_key=image_key, label_key=label_key)
  return len(src) > 0 and src[0][1] >= 0


def load_tfds(name: str, data_dir: Optional[str], seed: int, *, image_key: str = "image",
              label_key: str = "label", image_size: Optional[int] = None,
              mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
              train_split: str = "train", val_split: Optional[str] = None,
              test_split: Optional[str] = None, val_fraction: float = 0.1,
              augment=None) -> Dataset:
  """A prepared TFDS dataset as streamed splits (see the module docstring for the protocol).

  Args:
    name: ``<builder>`` or ``<builder>/<config>`` (without the ``tfds:`` prefix).
    data_dir: the TFDS data directory (None: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
    seed: seed of the validation fraction.
    image_key, label_key: feature keys.
    image_size: square resize of every image.
    mean, std: per-channel normalization after the 1/255 scaling (both or neither).
    train_split, val_split, test_split: TFDS split names (defaults above).
    val_fraction: validation fraction of train when there is no validation split.
    augment: training augmentation name or callable (see :class:`~jpq_jax.data.GrainLoader`).

  Returns:
    The dataset (name ``'tfds:<name>'``).

  Raises:
    DatasetNotFoundError: unknown or unprepared dataset, or prepared as tfrecord (one line, with
      the command that prepares it).
    DataError: a missing key, split, or an image size that must be given.
  """
  data_dir = str(data_dir or default_data_dir())
  builder = _builder(name, data_dir)
  info = builder.info
  features = info.features
  for key in (image_key, label_key):
    if key not in features:
      raise DataError(f"tfds:{name}: no feature {key!r} (features: {sorted(features.keys())}); "
                      "set data.options.image_key / label_key")
  splits = set(info.splits.keys())
  num_classes = getattr(features[label_key], "num_classes", None)
  if not num_classes:
    raise DataError(f"tfds:{name}: feature {label_key!r} is not a class label")
  shape = tuple(features[image_key].shape)
  if image_size is None and (len(shape) != 3 or any(d is None for d in shape)):
    raise DataError(f"tfds:{name}: images have no fixed size {shape}: set "
                    "data.options.image_size=... (square resize)")
  if (mean is None) != (std is None):
    raise DataError(f"tfds:{name}: give both mean and std for the normalization, or neither")
  normalize = None if mean is None else (tuple(mean), tuple(std))

  if test_split is None:
    if "test" in splits and _labelled(name, "test", data_dir, image_key, label_key):
      test_split = "test"
    elif "validation" in splits:
      test_split = "validation"
    else:
      raise DataError(f"tfds:{name}: no labelled test or validation split (splits "
                      f"{sorted(splits)}); set data.options.test_split")
  if val_split is None and "validation" in splits and test_split != "validation":
    val_split = "validation"

  def split_of(split: str) -> SourceSplit:
    base = split.split("[")[0]
    if base not in splits:
      raise DataError(f"tfds:{name}: no split {base!r} (splits {sorted(splits)})")
    src = TfdsSource(name, split, data_dir, image_key=image_key, label_key=label_key,
                     image_size=image_size)
    return SourceSplit(src, normalize=normalize)

  train, test = split_of(train_split), split_of(test_split)
  if val_split is not None:
    val = split_of(val_split)
  else:
    n_val = int(round(len(train) * float(val_fraction)))
    if not 0 < n_val < len(train):
      raise DataError(f"tfds:{name}: val_fraction {val_fraction} of {len(train)} training "
                      "examples leaves no validation or no training example")
    val_idx, train_idx = seeded_partition(len(train), [n_val], seed)
    train, val = train.take(train_idx), train.take(val_idx)
  return Dataset(name=f"tfds:{name}", train=train, val=val, test=test,
                 num_classes=int(num_classes), input_shape=train.example_shape, augment=augment,
                 class_names=list(getattr(features[label_key], "names", []) or []) or None)
