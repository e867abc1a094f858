"""The grain loader, streamed sources, ``tfds:`` datasets, user pipelines (tiny generated data)."""

import io
import subprocess
import sys

import numpy as np
import pytest

from jpq_jax import data
from jpq_jax.data import augment as augment_lib
from jpq_jax.data.grain_loader import GrainLoader, make_loader
from jpq_jax.data.transforms import apply_cifar


def _split(n=203, hw=(16, 16), c=3, seed=0):
  rng = np.random.default_rng(seed)
  return data.Split(rng.integers(0, 256, (n,) + hw + (c,), dtype=np.uint8),
                    rng.integers(0, 10, n).astype(np.int32))


def _batches(loader, epoch, start=0):
  return [(x.copy(), y.copy()) for x, y in loader.epoch(epoch, start)]


def _assert_same(a, b):
  assert len(a) == len(b)
  for (xa, ya), (xb, yb) in zip(a, b):
    assert xa.dtype == xb.dtype == np.float32 and ya.dtype == yb.dtype == np.int32
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)


@pytest.mark.parametrize("hw", [(32, 32), (64, 64), (7, 9), (8, 5)])
def test_fast_cifar_augmentation_is_bit_exact(hw):
  x = np.random.default_rng(1).integers(0, 256, (48,) + hw + (3,), dtype=np.uint8)
  for k in range(4):
    p = augment_lib.sample_params("cifar", 48, hw, augment_lib.augment_rng(3, 1, k))
    np.testing.assert_array_equal(apply_cifar(x, p), augment_lib.apply(x, "cifar", p))


@pytest.mark.parametrize("augment", [None, "cifar", "flip", "imagenet"])
def test_grain_matches_numpy_loader_for_any_worker_count(augment):
  split = _split()
  ref = data.Loader(split, 20, seed=3, shuffle=True, augment=augment, process_index=0,
                    process_count=1)
  for workers in (0, 1, 2):
    g = GrainLoader(split, 20, seed=3, shuffle=True, augment=augment, process_index=0,
                    process_count=1, workers=workers)
    assert g.steps_per_epoch == ref.steps_per_epoch == 10
    for epoch in (0, 1):
      _assert_same(_batches(g, epoch), _batches(ref, epoch))
  # Another epoch or seed is another order.
  assert not np.array_equal(_batches(g, 0)[0][1], _batches(g, 1)[0][1])


@pytest.mark.parametrize("drop_remainder", [True, False])
def test_grain_shards_by_process_like_numpy(drop_remainder):
  split = _split(n=101)
  seen = []
  for pi in range(3):
    kw = dict(seed=5, shuffle=True, augment="cifar", process_index=pi, process_count=3,
              drop_remainder=drop_remainder)
    g = GrainLoader(split, 8, workers=2, **kw)
    ref = data.Loader(split, 8, **kw)
    got = _batches(g, 2)
    _assert_same(got, _batches(ref, 2))
    seen.append(got)
  assert len({len(s) for s in seen}) == 1  # every process runs the same number of steps
  # The local batches of one step are disjoint slices of the global batch.
  whole = GrainLoader(split, 24, seed=5, shuffle=True, augment="cifar", process_index=0,
                      process_count=1, drop_remainder=drop_remainder)
  for step, (x, y) in enumerate(_batches(whole, 2)):
    np.testing.assert_array_equal(np.concatenate([s[step][0] for s in seen]), x)
    np.testing.assert_array_equal(np.concatenate([s[step][1] for s in seen]), y)


def test_grain_resume_mid_epoch_gives_the_same_batches():
  split = _split()
  g = GrainLoader(split, 16, seed=9, shuffle=True, augment="cifar", process_index=0,
                  process_count=1, workers=2)
  full = _batches(g, 4)
  _assert_same(_batches(g, 4, start=5), full[5:])
  fresh = GrainLoader(split, 16, seed=9, shuffle=True, augment="cifar", process_index=0,
                      process_count=1, workers=1)
  _assert_same(_batches(fresh, 4, start=11), full[11:])


