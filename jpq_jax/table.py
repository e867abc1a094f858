"""The static layer table: the architecture facts the cost models need, traced once from a model.

Costs are pure functions of the architecture, not of the data (DESIGN.md principle 4). Tracing a
model (abstractly, with :func:`jax.eval_shape`, so nothing is computed) makes every searchable layer
and every sharing group sow a record into the ``table`` collection; :func:`trace_table` collects them
into a hashable :class:`LayerTable` that can be a static argument of a jitted function.
"""

from __future__ import annotations

import contextvars
import dataclasses
import inspect
import warnings
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
from flax import struct

from jpq_jax import choice
from jpq_jax.ctx import Ctx

__all__ = ["LayerRecord", "GroupRecord", "LayerTable", "trace_table", "TABLE_COLLECTION"]

TABLE_COLLECTION = "table"

# Set by jpq_jax.convert while it traces a user's plain Flax model inside a converted model: that
# model's standard layers are intercepted there and are not layers of the jpq model.
IN_USER_TRACE: contextvars.ContextVar = contextvars.ContextVar("jpq_in_user_trace", default=False)

# Standard Flax layers with weights: inside a jpq model they would run unquantized and uncosted.
_FLAX_WEIGHT_LAYERS = ("Conv", "ConvTranspose", "ConvLocal", "Dense", "DenseGeneral", "Einsum",
                       "Embed", "MultiHeadDotProductAttention", "MultiHeadAttention",
                       "SelfAttention", "LayerNorm", "GroupNorm", "RMSNorm", "BatchNorm")


def _plain_model_error(model: Any) -> TypeError:
  params = list(inspect.signature(type(model).__call__).parameters)[2:3]
  where = f" (the Ctx landed in its argument {params[0]!r})" if params else ""
  return TypeError(f"{type(model).__name__} is a plain Flax model, not one built from jpq_jax "
                   f"layers{where}: convert it first with net = jpq_jax.searchable(model, "
                   "sample_input, space) and use net")


def _check_module(mod: Any, seen: list, model: Any) -> None:
  """Marks jpq modules as seen; refuses a standard Flax layer inside a jpq model."""
  kind = type(mod)
  if kind.__module__.startswith("jpq_jax."):
    seen.append(kind)
    return
  if IN_USER_TRACE.get() or not kind.__module__.startswith("flax.") or \
      kind.__name__ not in _FLAX_WEIGHT_LAYERS:
    return
  parent = getattr(mod, "parent", None)
  if kind.__name__ == "BatchNorm" and type(parent).__module__ == "jpq_jax.layers":
    return  # the float-mode BatchNorm of a jpq_jax.Conv
  if not seen:
    raise _plain_model_error(model)
  path = "/".join(mod.scope.path) if mod.scope is not None else kind.__name__
  raise ValueError(f"{path}: standard Flax layer nn.{kind.__name__} inside a jpq_jax model: it "
                   "would run unquantized and be missing from every cost; use jpq_jax.Conv / "
                   "jpq_jax.Dense with a jpq_jax.Group, or write the whole model in plain Flax "
                   "and convert it with jpq_jax.searchable(model, sample_input, space)")


@struct.dataclass
class GroupRecord:
  """A sharing group: one set of weight logits, one activation quantizer, one pruning mask.

  Attributes:
    name: the group's module path joined with ``/`` (unique in the model).
    path: the module path as a tuple (where its variables live in every collection).
    kind: ``"input"`` (network-input quantizer), ``"hidden"`` or ``"output"`` (the classifier).
    channels: number of channels the group defines (data channels for the input group).
    w_precisions: weight bit-widths, row order of ``alpha_w`` (empty for the input group).
    a_precisions: activation bit-widths of its output quantizer (empty: output not quantized).
    granularity: ``"channel"`` (one choice per output channel) or ``"layer"``.
    signed: whether the activation quantizer is signed PACT (speech input quantizer).
    keep_alive: number of its last channels that cannot take the 0-bit option
      (``SearchSpace.keep_alive``; 0 = the reference).
  """
  name: str = struct.field(pytree_node=False)
  path: Tuple[str, ...] = struct.field(pytree_node=False)
  kind: str = struct.field(pytree_node=False)
  channels: int = struct.field(pytree_node=False)
  w_precisions: Tuple[int, ...] = struct.field(pytree_node=False, default=())
  a_precisions: Tuple[int, ...] = struct.field(pytree_node=False, default=())
  granularity: str = struct.field(pytree_node=False, default="channel")
  signed: bool = struct.field(pytree_node=False, default=False)
  keep_alive: int = struct.field(pytree_node=False, default=0)

  @property
  def prunable(self) -> bool:
    """True when the group has a 0-bit option that means pruning (channel-wise search)."""
    return 0 in self.w_precisions and self.granularity == "channel"

  @property
  def zero_index(self) -> Optional[int]:
    """Row of the 0-bit option in ``alpha_w``, or None."""
    return self.w_precisions.index(0) if self.prunable else None

  def weight_logits(self, alpha: Any) -> Any:
    """``alpha_w`` as every reader uses it: keep-alive channels' 0-bit logit at -inf.

    Args:
      alpha: this group's ``alpha_w``.

    Returns:
      :func:`jpq_jax.choice.keep_alive_logits` of it (``alpha`` itself when ``keep_alive`` is 0).
    """
    return choice.keep_alive_logits(alpha, self.zero_index, self.keep_alive)


