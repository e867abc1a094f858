"""The entry point :func:`load`: a dataset name and options in, a :class:`Dataset` out."""

from __future__ import annotations

from typing import Optional

from jpq_jax.data.cifar import image_protocol, load_cifar10
from jpq_jax.data.core import DataError, Dataset, Split, subset
from jpq_jax.data.digits import load_digits
from jpq_jax.data.imagenet import load_imagenet
from jpq_jax.data.images import read_image_folder, stream_image_folder
from jpq_jax.data.speech import load_speech_commands
from jpq_jax.data.tfds_stream import load_tfds
from jpq_jax.data.tiny_imagenet import load_tiny_imagenet

__all__ = ["load", "load_folder", "DATASETS"]

DATASETS = ("demo", "digits", "cifar10", "speech_commands", "tiny_imagenet", "imagenet",
            "folder:<path>", "tfds:<builder>[/<config>]")

_VAL_NAMES = ("val", "validation", "valid")


def load_folder(path: str, seed: int = 14, *, val_fraction: float = 0.2,
                test_fraction: Optional[float] = None, image_size: Optional[int] = None,
                grayscale: bool = False, augment: Optional[str] = None, use_cache: bool = True,
                cache_path: Optional[str] = None, name: Optional[str] = None,
                stream: bool = False) -> Dataset:
  """Loads an image folder or zip laid out as ``<split>/<class>/<image>``.

  ``train/`` is required. The validation split is ``val/`` (or ``validation/``) if present, else a
  seeded ``val_fraction`` of ``train/``. The test split is ``test/``; without it,
  ``test_fraction`` of ``train/`` is held out (seeded) if given, else it is an error.

  Args:
    path: directory or ``.zip``.
    seed: seed of the held-out splits.
    val_fraction: validation fraction of ``train/`` when there is no validation folder.
    test_fraction: test fraction of ``train/`` when there is no ``test/`` folder.
    image_size: resize every image to this square size (bilinear); default: keep (all equal).
    grayscale: one channel instead of RGB.
    augment: training augmentation name (``'cifar'``, ``'flip'``) or None.
    use_cache: cache decoded images.
    cache_path: cache directory override.
    name: dataset name (default ``'folder:<path>'``).
    stream: read the images when the loader needs them (a directory, not a zip; splits are
      :class:`~jpq_jax.data.SourceSplit`, read by the grain loader) instead of decoding them all
      into memory (``use_cache``/``cache_path`` are then unused).

  Returns:
    The dataset (uint8 images).

  Raises:
    DatasetNotFoundError: the path does not exist.
    DataError: no ``train/`` or ``test/``, mixed image sizes, empty splits.
  """
  if stream:
    splits, class_names = stream_image_folder(path, image_size=image_size, grayscale=grayscale)
  else:
    splits, class_names = read_image_folder(path, image_size=image_size, grayscale=grayscale,
                                            use_cache=use_cache, cache_path=cache_path)
    splits = {k: Split(*v) for k, v in splits.items()}
  name = name or f"folder:{path}"
  if "train" not in splits:
    raise DataError(f"{path}: no train/ split (found {sorted(splits)}); expected "
                    "<split>/<class>/<image> with split in train, val, test")
  train_full = splits["train"]
  test = splits.get("test")
  if test is None:
    if test_fraction is None:
      raise DataError(f"{path}: no test/ split (found {sorted(splits)}); add one or pass "
                      "test_fraction=... (jpq sweep: data.options.test_fraction=0.2)")
    test_ds = image_protocol(name, train_full, train_full, num_classes=len(class_names),
                             seed=seed + 7919, val_fraction=test_fraction, augment=None)
    train_full, test = test_ds.train, test_ds.val
  val_name = next((v for v in _VAL_NAMES if v in splits), None)
  val = splits[val_name] if val_name else None
  return image_protocol(name, train_full, test, num_classes=len(class_names), seed=seed,
                        val_fraction=val_fraction, augment=augment, class_names=class_names,
                        val=val)