@pytest.mark.slow
def test_grain_worker_processes_give_the_same_batches():
  split = _split(n=64)
  kw = dict(seed=2, shuffle=True, augment="cifar", process_index=0, process_count=1)
  ref = _batches(GrainLoader(split, 16, workers=0, **kw), 1)
  _assert_same(_batches(GrainLoader(split, 16, workers=2, worker_type="processes", **kw), 1), ref)
  _assert_same(_batches(GrainLoader(split, 16, workers=1, worker_type="processes", **kw), 1, 2),
               ref[2:])


def _user_augment(image, rng):
  """Module level: picklable for worker processes."""
  return np.roll(image, int(rng.integers(-3, 4)), axis=1)


def test_user_augmentation_callable():
  split = _split(n=96)
  kw = dict(seed=4, shuffle=True, augment=_user_augment, drop_remainder=True)
  one = GrainLoader(split, 24, process_index=0, process_count=1, **kw)
  a = _batches(one, 0)
  _assert_same(_batches(GrainLoader(split, 24, process_index=0, process_count=1, workers=2, **kw),
                        0), a)
  # Per example from (seed, epoch, position): independent of the process count.
  halves = [_batches(GrainLoader(split, 12, process_index=p, process_count=2, **kw), 0)
            for p in range(2)]
  for step, (x, _) in enumerate(a):
    np.testing.assert_array_equal(np.concatenate([h[step][0] for h in halves]), x)
  plain = _batches(GrainLoader(split, 24, process_index=0, process_count=1, seed=4, shuffle=True),
                   0)
  assert any(not np.array_equal(p[0], q[0]) for p, q in zip(plain, a))
  # The sweep's factory sends a callable to the grain loader even for an in-memory split.
  assert isinstance(make_loader(split, 24, kind="auto", process_index=0, process_count=1, **kw),
                    GrainLoader)


def test_make_loader_kinds_and_errors(tmp_path):
  split = _split(n=40)
  kw = dict(seed=0, shuffle=False, process_index=0, process_count=1)
  assert type(make_loader(split, 8, kind="auto", **kw)) is data.Loader
  assert type(make_loader(split, 8, kind="grain", **kw)) is GrainLoader
  streamed = data.SourceSplit(data.FunctionSource(40, lambda i: (split.x[i], int(split.y[i]))))
  assert type(make_loader(streamed, 8, kind="auto", **kw)) is GrainLoader
  with pytest.raises(ValueError, match="numpy loader reads in-memory splits only"):
    make_loader(streamed, 8, kind="numpy", **kw)
  with pytest.raises(ValueError, match="unknown loader"):
    make_loader(split, 8, kind="torch", **kw)
  with pytest.raises(ValueError, match="worker_type"):
    GrainLoader(split, 8, worker_type="fibers", **kw)
  with pytest.raises(ValueError, match="workers"):
    GrainLoader(split, 8, workers=-1, **kw)


