"""Flax layers of the search space: groups, conv, dense, input quantizer, residual add.

One model definition runs in three modes, chosen per call by :class:`Ctx` (DESIGN.md principle 2):

* ``float``  -- the warm-up network: plain conv/dense with BatchNorm (``params``, ``batch_stats``);
* ``search`` -- the relaxed search space: BatchNorm folded away, every output channel mixes its
  quantized weight copies with ``theta = softmax(alpha / T)`` (``params``, ``arch``);
* ``fixed``  -- a frozen architecture: one bit-width per channel from ``precision`` (0 = pruned).

Activations flow between layers as :class:`QTensor`: the value, the activation scale of the quantizer
that produced it (the bias quantizer needs it) and the name of that quantizer's sharing group (costs
need it to know whose pruning removes this layer's input channels; :class:`Add` needs it to check that
the tensors it adds share a group). Channel-preserving ops (ReLU, pooling, dropout) are applied with
:meth:`QTensor.map`; :meth:`QTensor.flatten` records the spatial factor. Use the named ops of
:mod:`jpq_jax.ops` (``ops.relu``, ``ops.global_avg_pool``, ``ops.dropout``...) in ``map`` for a model
that :mod:`jpq_jax.export` can export: an unnamed function runs the same but cannot be exported.

Variables (DESIGN.md principle 1):

* ``params``: ``kernel``/``bias`` of every layer, PACT ``clip`` values of every group;
* ``arch``: per group ``alpha_w`` ``(n_wbits, C)`` (or ``(n_wbits,)`` layer-wise) and ``alpha_a``
  ``(n_abits,)``; the input quantizer's ``alpha_a``;
* ``precision``: per group ``w_bits`` ``(C,)`` int32 (0 = pruned) and ``a_bits`` () int32;
* ``batch_stats``: BatchNorm running statistics, float mode only.
"""

from __future__ import annotations

import contextvars
import dataclasses
import warnings
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import struct

from jpq_jax import choice
from jpq_jax import quant
from jpq_jax.ctx import MODES, Ctx  # re-exported: the layers' public API names them
from jpq_jax.table import TABLE_COLLECTION, GroupRecord, LayerRecord

__all__ = [
    "MODES",
    "Ctx",
    "QTensor",
    "SearchSpace",
    "Group",
    "InputQuantizer",
    "Conv",
    "Dense",
    "Add",
]

# The deployment export (jpq_jax.export) records the network graph during one abstract trace. Ops
# applied with QTensor.map/flatten are not Flax modules, so method interception cannot see them;
# while a recorder is set here (only inside that trace) they report themselves to it. A context
# variable rather than a static QTensor field keeps QTensor's pytree structure unchanged (a field
# would make e.g. the two branches of a lax.cond that apply different ops incompatible).
GRAPH_RECORDER: contextvars.ContextVar = contextvars.ContextVar("jpq_graph_recorder", default=None)


@struct.dataclass
class QTensor:
  """An activation tensor tagged with the quantizer that produced it.

  Attributes:
    value: the array (NHWC for images, ``(N, F)`` after flatten).
    s_a: effective activation scale of the producing quantizer (``None`` in float mode or after an
      unquantized output).
    group: name of the sharing group whose activation quantizer produced the tensor.
    channel_mult: input channels per producer channel (> 1 after :meth:`flatten`).
  """
  value: jax.Array
  s_a: Optional[jax.Array] = None
  group: str = struct.field(pytree_node=False, default="")
  channel_mult: int = struct.field(pytree_node=False, default=1)

  @property
  def shape(self):
    return self.value.shape

  def map(self, fn: Callable[[jax.Array], jax.Array]) -> "QTensor":
    """Apply a channel-preserving op (ReLU, pooling, dropout); the tag is kept.

    Args:
      fn: function of the array; must keep the channel (last) axis. A named op of
        :mod:`jpq_jax.ops` (or ``jax.nn.relu``) keeps the model exportable.

    Returns:
      A QTensor with the new value and the same producer.

    Raises:
      ValueError: ``fn`` changed the number of channels.
    """
    out = fn(self.value)
    if out.shape[-1] != self.value.shape[-1]:
      raise ValueError(
          f"QTensor.map: {fn} changed the channel count {self.value.shape[-1]} -> {out.shape[-1]}; "
          "use QTensor.flatten for flattening and a jpq_jax layer for anything that mixes channels")
    rec = GRAPH_RECORDER.get()
    if rec is not None:
      rec.on_op(self.value, out, fn)
    return self.replace(value=out)

  def flatten(self) -> "QTensor":
    """Flatten all but the batch axis (channels-last order), recording the spatial factor."""
    n = self.value.shape[0]
    spatial = int(np.prod(self.value.shape[1:-1])) if self.value.ndim > 2 else 1
    out = self.value.reshape(n, -1)
    rec = GRAPH_RECORDER.get()
    if rec is not None:
      rec.on_op(self.value, out, "flatten")
    return self.replace(value=out, channel_mult=self.channel_mult * spatial)


