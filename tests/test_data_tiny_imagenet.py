"""Tests of Tiny ImageNet: the TFDS builder and the direct reader, on a tiny fake archive."""

import io
import os
import zipfile

import numpy as np
import pytest
from PIL import Image

from jpq_jax import data
from jpq_jax.data import tiny_imagenet

WNIDS = ["n02", "n01", "n03"]  # unsorted on purpose: labels follow the sorted order


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
  monkeypatch.setenv("JPQ_JAX_CACHE", str(tmp_path / "cache"))


def _jpeg(arr):
  buf = io.BytesIO()
  Image.fromarray(arr).save(buf, format="JPEG", quality=95)
  return buf.getvalue()


def _fake_archive(path, per_class=4, val_per_class=2):
  """The official layout in miniature, with one grayscale JPEG like the real archive has."""
  rng = np.random.default_rng(0)
  members = {"tiny-imagenet-200/wnids.txt": "\n".join(WNIDS) + "\n",
             "tiny-imagenet-200/words.txt": "".join(f"{w}\tthing {w}\n" for w in WNIDS)}
  for w in WNIDS:
    members[f"tiny-imagenet-200/train/{w}/{w}_boxes.txt"] = ""
    for k in range(per_class):
      shape = (64, 64) if (w, k) == ("n03", 1) else (64, 64, 3)
      members[f"tiny-imagenet-200/train/{w}/images/{w}_{k}.JPEG"] = _jpeg(
          rng.integers(0, 256, shape, dtype=np.uint8))
  ann, i = [], 0
  for w in WNIDS:
    for _ in range(val_per_class):
      members[f"tiny-imagenet-200/val/images/val_{i}.JPEG"] = _jpeg(
          rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
      ann.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
      i += 1
  members["tiny-imagenet-200/val/val_annotations.txt"] = "\n".join(ann) + "\n"
  members["tiny-imagenet-200/test/images/test_0.JPEG"] = _jpeg(np.zeros((64, 64, 3), np.uint8))
  with zipfile.ZipFile(path, "w") as zf:
    for name, content in members.items():
      zf.writestr(name, content)


def test_direct_reader(tmp_path):
  _fake_archive(tmp_path / tiny_imagenet.ARCHIVE_NAME)
  ds = data.load("tiny_imagenet", data_dir=str(tmp_path / tiny_imagenet.ARCHIVE_NAME), seed=0,
                 val_fraction=0.25)
  assert ds.class_names == ["n01", "n02", "n03"]
  assert (len(ds.train), len(ds.val), len(ds.test)) == (9, 3, 6)
  assert ds.input_shape == (64, 64, 3) and ds.train.x.dtype == np.uint8
  assert ds.augment == "flip" and ds.num_classes == 200
  np.testing.assert_array_equal(np.bincount(ds.test.y), [2, 2, 2])
  # The directory holding the zip works too (and reuses the same decoded arrays).
  same = data.load("tiny_imagenet", data_dir=str(tmp_path), seed=0, val_fraction=0.25)
  np.testing.assert_array_equal(same.train.x, ds.train.x)


def test_tfds_builder_on_fake_archive(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  manual = tmp_path / "manual"
  manual.mkdir()
  _fake_archive(manual / tiny_imagenet.ARCHIVE_NAME)
  builder_cls = tiny_imagenet.get_builder_class()
  builder = builder_cls(data_dir=str(tmp_path / "tfds"), file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  assert builder.info.splits["train"].num_examples == 12
  assert builder.info.splits["validation"].num_examples == 6
  from_tfds = data.load("tiny_imagenet", data_dir=str(tmp_path / "tfds"), seed=0,
                        val_fraction=0.25)
  direct = data.load("tiny_imagenet", data_dir=str(manual), seed=0, val_fraction=0.25)
  # Same bytes, same decoder: the two paths give identical splits.
  assert from_tfds.class_names == direct.class_names
  for s in ("train", "val", "test"):
    np.testing.assert_array_equal(getattr(from_tfds, s).x, getattr(direct, s).x)
    np.testing.assert_array_equal(getattr(from_tfds, s).y, getattr(direct, s).y)


def test_missing_and_malformed(tmp_path):
  with pytest.raises(data.DatasetNotFoundError) as info:
    data.load("tiny_imagenet", data_dir=str(tmp_path / "tfds"))
  assert "tiny-imagenet-200.zip" in str(info.value) and "download=True" in str(info.value)
  with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
    zf.writestr("hello.txt", "x")
  with pytest.raises(data.DatasetNotFoundError, match="wnids.txt"):
    data.load("tiny_imagenet", data_dir=str(tmp_path / "other.zip"))
  os.makedirs(tmp_path / "x")
  _fake_archive(tmp_path / "x" / tiny_imagenet.ARCHIVE_NAME, per_class=0)
  with pytest.raises(data.DataError, match="empty"):
    data.load("tiny_imagenet", data_dir=str(tmp_path / "x"))