def test_array_record_source_streams_the_same_batches(tmp_path):
  split = _split(n=77, hw=(12, 12))
  path = tmp_path / "images.array_record"
  data.write_array_record_images(path, split.x, split.y)
  streamed = data.SourceSplit(data.ArrayRecordImages([path], (12, 12, 3)))
  assert len(streamed) == 77 and streamed.example_shape == (12, 12, 3)
  kw = dict(seed=1, shuffle=True, augment="cifar", process_index=0, process_count=1,
            drop_remainder=False)
  _assert_same(_batches(GrainLoader(streamed, 10, workers=2, **kw), 3),
               _batches(data.Loader(split, 10, **kw), 3))
  # A lazy subset reads only its examples; normalization is applied after the 1/255 scaling.
  sub = data.SourceSplit(streamed.source, normalize=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
  sub = sub.take(np.array([5, 2]))
  x, y = next(iter(GrainLoader(sub, 2, seed=0, shuffle=False, process_index=0,
                               process_count=1).epoch(0)))
  np.testing.assert_allclose(x, (split.x[[5, 2]] / 255.0 - 0.5) / 0.25, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(y, split.y[[5, 2]])


def test_file_source_decodes_an_image_folder(tmp_path):
  from PIL import Image  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  paths, imgs = [], []
  for i in range(6):
    arr = rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)
    p = tmp_path / f"{i}.png"
    Image.fromarray(arr).save(p)
    paths.append(p)
    imgs.append(arr)
  src = data.FileSource(paths, [0, 1, 2, 0, 1, 2])
  split = data.SourceSplit(src)
  x, y = split.gather(np.array([3, 0]))
  np.testing.assert_array_equal(x, np.stack([imgs[3], imgs[0]]))
  np.testing.assert_array_equal(y, [0, 0])
  resized = data.SourceSplit(data.FileSource(paths, [0] * 6, image_size=8))
  assert resized.example_shape == (8, 8, 3)
  (tmp_path / "bad.png").write_bytes(b"not an image")
  with pytest.raises(data.DataError, match="bad.png: not a readable image"):
    data.FileSource([tmp_path / "bad.png"], [0])[0]


# --- tfds:<name>, on a dataset prepared inside the test (array_record, no TensorFlow) -----------

_BUILDER = None


def _tiny_builder_class():
  """A two-config TFDS builder of 8x8 PNG images (encoded with Pillow: no TensorFlow)."""
  global _BUILDER  # pylint: disable=global-statement
  if _BUILDER is not None:
    return _BUILDER
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel

  class JpqGrainTiny(tfds.core.GeneratorBasedBuilder):
    """12 train, 6 test examples, 3 classes."""
    VERSION = tfds.core.Version("1.0.0")
    code_path = None
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="rgb"), tfds.core.BuilderConfig(name="big")]

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "picture": tfds.features.Image(shape=(8, 8, 3)),
          "label": tfds.features.ClassLabel(num_classes=3)}))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples(12, 0), "test": self._generate_examples(6, 1)}

    def _generate_examples(self, n, seed):
      rng = np.random.default_rng(seed)
      for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buf, format="PNG")
        buf.seek(0)
        yield i, {"picture": buf, "label": i % 3}

  _BUILDER = JpqGrainTiny
  return _BUILDER


@pytest.fixture(scope="module")
def tiny_tfds(tmp_path_factory):
  root = tmp_path_factory.mktemp("tfds")
  _tiny_builder_class()(config="rgb", data_dir=str(root),
                        file_format="array_record").download_and_prepare()
  return str(root)


def test_tfds_dataset_is_streamed_without_tensorflow(tiny_tfds):
  ds = data.load("tfds:jpq_grain_tiny/rgb", data_dir=tiny_tfds, seed=3, image_key="picture",
                 val_fraction=0.25, augment="flip")
  assert ds.name == "tfds:jpq_grain_tiny/rgb" and ds.num_classes == 3
  assert ds.input_shape == (8, 8, 3) and ds.augment == "flip"
  assert (len(ds.train), len(ds.val), len(ds.test)) == (9, 3, 6)
  assert all(isinstance(s, data.SourceSplit) for s in (ds.train, ds.val, ds.test))
  # Train and validation are disjoint parts of TFDS's train split, read by index.
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  raw = tfds.data_source("jpq_grain_tiny/rgb", split="train", data_dir=tiny_tfds, download=False)
  every = np.stack([raw[i]["picture"] for i in range(12)])
  x, y = ds.train.gather(np.arange(9))
  xv, _ = ds.val.gather(np.arange(3))
  assert {e.tobytes() for e in np.concatenate([x, xv])} == {e.tobytes() for e in every}
  loader = data.make_loader(ds.train, 3, seed=3, shuffle=True, augment=ds.augment,
                            process_index=0, process_count=1, workers=2)
  batches = list(loader.epoch(0))
  assert len(batches) == 3 and batches[0][0].shape == (3, 8, 8, 3)
  assert batches[0][0].dtype == np.float32 and 0 <= batches[0][0].min() <= batches[0][0].max() <= 1
  # Resized and normalized from the options.
  small = data.load("tfds:jpq_grain_tiny/rgb", data_dir=tiny_tfds, image_key="picture",
                    image_size=4, mean=[0.5] * 3, std=[0.5] * 3)
  assert small.input_shape == (4, 4, 3)
  xs, _ = next(iter(data.make_loader(small.test, 6, seed=0, shuffle=False, process_index=0,
                                     process_count=1).epoch(0)))
  assert xs.shape == (6, 4, 4, 3) and xs.min() < 0
  assert "tensorflow" not in sys.modules


