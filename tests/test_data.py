"""Tests of jpq_jax.data: containers, demo dataset, loader, augmentation, image folders, errors."""

import io
import os
import zipfile
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from jpq_jax import data
from jpq_jax.data import augment as aug
from jpq_jax.data import images as images_lib
from jpq_jax.data.cifar import CIFAR10_CLASSES
from jpq_jax.data.core import seeded_partition, subset


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
  # Every test gets its own cache so that nothing leaks between tests or into ~/.cache.
  monkeypatch.setenv("JPQ_JAX_CACHE", str(tmp_path / "cache"))


def _index_split(n, shape=(1, 1, 1)):
  """A split whose x stores each example's index, to track where examples go."""
  x = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, *shape)).copy()
  return data.Split(x, np.arange(n, dtype=np.int32) % 10)


def _collect(loader, epoch):
  xs, ys = [], []
  for x, y in loader.epoch(epoch):
    xs.append(x)
    ys.append(y)
  return xs, ys


# ------------------------------------------------------------------------------------------- demo


def test_demo_shapes_ranges_and_split():
  ds = data.load("demo")
  assert ds.num_classes == 10 and ds.input_shape == (8, 8, 1)
  assert len(ds.train) + len(ds.val) + len(ds.test) == 1797
  assert (len(ds.train), len(ds.val), len(ds.test)) == (1258, 180, 359)
  for s in (ds.train, ds.val, ds.test):
    assert s.x.dtype == np.float32 and s.y.dtype == np.int32
    assert s.x.shape[1:] == (8, 8, 1)
    assert 0.0 <= s.x.min() and s.x.max() <= 1.0
  assert ds.train.x.max() == 1.0
  assert set(np.unique(ds.train.y)) == set(range(10))
  assert ds.class_weights is None and ds.augment is None and ds.extra_tests == {}
  # The three splits are disjoint: the total of distinct images matches (few exact duplicates).
  all_x = np.concatenate([ds.train.x, ds.val.x, ds.test.x]).reshape(1797, -1)
  assert len(np.unique(all_x, axis=0)) >= 1790


def test_demo_determinism_and_alias():
  a, b = data.load("demo", seed=3), data.load("digits", seed=3)
  np.testing.assert_array_equal(a.train.x, b.train.x)
  np.testing.assert_array_equal(a.test.y, b.test.y)
  assert b.name == "digits"
  c = data.load("demo", seed=4)
  assert not np.array_equal(a.train.y, c.train.y)


def test_subset_options():
  ds = data.load("demo", train_size=100, val_size=20, test_size=30, seed=1)
  assert (len(ds.train), len(ds.val), len(ds.test)) == (100, 20, 30)
  ds2 = data.load("demo", train_size=100, val_size=20, test_size=30, seed=1)
  np.testing.assert_array_equal(ds.train.x, ds2.train.x)
  full = data.load("demo", seed=1)
  # The subset is made of training examples.
  rows = {r.tobytes() for r in full.train.x}
  assert all(r.tobytes() in rows for r in ds.train.x)


def test_seeded_partition_and_subset():
  a, b, c = seeded_partition(100, [10, 20], seed=5)
  assert (len(a), len(b), len(c)) == (10, 20, 70)
  assert len(np.unique(np.concatenate([a, b, c]))) == 100
  a2, _, _ = seeded_partition(100, [10, 20], seed=5)
  np.testing.assert_array_equal(a, a2)
  s = _index_split(50)
  assert subset(s, None, 0) is s and subset(s, 80, 0) is s
  assert len(subset(s, 7, 0)) == 7
  with pytest.raises(data.DataError):
    seeded_partition(5, [4, 4], seed=0)


def test_class_weights():
  y = np.array([0, 0, 0, 1, 2, 2])
  np.testing.assert_allclose(data.class_weights(y, 3), [2.0, 6.0, 3.0])
  with pytest.raises(data.DataError, match="no training example"):
    data.class_weights(y, 4)


# ----------------------------------------------------------------------------------------- loader


