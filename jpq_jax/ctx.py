"""How to run a jpq model: :class:`Ctx` (mode, training or evaluation, sampling state).

Its own module, below both :mod:`jpq_jax.layers` (whose layers read it) and :mod:`jpq_jax.table`
(whose tracing runs a model with one), so that the two do not import each other: the layers
import the table's records, and the table's tracing needs only this class. ``jpq_jax.layers``
re-exports it (``jpq_jax.Ctx``, ``jpq_jax.layers.Ctx`` are this class).
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import struct

from jpq_jax import choice

__all__ = ["MODES", "Ctx"]

MODES = ("float", "search", "fixed")


@struct.dataclass
class Ctx:
  """How to run a model: the mode, training or evaluation, and the sampling state.

  ``mode``, ``train`` and ``sampling`` are static (they change the program); ``temperature`` and
  ``key`` are arrays (one compile serves every temperature and every Gumbel draw).

  Attributes:
    mode: ``"float"``, ``"search"`` or ``"fixed"``.
    train: training mode (BatchNorm batch statistics, dropout, relaxed theta) or evaluation
      (running statistics, one-hot argmax theta).
    sampling: training-mode sampling of theta, one of :data:`jpq_jax.choice.SAMPLINGS`.
    temperature: softmax temperature T (scalar array).
    key: PRNG key for Gumbel sampling (only needed by ``gumbel``/``gumbel_hard``).
  """
  mode: str = struct.field(pytree_node=False, default="float")
  train: bool = struct.field(pytree_node=False, default=False)
  sampling: str = struct.field(pytree_node=False, default="softmax")
  temperature: Any = 1.0
  key: Optional[jax.Array] = None

  def __post_init__(self):
    if self.mode not in MODES:
      raise ValueError(f"unknown mode {self.mode!r}; expected one of {MODES}")
    if self.sampling not in choice.SAMPLINGS:
      raise ValueError(f"unknown sampling {self.sampling!r}; expected one of {choice.SAMPLINGS}")

  @classmethod
  def float(cls, train: bool = False) -> "Ctx":
    """Float (warm-up) mode."""
    return cls(mode="float", train=train)

  @classmethod
  def search(cls, temperature: Any = 1.0, train: bool = False, sampling: str = "softmax",
             key: Optional[jax.Array] = None) -> "Ctx":
    """Search mode at temperature ``temperature`` (an array or float).

    Raises:
      ValueError: a concrete temperature that is not a finite number > 0.
    """
    choice.check_temperature(temperature, "Ctx.search")
    return cls(mode="search", train=train, sampling=sampling,
               temperature=jnp.asarray(temperature, jnp.float32), key=key)

  @classmethod
  def fixed(cls, train: bool = False) -> "Ctx":
    """Fixed-architecture mode (fine-tuning and deployment)."""
    return cls(mode="fixed", train=train)