def test_tfds_errors_are_one_line(tiny_tfds, tmp_path):
  _tiny_builder_class()
  with pytest.raises(data.DatasetNotFoundError) as e:
    data.load("tfds:jpq_grain_tiny/big", data_dir=tiny_tfds, image_key="picture")
  msg = str(e.value)
  assert "\n" not in msg and "is not prepared" in msg and "download_and_prepare" in msg
  assert "file_format='array_record'" in msg
  with pytest.raises(data.DatasetNotFoundError) as e:
    data.load("tfds:no_such_dataset_xyz", data_dir=str(tmp_path))
  assert "\n" not in str(e.value) and "tfds:no_such_dataset_xyz" in str(e.value)
  with pytest.raises(data.DataError, match="no feature 'image'.*image_key"):
    data.load("tfds:jpq_grain_tiny/rgb", data_dir=tiny_tfds)
  with pytest.raises(data.DataError, match="no split 'validation'"):
    data.load("tfds:jpq_grain_tiny/rgb", data_dir=tiny_tfds, image_key="picture",
              val_split="validation")
  with pytest.raises(ValueError, match="names no builder"):
    data.load("tfds:")
  assert "tensorflow" not in sys.modules


def test_tfds_path_imports_no_tensorflow_in_a_fresh_process(tiny_tfds):
  # This process may have imported TensorFlow through other tests; a fresh one has not.
  code = (
      "import sys, numpy as np\n"
      "sys.path.insert(0, %r)\n"
      "import test_data_grain as t\n"
      "t._tiny_builder_class()\n"
      "from jpq_jax import data\n"
      "ds = data.load('tfds:jpq_grain_tiny/rgb', data_dir=%r, image_key='picture')\n"
      "l = data.make_loader(ds.train, 4, seed=0, shuffle=True, augment='cifar', process_index=0,"
      " process_count=1, workers=2)\n"
      "n = sum(len(y) for _, y in l.epoch(0))\n"
      "assert n == 8, n\n"
      "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
      "print('OK')\n") % (str(__import__("pathlib").Path(__file__).parent), tiny_tfds)
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                       check=False)
  assert out.returncode == 0 and "OK" in out.stdout, out.stderr[-2000:]


# --- the user's own pipelines ---------------------------------------------------------------------

def test_user_dataset_from_grain_and_a_batch_stream():
  import grain  # pylint: disable=import-outside-toplevel
  split = _split(n=64, hw=(8, 8))
  source = grain.MapDataset.source(split.x).map_with_index(
      lambda i, img: (img, int(split.y[i])))
  ds = data.user_dataset(source, split, split, num_classes=10, augment="flip")
  assert isinstance(ds.train, data.SourceSplit) and ds.input_shape == (8, 8, 3)
  kw = dict(seed=7, shuffle=True, augment="flip", process_index=0, process_count=1)
  _assert_same(_batches(data.make_loader(ds.train, 16, **kw), 1),
               _batches(data.Loader(split, 16, **kw), 1))

  def factory(epoch):
    order = np.random.default_rng(epoch).permutation(64)
    for s in range(4):
      idx = order[s * 16:(s + 1) * 16]
      yield split.x[idx], split.y[idx]

  stream = data.BatchStream(factory, num_examples=64, steps_per_epoch=4)
  ds2 = data.user_dataset(stream, split, split, num_classes=10)
  assert ds2.input_shape == (8, 8, 3)
  loader = data.make_loader(ds2.train, 16, seed=0, shuffle=True, process_index=0, process_count=1)
  got = _batches(loader, 3)
  want = list(factory(3))
  assert len(got) == 4
  np.testing.assert_array_equal(got[2][0], want[2][0].astype(np.float32) * np.float32(1 / 255))
  _assert_same(_batches(loader, 3, start=2), got[2:])
  # Two processes: each takes its slice of the stream's global batches.
  part = data.make_loader(ds2.train, 8, seed=0, shuffle=True, process_index=1, process_count=2)
  np.testing.assert_array_equal(_batches(part, 3)[0][1], want[0][1][8:])
  with pytest.raises(TypeError, match="BatchStream"):
    data.user_dataset(factory, split, split, num_classes=10)
  with pytest.raises(data.DataError, match="steps_per_epoch"):
    data.make_loader(data.BatchStream(factory, 64), 16, seed=0, shuffle=True, process_index=0,
                     process_count=1)
  bad = data.BatchStream(lambda e: iter([(split.x[:5], split.y[:5])]), 5, steps_per_epoch=1)
  with pytest.raises(data.DataError, match="expected the global batch of 16"):
    list(data.make_loader(bad, 16, seed=0, shuffle=True, process_index=0,
                          process_count=1).epoch(0))