def _as_tuple(v, n=2) -> Tuple[int, ...]:
  return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """The precision sets and quantizer settings of a search (static, hashable).

  Attributes:
    w_precisions: weight bit-widths per output channel; 0 means pruned. Default (0, 2, 4, 8).
    a_precisions: activation bit-widths per sharing group. Default (8,) (the paper's a8).
    input_precisions: bit-widths of the network-input quantizer; ``None`` = ``a_precisions``.
    granularity: ``"channel"`` (the method) or ``"layer"`` (EdMIPS-like baseline).
    clip_init: initial PACT clip of activation quantizers (6.0).
    input_clip_init: initial clip of the unsigned input quantizer (1.0 for images in [0, 1]).
    input_signed: signed PACT input quantizer (speech MFCCs).
    input_signed_clips: initial (inf, sup) clips of the signed input quantizer.
    activation_mixture: how the unsigned PACT mixture ``sum_j theta_j PACT_j(x)`` is computed:
      ``"fused"`` (default; :func:`jpq_jax.quant.pact_mixture`, one pass, only ``x`` kept for the
      backward, with the layer's following ReLU inside; a single precision without a ReLU still
      uses :func:`~jpq_jax.quant.pact`) or ``"copies"`` (a sum of per-precision
      :func:`~jpq_jax.quant.pact` copies, the reference's literal form, and a separate ReLU). Both
      give the reference's values and gradients to float32 rounding; they differ in speed and
      memory (benchmarks/step.py).
    keep_alive: number of output channels of every prunable group (the last ones) that cannot
      take the 0-bit option, so no group can be pruned away. 0 (default) is the reference; 1 is
      PIT's keep-alive channel (METHOD.md §7.1) applied to the joint search, a named improvement
      (:func:`jpq_jax.choice.keep_alive_logits`).
  """
  w_precisions: Tuple[int, ...] = (0, 2, 4, 8)
  a_precisions: Tuple[int, ...] = (8,)
  input_precisions: Optional[Tuple[int, ...]] = None
  granularity: str = "channel"
  clip_init: float = 6.0
  input_clip_init: float = 1.0
  input_signed: bool = False
  input_signed_clips: Tuple[float, float] = (-6.0, 6.0)
  activation_mixture: str = "fused"
  keep_alive: int = 0

  def __post_init__(self):
    object.__setattr__(self, "w_precisions",
                       choice.validate_precisions(self.w_precisions, "SearchSpace.w_precisions"))
    object.__setattr__(self, "a_precisions",
                       choice.validate_precisions(self.a_precisions, "SearchSpace.a_precisions",
                                                  allow_zero=False))
    if self.input_precisions is not None:
      object.__setattr__(self, "input_precisions",
                         choice.validate_precisions(self.input_precisions,
                                                    "SearchSpace.input_precisions", allow_zero=False))
    if self.granularity not in ("channel", "layer"):
      raise ValueError(f"SearchSpace.granularity: unknown {self.granularity!r}; use 'channel' or 'layer'")
    if not self.clip_init > 0 or not self.input_clip_init > 0:
      raise ValueError("SearchSpace: PACT clip initial values must be > 0")
    if self.activation_mixture not in ("fused", "copies"):
      raise ValueError(f"SearchSpace.activation_mixture: unknown {self.activation_mixture!r}; use "
                       "'fused' or 'copies'")
    if (isinstance(self.keep_alive, bool) or not float(self.keep_alive).is_integer()
        or self.keep_alive < 0):
      raise ValueError(f"SearchSpace.keep_alive: a number of channels >= 0, got {self.keep_alive!r}")
    object.__setattr__(self, "keep_alive", int(self.keep_alive))
    lo, hi = self.input_signed_clips
    if not lo < hi:
      raise ValueError(f"SearchSpace.input_signed_clips: need inf < sup, got {self.input_signed_clips}")

  @property
  def input_bits(self) -> Tuple[int, ...]:
    """Precision set of the network-input quantizer."""
    return self.input_precisions if self.input_precisions is not None else self.a_precisions

  @property
  def output_w_precisions(self) -> Tuple[int, ...]:
    """Weight precisions of the classifier: the weight set without 0 (never pruned)."""
    return tuple(p for p in self.w_precisions if p != 0)