def load(name: str, *, data_dir: Optional[str] = None, seed: int = 14, **options) -> Dataset:
  """Loads a dataset with its protocol.

  Names and their sources (none downloads anything unless ``download=True``):

  * ``'demo'`` / ``'digits'``: scikit-learn's 8x8 digits, shipped with scikit-learn (options
    ``val_fraction``, ``test_fraction``).
  * ``'cifar10'``: ``data_dir`` = a TFDS data directory where ``cifar10`` is prepared (array_record
    is read without TensorFlow), or an offline image-folder copy (``cifar10-jpeg.zip``, a folder
    with ``train/`` and ``test/``, or a directory containing the zip). Options ``mlperf_index``,
    ``val_fraction``, ``download``.
  * ``'speech_commands'`` (alias ``'gsc'``): ``data_dir`` = the extracted archives (no TensorFlow)
    or a TFDS data directory (TensorFlow needed by TFDS's builder). Options ``test_dir``,
    ``download``.
  * ``'tiny_imagenet'``: ``data_dir`` = the official zip / extracted directory, or a TFDS data
    directory prepared with :class:`jpq_jax.data.tiny_imagenet.TinyImagenet`. Options
    ``val_fraction``, ``download``.
  * ``'imagenet'``: ``data_dir`` = an image folder or zip with ``train/<wnid>/`` and
    ``val/<wnid>/`` (see :func:`jpq_jax.data.imagenet.load_imagenet`). Options ``image_size``,
    ``val_fraction``, ``train_per_class``, ``workers``.
  * ``'folder:<path>'``: an image folder or zip ``<split>/<class>/<image>`` (see
    :func:`load_folder`; options ``val_fraction``, ``test_fraction``, ``image_size``,
    ``grayscale``, ``augment``, ``stream``: decode each image when it is read, for folders too
    large for memory).
  * ``'tfds:<builder>[/<config>]'``: any TFDS dataset prepared in the array_record format in
    ``data_dir`` (e.g. ``tfds:mnist``, ``tfds:cifar100``, ``tfds:imagenet2012``), *streamed*: the
    splits are read a batch at a time by the grain loader, never whole (see
    :func:`jpq_jax.data.tfds_stream.load_tfds`; options ``image_key``, ``label_key``,
    ``image_size``, ``mean``, ``std``, ``train_split``, ``val_split``, ``test_split``,
    ``val_fraction``, ``augment``).

  Options accepted by every dataset: ``train_size``, ``val_size``, ``test_size`` (keep a seeded
  random subset of that many examples, for reduced protocols); image and feature sources also take
  ``use_cache`` and ``cache_path`` (default ``$JPQ_JAX_CACHE`` or ``~/.cache/jpq_jax``).

  Args:
    name: dataset name (see above).
    data_dir: where the data is (meaning depends on the dataset).
    seed: seed of the train/validation split and of the subsets.
    **options: dataset options (see above).

  Returns:
    The :class:`Dataset`.

  Raises:
    ValueError: unknown dataset name.
    TypeError: an option the dataset does not take.
    DatasetNotFoundError: the data is not present; the message says how to get it.
    DataError: malformed data.
  """
  sizes = {k: options.pop(f"{k}_size", None) for k in ("train", "val", "test")}
  key = name.lower()
  try:
    if key in ("demo", "digits"):
      ds = load_digits(seed=seed, name=key, **options)
    elif key == "cifar10":
      ds = load_cifar10(data_dir, seed, **options)
    elif key in ("speech_commands", "gsc"):
      ds = load_speech_commands(data_dir, seed, name=key, **options)
    elif key == "tiny_imagenet":
      ds = load_tiny_imagenet(data_dir, seed, **options)
    elif key == "imagenet":
      ds = load_imagenet(data_dir, seed, **options)
    elif key.startswith("folder:"):
      ds = load_folder(name[len("folder:"):], seed, **options)
    elif key.startswith("tfds:"):
      if not name[len("tfds:"):]:
        raise ValueError("dataset 'tfds:' names no builder; use tfds:<builder>[/<config>], "
                         "e.g. tfds:cifar100")
      ds = load_tfds(name[len("tfds:"):], data_dir, seed, **options)
    else:
      raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
  except TypeError as e:
    if "unexpected keyword argument" in str(e):
      raise TypeError(f"dataset {name!r} does not take option(s) {sorted(options)}: {e}") from None
    raise
  if any(v is not None for v in sizes.values()):
    ds = Dataset(name=ds.name, train=subset(ds.train, sizes["train"], seed, tag=1),
                 val=subset(ds.val, sizes["val"], seed, tag=2),
                 test=subset(ds.test, sizes["test"], seed, tag=3), num_classes=ds.num_classes,
                 input_shape=ds.input_shape, class_weights=ds.class_weights, augment=ds.augment,
                 extra_tests=ds.extra_tests, class_names=ds.class_names)
  return ds
