"""The paper's benchmark models (and a tiny demo network), each runnable in all three modes.

Every model is a Flax module ``model(x, ctx) -> QTensor`` (logits, or an autoencoder's
reconstruction, in ``.value``) built from the library's layers, with the sharing groups of
METHOD.md §2.6.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from typing import Any, Callable, Dict, Mapping, Optional

from jpq_jax.layers import SearchSpace
from jpq_jax.models.demo import DemoNet
from jpq_jax.models.demo_ae import DemoAutoencoder
from jpq_jax.models.dscnn import DSCNN
from jpq_jax.models.resnet8 import ResNet8
from jpq_jax.models.resnet18 import ResNet18
from jpq_jax.models.resnet50 import ResNet50

__all__ = ["DemoNet", "DemoAutoencoder", "DSCNN", "ResNet8", "ResNet18", "ResNet50", "MODELS", "get_model",
           "register_model", "model_factory", "canonical_name", "build_model"]

MODELS: Dict[str, Callable] = {
    "demo": DemoNet,
    "resnet8": ResNet8,
    "dscnn": DSCNN,
    "resnet18": ResNet18,
    "resnet50": ResNet50,
    "demo_ae": DemoAutoencoder,
}


def get_model(name: str, space: SearchSpace = SearchSpace(), num_classes: int = 10):
  """Build a model by name.

  Args:
    name: one of ``demo``, ``resnet8``, ``dscnn``, ``resnet18``, ``resnet50``, ``demo_ae`` (an
      autoencoder).
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


# Models added with register_model (kept apart from the built-ins, which MODELS lists).
_REGISTERED: Dict[str, Callable] = {}


def register_model(name: str, factory: Callable) -> None:
  """Make a model available to the sweep as ``model.name = name``.

  Args:
    name: the config name (not a built-in name, no ``:``).
    factory: a Flax module class (or function returning a module) called with the config's
      ``model.kwargs``: a plain Flax model (converted with :func:`jpq_jax.searchable`) or a model
      built from jpq layers (then also given ``space=`` and ``num_classes=``). When it is importable
      (defined in a module, not in ``__main__``), the run's ``config.json`` records its import path,
      so ``restore_member``, ``jpq export`` and a resume rebuild it in a fresh process.

  Raises:
    ValueError: a built-in name, a name with ``:``, or ``factory`` not callable.
  """
  if not isinstance(name, str) or not name or ":" in name or name in MODELS:
    raise ValueError(f"register_model: invalid or built-in model name {name!r}")
  if not callable(factory):
    raise ValueError(f"register_model: factory for {name!r} is not callable")
  _REGISTERED[name] = factory


def model_factory(name: str) -> Callable:
  """The class/function a model name refers to: built-in, registered, or ``"pkg.mod:Attr"``.

  Raises:
    ValueError: unknown name, or an import path that does not import.
  """
  if name in MODELS:
    return MODELS[name]
  if name in _REGISTERED:
    return _REGISTERED[name]
  if ":" in name:
    mod, _, attr = name.partition(":")
    try:
      obj = importlib.import_module(mod)
      for part in attr.split("."):
        obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
      raise ValueError(f"model {name!r}: cannot import it ({type(e).__name__}: {e}); is its "
                       "package on PYTHONPATH?") from None
    return obj
  raise ValueError(f"unknown model {name!r}; available: {sorted(MODELS) + sorted(_REGISTERED)}, "
                   "a name given to jpq_jax.register_model, or an import path 'pkg.module:Class'")


def canonical_name(name: str) -> str:
  """``name`` as a fresh process can resolve it: a registered model's import path when it has one.
  """
  f = _REGISTERED.get(name)
  mod, qual = getattr(f, "__module__", None), getattr(f, "__qualname__", "")
  if f is None or not mod or mod == "__main__" or "<" in qual:
    return name
  return f"{mod}:{qual}"


def _is_jpq_model(obj: Any) -> bool:
  fields = {f.name for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else set()
  return "space" in fields


def build_model(name: str, space: SearchSpace, num_classes: int, sample_input: Any,
                kwargs: Optional[Mapping[str, Any]] = None):
  """A model by config name, ready for the sweep (a user's plain Flax model converted).

  Args:
    name: built-in name, registered name, or import path ``"pkg.module:Class"``.
    space: the search space.
    num_classes: classifier outputs (passed as ``num_classes=`` if the factory takes it and
      ``kwargs`` does not set it).
    sample_input: an input batch (for the conversion of a plain model).
    kwargs: the factory's keyword arguments (``model.kwargs`` of the config).

  Returns:
    A jpq model (``model(x, ctx) -> QTensor``); a Flax NNX model is converted to its Linen form
    (:class:`jpq_jax.nnx.LinenNet`), which the driver trains as any Linen jpq model.

  Raises:
    ValueError: unknown name, or a factory that does not return a Flax module.
    jpq_jax.ConversionError: the user's model cannot be converted.
  """
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  from jpq_jax.convert import searchable  # pylint: disable=import-outside-toplevel
  kwargs = dict(kwargs or {})
  if name in MODELS:
    if kwargs:
      raise ValueError(f"model {name!r} is built-in and takes no model.kwargs (got {kwargs})")
    return get_model(name, space, num_classes)
  factory = model_factory(name)
  try:
    # An NNX class's signature is its metaclass's (*args, **kwargs): read its __init__'s.
    params = inspect.signature(factory.__init__ if _is_nnx_class(factory) else factory).parameters
  except (TypeError, ValueError):
    params = {}
  if "num_classes" in params and "num_classes" not in kwargs:
    kwargs["num_classes"] = int(num_classes)
  jpq_style = isinstance(factory, type) and "space" in params
  if jpq_style:
    kwargs["space"] = space
  nnx_class = _is_nnx_class(factory)
  if nnx_class and "rngs" in params and "rngs" not in kwargs:
    from flax import nnx  # pylint: disable=import-outside-toplevel
    # The NNX model's own init is never used (the sweep's warm-up initialises the Linen form with
    # its seed); a fixed stream only makes the construction deterministic.
    kwargs["rngs"] = nnx.Rngs(0)
  model = factory(**kwargs)
  if nnx_class or _is_nnx(model):
    from jpq_jax import nnx as jpq_nnx  # pylint: disable=import-outside-toplevel
    return jpq_nnx.searchable(model, sample_input, space).net
  if not isinstance(model, nn.Module):
    raise ValueError(f"model {name!r}: the factory returned {type(model).__name__}, not a "
                     "flax.linen or flax.nnx Module")
  return model if _is_jpq_model(model) else searchable(model, sample_input, space)


def _is_nnx_class(obj: Any) -> bool:
  """An ``nnx.Module`` subclass, told without importing flax.nnx when flax.nnx is not loaded."""
  return isinstance(obj, type) and any(
      c.__module__.startswith("flax.nnx") and c.__name__ == "Module" for c in obj.__mro__)


def _is_nnx(obj: Any) -> bool:
  return _is_nnx_class(type(obj))