@struct.dataclass
class LayerRecord:
  """One searchable conv/dense layer.

  Attributes:
    name: module path joined with ``/``.
    path: module path tuple.
    kind: ``"conv"``, ``"depthwise"`` or ``"dense"``.
    cin: static input channels (features for dense, after any flatten).
    cout: static output channels.
    kernel: ``(kh, kw)`` (``(1, 1)`` for dense).
    stride: ``(sh, sw)``.
    out_hw: output spatial size ``(Ho, Wo)`` (``(1, 1)`` for dense).
    feature_groups: conv feature groups (``cin`` for depthwise, else 1).
    w_group: name of the group whose weight logits this layer uses (and its output quantizer).
    in_group: name of the group that produced the layer's input tensor.
    in_mult: input channels per channel of ``in_group`` (spatial size folded in by a flatten).
    has_bias: whether the searched layer has a (folded) bias.
    bn: whether the float layer has a BatchNorm to fold.
    bn_eps: that BatchNorm's epsilon.
  """
  name: str = struct.field(pytree_node=False)
  path: Tuple[str, ...] = struct.field(pytree_node=False)
  kind: str = struct.field(pytree_node=False)
  cin: int = struct.field(pytree_node=False)
  cout: int = struct.field(pytree_node=False)
  kernel: Tuple[int, int] = struct.field(pytree_node=False)
  stride: Tuple[int, int] = struct.field(pytree_node=False)
  out_hw: Tuple[int, int] = struct.field(pytree_node=False)
  feature_groups: int = struct.field(pytree_node=False)
  w_group: str = struct.field(pytree_node=False)
  in_group: str = struct.field(pytree_node=False)
  in_mult: int = struct.field(pytree_node=False, default=1)
  has_bias: bool = struct.field(pytree_node=False, default=True)
  bn: bool = struct.field(pytree_node=False, default=False)
  bn_eps: float = struct.field(pytree_node=False, default=1e-5)

  @property
  def n_weights(self) -> int:
    """Number of weights of the (unpruned) layer."""
    return self.kernel[0] * self.kernel[1] * (self.cin // self.feature_groups) * self.cout

  @property
  def macs(self) -> int:
    """Multiply-accumulates of the unpruned layer."""
    return self.n_weights * self.out_hw[0] * self.out_hw[1]


@dataclasses.dataclass(frozen=True)
class LayerTable:
  """Static, hashable description of a model's searchable layers and sharing groups.

  Attributes:
    layers: layer records in call (topological) order.
    groups: group records in first-use order.
  """
  layers: Tuple[LayerRecord, ...]
  groups: Tuple[GroupRecord, ...]

  def group(self, name: str) -> GroupRecord:
    """The group record called ``name``.

    Raises:
      KeyError: no such group.
    """
    for g in self.groups:
      if g.name == name:
        return g
    raise KeyError(f"no sharing group named {name!r}; groups: {[g.name for g in self.groups]}")

  def layer(self, name: str) -> LayerRecord:
    """The layer record called ``name``.

    Raises:
      KeyError: no such layer.
    """
    for l in self.layers:
      if l.name == name:
        return l
    raise KeyError(f"no layer named {name!r}; layers: {[l.name for l in self.layers]}")

  @property
  def searchable_groups(self) -> Tuple[GroupRecord, ...]:
    """Groups that own weight logits (hidden and output groups)."""
    return tuple(g for g in self.groups if g.kind != "input")

  def layers_of(self, group: str) -> Tuple[LayerRecord, ...]:
    """Layers whose weights belong to ``group``."""
    return tuple(l for l in self.layers if l.w_group == group)

  @property
  def n_weights(self) -> int:
    """Total weights of the unpruned searchable layers."""
    return sum(l.n_weights for l in self.layers)

  @property
  def macs(self) -> int:
    """Total MACs of the unpruned searchable layers."""
    return sum(l.macs for l in self.layers)

  def format(self) -> str:
    """A readable fixed-width table of layers (one row each) followed by the sharing groups."""
    hdr = (f"{'layer':<28} {'kind':<9} {'cin':>5} {'cout':>5} {'kernel':>7} {'stride':>6} "
           f"{'out':>7} {'weights':>9} {'MACs':>12}  {'weight group':<22} input group")
    rows = [hdr, "-" * len(hdr)]
    for l in self.layers:
      rows.append(
          f"{l.name:<28} {l.kind:<9} {l.cin:>5} {l.cout:>5} {l.kernel[0]}x{l.kernel[1]:<5} "
          f"{l.stride[0]}x{l.stride[1]:<4} {l.out_hw[0]}x{l.out_hw[1]:<5} {l.n_weights:>9,} "
          f"{l.macs:>12,}  {l.w_group:<22} {l.in_group}" + (f" (x{l.in_mult})" if l.in_mult > 1 else ""))
    rows.append(f"{'total':<28} {'':<9} {'':>5} {'':>5} {'':>7} {'':>6} {'':>7} {self.n_weights:>9,} "
                f"{self.macs:>12,}")
    rows.append("")
    rows.append(f"{'group':<22} {'kind':<7} {'channels':>8}  {'weight bits':<14} {'act bits':<10} layers")
    for g in self.groups:
      members = ", ".join(l.name for l in self.layers_of(g.name)) or "-"
      wb = ",".join(map(str, g.w_precisions)) or "-"
      ab = ",".join(map(str, g.a_precisions)) or "float"
      extra = " (signed)" if g.signed else ""
      gran = "" if g.granularity == "channel" else " [layer-wise]"
      rows.append(f"{g.name:<22} {g.kind:<7} {g.channels:>8}  {wb + gran:<14} {ab + extra:<10} {members}")
    return "\n".join(rows)

  def __str__(self) -> str:
    return self.format()


def _collect(tree: Any, layers: list, groups: dict) -> None:
  if isinstance(tree, LayerRecord):
    layers.append(tree)
  elif isinstance(tree, GroupRecord):
    groups.setdefault(tree.name, tree)
  elif isinstance(tree, (tuple, list)):
    for t in tree:
      _collect(t, layers, groups)
  elif isinstance(tree, dict) or hasattr(tree, "items"):
    for _, v in tree.items():
      _collect(v, layers, groups)


def trace_table(model: Any, sample_input: Any, ctx: Any = None) -> LayerTable:
  """Trace ``model`` abstractly once and return its :class:`LayerTable`.

  Args:
    model: a Flax module built from jpq_jax layers, called as ``model(x, ctx)``.
    sample_input: an array or :class:`jax.ShapeDtypeStruct` with the input's shape (batch included).
    ctx: the :class:`jpq_jax.Ctx` to trace with (default: search mode, evaluation).

  Returns:
    The model's layer table.

  Raises:
    ValueError: the model has no searchable layer.
  """
  if ctx is None:
    ctx = Ctx.search()
  x = jax.ShapeDtypeStruct(sample_input.shape, getattr(sample_input, "dtype", jnp.float32))

  import flax.linen as nn

  call_order: Dict[Tuple[str, ...], int] = {}

  def _record_order(next_fun, args, kwargs, context):
    # Records the order in which modules are first called: the table lists layers in call
    # (topological) order rather than in the collection's alphabetical order.
    path = tuple(context.module.scope.path) if context.module.scope is not None else ()
    _check_module(context.module, seen, model)
    if not IN_USER_TRACE.get():
      call_order.setdefault(path, len(call_order))
    return next_fun(*args, **kwargs)

  def _trace(x):
    with nn.intercept_methods(_record_order):
      variables = model.init(jax.random.PRNGKey(0), x, ctx)
      out, state = model.apply(variables, x, ctx, mutable=[TABLE_COLLECTION])
    return state, out

  seen: list = []  # jpq_jax module classes that ran
  try:
    variables, out = jax.eval_shape(_trace, x)
  except Exception as e:  # pylint: disable=broad-except
    if seen or isinstance(e, TypeError) and "plain Flax model" in str(e):
      raise
    # A plain Flax model got the Ctx as its own argument (e.g. train=ctx) and failed somewhere
    # inside Flax (ModifyScopeVariableError...): say what happened instead.
    raise _plain_model_error(model) from e
  layers: list = []
  groups: Dict[str, GroupRecord] = {}
  _collect(variables.get(TABLE_COLLECTION, {}), layers, groups)
  if not seen:
    raise _plain_model_error(model)
  if not layers:
    raise ValueError(
        f"model {type(model).__name__} has no searchable layer: build it with jpq_jax.Conv / "
        "jpq_jax.Dense so the search has something to choose")
  layers.sort(key=lambda l: call_order.get(l.path, len(call_order)))
  group_list = sorted(groups.values(), key=lambda g: call_order.get(g.path, len(call_order)))
  for l in layers:
    if l.w_group not in groups:
      raise ValueError(f"layer {l.name} uses group {l.w_group!r}, which was never traced")
  out_group = groups.get(getattr(out, "group", None))
  if out_group is not None and out_group.kind == "hidden":
    # Legitimate for a feature extractor; for a classifier it silently clips the logits at 0
    # (unsigned PACT) and lets the search prune classes.
    warnings.warn(f"the output of {type(model).__name__} comes from the hidden group "
                  f"{out_group.name!r}: it is quantized with unsigned PACT (values clipped at 0) "
                  "and its channels can be pruned. For a classifier, give the last layer's group "
                  "output=True.", stacklevel=2)
  return LayerTable(layers=tuple(layers), groups=tuple(group_list))