def _path_name(module: nn.Module) -> Tuple[Tuple[str, ...], str]:
  path = tuple(module.scope.path)
  return path, "/".join(path)


def _var(module: nn.Module, col: str, name: str, init: Callable) -> jax.Array:
  """Get (or create, at init) a variable from any method of a shared module.

  Linen only lets ``setup``/``@compact`` methods declare variables, and a sharing group declares
  different variables per mode from several methods, each called once per member layer. Going
  through the scope directly creates the variable on first use and reads it afterwards.
  ``init`` takes a PRNG key for ``params`` and nothing otherwise.
  """
  scope = module.scope
  if scope.has_variable(col, name):
    return scope.get_variable(col, name)
  if col == "params":
    return scope.param(name, init)
  return scope.variable(col, name, init).value


def _tracing_table(module: nn.Module) -> bool:
  """Records are sown only by :func:`jpq_jax.trace_table` (an apply with ``table`` mutable), never
  by a user's ``init``, so ordinary variables hold no ``table`` collection."""
  return module.is_mutable_collection(TABLE_COLLECTION) and not module.is_initializing()


def _fuses(bits: Tuple[int, ...], how: str, relu: bool) -> bool:
  """Whether the fused mixture is used: ``how == "fused"`` and several precisions or a ReLU.

  A single precision without a following ReLU takes the copies form: there is nothing to fuse, and
  recomputing the copy in the backward made the {8} step ~7% slower. With the ReLU fused, a single
  precision gains too: ReLU's mask no longer keeps the output alive (benchmarks/step.py).
  """
  return how == "fused" and (len(bits) > 1 or relu)


def _pact_mix(x: jax.Array, clips: jax.Array, th: jax.Array, bits: Tuple[int, ...],
              how: str, relu: bool = False) -> jax.Array:
  """``sum_j th_j * pact(x, clips_j, bits_j)``: fused (one pass, optionally with the following ReLU,
  see :func:`jpq_jax.quant.pact_mixture`) or as a sum of copies (``relu`` must then be False)."""
  if _fuses(bits, how, relu):
    return quant.pact_mixture(x, clips, th, bits, relu=relu)
  assert not relu, "the copies form applies the ReLU as a separate op"
  y = jnp.zeros_like(x)
  for j, p in enumerate(bits):
    y = y + th[j] * quant.pact(x, clips[j], p)
  return y