def test_loader_determinism_and_resume():
  split = _index_split(103)
  a = data.Loader(split, 8, seed=7, shuffle=True, process_index=0, process_count=1)
  b = data.Loader(split, 8, seed=7, shuffle=True, process_index=0, process_count=1)
  assert a.steps_per_epoch == len(a) == 12
  run_a = [_collect(a, e) for e in range(4)]
  # A fresh loader that starts at epoch 2 (a resumed run) sees the same epoch 2.
  xs_b, ys_b = _collect(b, 2)
  for u, v in zip(run_a[2][0], xs_b):
    np.testing.assert_array_equal(u, v)
  first = lambda r: np.concatenate(r[0]).ravel()
  assert not np.array_equal(first(run_a[0]), first(run_a[1]))
  c = data.Loader(split, 8, seed=8, shuffle=True, process_index=0, process_count=1)
  assert not np.array_equal(first(run_a[0]), first(_collect(c, 0)))
  # Within an epoch every example appears at most once.
  idx = first(run_a[0])
  assert len(np.unique(idx)) == len(idx) == 96


def test_loader_no_shuffle_and_remainder():
  split = _index_split(10)
  ld = data.Loader(split, 4, seed=0, shuffle=False, drop_remainder=False, process_index=0,
                   process_count=1)
  xs, ys = _collect(ld, 0)
  assert [len(x) for x in xs] == [4, 4, 2]
  np.testing.assert_array_equal(np.concatenate(xs).ravel(), np.arange(10))
  assert all(x.dtype == np.float32 for x in xs) and all(y.dtype == np.int32 for y in ys)
  ld = data.Loader(split, 4, seed=0, shuffle=False, drop_remainder=True, process_index=0,
                   process_count=1)
  assert ld.steps_per_epoch == 2