# --- the sweep's config ---------------------------------------------------------------------------

def test_config_fields_are_checked():
  # pylint: disable-next=import-outside-toplevel
  from jpq_jax.sweep import ConfigError, demo_config, validate_config
  cfg = demo_config()
  assert (cfg.data.loader, cfg.data.workers, cfg.data.worker_type) == ("auto", 0, "threads")
  for field, value, match in (("loader", "torch", "data.loader"), ("workers", -1, "data.workers"),
                              ("worker_type", "fibers", "data.worker_type")):
    c = demo_config()
    c.data[field] = value
    with pytest.raises(ConfigError, match=match):
      validate_config(c)
  from jpq_jax.sweep.build import _loader_cls  # pylint: disable=import-outside-toplevel
  c = demo_config()
  c.data.loader, c.data.workers = "grain", 2
  loader = _loader_cls(c)(_split(n=40), 8, seed=0, shuffle=True, augment=None, process_index=0,
                          process_count=1)
  assert isinstance(loader, GrainLoader) and loader.workers == 2


@pytest.mark.slow
def test_sweep_with_the_grain_loader_gives_the_numpy_loaders_results(tmp_path):
  import test_sweep_helpers as h  # pylint: disable=import-outside-toplevel
  from jpq_jax.sweep import run_sweep  # pylint: disable=import-outside-toplevel
  out = {}
  for loader, workers in (("numpy", 0), ("grain", 2)):
    cfg = h.tiny_config(lambdas=(1e-4,))
    cfg.data.loader, cfg.data.workers = loader, workers
    out[loader] = run_sweep(cfg, str(tmp_path / loader), progress=False)["members"]
  for a, b in zip(out["numpy"], out["grain"]):
    assert a["test_acc"] == b["test_acc"] and a["val_acc"] == b["val_acc"]
    assert a["test_loss"] == b["test_loss"]


def test_streamed_image_folder_matches_the_in_memory_one(tmp_path, monkeypatch):
  monkeypatch.setenv("JPQ_JAX_CACHE", str(tmp_path / "cache"))
  from PIL import Image  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  for split, n in (("train", 6), ("test", 3)):
    for cls in ("cat", "dog"):
      (tmp_path / "f" / split / cls).mkdir(parents=True)
      for k in range(n):
        Image.fromarray(rng.integers(0, 256, (9, 9, 3), dtype=np.uint8)).save(
            tmp_path / "f" / split / cls / f"{k}.png")
  folder = str(tmp_path / "f")
  mem = data.load(f"folder:{folder}", seed=2, val_fraction=0.25)
  streamed = data.load(f"folder:{folder}", seed=2, val_fraction=0.25, stream=True)
  assert isinstance(streamed.train, data.SourceSplit) and streamed.input_shape == (9, 9, 3)
  assert streamed.class_names == mem.class_names == ["cat", "dog"]
  for a, b in ((mem.train, streamed.train), (mem.val, streamed.val), (mem.test, streamed.test)):
    kw = dict(seed=2, shuffle=True, augment="cifar", process_index=0, process_count=1,
              drop_remainder=False)
    _assert_same(_batches(data.make_loader(b, 4, workers=2, **kw), 1),
                 _batches(data.make_loader(a, 4, **kw), 1))
  with pytest.raises(data.DataError, match="extract the zip"):
    import shutil  # pylint: disable=import-outside-toplevel
    zipped = shutil.make_archive(str(tmp_path / "z"), "zip", folder)
    data.load(f"folder:{zipped}", stream=True)