class Group(nn.Module):
  """A sharing group: shared weight logits, shared activation quantizer, one pruning mask.

  Every layer that belongs to the group passes ``group=`` this module; tensors summed by
  :class:`Add` must all come from it. Create it once in the parent and hand it to the layers.

  Attributes:
    features: number of channels the group defines.
    space: the :class:`SearchSpace`.
    output: the classifier's group: weights without the 0-bit option, output not quantized.
    w_precisions: override of ``space.w_precisions`` for this group.
    a_precisions: override of ``space.a_precisions`` for this group.
  """
  features: int
  space: SearchSpace = SearchSpace()
  output: bool = False
  w_precisions: Optional[Tuple[int, ...]] = None
  a_precisions: Optional[Tuple[int, ...]] = None

  def __post_init__(self):
    _check_space(self.space, f"Group {self.name!r}")
    super().__post_init__()

  # ---- static description -------------------------------------------------------------------
  @property
  def wbits(self) -> Tuple[int, ...]:
    if self.w_precisions is not None:
      ps = choice.validate_precisions(self.w_precisions, f"weight precisions of group {self.name!r}")
    elif self.output:
      ps = self.space.output_w_precisions
    else:
      ps = self.space.w_precisions
    if self.output and 0 in ps:
      raise ValueError(
          f"group {self.name!r} is the classifier's (output=True): it cannot have a 0-bit option "
          f"(the classifier's outputs are never pruned), got weight precisions {ps}")
    return ps

  @property
  def abits(self) -> Tuple[int, ...]:
    if self.output:
      return ()
    if self.a_precisions is not None:
      return choice.validate_precisions(self.a_precisions,
                                        f"activation precisions of group {self.name!r}",
                                        allow_zero=False)
    return self.space.a_precisions

  def record(self) -> GroupRecord:
    path, name = _path_name(self)
    return GroupRecord(name=name, path=path, kind="output" if self.output else "hidden",
                       channels=self.features, w_precisions=self.wbits, a_precisions=self.abits,
                       granularity=self.space.granularity, keep_alive=self.space.keep_alive)

  @property
  def group_name(self) -> str:
    return _path_name(self)[1]

  def _sow_record(self):
    if _tracing_table(self):
      self.sow(TABLE_COLLECTION, "group", self.record(), reduce_fn=lambda prev, new: new,
               init_fn=lambda: None)

  # ---- variables ------------------------------------------------------------------------------
  def _clips(self) -> Optional[jax.Array]:
    if not self.abits:
      return None
    return _var(self, "params", "clip",
                lambda k: jnp.full((len(self.abits),), self.space.clip_init, jnp.float32))

  def _check_precision(self, ctx: Ctx):
    if not self.is_initializing() and not self.has_variable("precision", "w_bits"):
      raise ValueError(
          f"fixed mode needs a 'precision' collection, but group {self.group_name!r} has none: "
          "freeze a searched architecture with jpq_jax.freeze(...) (or pass precision=...) first")

  def theta_w(self, ctx: Ctx) -> jax.Array:
    """Weight mixing coefficients, shape ``(n_wbits, features)``.

    Args:
      ctx: search (sampled from ``arch``) or fixed (one-hot from ``precision``) context.

    Returns:
      theta; for layer-wise groups the per-layer choice is broadcast over channels.
    """
    self._sow_record()
    ps = self.wbits
    if ctx.mode == "search":
      shape = (len(ps), self.features) if self.space.granularity == "channel" else (len(ps),)
      alpha = _var(self, "arch", "alpha_w",
                   lambda: choice.init_logits(ps, self.features if len(shape) == 2 else None))
      if alpha.shape != shape:
        raise ValueError(f"group {self.group_name!r}: arch alpha_w has shape {alpha.shape}, "
                         f"expected {shape} for weight precisions {ps}")
      key = choice.weight_key(ctx.key, self.group_name)
      alpha = self.record().weight_logits(alpha)  # keep-alive channels (0: unchanged)
      th = choice.sample_theta(alpha, ctx.temperature, train=ctx.train, sampling=ctx.sampling, key=key)
      if th.ndim == 1:
        th = jnp.broadcast_to(th[:, None], (len(ps), self.features))
      return th
    if ctx.mode == "fixed":
      self._check_precision(ctx)
      bits = _var(self, "precision", "w_bits", lambda: jnp.full((self.features,), max(ps), jnp.int32))
      if bits.shape != (self.features,):
        raise ValueError(f"group {self.group_name!r}: precision w_bits has shape {bits.shape}, "
                         f"expected ({self.features},)")
      return choice.onehot_from_bits(bits, ps, f"group {self.group_name!r} precision w_bits")
    raise ValueError("theta_w is defined only in search and fixed modes")

  def theta_a(self, ctx: Ctx) -> Optional[jax.Array]:
    """Activation mixing coefficients ``(n_abits,)``, or None when the output is not quantized."""
    ps = self.abits
    if not ps:
      return None
    if ctx.mode == "search":
      alpha = _var(self, "arch", "alpha_a", lambda: choice.init_logits(ps))
      if alpha.shape != (len(ps),):
        raise ValueError(f"group {self.group_name!r}: arch alpha_a has shape {alpha.shape}, "
                         f"expected ({len(ps)},)")
      key = choice.activation_key(ctx.key, self.group_name, is_input=False)
      return choice.sample_theta(alpha, ctx.temperature, train=ctx.train, sampling=ctx.sampling,
                                 key=key)
    if ctx.mode == "fixed":
      self._check_precision(ctx)
      bits = _var(self, "precision", "a_bits", lambda: jnp.asarray(max(ps), jnp.int32))
      return choice.onehot_from_bits(bits, ps, f"group {self.group_name!r} precision a_bits")
    raise ValueError("theta_a is defined only in search and fixed modes")

  # ---- computations -----------------------------------------------------------------------------
  def effective_weight(self, kernel: jax.Array, ctx: Ctx) -> Tuple[jax.Array, jax.Array]:
    """The theta-mixture of the quantized copies of ``kernel`` and its effective scale.

    Args:
      kernel: weights with the output channel on the last axis (``features`` of them).
      ctx: search or fixed context.

    Returns:
      ``(W_hat, s_w)``: ``W_hat = sum_i theta_i * Q_{p_i}(W)`` per channel and
      ``s_w[c] = sum_i theta_i[c] * s_{p_i}[c]`` (0-bit scale = 0), the bias quantizer's weight scale.
    """
    th = self.theta_w(ctx)
    w_hat = jnp.zeros_like(kernel)
    s_w = jnp.zeros((kernel.shape[-1],), kernel.dtype)
    for i, p in enumerate(self.wbits):
      w_hat = w_hat + th[i] * quant.quantize_weight(kernel, p)
      s_w = s_w + th[i] * quant.weight_scale(kernel, p)
    return w_hat, s_w

  def quantize(self, z: jax.Array, ctx: Ctx, relu: bool = False) -> QTensor:
    """Apply the group's (mixed) output activation quantizer, optionally followed by a ReLU.

    Args:
      z: pre-activation with ``features`` channels on the last axis.
      ctx: the context (identity in float mode and for the classifier's group).
      relu: follow the quantizer with ``jax.nn.relu``: the same as ``.map(jax.nn.relu)`` on the
        result, but the fused mixture then takes ReLU's gradient mask from ``z`` and does not
        keep the quantized output for the backward (less memory).

    Returns:
      A QTensor produced by this group, with its effective activation scale.
    """
    self._sow_record()
    name = self.group_name
    if z.shape[-1] != self.features:
      raise ValueError(f"group {name!r} defines {self.features} channels but got a tensor with "
                       f"{z.shape[-1]}")
    if ctx.mode == "float" or not self.abits:
      q = QTensor(value=z, s_a=None, group=name)
      return q.map(jax.nn.relu) if relu else q
    clips = self._clips()
    th = self.theta_a(ctx)
    # While a graph is recorded (export), the ReLU stays a separate, recorded op.
    fuse_relu = (relu and _fuses(self.abits, self.space.activation_mixture, relu)
                 and GRAPH_RECORDER.get() is None)
    y = _pact_mix(z, clips, th, self.abits, self.space.activation_mixture, relu=fuse_relu)
    s_a = jnp.zeros((), z.dtype)
    for j, p in enumerate(self.abits):
      s_a = s_a + th[j] * quant.pact_scale(jax.lax.stop_gradient(clips[j]), p)
    q = QTensor(value=y, s_a=s_a, group=name)
    return q.map(jax.nn.relu) if relu and not fuse_relu else q

  def __call__(self, z: jax.Array, ctx: Ctx) -> QTensor:
    return self.quantize(z, ctx)


