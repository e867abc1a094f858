"""PIT channel pruning in float (METHOD.md §7.1) and the pieces of the sequential PIT -> MixPrec baseline.

PIT (PLiNIO ``methods/pit``) learns one binary keep-mask per sharing group:

* per hidden group a trainable ``alpha_pit`` of shape ``(C,)``, initialised to 1;
* ``theta = |alpha_pit|``, except the **last** channel, forced to 1 (keep-alive: a group never loses
  every channel);
* the mask ``m = 1[theta > 0.5]``, with a straight-through (identity) gradient to ``theta``;
* forward: every conv/dense of the group uses ``W * m`` per output channel; its bias is not masked;
* the classifier's group and the network input are frozen (never pruned);
* regulariser: the effective weight count, the ``params`` cost of :mod:`jpq_jax.costs` evaluated on
  the PIT theta mapped to a (0-bit row = ``1 - theta``, top row = ``theta``) precision theta, so
  ``Cout_eff = sum_c theta_c`` and ``Cin_eff`` is the producer's (not detached).

**Implementation without touching the layers.** The mask acts on the *parameters*, not inside the
model: :func:`apply_masks` multiplies every kernel of the layer table by its group's mask (output
axis; optionally the input axis too) and the result is applied with the unchanged float-mode model.
The PIT search runs the float model with BatchNorm in inference mode (running statistics, not
updated), which is exactly the reference's BN folded into the conv: folding scales each output
channel, so masking the folded weight or the unfolded one is the same, and the BN shift plays the
role of the unmasked bias. (Deviation: the trainable parameters are the unfolded conv weight and
the BN affine parameters instead of the folded weight and bias, and dropout is off during the PIT
search because the float model ties dropout to BN training mode; no benchmark model except DS-CNN
has dropout.)

**Export** (:func:`export_float`): the kept channels form the pruned network; BN is folded into the
conv and a **fresh** BatchNorm (scale 1, shift 0, mean 0, var 1) is re-inserted after every conv that
had one, then the pruned float network is fine-tuned. To keep every member of a sweep the same
shape (one compile, vmappable), the fine-tuning runs the full-width model with the kernels masked on
both axes (pruned output channels *and* the matching input channels of every consumer): every kept
activation is then exactly that of the physically pruned network (BN is per channel; a pruned
channel's constant output reaches no consumer). :func:`prune_physically` / :func:`apply_pruned`
build and run the physically smaller network (sliced arrays), and the tests check it computes the
same outputs with fewer weights.

**PIT -> MixPrec** (§7.2): the fine-tuned pruned float network replaces the warm-up model. The
MixPrec search then runs on the same full-width model whose weight precision set is ``(0,) + P``
(P without 0, e.g. (2, 4, 8)), with the 0-bit option *pinned* by :func:`pin_logits`: logit +1e4
(theta_0 exactly 1, every other theta exactly 0 after the float32 softmax) on the channels PIT
removed and -1e4 (theta_0 exactly 0) on the kept ones. The pinned thetas are exact 0/1, so their
gradients are exactly 0 and they never move; kept channels choose among P exactly as a (2, 4, 8)
search would (same initial logits ``p / max(p)``, same theta), and every cost counts only the kept
channels (``Cout_eff = C - sum theta_0``). Needs softmax sampling (Gumbel noise would unpin).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jpq_jax import train as T
from jpq_jax.arch import GroupTheta, get_path, set_path
from jpq_jax.layers import Add, Conv, Ctx, Dense, QTensor
from jpq_jax.table import LayerTable

__all__ = [
    "THRESHOLD", "PIN", "trainable_groups", "init_alpha", "pit_theta", "binary_masks", "masks_of",
    "apply_masks", "as_precision_theta", "params_cost", "make_search_step", "make_finetune_step",
    "make_eval_step", "export_float", "bake_masks", "prune_physically", "apply_pruned",
    "pruned_weight_count", "pin_logits", "kept_summary", "mask_tree", "masks_from_tree",
]

THRESHOLD = 0.5  # PIT's binarisation threshold
PIN = 1e4  # magnitude of a pinned logit: exp(-PIN) underflows to exactly 0 in float32


def trainable_groups(table: LayerTable):
  """The groups PIT may prune: every hidden group (not the classifier's, not the input).

  Args:
    table: the layer table.

  Returns:
    Tuple of the table's groups of kind ``"hidden"``, in table order.
  """
  return tuple(g for g in table.groups if g.kind == "hidden")


def init_alpha(table: LayerTable) -> Dict[str, Any]:
  """``alpha_pit`` = 1 for every prunable group, nested by group path (like ``arch``).

  Args:
    table: the layer table.

  Returns:
    ``{...group path...: {'alpha_pit': (C,) float32 ones}}`` for every group of
    :func:`trainable_groups` (the ``arch`` tree of the PIT search).
  """
  out: Dict[str, Any] = {}
  for g in trainable_groups(table):
    set_path(out, g.path, {"alpha_pit": jnp.ones((g.channels,), jnp.float32)})
  return out


def pit_theta(alpha: Mapping, table: LayerTable) -> Dict[str, jax.Array]:
  """``theta = |alpha|`` per group with the last channel kept alive; frozen groups are all ones.

  Args:
    alpha: the ``alpha_pit`` tree (see :func:`init_alpha`).
    table: the layer table.

  Returns:
    ``{group name: (C,) theta}`` for every non-input group: a hidden group's ``|alpha_pit|`` with
    its last entry set to 1 (no gradient there); the classifier's group float32 ones.

  Raises:
    KeyError: ``alpha`` has no entry at a hidden group's path (or no ``alpha_pit`` there).
  """
  out = {}
  for g in table.groups:
    if g.kind == "input":
      continue
    if g.kind == "hidden":
      th = jnp.abs(get_path(alpha, g.path)["alpha_pit"])
      th = th.at[-1].set(1.0)  # keep-alive: constant 1, no gradient
    else:
      th = jnp.ones((g.channels,), jnp.float32)
    out[g.name] = th
  return out


def binary_masks(theta: Mapping[str, jax.Array]) -> Dict[str, jax.Array]:
  """``1[theta > 0.5]`` with an identity straight-through gradient to theta.

  Args:
    theta: ``{group name: (C,) theta}`` (e.g. of :func:`pit_theta`).

  Returns:
    ``{group name: mask}`` with the shapes and dtypes of ``theta``: exactly 0/1 in the forward
    pass (``theta > THRESHOLD``); the gradient passes to ``theta`` unchanged.
  """
  return {k: t + jax.lax.stop_gradient((t > THRESHOLD).astype(t.dtype) - t)
          for k, t in theta.items()}


def masks_of(alpha: Mapping, table: LayerTable) -> Dict[str, np.ndarray]:
  """The binary masks (host numpy, float32 0/1) of ``alpha``.

  Args:
    alpha: the ``alpha_pit`` tree (see :func:`init_alpha`).
    table: the layer table.

  Returns:
    ``{group name: (C,) float32 numpy array of 0/1}`` for every non-input group: the
    :func:`binary_masks` of :func:`pit_theta` (the classifier's group all ones).

  Raises:
    KeyError: ``alpha`` lacks a hidden group's ``alpha_pit`` (from :func:`pit_theta`).
  """
  return {k: np.asarray(jax.device_get(v), np.float32)
          for k, v in binary_masks(pit_theta(alpha, table)).items()}


def _in_mask(table: LayerTable, layer, masks: Mapping) -> Optional[jax.Array]:
  if layer.in_group not in masks:  # the network input: never masked
    return None
  m = masks[layer.in_group]
  # Flatten is channels-last: input feature s * C + c belongs to channel c.
  return jnp.tile(m, layer.in_mult) if layer.in_mult > 1 else m


def apply_masks(params: Mapping, table: LayerTable, masks: Mapping, inputs: bool = False) -> Dict:
  """``params`` with every kernel multiplied by its group's mask on the output axis.

  Args:
    params: the ``params`` collection.
    table: the layer table.
    masks: ``{group name: (C,) mask}`` (groups absent are not masked).
    inputs: also mask each kernel's input channels with the producer's mask (the exported
      network: a removed channel feeds nothing).

  Returns:
    A new params tree (biases, BN parameters and clips unchanged).
  """
  out = _copy(params)
  for l in table.layers:
    node = get_path(out, l.path)
    k = node["kernel"]
    if l.w_group in masks:
      k = k * masks[l.w_group]
    if inputs and not (l.kind == "depthwise" or l.feature_groups > 1):
      mi = _in_mask(table, l, masks)
      if mi is not None:
        k = k * mi[:, None]  # (cin, 1) broadcasts over HWIO and (in, out) kernels
    node["kernel"] = k
  return out


def _copy(tree):
  if isinstance(tree, Mapping):
    return {k: _copy(v) for k, v in tree.items()}
  return tree


def as_precision_theta(theta: Mapping[str, jax.Array], table: LayerTable) -> Dict[str, GroupTheta]:
  """PIT theta as a precision theta for :mod:`jpq_jax.costs` (0-bit row ``1 - theta``).

  Prunable groups get ``1 - theta`` on their 0-bit row and ``theta`` on their top precision, so
  ``Cout_eff = C - sum(1 - theta) = sum(theta)`` (PIT's ``out_features_eff``). Other groups get
  their top precision (the cost then counts every channel). Activation thetas are left out (the
  ``params`` and ``macs`` costs do not use them).

  Args:
    theta: ``{group name: (C,) theta}`` for every non-input group (see :func:`pit_theta`).
    table: the layer table.

  Returns:
    ``{group name: GroupTheta}`` for every group: ``w`` of shape ``(len(w_precisions), C)``
    (nonzero on the 0-bit row and the top precision's row only) and ``a`` None; the input group gets
    ``GroupTheta(w=None, a=None)``.
  """
  out = {}
  for g in table.groups:
    if g.kind == "input":
      out[g.name] = GroupTheta(w=None, a=None)
      continue
    th = theta[g.name]
    n = len(g.w_precisions)
    top = g.w_precisions.index(max(g.w_precisions))  # precision sets keep the user's order
    w = jnp.zeros((n, g.channels), th.dtype).at[top].set(th if g.prunable else 1.0)
    if g.prunable:
      w = w.at[g.zero_index].set(1.0 - th)
    out[g.name] = GroupTheta(w=w, a=None)
  return out


def params_cost(table: LayerTable, theta: Mapping[str, jax.Array]) -> jax.Array:
  """PIT's regulariser: the effective weight count (the ``params`` cost on the mapped theta).

  Args:
    table: the layer table.
    theta: ``{group name: (C,) theta}`` for every non-input group (see :func:`pit_theta`).

  Returns:
    Scalar: the registered ``params`` cost of :func:`as_precision_theta` of ``theta``
    (differentiable in ``theta``).
  """
  return T.get_cost_fn("params")(table, as_precision_theta(theta, table))


def _check_table(table: LayerTable):
  for g in trainable_groups(table):
    if not g.prunable:
      raise ValueError(f"PIT needs a 0-bit option in the table's precision sets to cost pruning "
                       f"(group {g.name!r} has {g.w_precisions}); build the model with e.g. "
                       "w_precisions=(0, 8)")


def make_search_step(model, table: LayerTable, tx, *, class_weights=None,
                     label_smoothing: float = 0.0, task=None):
  """The PIT search step: CE + lambda * effective weight count, masks trained through the STE.

  The state's trainable collections are ``{'params', 'arch'}`` with ``arch`` the ``alpha_pit``
  tree (so :func:`jpq_jax.train.make_optimizer` gives it the arch optimizer); ``extra`` holds the
  frozen ``batch_stats``.

  Args:
    model: the float-mode model, applied with ``Ctx.float(False)`` (BN on running statistics,
      dropout off) on ``params`` masked on the output axis by :func:`binary_masks` of
      :func:`pit_theta`.
    table: the layer table; every hidden group needs a 0-bit weight precision.
    tx: the optimizer (e.g. of :func:`jpq_jax.train.make_optimizer`).
    class_weights: optional per-class cross-entropy weights, shape ``(num_classes,)``.
    label_smoothing: cross-entropy label smoothing.
    task: the :class:`jpq_jax.tasks.Task` trained (default: classification with the two above).

  Returns:
    ``step(state, x, y, lam_e, lr_scale, poison) -> (state, metrics)`` of
    :func:`jpq_jax.train.make_step`: the loss is ``CE + lam_e * params_cost`` with the cost on the
    soft ``theta`` (:func:`params_cost`); ``metrics['cost']`` is that cost and ``extra`` is passed
    through unchanged.

  Raises:
    ValueError: a hidden group of ``table`` is not prunable (no 0 in its weight precisions, or
      not channel-wise).
  """
  _check_table(table)
  task = T._task(task, class_weights, label_smoothing)  # pylint: disable=protected-access

  def loss_fn(params, state, x, y, lam_e, kd, kg):
    del kg
    th = pit_theta(params["arch"], table)
    p = apply_masks(params["params"], table, binary_masks(th))
    out = model.apply({"params": p, **state.extra}, x, Ctx.float(False), rngs={"dropout": kd})
    s, n = task.loss(out.value, x, y)
    task_loss = s / n
    c = params_cost(table, th)
    return task_loss + lam_e * c, (task_loss, c, task.train_metrics(out.value, x, y), state.extra)

  return T.make_step(loss_fn, tx)


def make_finetune_step(model, table: LayerTable, tx, *, class_weights=None,
                       label_smoothing: float = 0.0, task=None):
  """Fine-tuning of the exported network: float training with BN, masks fixed on both kernel axes.

  ``extra`` holds ``batch_stats`` (updated) and ``pit_mask`` (``{group: (C,)}``, constant).

  Args:
    model: the float-mode model, applied with ``Ctx.float(True)`` (BN on batch statistics, dropout
      on) on ``params`` masked by ``pit_mask`` on both kernel axes (:func:`apply_masks` with
      ``inputs=True``).
    table: the layer table.
    tx: the optimizer (e.g. of :func:`jpq_jax.train.make_optimizer`).
    class_weights: optional per-class cross-entropy weights, shape ``(num_classes,)``.
    label_smoothing: cross-entropy label smoothing.
    task: the :class:`jpq_jax.tasks.Task` trained (default: classification with the two above).

  Returns:
    ``step(state, x, y, lam_e, lr_scale, poison) -> (state, metrics)`` of
    :func:`jpq_jax.train.make_step`: the loss is the cross-entropy alone (``lam_e`` is ignored,
    ``metrics['cost']`` is 0).
  """
  task = T._task(task, class_weights, label_smoothing)  # pylint: disable=protected-access

  def loss_fn(params, state, x, y, lam_e, kd, kg):
    del lam_e, kg
    masks = state.extra["pit_mask"]
    p = apply_masks(params["params"], table, masks, inputs=True)
    out, mut = model.apply({"params": p, "batch_stats": state.extra["batch_stats"]}, x,
                           Ctx.float(True), mutable=["batch_stats"], rngs={"dropout": kd})
    s, n = task.loss(out.value, x, y)
    return s / n, (s / n, jnp.zeros((), jnp.float32), task.train_metrics(out.value, x, y),
                   {**state.extra, **mut})

  return T.make_step(loss_fn, tx)


def make_eval_step(model, table: LayerTable, phase: str, *, class_weights=None, task=None):
  """Evaluation (inference-mode BN) of the PIT search (masks of ``arch``) or of the fine-tuning.

  Args:
    model: the float-mode model.
    table: the layer table.
    phase: ``'pit_search'``: output-axis masks :func:`binary_masks` of ``params['arch']``;
      ``'pit_finetune'``: ``extra['pit_mask']`` on both kernel axes.
    class_weights: optional per-class cross-entropy weights, shape ``(num_classes,)``.
    task: the :class:`jpq_jax.tasks.Task` evaluated (default: classification with
      ``class_weights``).

  Returns:
    ``eval(params, extra, temperature, x, y, mask) -> sums``: the task's ``eval_sums`` over the
    examples where ``mask`` is 1 (classification: ``{loss_sum, weight_sum, correct, count}``, no
    label smoothing), to be accumulated over padded batches; ``temperature`` is ignored and
    ``extra`` needs ``batch_stats``.

  Raises:
    ValueError: an unknown ``phase``.
  """
  if phase not in ("pit_search", "pit_finetune"):
    raise ValueError(f"unknown PIT phase {phase!r}; use 'pit_search' or 'pit_finetune'")
  task = T._task(task, class_weights, 0.0)  # pylint: disable=protected-access

  def evaluate(params, extra, temperature, x, y, mask):
    del temperature
    if phase == "pit_search":
      p = apply_masks(params["params"], table, binary_masks(pit_theta(params["arch"], table)))
    else:
      p = apply_masks(params["params"], table, extra["pit_mask"], inputs=True)
    out = model.apply({"params": p, "batch_stats": extra["batch_stats"]}, x, Ctx.float(False))
    return task.eval_sums(out.value, x, y, mask)

  return evaluate


def export_float(params: Mapping, batch_stats: Mapping, table: LayerTable,
                 masks: Mapping) -> Dict[str, Any]:
  """The PIT export as full-width float variables: BN folded, masks baked in, fresh BatchNorm.

  Per layer: the kernel (BN folded with its running statistics) times the output mask and the
  producer's mask; a conv bias, if the layer has one, gets the folded bias; a layer without a bias
  loses the folded shift, which the fresh BatchNorm's batch statistics subtract anyway in training.
  Every BatchNorm restarts at scale 1, shift 0, mean 0, var 1.

  Args:
    params: the ``params`` collection of the float model.
    batch_stats: its ``batch_stats`` (the running statistics folded into the kernels).
    table: the layer table.
    masks: ``{group name: (C,) 0/1 mask}`` (groups absent are not masked), baked in with
      :func:`bake_masks`.

  Returns:
    ``{'params', 'batch_stats'}`` for the float model (new trees; the arguments are not modified).

  Raises:
    KeyError: a layer's entry (or, for a BN layer, its ``BatchNorm_0`` statistics) is missing.
  """
  from jpq_jax.fold import fold_batchnorm  # pylint: disable=import-outside-toplevel
  p, bs = _copy(params), _copy(batch_stats)
  for l in table.layers:
    node = get_path(p, l.path)
    k, b = node["kernel"], node.get("bias")
    if l.bn:
      bn_p, bn_s = node["BatchNorm_0"], get_path(bs, l.path + ("BatchNorm_0",))
      k, b = fold_batchnorm(k, b, bn_p["scale"], bn_p["bias"], bn_s["mean"], bn_s["var"], l.bn_eps)
      node["BatchNorm_0"] = {"scale": jnp.ones_like(bn_p["scale"]),
                             "bias": jnp.zeros_like(bn_p["bias"])}
      set_path(bs, l.path + ("BatchNorm_0",), {"mean": jnp.zeros_like(bn_s["mean"]),
                                               "var": jnp.ones_like(bn_s["var"])})
    node["kernel"] = k
    if "bias" in node:
      node["bias"] = b
  return {"params": bake_masks(p, table, masks), "batch_stats": bs}


def bake_masks(params: Mapping, table: LayerTable, masks: Mapping) -> Dict[str, Any]:
  """``params`` with the masks multiplied into the kernel arrays (both axes).

  Args:
    params: the ``params`` collection.
    table: the layer table.
    masks: ``{group name: (C,) mask}`` (arrays or numpy; groups absent are not masked).

  Returns:
    A new params tree (:func:`apply_masks` with ``inputs=True``): each kernel times its group's
    mask on the output axis and, except depthwise kernels, the producer's mask on the input axis;
    biases, BN parameters and clips unchanged.
  """
  return apply_masks(params, table, {k: jnp.asarray(v) for k, v in masks.items()}, inputs=True)


def _kept(masks, name, n):
  return np.asarray(masks[name]) > 0 if name in masks else np.ones((n,), bool)


def prune_physically(variables: Mapping, table: LayerTable, masks: Mapping) -> Dict[str, Any]:
  """The physically pruned float network: kept output and input channels only.

  Args:
    variables: ``{'params', 'batch_stats'}`` of the (masked) float model.
    table: the layer table.
    masks: binary masks per group.

  Returns:
    ``{layer name: {'kernel', 'bias'?, 'bn'?: {scale, bias, mean, var, eps}}}`` with sliced arrays,
    for :func:`apply_pruned`.
  """
  groups = {g.name: g for g in table.groups}
  out = {}
  for l in table.layers:
    node = get_path(variables["params"], l.path)
    ko = _kept(masks, l.w_group, l.cout)
    k = np.asarray(node["kernel"])
    depthwise = l.kind == "depthwise" or l.feature_groups > 1
    if not depthwise:
      gi = groups[l.in_group]
      ki = _kept(masks, l.in_group, gi.channels if gi.kind != "input" else l.cin)
      if l.in_mult > 1:
        ki = np.tile(ki, l.in_mult)
      k = k[ki] if k.ndim == 2 else k[:, :, ki, :]
    rec = {"kernel": k[..., ko]}
    if "bias" in node:
      rec["bias"] = np.asarray(node["bias"])[ko]
    if l.bn:
      bp = node["BatchNorm_0"]
      st = get_path(variables["batch_stats"], l.path + ("BatchNorm_0",))
      rec["bn"] = {"scale": np.asarray(bp["scale"])[ko], "bias": np.asarray(bp["bias"])[ko],
                   "mean": np.asarray(st["mean"])[ko], "var": np.asarray(st["var"])[ko],
                   "eps": l.bn_eps}
    out[l.name] = rec
  return out


def pruned_weight_count(pruned: Mapping) -> int:
  """Number of conv/dense weights of a physically pruned network.

  Args:
    pruned: the per-layer arrays of :func:`prune_physically`.

  Returns:
    The total size of the sliced kernels (biases and BatchNorm parameters not counted).
  """
  return int(sum(np.asarray(r["kernel"]).size for r in pruned.values()))


def apply_pruned(model, pruned: Mapping, x) -> jax.Array:
  """Run the physically pruned float network (inference-mode BN); returns the logits.

  The unchanged model definition is executed with :func:`flax.linen.intercept_methods`: every
  ``Conv``/``Dense``/``Add`` call is replaced by the same computation on the sliced arrays of
  :func:`prune_physically`, so no variable of the full-width model is ever created or read.

  Args:
    model: the float-mode model definition (the one whose table made ``pruned``).
    pruned: the per-layer arrays of :func:`prune_physically`, keyed by layer name (module path
      joined with ``/``).
    x: an input batch, as the model takes it.

  Returns:
    The logits (the ``value`` of the model's output).
  """

  def conv_of(mod: Conv, v, rec):
    strides = mod.strides if isinstance(mod.strides, (tuple, list)) else (mod.strides,) * 2
    pad = mod.padding
    if isinstance(pad, int):
      pad = ((pad, pad), (pad, pad))
    fgc = v.shape[-1] if mod.depthwise else 1
    return jax.lax.conv_general_dilated(v, jnp.asarray(rec["kernel"]), window_strides=strides,
                                        padding=pad, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=fgc)

  def post(z, rec):
    if "bias" in rec:
      z = z + rec["bias"]
    if "bn" in rec:
      b = rec["bn"]
      z = (z - b["mean"]) / jnp.sqrt(b["var"] + b["eps"]) * b["scale"] + b["bias"]
    return z

  def interceptor(next_fun, args, kwargs, context):
    mod = context.module
    if context.method_name != "__call__":
      return next_fun(*args, **kwargs)
    if isinstance(mod, (Conv, Dense)):
      name = "/".join(mod.scope.path)
      rec = pruned[name]
      v = args[0].value
      z = post(conv_of(mod, v, rec) if isinstance(mod, Conv) else v @ jnp.asarray(rec["kernel"]),
               rec)
    elif isinstance(mod, Add):
      z = args[0].value
      for t in args[1:]:
        z = z + t.value
    else:
      return next_fun(*args, **kwargs)
    if getattr(mod, "relu", False):  # the ReLU the layer applies after its (float) quantizer
      z = jax.nn.relu(z)
    return QTensor(value=z, s_a=None, group=mod.group.group_name)

  with nn.intercept_methods(interceptor):
    return model.apply({}, x, Ctx.float(False)).value


def pin_logits(arch: Mapping, table: LayerTable, masks: Mapping) -> Dict[str, Any]:
  """Search logits with the 0-bit option pinned: +PIN on pruned channels, -PIN on kept ones.

  Args:
    arch: the ``arch`` collection of a model whose prunable groups have a 0-bit option.
    table: the layer table.
    masks: PIT's binary masks per group.

  Returns:
    A new ``arch``: pruned channels have logits (+PIN at 0 bit, -PIN elsewhere); kept channels keep
    their initial logits except -PIN at 0 bit.
  """
  out = _copy(arch)
  for g in table.groups:
    if g.kind != "hidden" or not g.prunable:
      continue
    node = get_path(out, g.path)
    a = jnp.asarray(node["alpha_w"])
    if a.ndim != 2:
      raise ValueError("pinned pruning needs channel-wise logits (granularity 'channel')")
    kept = jnp.asarray(_kept(masks, g.name, g.channels))
    z = g.zero_index
    pruned_col = jnp.full((a.shape[0],), -PIN, a.dtype).at[z].set(PIN)
    a = jnp.where(kept[None, :], a.at[z].set(-PIN), pruned_col[:, None])
    node["alpha_w"] = a
  return out


def kept_summary(masks: Mapping, table: LayerTable) -> Dict[str, Dict[str, int]]:
  """``{group: {'channels', 'kept'}}`` of binary masks.

  Args:
    masks: ``{group name: (C,) 0/1 mask}``; groups absent count as fully kept.
    table: the layer table.

  Returns:
    ``{group name: {'channels': C, 'kept': number of mask entries > 0}}`` for every non-input
    group.
  """
  return {g.name: {"channels": g.channels, "kept": int(_kept(masks, g.name, g.channels).sum())}
          for g in table.groups if g.kind != "input"}


def mask_tree(table: LayerTable, masks: Mapping[str, Any]) -> Dict[str, Any]:
  """The checkpoint layout of per-group masks: ``{...group path...: {'mask': masks[name]}}``.

  Args:
    table: the layer table (its non-input groups are written).
    masks: ``{group name: value}`` (arrays, stacked arrays or ``ShapeDtypeStruct`` templates).

  Returns:
    The nested tree, the ``pit_mask`` entry of a PIT checkpoint.
  """
  tree: Dict[str, Any] = {}
  for g in table.groups:
    if g.kind != "input":
      set_path(tree, g.path, {"mask": masks[g.name]})
  return tree


def masks_from_tree(tree: Mapping[str, Any], table: LayerTable) -> Dict[str, Any]:
  """The inverse of :func:`mask_tree`: ``{group name: mask}`` of the non-input groups.

  Args:
    tree: the nested mask tree (the ``pit_mask`` entry of a PIT checkpoint).
    table: the layer table.

  Returns:
    ``{group name: mask}`` for every non-input group (the stored values, unchanged).

  Raises:
    KeyError: ``tree`` has no entry at a non-input group's path (or no ``mask`` there).
  """
  return {g.name: get_path(tree, g.path)["mask"] for g in table.groups if g.kind != "input"}
