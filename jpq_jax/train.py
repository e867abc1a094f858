"""Training building blocks: optimizers, the train state, pure phase steps, schedules, early stopping.

Everything here is for ONE member (one lambda); the sweep driver (:mod:`jpq_jax.sweep`) runs many
members with ``jax.vmap`` or a Python loop over the same functions. Step functions are pure: all that
changes between epochs and between members (learning-rate factor, lambda, temperature, PRNG key) is
an array argument or lives in the :class:`TrainState`, so one compile serves the whole sweep.

The protocol follows METHOD.md §6:

* optimizers (§6.2): net weights get Adam (or SGD) with L2 weight decay *in the gradient*
  (``optax.add_decayed_weights`` before ``optax.adam``, as PyTorch's ``Adam(weight_decay=...)``, not
  AdamW); PACT clips (``clip``, ``clip_inf``, ``clip_sup``) get no decay; the ``arch`` logits get SGD
  with momentum 0.9 and no decay.
* schedules are per epoch. A PyTorch scheduler multiplies the learning rate of every group by a
  factor; for Adam and for (heavy-ball) SGD that is exactly the same as multiplying the *update* by
  the factor, so the factor is an array argument ``lr_scale`` of the step (no recompile per epoch,
  no ``inject_hyperparams`` state to keep in sync across two optimizers).
* early stopping and best-checkpoint selection are per member, in the state (§6.3): only epochs
  ``> earlystop_start`` count, the best weights *and optimiser state* are kept and restored at the
  end of each phase.
* fault isolation: a step whose loss or new weights are not finite is not applied, and the member
  is marked ``failed`` (it stops updating; other members are unaffected because nothing is shared).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax import traverse_util

from jpq_jax import tasks as tasks_lib
from jpq_jax.arch import freeze, thetas
from jpq_jax.layers import Ctx
from jpq_jax.table import LayerTable

__all__ = [
    "PHASES", "CLIP_NAMES", "TrainState", "param_labels", "make_optimizer", "lr_factor",
    "temperature_at", "strength_at", "earlystop_start", "init_state", "make_train_step", "REMAT_POLICIES",
    "make_eval_step", "make_cost_fn", "end_epoch", "restore_best", "cross_entropy", "get_cost_fn",
    "cost_names", "make_step",
]

PHASES = ("warmup", "search", "finetune")
# Rematerialisation of the training step's forward in its backward (``make_train_step(remat=)``):
# ``none`` keeps what XLA keeps; ``dots`` keeps only the outputs of convolutions and matmuls and
# recomputes the elementwise work after them (the quantizers' mixtures, ReLU, the adds) in the
# backward, to cut the activations kept per member on accelerators. XLA:CPU merges the
# recomputation back into the forward: no saving there (benchmarks/step.py).
REMAT_POLICIES = ("none", "dots")
# PACT clip parameter names: no weight decay (the reference excludes names containing "clip_val").
CLIP_NAMES = ("clip", "clip_inf", "clip_sup")


# ---- costs (helper B's registry; looked up lazily so this module imports without it) -------------
def _registry():
  try:
    from jpq_jax import costs as c  # pylint: disable=import-outside-toplevel
    if hasattr(c, "get_cost"):
      return c
  except ImportError:
    pass
  from jpq_jax.costs import registry as c  # pylint: disable=import-outside-toplevel
  return c


def get_cost_fn(name: str) -> Callable[[LayerTable, Mapping], jax.Array]:
  """The registered cost model ``name`` (``cost(table, theta) -> scalar``).

  Args:
    name: a registered cost name (see :func:`cost_names`).

  Returns:
    The cost model, a callable ``cost(table, theta) -> scalar``.

  Raises:
    KeyError: unknown name; the message lists the registered names.
  """
  return _registry().get_cost(name)


def cost_names() -> Tuple[str, ...]:
  """Names of every registered cost model."""
  return tuple(_registry().list_costs())


# ---- state ------------------------------------------------------------------------------------------
@struct.dataclass
class TrainState:
  """State of one member in one phase (a pytree: vmap/stack it over members).

  Attributes:
    params: the trainable collections: ``{'params'}`` (warm-up, fine-tune) or
      ``{'params', 'arch'}`` (search).
    extra: non-trained collections: ``{'batch_stats'}`` (warm-up), ``{'precision'}`` (fine-tune),
      ``{}`` (search).
    opt_state: optax state of :func:`make_optimizer`.
    step: number of applied steps (int32).
    epoch: epochs finished in this phase (int32).
    key: this member's PRNG key (dropout, Gumbel); per-step keys are ``fold_in(key, step)``.
    temperature: softmax temperature (search; annealed per epoch).
    lam: the member's base regularisation strength lambda.
    failed: the loss or the weights became non-finite; the member is frozen.
    stopped: early stopping triggered; the member is frozen for the rest of the phase.
    best_metric: best monitored validation metric so far (in "higher is better" sign).
    best_epoch: epoch of the best metric (-1: none yet).
    bad_epochs: epochs since the last improvement (patience counter).
    best_params, best_extra, best_opt_state: the state at the best epoch.
  """
  params: Any
  extra: Any
  opt_state: Any
  step: jax.Array
  epoch: jax.Array
  key: jax.Array
  temperature: jax.Array
  lam: jax.Array
  failed: jax.Array
  stopped: jax.Array
  best_metric: jax.Array
  best_epoch: jax.Array
  bad_epochs: jax.Array
  best_params: Any
  best_extra: Any
  best_opt_state: Any


def param_labels(params: Mapping) -> Any:
  """Optimizer label of every trainable leaf: ``arch``, ``net_nowd`` (PACT clips) or ``net_wd``.

  Args:
    params: the trainable collections (``{'params': ..., 'arch': ...}``).

  Returns:
    A tree of the same structure with string labels.
  """
  flat = traverse_util.flatten_dict(_unfreeze(params))
  labels = {}
  for path, _ in flat.items():
    if path[0] == "arch":
      labels[path] = "arch"
    elif path[-1] in CLIP_NAMES:
      labels[path] = "net_nowd"
    else:
      labels[path] = "net_wd"
  return traverse_util.unflatten_dict(labels)


def _unfreeze(tree):
  if isinstance(tree, Mapping):
    return {k: _unfreeze(v) for k, v in tree.items()}
  return tree


def _base_opt(cfg: Mapping, with_wd: bool) -> optax.GradientTransformation:
  name = cfg.get("name", "adam")
  lr = float(cfg["lr"])
  parts = []
  wd = float(cfg.get("wd", 0.0))
  if with_wd and wd:
    # L2 in the gradient, before the moments (PyTorch Adam/SGD weight_decay), not decoupled AdamW.
    parts.append(optax.add_decayed_weights(wd))
  if name == "adam":
    parts.append(optax.adam(lr, b1=float(cfg.get("b1", 0.9)), b2=float(cfg.get("b2", 0.999)),
                            eps=float(cfg.get("eps", 1e-8))))
  elif name == "sgd":
    mom = float(cfg.get("momentum", 0.0))
    parts.append(optax.sgd(lr, momentum=mom or None, nesterov=bool(cfg.get("nesterov", False))))
  else:
    raise ValueError(f"optimizer.name: unknown optimizer {name!r}; use 'adam' or 'sgd'")
  return optax.chain(*parts)


def make_optimizer(net: Mapping, arch: Optional[Mapping] = None) -> optax.GradientTransformation:
  """The reference's two optimizers on one loss, as one optax transformation.

  Args:
    net: net-weight optimizer config ``{name: adam|sgd, lr, wd, momentum, nesterov}``; the decay
      is not applied to PACT clips.
    arch: arch-logit optimizer config (search phase), e.g. ``{name: sgd, lr: 1e-2, momentum: 0.9}``;
      its ``wd`` is applied to every logit if given (the reference uses 0).

  Returns:
    A transformation over the trainable collections, to be used with :func:`param_labels`.
  """
  transforms = {"net_wd": _base_opt(net, True), "net_nowd": _base_opt(net, False),
                "arch": _base_opt(arch, True) if arch is not None else optax.set_to_zero()}
  return optax.multi_transform(transforms, param_labels)


# ---- schedules (host side, per epoch) ------------------------------------------------------------------
def lr_factor(schedule: Mapping, epoch: int, epochs: int) -> float:
  """Learning-rate multiplier of epoch ``epoch`` (0-based), as PyTorch's per-epoch schedulers.

  Args:
    schedule: ``{kind: ...}`` with kind ``constant``; ``exp`` (LambdaLR ``gamma**epoch``, CIFAR:
      gamma 0.99); ``multistep`` (``milestones``: epochs after which ``factors`` multiply, GSC:
      milestones (50, 100, 150), factors (0.5, 0.5, 0.4)); ``step`` (StepLR ``step_size``,
      ``gamma``); ``cosine`` (CosineAnnealingLR, T_max = ``epochs``).
    epoch: epoch index.
    epochs: total epochs of the phase.

  Returns:
    The factor.

  Raises:
    ValueError: unknown kind.
  """
  kind = schedule.get("kind", "constant")
  if kind == "constant":
    return 1.0
  if kind == "exp":
    return float(schedule.get("gamma", 0.99)) ** epoch
  if kind == "multistep":
    f = 1.0
    for m, g in zip(schedule["milestones"], schedule["factors"]):
      if epoch >= int(m):
        f *= float(g)
    return f
  if kind == "step":
    return float(schedule.get("gamma", 0.1)) ** (epoch // int(schedule.get("step_size", 30)))
  if kind == "cosine":
    return 0.5 * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))
  raise ValueError(f"schedule.kind: unknown schedule {kind!r}; use constant, exp, multistep, step "
                   "or cosine")


def temperature_at(t0: float, decay: float, epoch: int) -> float:
  """Temperature at the start of search epoch ``epoch``: ``T0 * exp(-decay * epoch)`` (§2.4).

  Args:
    t0: initial temperature T0.
    decay: exponential decay rate per epoch.
    epoch: search epoch index (0-based).

  Returns:
    The temperature, a Python float.
  """
  return float(t0) * math.exp(-float(decay) * epoch)


def strength_at(lams: Sequence[float], epoch: int, epochs: int, incremental: bool) -> np.ndarray:
  """lambda of every member at search epoch ``epoch`` (METHOD.md §6.1).

  With ``incremental``: ``min(lam / 100 + epoch * delta, lam)``, ``delta = 0.99 lam / floor(N/2)``.

  Args:
    lams: base lambda per member.
    epoch: epoch index.
    epochs: number of search epochs N.
    incremental: the reference's ``--incremental_strength``.

  Returns:
    float32 array of the lambdas.
  """
  lams = np.asarray(lams, np.float64)
  if not incremental:
    return lams.astype(np.float32)
  half = max(epochs // 2, 1)
  delta = 0.99 * lams / half
  return np.minimum(lams / 100.0 + epoch * delta, lams).astype(np.float32)


def earlystop_start(epochs: int, start: int = 20) -> int:
  """Epochs ``<= earlystop_start`` never count for selection (``start`` if epochs > start, else -1).

  Args:
    epochs: number of epochs of the phase.
    start: the last epoch excluded from selection when the phase is longer than it.

  Returns:
    ``start`` if ``epochs > start``, else -1 (every epoch counts); the ``start`` of
    :func:`end_epoch`.
  """
  return start if epochs > start else -1


# ---- losses -------------------------------------------------------------------------------------------
# The cross-entropy lives with the classification task (jpq_jax.tasks); re-exported here, where it was.
cross_entropy = tasks_lib.cross_entropy


# ---- steps ------------------------------------------------------------------------------------------------


def _check_phase(phase: str) -> None:
  # A typo would otherwise silently select the fixed-precision (fine-tuning) path.
  if phase not in PHASES:
    raise ValueError(f"unknown phase {phase!r}; use one of {PHASES}")


def _ctx(phase: str, train: bool, temperature=None, sampling: str = "softmax", key=None) -> Ctx:
  if phase == "warmup":
    return Ctx.float(train)
  if phase == "search":
    return Ctx.search(temperature, train=train, sampling=sampling,
                      key=key if sampling.startswith("gumbel") else None)
  return Ctx.fixed(train)


def init_state(phase: str, variables: Mapping, tx: optax.GradientTransformation, *, key: jax.Array,
               lam: float = 0.0, temperature: float = 1.0) -> TrainState:
  """A fresh member state for ``phase`` (fresh optimizer moments, no best yet).

  Args:
    phase: ``warmup``, ``search`` or ``finetune``.
    variables: model variables of that phase (``{'params','batch_stats'}``, ``{'params','arch'}`` or
      ``{'params','precision'}``).
    tx: the phase optimizer.
    key: PRNG key of the member.
    lam: base lambda.
    temperature: initial temperature.

  Returns:
    The state.

  Raises:
    ValueError: an unknown ``phase``.
  """
  _check_phase(phase)
  variables = _unfreeze(variables)
  trainable = ("params", "arch") if phase == "search" else ("params",)
  params = {k: variables[k] for k in trainable}
  extra = {k: v for k, v in variables.items() if k not in trainable}
  opt_state = tx.init(params)
  f32 = lambda v: jnp.asarray(v, jnp.float32)
  return TrainState(params=params, extra=extra, opt_state=opt_state, step=jnp.zeros((), jnp.int32),
                    epoch=jnp.zeros((), jnp.int32), key=key, temperature=f32(temperature),
                    lam=f32(lam), failed=jnp.zeros((), bool), stopped=jnp.zeros((), bool),
                    best_metric=f32(-jnp.inf), best_epoch=jnp.asarray(-1, jnp.int32),
                    bad_epochs=jnp.zeros((), jnp.int32), best_params=params, best_extra=extra,
                    best_opt_state=opt_state)


def _all_finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _where(c, new, old):
  return jax.tree_util.tree_map(lambda a, b: jnp.where(c, a, b), new, old)


def make_train_step(model: Any, table: Optional[LayerTable], phase: str,
                    tx: optax.GradientTransformation, *, cost: Optional[str] = None,
                    sampling: str = "softmax", class_weights: Optional[np.ndarray] = None,
                    label_smoothing: float = 0.0, nan_member: Optional[int] = None,
                    remat: str = "none", task: Optional[tasks_lib.Task] = None) -> Callable:
  """The pure single-member training step of ``phase``.

  Args:
    model: the Flax model.
    table: its layer table (static; needed by the search cost).
    phase: ``warmup``, ``search`` or ``finetune``.
    tx: the phase optimizer (:func:`make_optimizer`).
    cost: cost model name (search phase).
    sampling: training-mode theta sampling (search phase).
    class_weights: optional CE class weights (without ``task``).
    label_smoothing: CE label smoothing (without ``task``).
    nan_member: testing hook; not used by the step itself (see the sweep's ``inject_nan``).
    remat: one of :data:`REMAT_POLICIES`: ``none`` (default) or ``dots``, which wraps the loss in
      ``jax.checkpoint`` with ``jax.checkpoint_policies.dots_saveable``: only convolution and
      matmul outputs are kept for the backward and the elementwise work after them is recomputed
      (less memory per member on accelerators, a little more compute; the same values up to
      float32 roundoff of the recomputation).
    task: the :class:`jpq_jax.tasks.Task` whose loss is trained (default: classification with
      ``class_weights`` and ``label_smoothing``).

  Returns:
    ``step(state, x, y, lam_e, lr_scale, poison) -> (state, metrics)``: ``lam_e`` is this epoch's
    lambda of the member, ``lr_scale`` the schedule factor, ``poison`` a float added to the loss
    (0; NaN in the fault-isolation tests). ``metrics``: ``loss``, ``task`` (the task's loss),
    ``cost``, ``ok`` (the step was applied) and the task's ``train_metrics`` (classification:
    ``acc``).

  Raises:
    ValueError: an unknown ``phase`` or ``remat`` policy.
  """
  del nan_member
  _check_phase(phase)
  if remat not in REMAT_POLICIES:
    raise ValueError(f"unknown remat policy {remat!r}; use one of {REMAT_POLICIES}")
  cost_fn = get_cost_fn(cost) if phase == "search" else None
  task = _task(task, class_weights, label_smoothing)

  def loss_fn(params, state: TrainState, x, y, lam_e, kd, kg):
    ctx = _ctx(phase, True, state.temperature, sampling, kg)
    variables = {**params, **state.extra}
    if phase == "warmup":
      out, mut = model.apply(variables, x, ctx, mutable=["batch_stats"], rngs={"dropout": kd})
      new_extra = {**state.extra, **mut}
    else:
      out = model.apply(variables, x, ctx, rngs={"dropout": kd})
      new_extra = state.extra
    s, n = task.loss(out.value, x, y)
    task_loss = s / n
    c = jnp.zeros((), jnp.float32)
    if phase == "search":
      c = cost_fn(table, thetas({"arch": params["arch"]}, table, ctx))
    return task_loss + lam_e * c, (task_loss, c, task.train_metrics(out.value, x, y), new_extra)

  if remat == "dots":
    loss_fn = jax.checkpoint(loss_fn, policy=jax.checkpoint_policies.dots_saveable)
  return make_step(loss_fn, tx)


def make_step(loss_fn: Callable, tx: optax.GradientTransformation) -> Callable:
  """A pure single-member step around ``loss_fn``: update, fault isolation, early-stop freezing.

  Shared by :func:`make_train_step` and the PIT phases (:mod:`jpq_jax.pit`), so every phase has the
  same semantics for ``lr_scale``, ``poison``, non-finite losses and stopped members.

  Args:
    loss_fn: ``loss_fn(params, state, x, y, lam_e, dropout_key, sampling_key) -> (loss, (task,
      cost, metrics, new_extra))`` (``loss`` without the poison; ``metrics`` a dict of the task's
      batch metrics, :meth:`jpq_jax.tasks.Task.train_metrics`).
    tx: the optimizer.

  Returns:
    ``step(state, x, y, lam_e, lr_scale, poison) -> (state, metrics)`` (see
    :func:`make_train_step`).
  """

  def step(state: TrainState, x, y, lam_e, lr_scale, poison):
    kd, kg = jax.random.split(jax.random.fold_in(state.key, state.step))

    def full(params):
      loss, aux = loss_fn(params, state, x, y, lam_e, kd, kg)
      return loss + poison, aux

    (loss, (task, c, metrics, new_extra)), grads = jax.value_and_grad(full, has_aux=True)(
        state.params)
    updates, new_opt = tx.update(grads, state.opt_state, state.params)
    updates = jax.tree_util.tree_map(lambda u: u * lr_scale, updates)
    new_params = optax.apply_updates(state.params, updates)
    ok = jnp.isfinite(loss) & _all_finite(new_params) & _all_finite(new_extra)
    active = ~state.failed & ~state.stopped
    commit = ok & active
    state = state.replace(
        params=_where(commit, new_params, state.params),
        opt_state=_where(commit, new_opt, state.opt_state),
        extra=_where(commit, new_extra, state.extra),
        step=state.step + commit.astype(jnp.int32),
        failed=state.failed | (active & ~ok))
    return state, {"loss": loss, "task": task, "cost": c, "ok": commit, **metrics}

  return step


def make_eval_step(model: Any, phase: str, *, class_weights: Optional[np.ndarray] = None,
                   task: Optional[tasks_lib.Task] = None) -> Callable:
  """Evaluation in eval mode (argmax architecture during the search, running stats in warm-up).

  Args:
    model: the Flax model.
    phase: ``warmup`` (float model), ``search`` (argmax architecture) or ``finetune`` (fixed
      precisions).
    class_weights: optional CE class weights (the loss sums are weighted by them; without
      ``task``).
    task: the :class:`jpq_jax.tasks.Task` evaluated (default: classification with
      ``class_weights``).

  Returns:
    ``eval(params, extra, temperature, x, y, mask) -> sums``: the task's ``eval_sums``
    (classification: ``{loss_sum, weight_sum, correct, count}``), to be accumulated over padded
    batches and turned into metrics by its ``finish``.

  Raises:
    ValueError: an unknown ``phase``.
  """
  _check_phase(phase)
  task = _task(task, class_weights, 0.0)

  def evaluate(params, extra, temperature, x, y, mask):
    ctx = _ctx(phase, False, temperature)
    out = model.apply({**params, **extra}, x, ctx)
    return task.eval_sums(out.value, x, y, mask)

  return evaluate


def _task(task, class_weights, label_smoothing) -> tasks_lib.Task:
  """``task``, or the classification of the older keyword arguments."""
  if task is not None:
    return task
  t = tasks_lib.Classification(label_smoothing=label_smoothing)
  t.cw = None if class_weights is None else np.asarray(class_weights, np.float32)
  return t


def make_cost_fn(table: LayerTable, names: Sequence[str]) -> Callable:
  """Costs of an architecture: soft (training-mode softmax at T) and one-hot (argmax).

  Args:
    table: the model's :class:`LayerTable` (static).
    names: registered cost names to compute.

  Returns:
    ``costs(arch, temperature) -> {'soft': {name: v}, 'hard': {name: v}}``, where ``arch`` is the
    ``arch`` collection. The names are looked up when ``costs`` runs (an unknown name raises
    ``KeyError`` there, not here).
  """
  reg = _registry()
  names = tuple(names)

  def costs(arch, temperature):
    soft = thetas({"arch": arch}, table, Ctx.search(temperature, train=True))
    hard = thetas({"arch": arch}, table, Ctx.search(temperature, train=False))
    return {"soft": reg.all_costs(table, soft, names), "hard": reg.all_costs(table, hard, names)}

  return costs


def end_epoch(state: TrainState, metric: jax.Array, *, start: int, patience: int,
              temperature_decay: float = 0.0) -> TrainState:
  """Per-member end of epoch: best-checkpoint selection, early stopping, temperature annealing.

  Pure and vmap-able. The metric is in "higher is better" sign (pass ``-loss`` for a loss). Only
  epochs ``> start`` count (METHOD.md §6.3); an improvement must be strict; a NaN metric is never
  an improvement; failed members are never updated.

  Args:
    state: the member state after the epoch's steps.
    metric: monitored validation metric (scalar).
    start: :func:`earlystop_start`.
    patience: early-stopping patience in epochs.
    temperature_decay: ``T <- T * exp(-decay)`` (search phase; 0 otherwise).

  Returns:
    The updated state (``epoch`` incremented).
  """
  active = ~state.failed & ~state.stopped
  eligible = (state.epoch > start) & active
  improve = eligible & (metric > state.best_metric)
  bad = jnp.where(eligible, jnp.where(improve, 0, state.bad_epochs + 1), state.bad_epochs)
  return state.replace(
      best_metric=jnp.where(improve, metric, state.best_metric),
      best_epoch=jnp.where(improve, state.epoch, state.best_epoch),
      best_params=_where(improve, state.params, state.best_params),
      best_extra=_where(improve, state.extra, state.best_extra),
      best_opt_state=_where(improve, state.opt_state, state.best_opt_state),
      bad_epochs=bad,
      stopped=state.stopped | (eligible & (bad >= patience)),
      temperature=state.temperature * jnp.exp(-jnp.asarray(temperature_decay, jnp.float32)),
      epoch=state.epoch + 1)


def restore_best(state: TrainState) -> TrainState:
  """End of phase: reload the best weights and optimizer state (if an epoch was ever selected).

  Args:
    state: the member state at the end of the phase.

  Returns:
    The state with ``params``, ``extra`` and ``opt_state`` replaced by the ``best_*`` ones when
    ``best_epoch >= 0``, unchanged otherwise (the other fields are kept as they are).
  """
  has = state.best_epoch >= 0
  return state.replace(params=_where(has, state.best_params, state.params),
                       extra=_where(has, state.best_extra, state.extra),
                       opt_state=_where(has, state.best_opt_state, state.opt_state))


def finetune_variables(search_params: Mapping, table: LayerTable) -> Dict[str, Any]:
  """Fixed-mode variables for fine-tuning: the search weights and the argmax architecture.

  Args:
    search_params: the search-phase trainable collections ``{'params', 'arch'}``.
    table: the model's :class:`LayerTable`.

  Returns:
    ``{'params': ..., 'precision': ...}``: the search weights unchanged, and the argmax
    architecture as a ``precision`` collection (:func:`jpq_jax.arch.freeze` of the ``arch`` logits).
  """
  return {"params": search_params["params"], "precision": freeze(search_params["arch"], table)}


__all__.append("finetune_variables")