@pytest.mark.parametrize("drop_remainder", [True, False])
def test_loader_sharding_disjoint_and_covering(drop_remainder):
  n, b, p = 53, 4, 3
  split = _index_split(n)
  per_proc = []
  for i in range(p):
    ld = data.Loader(split, b, seed=1, shuffle=True, drop_remainder=drop_remainder,
                     process_index=i, process_count=p)
    xs, _ = _collect(ld, 3)
    assert len(xs) == ld.steps_per_epoch
    per_proc.append(np.concatenate(xs).ravel().astype(int))
  steps = {len(x) for x in per_proc}
  all_idx = np.concatenate(per_proc)
  assert len(np.unique(all_idx)) == len(all_idx)  # disjoint
  if drop_remainder:
    assert len(all_idx) == (n // (b * p)) * b * p and steps == {(n // (b * p)) * b}
  else:
    np.testing.assert_array_equal(np.sort(all_idx), np.arange(n))  # covers the epoch
  # The shards together are the single-process epoch with the global batch size.
  single = data.Loader(split, b * p, seed=1, shuffle=True, drop_remainder=drop_remainder,
                       process_index=0, process_count=1)
  xs, _ = _collect(single, 3)
  np.testing.assert_array_equal(np.sort(np.concatenate(xs).ravel()), np.sort(all_idx))


def test_loader_augment_independent_of_process_count():
  rng = np.random.default_rng(0)
  split = data.Split(rng.integers(1, 256, (40, 12, 12, 3), dtype=np.uint8),
                     np.zeros(40, np.int32))
  one = data.Loader(split, 8, seed=3, shuffle=True, augment="cifar", process_index=0,
                    process_count=1)
  xs1, _ = _collect(one, 2)
  halves = [_collect(data.Loader(split, 4, seed=3, shuffle=True, augment="cifar", process_index=i,
                                 process_count=2), 2)[0] for i in range(2)]
  for step, x in enumerate(xs1):
    np.testing.assert_array_equal(x, np.concatenate([halves[0][step], halves[1][step]]))
  # Images were scaled to [0, 1] and really augmented (zero fill appears somewhere).
  allx = np.concatenate(xs1)
  assert allx.dtype == np.float32 and 0.0 <= allx.min() and allx.max() <= 1.0
  assert (allx == 0).any() and not (split.x == 0).any()


def test_loader_prefetch_matches_and_stops_early():
  split = _index_split(64)
  kw = dict(seed=2, shuffle=True, process_index=0, process_count=1)
  with_thread = _collect(data.Loader(split, 4, prefetch=3, **kw), 1)[0]
  without = _collect(data.Loader(split, 4, prefetch=0, **kw), 1)[0]
  for u, v in zip(with_thread, without):
    np.testing.assert_array_equal(u, v)
  it = data.Loader(split, 4, prefetch=2, **kw).epoch(0)
  next(it)
  it.close()  # leaving an epoch early must not hang


def test_loader_propagates_worker_errors():
  ld = data.Loader(_index_split(16), 4, seed=0, shuffle=False, prefetch=2, process_index=0,
                   process_count=1)
  with mock.patch.object(ld, "_make_batch", side_effect=RuntimeError("boom")):
    with pytest.raises(RuntimeError, match="boom"):
      list(ld.epoch(0))


def test_loader_bad_arguments():
  split = _index_split(10)
  with pytest.raises(ValueError):
    data.Loader(split, 0, seed=0, shuffle=False, process_index=0, process_count=1)
  with pytest.raises(ValueError):
    data.Loader(split, 2, seed=0, shuffle=False, process_index=2, process_count=2)
  with pytest.raises(ValueError, match="augmentation"):
    data.Loader(split, 2, seed=0, shuffle=False, augment="mixup", process_index=0,
                process_count=1)
  with pytest.raises(data.DataError, match="smaller than one global batch"):
    data.Loader(split, 8, seed=0, shuffle=False, process_index=0, process_count=2)


def test_loader_default_process_from_jax():
  ld = data.Loader(_index_split(10), 2, seed=0, shuffle=False)
  assert (ld.process_index, ld.process_count) == (0, 1)


# ----------------------------------------------------------------------------------- augmentation


def _images(b=6, h=10, w=10, seed=0):
  return np.random.default_rng(seed).integers(1, 256, (b, h, w, 3), dtype=np.uint8)


def test_augment_deterministic_and_bounded():
  x = _images()
  a = aug.augment_batch(x, "cifar", seed=1, epoch=2, batch_index=3)
  b = aug.augment_batch(x, "cifar", seed=1, epoch=2, batch_index=3)
  np.testing.assert_array_equal(a, b)
  c = aug.augment_batch(x, "cifar", seed=1, epoch=2, batch_index=4)
  assert not np.array_equal(a, c)
  assert a.shape == x.shape and a.dtype == np.uint8
  # Nearest sampling: every output pixel is a source pixel of the same image, or the zero fill.
  for i in range(len(x)):
    src = {tuple(p) for p in x[i].reshape(-1, 3)} | {(0, 0, 0)}
    assert all(tuple(p) in src for p in a[i].reshape(-1, 3))
  assert aug.augment_batch(x, None, 0, 0, 0) is x


def test_augment_parameter_ranges():
  p = aug.sample_params("cifar", 4000, (32, 32), np.random.default_rng(0))
  assert np.abs(p["angle"]).max() <= 15.0 and np.abs(p["angle"]).max() > 14.0
  assert np.abs(p["tx"]).max() == 3 and np.abs(p["ty"]).max() == 3  # round(0.1 * 32)
  assert 0.45 < p["flip"].mean() < 0.55
  q = aug.sample_params("flip", 4000, (32, 32), np.random.default_rng(0))
  assert set(q) == {"flip"} and 0.45 < q["flip"].mean() < 0.55
  with pytest.raises(ValueError):
    aug.sample_params("nope", 1, (4, 4), np.random.default_rng(0))


def test_augment_geometry():
  x = _images(b=1, h=8, w=8)
  zero = {"angle": np.zeros(1), "tx": np.zeros(1, int), "ty": np.zeros(1, int),
          "flip": np.zeros(1, bool)}
  np.testing.assert_array_equal(aug.apply(x, "cifar", zero), x)
  np.testing.assert_array_equal(aug.apply(x, "cifar", {**zero, "flip": np.ones(1, bool)}),
                                x[:, :, ::-1])
  np.testing.assert_array_equal(aug.apply(x, "flip", {"flip": np.ones(1, bool)}), x[:, :, ::-1])
  shifted = aug.apply(x, "cifar", {**zero, "tx": np.array([2]), "ty": np.array([-1])})
  np.testing.assert_array_equal(shifted[0, :7, 2:], x[0, 1:, :6])
  assert (shifted[0, :, :2] == 0).all() and (shifted[0, 7] == 0).all()
  # 90° is a counter-clockwise quarter turn, like torchvision's positive angles.
  rot = aug.apply(x, "cifar", {**zero, "angle": np.array([90.0])})
  np.testing.assert_array_equal(rot[0], np.rot90(x[0]))


# ---------------------------------------------------------------------------------- image folders


def _png(arr):
  buf = io.BytesIO()
  Image.fromarray(arr).save(buf, format="PNG")
  return buf.getvalue()


def _folder_images(classes=("cat", "dog", "emu"), per_class=3, splits=("train", "test"), size=8):
  rng = np.random.default_rng(0)
  out = {}
  for split in splits:
    for c in classes:
      for k in range(per_class):
        out[f"{split}/{c}/{k:04d}.png"] = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
  return out


def _write_dir(root, files):
  for name, arr in files.items():
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(_png(arr) if isinstance(arr, np.ndarray) else arr)


def _write_zip(path, files, prefix=""):
  with zipfile.ZipFile(path, "w") as zf:
    for name, arr in files.items():
      zf.writestr(prefix + name, _png(arr) if isinstance(arr, np.ndarray) else arr)


def test_image_folder_directory_and_zip_agree(tmp_path):
  files = _folder_images()
  _write_dir(tmp_path / "dir", files)
  _write_zip(tmp_path / "imgs.zip", files, prefix="wrapped/")
  a = data.load(f"folder:{tmp_path / 'dir'}", val_fraction=1 / 3, seed=0)
  b = data.load(f"folder:{tmp_path / 'imgs.zip'}", val_fraction=1 / 3, seed=0)
  assert a.class_names == ["cat", "dog", "emu"] and a.num_classes == 3
  assert (len(a.train), len(a.val), len(a.test)) == (6, 3, 9)
  assert a.input_shape == (8, 8, 3) and a.train.x.dtype == np.uint8
  for s in ("train", "val", "test"):
    np.testing.assert_array_equal(getattr(a, s).x, getattr(b, s).x)
    np.testing.assert_array_equal(getattr(a, s).y, getattr(b, s).y)
  # Pixels are exact (PNG) and labels follow the sorted class folders.
  np.testing.assert_array_equal(a.test.x[3], files["test/dog/0000.png"])
  np.testing.assert_array_equal(a.test.y, [0, 0, 0, 1, 1, 1, 2, 2, 2])


def test_image_folder_val_folder_jpeg_and_cache(tmp_path):
  rng = np.random.default_rng(1)
  files = {}
  for split in ("train", "val", "test"):
    for c in ("a", "b"):
      buf = io.BytesIO()
      Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(buf, format="JPEG")
      files[f"{split}/{c}/x.jpg"] = buf.getvalue()
  _write_zip(tmp_path / "j.zip", files)
  ds = data.load(f"folder:{tmp_path / 'j.zip'}")
  assert (len(ds.train), len(ds.val), len(ds.test)) == (2, 2, 2)
  cached = [f for f in os.listdir(os.environ["JPQ_JAX_CACHE"]) if f.startswith("imagefolder-j-")]
  assert len(cached) == 1
  # The second load comes from the cache: decoding is not called at all.
  with mock.patch.object(images_lib, "decode_image", side_effect=AssertionError("decoded")):
    again = data.load(f"folder:{tmp_path / 'j.zip'}")
  np.testing.assert_array_equal(ds.test.x, again.test.x)


def test_image_folder_wrong_size_and_resize(tmp_path):
  files = _folder_images(per_class=2)
  files["train/cat/0099.png"] = np.zeros((9, 8, 3), np.uint8)
  _write_zip(tmp_path / "bad.zip", files)
  with pytest.raises(data.DataError, match="image_size"):
    data.load(f"folder:{tmp_path / 'bad.zip'}")
  ds = data.load(f"folder:{tmp_path / 'bad.zip'}", image_size=5)
  assert ds.input_shape == (5, 5, 3)
  # Train and test of different sizes are caught when the dataset is assembled.
  files = _folder_images(per_class=2, splits=("train",))
  files.update(_folder_images(per_class=2, splits=("test",), size=6))
  _write_zip(tmp_path / "mixed.zip", files)
  with pytest.raises(data.DataError, match="expected"):
    data.load(f"folder:{tmp_path / 'mixed.zip'}")


def test_image_folder_missing_pieces(tmp_path):
  with pytest.raises(data.DatasetNotFoundError, match="split"):
    data.load(f"folder:{tmp_path / 'nope.zip'}")
  _write_zip(tmp_path / "notest.zip", _folder_images(splits=("train",)))
  with pytest.raises(data.DataError, match="test_fraction"):
    data.load(f"folder:{tmp_path / 'notest.zip'}")
  ds = data.load(f"folder:{tmp_path / 'notest.zip'}", test_fraction=1 / 3, val_fraction=1 / 3)
  assert (len(ds.train), len(ds.val), len(ds.test)) == (4, 2, 3)
  _write_zip(tmp_path / "empty.zip", {"readme.txt": b"hello"})
  with pytest.raises(data.DataError, match="no images"):
    data.load(f"folder:{tmp_path / 'empty.zip'}")


def test_image_folder_bad_contents_named(tmp_path):
  # An unreadable image is named (Pillow's own message names a BytesIO).
  files = _folder_images(per_class=2)
  files["train/dog/bad.jpg"] = b"not an image"
  _write_dir(tmp_path / "corrupt", files)
  with pytest.raises(data.DataError, match=r"'train/dog/bad.jpg' is not a readable image"):
    data.load(f"folder:{tmp_path / 'corrupt'}")
  # One class only: nothing to classify.
  _write_dir(tmp_path / "single", _folder_images(classes=("cat",)))
  with pytest.raises(data.DataError, match="only 1 class folder"):
    data.load(f"folder:{tmp_path / 'single'}")
  # A class with test images but no training images (empty folder, or images one level too deep).
  files = _folder_images(per_class=2)
  files = {k: v for k, v in files.items() if not k.startswith("train/emu/")}
  files["train/emu/sub/0000.png"] = files["test/emu/0000.png"]
  _write_dir(tmp_path / "nested", files)
  with pytest.raises(data.DataError, match=r"\['emu'\] have no images in train/"):
    data.load(f"folder:{tmp_path / 'nested'}")


def test_sixteen_bit_png_keeps_its_range():
  ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1024)  # 0 .. 64512
  buf = io.BytesIO()
  Image.fromarray(ramp).save(buf, format="PNG")  # uint16: mode I;16
  img = images_lib.decode_image(buf.getvalue(), None, grayscale=True)
  np.testing.assert_array_equal(img[..., 0], (ramp >> 8).astype(np.uint8))
  rgb = images_lib.decode_image(buf.getvalue(), None, grayscale=False)
  assert rgb.shape == (8, 8, 3) and (rgb[..., 1] == img[..., 0]).all()


