"""Real-data tests (slow): the offline CIFAR-10 copy in ../shared/data, skipped when absent."""

import os
import time

import numpy as np
import pytest

from jpq_jax import data

CIFAR_ZIP = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                         "cifar10-jpeg.zip")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(CIFAR_ZIP), reason="shared/data/cifar10-jpeg.zip absent")
def test_cifar10_offline_zip(tmp_path, monkeypatch):
  monkeypatch.setenv("JPQ_JAX_CACHE", str(tmp_path / "cache"))
  t0 = time.perf_counter()
  ds = data.load("cifar10", data_dir=CIFAR_ZIP)
  first = time.perf_counter() - t0
  assert (len(ds.train), len(ds.val), len(ds.test)) == (40000, 10000, 10000)
  assert ds.input_shape == (32, 32, 3) and ds.num_classes == 10 and ds.augment == "cifar"
  for s in (ds.train, ds.val, ds.test):
    assert s.x.dtype == np.uint8 and s.x.shape[1:] == (32, 32, 3) and s.y.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(ds.test.y, minlength=10), [1000] * 10)
  np.testing.assert_array_equal(
      np.bincount(ds.train.y, minlength=10) + np.bincount(ds.val.y, minlength=10), [5000] * 10)
  # A random 80/20 split keeps every class near 4000/1000.
  assert np.all(np.abs(np.bincount(ds.val.y, minlength=10) - 1000) < 150)
  assert 100 < ds.train.x.mean() < 140  # natural images, not blank decodes
  # The second load reads the cache.
  t0 = time.perf_counter()
  again = data.load("cifar10", data_dir=CIFAR_ZIP)
  second = time.perf_counter() - t0
  np.testing.assert_array_equal(again.val.x, ds.val.x)
  assert second < max(5.0, first / 3)
  # The generic folder path reads the same zip.
  generic = data.load(f"folder:{CIFAR_ZIP}")
  assert generic.class_names == ds.class_names and len(generic.test) == 10000
  # One training epoch through the loader with augmentation.
  loader = data.Loader(ds.train, 128, seed=14, shuffle=True, augment="cifar", process_index=0,
                       process_count=1)
  n = sum(len(y) for _, y in loader.epoch(0))
  assert n == loader.steps_per_epoch * 128