def _random_crop6(image, rng):
  """Module level (picklable): a random 6x6 crop of an image of any size."""
  r = int(rng.integers(0, image.shape[0] - 5))
  c = int(rng.integers(0, image.shape[1] - 5))
  return image[r:r + 6, c:c + 6]


def test_images_of_varying_size_cropped_by_the_augmentation_callable(tmp_path):
  """The ImageNet shape of the hook: files of any size, a random crop per example for training, a
  decode that centre-crops for evaluation."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  paths, imgs = [], []
  for i, (h, w) in enumerate([(9, 12), (7, 7), (10, 8), (6, 11)] * 3):
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    paths.append(tmp_path / f"{i}.png")
    Image.fromarray(arr).save(paths[-1])
    imgs.append(arr)
  labels = [i % 2 for i in range(12)]
  train = data.SourceSplit(data.FileSource(paths, labels), example_shape=(6, 6, 3))
  kw = dict(seed=1, shuffle=True, augment=_random_crop6, process_index=0, process_count=1)
  a = _batches(data.make_loader(train, 4, **kw), 0)
  assert len(a) == 3 and a[0][0].shape == (4, 6, 6, 3)
  _assert_same(_batches(data.make_loader(train, 4, workers=2, **kw), 0), a)
  # Each crop is a window of its own image.
  order = data.epoch_order(12, 1, 0, True)
  crop = (a[0][0][0] * 255).round().astype(np.uint8)
  img = imgs[order[0]]
  assert any(np.array_equal(img[r:r + 6, c:c + 6], crop)
             for r in range(img.shape[0] - 5) for c in range(img.shape[1] - 5))
  ds = data.user_dataset(train, train, train, num_classes=2)
  assert ds.input_shape == (6, 6, 3)

  def centre6(raw):
    im = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))
    r, c = (im.shape[0] - 6) // 2, (im.shape[1] - 6) // 2
    return im[r:r + 6, c:c + 6]

  val = data.SourceSplit(data.FileSource(paths, labels, decode=centre6))
  assert val.example_shape == (6, 6, 3)
  x, _ = val.gather(np.array([1]))
  np.testing.assert_array_equal(x[0], imgs[1][0:6, 0:6])
  # Without a crop, images of several sizes are a clear error.
  with pytest.raises(data.DataError, match="expected \\(6, 6, 3\\)"):
    list(data.make_loader(train, 4, seed=1, shuffle=False, process_index=0,
                          process_count=1).epoch(0))


@pytest.mark.slow
def test_sweep_on_a_streamed_tfds_dataset(tiny_tfds, tmp_path):
  import test_sweep_helpers as h  # pylint: disable=import-outside-toplevel
  from jpq_jax.sweep import run_sweep  # pylint: disable=import-outside-toplevel
  _tiny_builder_class()
  cfg = h.tiny_config(lambdas=(1e-4,))
  cfg.data.name, cfg.data.data_dir = "tfds:jpq_grain_tiny/rgb", tiny_tfds
  cfg.data.options.image_key = "picture"
  cfg.data.options.val_fraction = 0.25
  cfg.data.options.augment = "flip"
  cfg.data.workers = 2
  cfg.train.batch_size = 3
  res = run_sweep(cfg, str(tmp_path / "run"), progress=False)
  assert res["dataset"] == "tfds:jpq_grain_tiny/rgb" and res["input_shape"] == [8, 8, 3]
  assert 0.0 <= res["members"][0]["test_acc"] <= 1.0
  assert "tensorflow" not in sys.modules