def test_image_folder_cache_follows_moved_files(tmp_path):
  # Moving an image to another class folder keeps the file count, sizes and times: the cache
  # must still notice (its labels changed).
  _write_dir(tmp_path / "d", _folder_images(per_class=3))
  before = data.load(f"folder:{tmp_path / 'd'}", seed=0)
  src, dst = tmp_path / "d/train/cat/0000.png", tmp_path / "d/train/dog/0100.png"
  st = os.stat(src)
  os.rename(src, dst)
  os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
  after = data.load(f"folder:{tmp_path / 'd'}", seed=0)
  counts = lambda ds: np.bincount(np.concatenate([ds.train.y, ds.val.y]), minlength=3).tolist()
  assert counts(before) == [3, 3, 3] and counts(after) == [2, 4, 3]


# ------------------------------------------------------------------------------------ bad inputs


def _dataset(train=None, **kw):
  s = data.Split(np.zeros((4, 2, 2, 1), np.uint8), np.array([0, 1, 2, 1], np.int32))
  args = dict(name="t", train=s if train is None else train, val=s, test=s, num_classes=3,
              input_shape=(2, 2, 1))
  args.update(kw)
  return data.Dataset(**args)


def test_dataset_validation_errors():
  assert len(_dataset().train) == 4
  with pytest.raises(data.DataError, match="t/train: 1 labels out of range"):
    _dataset(train=data.Split(np.zeros((2, 2, 2, 1), np.uint8), np.array([0, 3], np.int32)))
  with pytest.raises(data.DataError, match="t/train: the split is empty"):
    _dataset(train=data.Split(np.zeros((0, 2, 2, 1), np.uint8), np.zeros(0, np.int32)))
  with pytest.raises(data.DataError, match=r"shape \(3, 3, 1\), expected \(2, 2, 1\)"):
    _dataset(train=data.Split(np.zeros((1, 3, 3, 1), np.uint8), np.zeros(1, np.int32)))
  with pytest.raises(data.DataError, match="3 inputs but 2 labels"):
    _dataset(train=data.Split(np.zeros((3, 2, 2, 1), np.uint8), np.zeros(2, np.int32)))
  with pytest.raises(data.DataError, match="uint8 images or float32"):
    _dataset(train=data.Split(np.zeros((1, 2, 2, 1), np.float64), np.zeros(1, np.int32)))
  with pytest.raises(data.DataError, match="class_weights"):
    _dataset(class_weights=np.ones(2))


