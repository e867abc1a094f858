"""The paper's benchmark models (and a tiny demo network), each runnable in all three modes.

Every model is a Flax module ``model(x, ctx) -> QTensor`` (logits, or an autoencoder's
reconstruction, in ``.value``) built from the library's layers, with the sharing groups of
METHOD.md §2.6.
"""

from __future__ import annotations

from typing import Callable, Dict

from jpq_jax.layers import SearchSpace
from jpq_jax.models.demo import DemoNet
from jpq_jax.models.demo_ae import DemoAutoencoder
from jpq_jax.models.dscnn import DSCNN
from jpq_jax.models.resnet8 import ResNet8
from jpq_jax.models.resnet18 import ResNet18

__all__ = ["DemoNet", "DemoAutoencoder", "DSCNN", "ResNet8", "ResNet18", "MODELS", "get_model"]

MODELS: Dict[str, Callable] = {
    "demo": DemoNet,
    "resnet8": ResNet8,
    "dscnn": DSCNN,
    "resnet18": ResNet18,
    "demo_ae": DemoAutoencoder,
}


def get_model(name: str, space: SearchSpace = SearchSpace(), num_classes: int = 10):
  """Build a model by name.

  Args:
    name: one of ``demo``, ``resnet8``, ``dscnn``, ``resnet18``, ``demo_ae`` (an autoencoder).
    space: the search space (precision sets, quantizer settings).
    num_classes: classifier outputs.

  Returns:
    The Flax module.

  Raises:
    ValueError: unknown model name.
  """
  try:
    cls = MODELS[name]
  except KeyError:
    raise ValueError(f"unknown model {name!r}; available: {sorted(MODELS)}") from None
  return cls(space=space, num_classes=num_classes)