class InputQuantizer(nn.Module):
  """The network-input quantizer: unsigned PACT (images in [0, 1]) or signed PACT (MFCCs).

  It is a sharing group of its own whose channel count is the data's (it adds nothing to any cost
  and is never pruned). In float mode it is the identity.

  Attributes:
    space: the :class:`SearchSpace` (its ``input_*`` fields).
  """
  space: SearchSpace = SearchSpace()

  def __call__(self, x: Union[jax.Array, QTensor], ctx: Ctx) -> QTensor:
    if isinstance(x, QTensor):
      x = x.value
    path, name = _path_name(self)
    # The network's entry: the place to catch arguments of the wrong kind before they fail deep
    # inside Flax or lax.
    if not isinstance(ctx, Ctx):
      raise TypeError(f"ctx must be a jpq_jax.Ctx (e.g. jpq_jax.Ctx.float()), got "
                      f"{type(ctx).__name__}" + (" (forgot the parentheses?)" if callable(ctx)
                                                 else f" {ctx!r}"[:80]))
    _check_space(self.space, f"input quantizer {name!r}")
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
      raise TypeError(f"input quantizer {name!r}: the input has dtype {jnp.result_type(x)}; pass "
                      "a floating-point array (e.g. images scaled to [0, 1] as float32)")
    shape = jnp.shape(x)
    if len(shape) == 4 and shape[1] in (1, 3, 4) and shape[2] == shape[3] and shape[3] > 4:
      # (B, 3, 32, 32) is an NCHW image batch: as NHWC it would be 3 rows of 32 channels, and the
      # model would train on it without any error.
      warnings.warn(f"input quantizer {name!r}: input shape {tuple(shape)} looks like NCHW; jpq_jax "
                    "layers expect NHWC (batch, height, width, channels): transpose it with "
                    "x.transpose(0, 2, 3, 1)", stacklevel=2)
    ps = self.space.input_bits
    if _tracing_table(self):
      self.sow(TABLE_COLLECTION, "group",
               GroupRecord(name=name, path=path, kind="input", channels=int(x.shape[-1]),
                           a_precisions=ps, signed=self.space.input_signed),
               reduce_fn=lambda prev, new: new, init_fn=lambda: None)
    if ctx.mode == "float":
      # Search/fixed variables applied in float mode would run the unquantized network silently
      # (or fail deep in BatchNorm): say which mode they belong to.
      for col, var, mode in (("arch", "alpha_a", "search"), ("precision", "a_bits", "fixed")):
        if self.has_variable(col, var):
          raise ValueError(f"float mode, but the variables hold the {col!r} collection ({mode} "
                           f"variables): apply them with jpq_jax.Ctx.{mode}() (Ctx() is float mode)")
      return QTensor(value=x, s_a=None, group=name)
    if not self.is_initializing() and not self.has_variable("params", "clip" if not
                                                            self.space.input_signed else "clip_sup"):
      raise ValueError(f"{ctx.mode} mode needs converted variables, but the input quantizer {name!r} "
                       "has no PACT clip: these are float variables; convert them with "
                       "jpq_jax.to_search(model, float_variables, sample_input) first"
                       + (" and freeze them with jpq_jax.to_fixed(...)" if ctx.mode == "fixed"
                          else ""))
    if ctx.mode == "search":
      if not self.is_initializing() and not self.has_variable("arch", "alpha_a"):
        raise ValueError(f"search mode needs an 'arch' collection, but the input quantizer {name!r} "
                         "has none: pass the search variables (jpq_jax.to_search(...)), not fixed "
                         "or float ones")
      alpha = _var(self, "arch", "alpha_a", lambda: choice.init_logits(ps))
      key = choice.activation_key(ctx.key, name, is_input=True)
      th = choice.sample_theta(alpha, ctx.temperature, train=ctx.train, sampling=ctx.sampling, key=key)
    else:
      if not self.is_initializing() and not self.has_variable("precision", "a_bits"):
        raise ValueError(f"fixed mode needs a 'precision' collection, but the input quantizer "
                         f"{name!r} has none: freeze the architecture with jpq_jax.freeze(...) first")
      bits = _var(self, "precision", "a_bits", lambda: jnp.asarray(max(ps), jnp.int32))
      th = choice.onehot_from_bits(bits, ps, f"input quantizer {name!r} precision a_bits")
    n = len(ps)
    s_a = jnp.zeros((), x.dtype)
    if self.space.input_signed:
      lo, hi = self.space.input_signed_clips
      c_inf = _var(self, "params", "clip_inf", lambda k: jnp.full((n,), lo, jnp.float32))
      c_sup = _var(self, "params", "clip_sup", lambda k: jnp.full((n,), hi, jnp.float32))
      y = jnp.zeros_like(x)
      for j, p in enumerate(ps):
        y = y + th[j] * quant.pact_signed(x, c_inf[j], c_sup[j], p)
        s_a = s_a + th[j] * quant.pact_signed_scale(jax.lax.stop_gradient(c_inf[j]),
                                                    jax.lax.stop_gradient(c_sup[j]), p)
    else:
      clips = _var(self, "params", "clip",
                   lambda k: jnp.full((n,), self.space.input_clip_init, jnp.float32))
      y = _pact_mix(x, clips, th, ps, self.space.activation_mixture)
      for j, p in enumerate(ps):
        s_a = s_a + th[j] * quant.pact_scale(jax.lax.stop_gradient(clips[j]), p)
    return QTensor(value=y, s_a=s_a, group=name)