def test_unknown_name_and_option():
  with pytest.raises(ValueError, match="unknown dataset 'imagenet21k'"):
    data.load("imagenet21k")
  with pytest.raises(TypeError, match="does not take option"):
    data.load("demo", colour=True)


# ---------------------------------------------------------------------------- CIFAR-10 via TFDS


def _mock_tfds(num_examples):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  ctx = tfds.testing.mock_data(num_examples=num_examples,
                               policy=tfds.testing.MockPolicy.USE_CODE)
  # mock_data fakes the reading but not the "is it there" check.
  prepared = mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", return_value=True)
  return ctx, prepared


def test_cifar10_tfds_mock(tmp_path):
  ctx, prepared = _mock_tfds(20)
  np.save(tmp_path / "perf_samples_idxs.npy", np.array([3, 0, 7]))
  with ctx, prepared:
    ds = data.load("cifar10", data_dir=str(tmp_path / "tfds"), seed=2,
                   mlperf_index=str(tmp_path / "perf_samples_idxs.npy"))
    again = data.load("cifar10", data_dir=str(tmp_path / "tfds"), seed=2)
  assert (len(ds.train), len(ds.val), len(ds.test)) == (16, 4, 20)
  assert ds.input_shape == (32, 32, 3) and ds.train.x.dtype == np.uint8
  assert ds.augment == "cifar" and ds.num_classes == 10
  np.testing.assert_array_equal(ds.extra_tests["mlperf_subset"].x, ds.test.x[[3, 0, 7]])
  np.testing.assert_array_equal(ds.train.x, again.train.x)


