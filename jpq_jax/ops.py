"""Named channel-preserving ops for :meth:`jpq_jax.QTensor.map`, each with an integer numpy twin.

A model applies ReLU, pooling, dropout and upsampling between the library's layers with ``QTensor.map(fn)``.
Any function works for training and search, but the deployment export
(:mod:`jpq_jax.export`) has to re-run the network in numpy on *integer activation codes*, so it
must know what every ``fn`` was. The ops here are small frozen descriptors: calling one runs the
JAX computation (exactly what the equivalent inline code would compute), and
:meth:`Op.apply_codes` runs its counterpart on an integer code tensor.

Integer activations are carried as ``(codes, mult)``: the real value is ``codes * mult``, with
``codes`` an integer array and ``mult`` a scalar. A PACT quantizer produces ``mult = 1/k``; a
sum-pooling keeps the codes integer (window sums) and divides ``mult`` by the window size, so the
average pool before the classifier stays exact in integers.

Usage::

  h = conv(h, ctx).map(jpq_jax.ops.relu)
  h = h.map(jpq_jax.ops.dropout(0.2, deterministic=not ctx.train))
  h = h.map(jpq_jax.ops.global_avg_pool).flatten()

``jax.nn.relu`` (= ``flax.linen.relu``) is recognised as :data:`relu`; any other function (a lambda)
still runs, but a model using one cannot be exported (the export names the layer it feeds).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Op", "relu", "identity", "global_avg_pool", "avg_pool", "max_pool", "dropout",
           "upsample", "describe", "from_descriptor"]

_Pair = Tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Op:
  """A named channel-preserving op with a static description.

  Attributes:
    kind: ``"relu"``, ``"identity"``, ``"global_avg_pool"``, ``"avg_pool"``, ``"max_pool"``,
      ``"dropout"`` or ``"upsample"``.
    window: pooling window ``(h, w)``; for ``upsample``, the factor ``(h, w)``.
    strides: pooling strides ``(h, w)``.
    padding: pooling padding, ``"VALID"`` or ``((top, bottom), (left, right))``.
    rate: dropout rate.
    deterministic: dropout is the identity (evaluation).
  """
  kind: str
  window: Optional[_Pair] = None
  strides: Optional[_Pair] = None
  padding: Any = "VALID"
  rate: float = 0.0
  deterministic: bool = True

  # ---- JAX side -------------------------------------------------------------------------------
  def __call__(self, v: jax.Array) -> jax.Array:
    if self.kind == "relu":
      return jax.nn.relu(v)
    if self.kind == "identity":
      return v
    if self.kind == "global_avg_pool":
      return jnp.mean(v, axis=(1, 2), keepdims=True)
    if self.kind == "avg_pool":
      import flax.linen as nn  # pylint: disable=import-outside-toplevel
      return nn.avg_pool(v, self.window, self.strides, self.padding)
    if self.kind == "max_pool":
      import flax.linen as nn  # pylint: disable=import-outside-toplevel
      return nn.max_pool(v, self.window, self.strides, self.padding)
    if self.kind == "upsample":
      return jnp.repeat(jnp.repeat(v, self.window[0], axis=1), self.window[1], axis=2)
    if self.kind == "dropout":
      # Created inside the caller's compact method, so Flax names it Dropout_<n> in the caller,
      # exactly as an inline ``nn.Dropout(rate)(v)`` would be.
      import flax.linen as nn  # pylint: disable=import-outside-toplevel
      return nn.Dropout(self.rate, deterministic=self.deterministic)(v)
    raise ValueError(f"unknown op kind {self.kind!r}")

  def descriptor(self) -> dict:
    """JSON-serialisable description (what the export manifest stores)."""
    d = {"op": self.kind}
    if self.kind == "upsample":
      d.update(window=list(self.window))
    if self.kind in ("avg_pool", "max_pool"):
      d.update(window=list(self.window), strides=list(self.strides),
               padding=self.padding if isinstance(self.padding, str)
               else [list(p) for p in self.padding])
    if self.kind == "dropout":
      d.update(rate=float(self.rate), deterministic=bool(self.deterministic))
    return d

  # ---- numpy side on integer codes ------------------------------------------------------------
  def apply_codes(self, codes: np.ndarray, mult: float) -> Tuple[np.ndarray, float]:
    """The op on an integer activation ``codes * mult`` (NHWC), in numpy.

    Args:
      codes: integer array.
      mult: its scalar multiplier (real value = ``codes * mult``).

    Returns:
      ``(codes', mult')`` of the op's output.

    Raises:
      ValueError: a dropout that is not deterministic (only evaluation can be exported).
    """
    if self.kind == "relu":
      return np.maximum(codes, 0), mult
    if self.kind == "identity":
      return codes, mult
    if self.kind == "dropout":
      if not self.deterministic:
        raise ValueError("a training-mode (non-deterministic) dropout cannot run in integer inference")
      return codes, mult
    if self.kind == "upsample":  # nearest neighbour: every code repeated, exact
      return np.repeat(np.repeat(codes, self.window[0], axis=1), self.window[1], axis=2), mult
    if self.kind == "global_avg_pool":
      hw = codes.shape[1] * codes.shape[2]
      return codes.sum(axis=(1, 2), keepdims=True), mult / hw
    if self.kind in ("avg_pool", "max_pool"):
      pads = _pool_pads(codes.shape[1:3], self.window, self.strides, self.padding)
      if self.kind == "avg_pool":
        # flax's avg_pool divides by the full window (count_include_pad=True): zero-padded sums.
        win = _windows(np.pad(codes, ((0, 0),) + pads + ((0, 0),)), self.window, self.strides)
        return win.sum(axis=(-2, -1)), mult / (self.window[0] * self.window[1])
      lo = np.iinfo(np.int64).min
      win = _windows(np.pad(codes.astype(np.int64), ((0, 0),) + pads + ((0, 0),),
                            constant_values=lo), self.window, self.strides)
      return win.max(axis=(-2, -1)), mult
    raise ValueError(f"unknown op kind {self.kind!r}")


def _pool_pads(hw, window, strides, padding):
  if isinstance(padding, str):
    pads = jax.lax.padtype_to_pads(tuple(hw), tuple(window), tuple(strides), padding)
  else:
    pads = padding
  return tuple(tuple(int(v) for v in p) for p in pads)


def _windows(x: np.ndarray, window, strides) -> np.ndarray:
  """(N, Ho, Wo, C, kh, kw) view of the strided windows of an NHWC array."""
  v = np.lib.stride_tricks.sliding_window_view(x, tuple(window), axis=(1, 2))
  return v[:, ::strides[0], ::strides[1]]


relu = Op("relu")
"""ReLU (``jax.nn.relu``)."""

identity = Op("identity")
"""The identity."""

global_avg_pool = Op("global_avg_pool")
"""Mean over the spatial axes, keeping them: ``v.mean(axis=(1, 2), keepdims=True)``."""


def _pair(v) -> _Pair:
  return tuple(int(t) for t in v) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _padding(padding) -> Any:
  if isinstance(padding, str):
    return padding.upper()
  return tuple(tuple(int(t) for t in p) for p in padding)


def _pool(kind: str, window, strides, padding) -> Op:
  w = _pair(window)
  return Op(kind, window=w, strides=_pair(strides) if strides is not None else w,
            padding=_padding(padding))


def avg_pool(window: Union[int, _Pair], strides: Union[int, _Pair, None] = None,
             padding: Any = "VALID") -> Op:
  """Average pooling (``flax.linen.avg_pool``; padding counts in the divisor).

  Args:
    window: window size.
    strides: strides (default: the window).
    padding: ``"VALID"``, ``"SAME"`` or explicit pairs.

  Returns:
    The op.
  """
  return _pool("avg_pool", window, strides, padding)


def max_pool(window: Union[int, _Pair], strides: Union[int, _Pair, None] = None,
             padding: Any = "VALID") -> Op:
  """Max pooling (``flax.linen.max_pool``).

  Args:
    window: window size.
    strides: strides (default: the window).
    padding: ``"VALID"``, ``"SAME"`` or explicit pairs.

  Returns:
    The op.
  """
  return _pool("max_pool", window, strides, padding)


def dropout(rate: float, deterministic: bool) -> Op:
  """Dropout (``flax.linen.Dropout``, created in the calling module; needs a ``dropout`` rng when
  not deterministic).

  Args:
    rate: drop probability.
    deterministic: evaluation mode (the identity).

  Returns:
    The op.
  """
  return Op("dropout", rate=float(rate), deterministic=bool(deterministic))


def upsample(factor: Union[int, _Pair]) -> Op:
  """Nearest-neighbour upsampling of the spatial axes (each pixel repeated ``factor`` times per
  axis), e.g. in an autoencoder's decoder; exact on integer codes.

  Args:
    factor: the factor, int or ``(h, w)``.

  Returns:
    The op.
  """
  return Op("upsample", window=_pair(factor))


def describe(fn: Callable) -> Optional[Op]:
  """The named op ``fn`` is, or None for an unnamed function.

  Args:
    fn: the function given to ``QTensor.map``.

  Returns:
    An :class:`Op` (``jax.nn.relu`` is recognised as :data:`relu`), or None.
  """
  if isinstance(fn, Op):
    return fn
  if fn is jax.nn.relu:
    return relu
  return None


def from_descriptor(d: dict) -> Op:
  """Inverse of :meth:`Op.descriptor`.

  Args:
    d: a descriptor dict, as :meth:`Op.descriptor` writes it: ``{"op": kind}``, plus ``window``,
      ``strides`` and ``padding`` for ``avg_pool``/``max_pool`` (a padding string is upper-cased,
      pairs become tuples of ints), ``rate`` and ``deterministic`` for ``dropout``, or ``window``
      (the factor) for ``upsample``.

  Returns:
    The equivalent :class:`Op`.

  Raises:
    ValueError: unknown op.
  """
  kind = d.get("op")
  if kind in ("relu", "identity", "global_avg_pool"):
    return Op(kind)
  if kind in ("avg_pool", "max_pool"):
    pad = d["padding"]
    return Op(kind, window=_pair(d["window"]), strides=_pair(d["strides"]),
              padding=_padding(pad))
  if kind == "dropout":
    return Op("dropout", rate=float(d["rate"]), deterministic=bool(d["deterministic"]))
  if kind == "upsample":
    return Op("upsample", window=_pair(d["window"]))
  raise ValueError(f"unknown op {kind!r} in the bundle")