def _check_space(space: Any, where: str) -> None:
  if not isinstance(space, SearchSpace):
    raise TypeError(f"{where}: space must be a jpq_jax.SearchSpace, got {type(space).__name__} "
                    f"{space!r} (per-group precisions go in w_precisions= / a_precisions=)")


def _torch_bias_init(fan_in: int):
  bound = 1.0 / np.sqrt(max(fan_in, 1))

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def _check_input(layer: nn.Module, x: Any) -> QTensor:
  if not isinstance(x, QTensor):
    raise TypeError(
        f"{type(layer).__name__} {'/'.join(layer.scope.path)!r} expects a jpq_jax.QTensor (the output "
        "of InputQuantizer or of another jpq_jax layer), got " + type(x).__name__)
  return x


class _SearchLayer(nn.Module):
  """Shared logic of Conv and Dense: float path, folded-and-quantized path, table record."""

  def _quantized_params(self, x: QTensor, kernel: jax.Array, bias: Optional[jax.Array], ctx: Ctx,
                        group: Group):
    w_hat, s_w = group.effective_weight(kernel, ctx)
    b_hat = None
    if bias is not None:
      if x.s_a is None:
        raise ValueError(f"layer {'/'.join(self.scope.path)!r}: its input was not quantized (came "
                         "from an unquantized output?); quantized layers need a quantized input")
      b_hat = quant.quantize_bias(bias, x.s_a * s_w)
    return w_hat, b_hat

  def _sow(self, rec: LayerRecord):
    if _tracing_table(self):
      self.sow(TABLE_COLLECTION, "layer", rec, reduce_fn=lambda prev, new: new, init_fn=lambda: None)


