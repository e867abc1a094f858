"""The built-in demo dataset: scikit-learn's 8x8 handwritten digits.

It ships inside scikit-learn (``sklearn.datasets.load_digits``, 1797 images, 10 classes), so the
whole training job can run on a fresh machine with no download at all. Pixels are integers 0..16;
they are divided by 16 and stored as float32 ``(8, 8, 1)`` images in [0, 1].
"""

from __future__ import annotations

import numpy as np

from jpq_jax.data.core import DataError, Dataset, Split, seeded_partition

__all__ = ["load_digits"]


def load_digits(*, seed: int = 14, val_fraction: float = 0.1, test_fraction: float = 0.2,
                name: str = "demo") -> Dataset:
  """Loads the digits as a :class:`Dataset` with a seeded train/validation/test split.

  Args:
    seed: seed of the split (a pure function of it).
    val_fraction: fraction of all images used for validation.
    test_fraction: fraction of all images used for testing.
    name: name recorded in the dataset.

  Returns:
    The dataset (default sizes: train 1258, val 180, test 359); no augmentation.

  Raises:
    DataError: fractions that leave no training data.
  """
  # Imported here: scikit-learn is slow to import and only the demo dataset needs it.
  from sklearn import datasets as sk_datasets  # pylint: disable=import-outside-toplevel
  if not (0 < val_fraction and 0 < test_fraction and val_fraction + test_fraction < 1):
    raise DataError(f"invalid fractions val {val_fraction}, test {test_fraction}")
  bunch = sk_datasets.load_digits()
  x = (bunch.images.astype(np.float32) / np.float32(16.0))[..., None]
  y = bunch.target.astype(np.int32)
  n = len(y)
  n_test, n_val = int(round(test_fraction * n)), int(round(val_fraction * n))
  test_idx, val_idx, train_idx = seeded_partition(n, [n_test, n_val], seed)
  full = Split(x, y)
  return Dataset(name=name, train=full.take(train_idx), val=full.take(val_idx),
                 test=full.take(test_idx), num_classes=10, input_shape=(8, 8, 1),
                 class_weights=None, augment=None, extra_tests={},
                 class_names=[str(i) for i in range(10)])