def test_cifar10_missing_says_how_to_get_it(tmp_path):
  with pytest.raises(data.DatasetNotFoundError) as info:
    data.load("cifar10", data_dir=str(tmp_path / "empty"))
  msg = str(info.value)
  for needle in ("not prepared", "download=True", "pip install tensorflow", "data_dir",
                 "cifar10-jpeg.zip", "folder:"):
    assert needle in msg, needle
  assert info.value.__cause__ is None  # no TFDS stack trace chained


def test_cifar10_offline_folder_protocol(tmp_path):
  files = _folder_images(classes=CIFAR10_CLASSES, per_class=5, size=32)
  _write_zip(tmp_path / "cifar10-jpeg.zip", files)
  # data_dir may be the zip itself or a directory that holds it.
  ds = data.load("cifar10", data_dir=str(tmp_path / "cifar10-jpeg.zip"), seed=0)
  ds2 = data.load("cifar10", data_dir=str(tmp_path), seed=0)
  assert (len(ds.train), len(ds.val), len(ds.test)) == (40, 10, 50)
  np.testing.assert_array_equal(ds.val.x, ds2.val.x)
  np.testing.assert_array_equal(np.bincount(ds.test.y), [5] * 10)
  with pytest.raises(data.DataError, match="original test-set order"):
    data.load("cifar10", data_dir=str(tmp_path), mlperf_index="x.npy")


def test_tfrecord_data_without_tensorflow_says_what_to_do():
  from jpq_jax.data import tfds_io  # pylint: disable=import-outside-toplevel
  builder = mock.Mock()
  builder.name = "cifar10"
  builder.as_data_source.side_effect = NotImplementedError("tfrecord")
  with mock.patch.object(tfds_io.importlib, "import_module",
                         side_effect=ModuleNotFoundError("No module named 'tensorflow'")):
    with pytest.raises(ImportError, match="pip install tensorflow") as info:
      tfds_io.read_split(builder, "train", ("image",))
  assert "array_record" in str(info.value)