class Conv(_SearchLayer):
  """Searchable 2-D convolution (NHWC), optionally depthwise, with optional BatchNorm in float mode.

  Attributes:
    features: output channels (must equal ``group.features``).
    kernel_size: ``(kh, kw)`` or int.
    group: the :class:`Group` owning this layer's weight logits and output quantizer.
    strides: int or pair.
    padding: ``"SAME"``, ``"VALID"``, an int, or ``((top, bottom), (left, right))``.
    use_bias: whether the float conv has a bias.
    use_bn: whether a BatchNorm follows in float mode (folded away at conversion).
    depthwise: depthwise conv (``feature_group_count = C_in = C_out``); use the producer's group.
    bn_momentum: Flax BatchNorm momentum (``1 - torch momentum``).
    bn_eps: BatchNorm epsilon.
    kernel_init: kernel initializer (HWIO).
    bias_init: bias initializer (default: PyTorch's uniform +-1/sqrt(fan_in)).
    relu: a ReLU follows the output quantizer (see :meth:`Group.quantize`; the same as
      ``.map(jax.nn.relu)`` on the output, with less memory in search mode).
  """
  features: int
  kernel_size: Union[int, Tuple[int, int]]
  group: Group
  strides: Union[int, Tuple[int, int]] = 1
  padding: Any = "SAME"
  use_bias: bool = True
  use_bn: bool = False
  depthwise: bool = False
  bn_momentum: float = 0.9
  bn_eps: float = 1e-5
  kernel_init: Callable = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
  bias_init: Optional[Callable] = None
  relu: bool = False

  @nn.compact
  def __call__(self, x: QTensor, ctx: Ctx) -> QTensor:
    x = _check_input(self, x)
    path, name = _path_name(self)
    cin = int(x.value.shape[-1])
    kh, kw = _as_tuple(self.kernel_size)
    strides = _as_tuple(self.strides)
    if self.features != self.group.features:
      raise ValueError(f"conv {name!r} has {self.features} output channels but its group "
                       f"{self.group.group_name!r} defines {self.group.features}")
    if self.depthwise:
      if cin != self.features:
        raise ValueError(f"depthwise conv {name!r}: input channels ({cin}) must equal output "
                         f"channels ({self.features})")
      fgc = cin
    else:
      fgc = 1
    pad = self.padding
    if isinstance(pad, int):
      pad = ((pad, pad), (pad, pad))
    kshape = (kh, kw, cin // fgc, self.features)
    kernel = self.param("kernel", self.kernel_init, kshape, jnp.float32)
    fan_in = kh * kw * (cin // fgc)
    has_bias = self.use_bias or (self.use_bn and ctx.mode != "float")
    bias = None
    if has_bias:
      bias = self.param("bias", self.bias_init or _torch_bias_init(fan_in), (self.features,),
                        jnp.float32)

    def conv(v, k):
      return jax.lax.conv_general_dilated(v, k, window_strides=strides, padding=pad,
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                          feature_group_count=fgc)

    if ctx.mode == "float":
      z = conv(x.value, kernel)
      if bias is not None:
        z = z + bias
      if self.use_bn:
        z = nn.BatchNorm(use_running_average=not ctx.train, momentum=self.bn_momentum,
                         epsilon=self.bn_eps, name="BatchNorm_0")(z)
    else:
      w_hat, b_hat = self._quantized_params(x, kernel, bias, ctx, self.group)
      z = conv(x.value, w_hat)
      if b_hat is not None:
        z = z + b_hat
    y = self.group.quantize(z, ctx, relu=self.relu)
    self._sow(LayerRecord(name=name, path=path, kind="depthwise" if self.depthwise else "conv",
                          cin=cin, cout=self.features, kernel=(kh, kw), stride=strides,
                          out_hw=(int(z.shape[1]), int(z.shape[2])), feature_groups=fgc,
                          w_group=self.group.group_name, in_group=x.group, in_mult=x.channel_mult,
                          has_bias=self.use_bias or self.use_bn, bn=self.use_bn, bn_eps=self.bn_eps))
    return y


class Dense(_SearchLayer):
  """Searchable fully-connected layer; with an ``output=True`` group it is the classifier.

  Attributes:
    features: output features (must equal ``group.features``).
    group: the :class:`Group` owning this layer's logits.
    use_bias: whether the layer has a bias.
    kernel_init: kernel initializer ``(in, out)``.
    bias_init: bias initializer (default: PyTorch's uniform +-1/sqrt(fan_in)).
  """
  features: int
  group: Group
  use_bias: bool = True
  kernel_init: Callable = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
  bias_init: Optional[Callable] = None

  @nn.compact
  def __call__(self, x: QTensor, ctx: Ctx) -> QTensor:
    x = _check_input(self, x)
    path, name = _path_name(self)
    if x.value.ndim != 2:
      raise ValueError(f"dense {name!r} expects a (batch, features) input; flatten it first with "
                       f"QTensor.flatten() (got shape {x.value.shape})")
    if self.features != self.group.features:
      raise ValueError(f"dense {name!r} has {self.features} outputs but its group "
                       f"{self.group.group_name!r} defines {self.group.features}")
    cin = int(x.value.shape[-1])
    kernel = self.param("kernel", self.kernel_init, (cin, self.features), jnp.float32)
    bias = (self.param("bias", self.bias_init or _torch_bias_init(cin), (self.features,), jnp.float32)
            if self.use_bias else None)
    if ctx.mode == "float":
      z = x.value @ kernel
      if bias is not None:
        z = z + bias
    else:
      w_hat, b_hat = self._quantized_params(x, kernel, bias, ctx, self.group)
      z = x.value @ w_hat
      if b_hat is not None:
        z = z + b_hat
    y = self.group.quantize(z, ctx)
    self._sow(LayerRecord(name=name, path=path, kind="dense", cin=cin, cout=self.features,
                          kernel=(1, 1), stride=(1, 1), out_hw=(1, 1), feature_groups=1,
                          w_group=self.group.group_name, in_group=x.group, in_mult=x.channel_mult,
                          has_bias=self.use_bias, bn=False))
    return y


class Add(nn.Module):
  """Residual add followed by the group's shared activation quantizer (METHOD.md §2.7).

  Attributes:
    group: the sharing group that produced every operand.
    relu: a ReLU follows the quantizer (as for :class:`Conv`).
  """
  group: Group
  relu: bool = False

  def __call__(self, *xs: QTensor, ctx: Ctx) -> QTensor:
    if len(xs) < 2:
      raise ValueError("Add needs at least two tensors")
    name = self.group.group_name
    for i, x in enumerate(xs):
      if not isinstance(x, QTensor):
        raise TypeError(f"Add {'/'.join(self.scope.path)!r}: operand {i} is not a jpq_jax.QTensor")
      if x.group != name:
        raise ValueError(
            f"Add {'/'.join(self.scope.path)!r}: operand {i} comes from group {x.group!r}, but this "
            f"add belongs to group {name!r}; tensors added together must come from one sharing group "
            "(give their producing layers the same jpq_jax.Group)")
      if x.value.shape != xs[0].value.shape:
        raise ValueError(f"Add {'/'.join(self.scope.path)!r}: shape mismatch {xs[0].value.shape} vs "
                         f"{x.value.shape}")
    z = xs[0].value
    for x in xs[1:]:
      z = z + x.value
    return self.group.quantize(z, ctx, relu=self.relu)
