"""Tasks: the loss and the metrics a sweep trains and selects on (classification, regression, ...).

A *task* says, for one model output and one batch ``(x, y)`` of the data pipeline:

* ``loss(out, x, y) -> (sum, weight)``: the training loss as a sum over the batch and its weight
  (the mean is their ratio), jit-able;
* ``train_metrics(out, x, y) -> {name: scalar}``: batch means logged during training (e.g. ``acc``);
* ``eval_sums(out, x, y, mask) -> {name: scalar}``: sums over the rows where ``mask`` is 1, added
  up over the padded evaluation batches, and ``finish(sums) -> {metric: value}`` (numpy, on the
  host) that turns them into the task's :attr:`Task.metrics` (``loss`` always among them);
* :attr:`Task.metrics`: every metric's label, direction (:class:`Metric`), and
  :attr:`Task.selection`: the metric that selects a member's best epoch and, on the validation
  split, the points of the Pareto front by default.

Built in (:data:`TASKS`): ``classification`` (the reference's cross-entropy and accuracy, with
``label_smoothing`` and ``class_weights`` options; the default, bit for bit what jpq did before
tasks existed), ``regression`` (MSE to the label as a number) and ``reconstruction`` (MSE to the
input, an autoencoder; the same :class:`Regression` with ``target="input"``). A sweep chooses one
with ``task.name`` (a registered name or an import path ``"my_pkg.tasks:MyTask"``) and
``task.options`` (keyword arguments of its constructor)::

  c.task.name = "reconstruction"                 # selects on the lowest validation MSE
  c.task.name = "classification"; c.task.options.label_smoothing = 0.1

A new task subclasses :class:`Task` (or is any object with its attributes and methods) and is
registered with :func:`register_task` or named by its import path.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Metric", "Task", "Classification", "Regression", "TaskError", "TASKS",
           "register_task", "get_task", "cross_entropy"]


class TaskError(ValueError):
  """An unknown task, a bad import path, or an option the task does not take or refuses.

  Attributes:
    option: the option at fault (None: the task's name).
  """

  def __init__(self, msg: str, option: Optional[str] = None):
    super().__init__(msg)
    self.option = option


@dataclasses.dataclass(frozen=True)
class Metric:
  """How a task's metric reads.

  Attributes:
    label: what it is, for axis labels and tables (``accuracy``, ``MSE``).
    higher_is_better: its direction (an accuracy is maximised, a loss minimised).
    percent: shown as a percentage (a fraction in [0, 1] in the results).
  """
  label: str
  higher_is_better: bool
  percent: bool = False

  def to_dict(self) -> Dict[str, Any]:
    """The JSON record of the metric (``results.json``'s ``task.metrics``)."""
    return dataclasses.asdict(self)


class Task:
  """The interface of a task (see the module docstring); subclasses set the attributes.

  Attributes:
    name: the task's name (recorded in the results).
    metrics: ``{name: Metric}`` of every evaluation metric, ``loss`` included, in display order.
    selection: the metric that selects checkpoints (and the front, on validation) by default.
    options: the constructor's options, JSON-able (recorded in the results).
  """
  name: str = "task"
  metrics: Mapping[str, Metric] = {}
  selection: str = "loss"

  @property
  def options(self) -> Dict[str, Any]:
    """The constructor's arguments as this task holds them (same-named attributes)."""
    params = inspect.signature(type(self).__init__).parameters
    return {k: getattr(self, k) for k in params if k != "self" and hasattr(self, k)}

  def prepare(self, dataset) -> "Task":
    """The task bound to the run's dataset (e.g. its class weights); default: itself.

    Args:
      dataset: the run's :class:`jpq_jax.data.Dataset`.

    Returns:
      A task.
    """
    del dataset
    return self

  def loss(self, out: jax.Array, x: jax.Array, y: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """``(sum of the per-example training losses, sum of their weights)`` of a batch."""
    raise NotImplementedError

  def train_metrics(self, out: jax.Array, x: jax.Array, y: jax.Array) -> Dict[str, jax.Array]:
    """Batch means logged during training besides the loss (default: none)."""
    del out, x, y
    return {}

  def eval_sums(self, out: jax.Array, x: jax.Array, y: jax.Array,
                mask: jax.Array) -> Dict[str, jax.Array]:
    """Sums over the rows of a padded evaluation batch where ``mask`` is 1."""
    raise NotImplementedError

  def finish(self, sums: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The metrics (every key of :attr:`metrics`) from the accumulated ``eval_sums``."""
    raise NotImplementedError

  def describe(self) -> Dict[str, Any]:
    """The task's record in ``results.json``: name, options, metrics, selection."""
    return {"name": self.name, "options": self.options,
            "metrics": {k: m.to_dict() for k, m in self.metrics.items()},
            "selection": self.selection}


# ---- classification ---------------------------------------------------------------------------------
def cross_entropy(logits: jax.Array, labels: jax.Array, class_weights: Optional[jax.Array] = None,
                  label_smoothing: float = 0.0, mask: Optional[jax.Array] = None
                  ) -> Tuple[jax.Array, jax.Array]:
  """Weighted cross-entropy as PyTorch's ``CrossEntropyLoss`` (mean over ``sum(w[y])``).

  Args:
    logits: ``(N, K)``.
    labels: ``(N,)`` int.
    class_weights: optional ``(K,)`` weights (GSC).
    label_smoothing: PyTorch's label smoothing.
    mask: optional ``(N,)`` 0/1 validity of each row (padded evaluation batches).

  Returns:
    ``(sum of weighted per-example losses, sum of weights)``; the mean is their ratio.
  """
  k = logits.shape[-1]
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  onehot = jax.nn.one_hot(labels, k, dtype=logp.dtype)
  if label_smoothing:
    target = onehot * (1.0 - label_smoothing) + label_smoothing / k
  else:
    target = onehot
  per = -(target * logp)
  w = jnp.ones((labels.shape[0],), logp.dtype)
  if class_weights is not None:
    cw = jnp.asarray(class_weights, logp.dtype)
    per = per * cw[None, :]
    w = cw[labels]
  per = per.sum(-1)
  if mask is not None:
    per = per * mask
    w = w * mask
  return per.sum(), w.sum()


class Classification(Task):
  """Cross-entropy training, accuracy selection (the reference's task, METHOD.md §6).

  Args:
    label_smoothing: PyTorch's label smoothing of the training loss (the evaluation loss has
      none), in [0, 1).
    class_weights: ``False`` (none), ``True`` (the dataset's, e.g. GSC's; none when the dataset
      has none) or an explicit list of one weight per class.

  Raises:
    TaskError: a label smoothing outside [0, 1) or a negative class weight.
  """
  name = "classification"
  metrics = {"acc": Metric("accuracy", True, percent=True), "loss": Metric("cross-entropy", False)}
  selection = "acc"

  def __init__(self, label_smoothing: float = 0.0, class_weights: Any = False):
    self.label_smoothing = float(label_smoothing)
    if not 0.0 <= self.label_smoothing < 1.0:
      raise TaskError(f"classification: label_smoothing must be in [0, 1), got {label_smoothing!r}",
                      "label_smoothing")
    if isinstance(class_weights, (list, tuple, np.ndarray)):
      cw = np.asarray(class_weights, np.float32)
      if cw.ndim != 1 or not np.all(np.isfinite(cw)) or np.any(cw < 0):
        raise TaskError(f"classification: class_weights must be a list of finite weights >= 0, "
                        f"got {class_weights!r}", "class_weights")
      self._cw_option: Any = [float(v) for v in cw]
      self.cw: Optional[np.ndarray] = cw
    elif isinstance(class_weights, (bool, np.bool_)) or class_weights is None:
      self._cw_option, self.cw = bool(class_weights), None
    else:
      raise TaskError(f"classification: class_weights must be true, false or a list of weights, "
                      f"got {class_weights!r}", "class_weights")

  @property
  def options(self) -> Dict[str, Any]:
    return {"label_smoothing": self.label_smoothing, "class_weights": self._cw_option}

  def prepare(self, dataset) -> "Classification":
    """The task with the dataset's class weights (``class_weights=True``) or checked against its
    classes (an explicit list).

    Raises:
      TaskError: an explicit list whose length is not the dataset's number of classes.
    """
    out = Classification(self.label_smoothing, self._cw_option)
    if self._cw_option is True:
      out.cw = dataset.class_weights  # None when the dataset has none (as jpq always did)
    elif out.cw is not None and len(out.cw) != int(dataset.num_classes):
      raise TaskError(f"classification: {len(out.cw)} class_weights for the "
                      f"{dataset.num_classes} classes of {dataset.name!r}", "class_weights")
    return out

  def _weights(self):
    return None if self.cw is None else jnp.asarray(self.cw, jnp.float32)

  def loss(self, out, x, y):
    del x
    return cross_entropy(out, y, self._weights(), self.label_smoothing)

  def train_metrics(self, out, x, y):
    del x
    return {"acc": jnp.mean((jnp.argmax(out, -1) == y).astype(jnp.float32))}

  def eval_sums(self, out, x, y, mask):
    del x
    s, n = cross_entropy(out, y, self._weights(), 0.0, mask)
    correct = jnp.sum((jnp.argmax(out, -1) == y).astype(jnp.float32) * mask)
    return {"loss_sum": s, "weight_sum": n, "correct": correct, "count": jnp.sum(mask)}

  def finish(self, sums):
    return {"acc": sums["correct"] / np.maximum(sums["count"], 1),
            "loss": sums["loss_sum"] / np.maximum(sums["weight_sum"], 1e-12)}


# ---- regression / reconstruction ---------------------------------------------------------------------
class Regression(Task):
  """Mean squared error to a target; selection on the lowest validation loss (the MSE).

  Args:
    target: ``"label"`` (the batch's ``y`` as a number; the model outputs ``(N,)`` or ``(N, 1)``)
      or ``"input"`` (the batch's ``x``: an autoencoder, whose output has the input's shape).

  Raises:
    TaskError: an unknown target.
  """
  name = "regression"
  metrics = {"loss": Metric("MSE", False), "mae": Metric("MAE", False)}
  selection = "loss"

  def __init__(self, target: str = "label"):
    if target not in ("label", "input"):
      raise TaskError(f"{self.name}: target must be 'label' or 'input', got {target!r}", "target")
    self.target = target

  def residual(self, out, x, y) -> jax.Array:
    """``out - target`` per example, flattened: ``(N, elements)`` float32.

    Raises:
      ValueError: the output's shape is not the target's.
    """
    t = (x if self.target == "input" else y).astype(jnp.float32)
    o = out.astype(jnp.float32)
    if self.target == "label" and o.ndim == 2 and o.shape[1] == 1:
      o = o[:, 0]
    if o.shape != t.shape:
      what = "the input" if self.target == "input" else "the label"
      raise ValueError(f"task {self.name!r}: the model's output has shape {tuple(o.shape)} but "
                       f"its target ({what}) has shape {tuple(t.shape)}")
    return (o - t).reshape(o.shape[0], -1)

  def loss(self, out, x, y):
    d = self.residual(out, x, y)
    per = jnp.mean(d * d, axis=1)
    return per.sum(), jnp.asarray(per.shape[0], jnp.float32)

  def eval_sums(self, out, x, y, mask):
    d = self.residual(out, x, y)
    return {"se_sum": jnp.sum(jnp.mean(d * d, axis=1) * mask),
            "ae_sum": jnp.sum(jnp.mean(jnp.abs(d), axis=1) * mask), "count": jnp.sum(mask)}

  def finish(self, sums):
    n = np.maximum(sums["count"], 1)
    return {"loss": sums["se_sum"] / n, "mae": sums["ae_sum"] / n}


class Reconstruction(Regression):
  """:class:`Regression` to the input (an autoencoder): ``target="input"``."""
  name = "reconstruction"

  def __init__(self, target: str = "input"):
    super().__init__(target)


# ---- registry --------------------------------------------------------------------------------------------
TASKS: Dict[str, Callable[..., Task]] = {"classification": Classification, "regression": Regression,
                                         "reconstruction": Reconstruction}


def register_task(name: str, factory: Callable[..., Task]) -> None:
  """Make ``factory`` (a :class:`Task` subclass or a function of the options) ``task.name``.

  Args:
    name: the task's name in configs.
    factory: called with ``task.options`` as keyword arguments; returns the task.

  Raises:
    TaskError: ``name`` is already registered.
  """
  if name in TASKS:
    raise TaskError(f"task {name!r} is already registered")
  TASKS[name] = factory


def _factory(name: str) -> Callable[..., Task]:
  if name in TASKS:
    return TASKS[name]
  if ":" not in name:
    raise TaskError(f"unknown task {name!r}; registered: {sorted(TASKS)} (or an import path "
                    "'package.module:Name')")
  mod_name, _, attr = name.partition(":")
  try:
    mod = importlib.import_module(mod_name)
  except ImportError as e:
    raise TaskError(f"task {name!r}: cannot import module {mod_name!r} ({e})") from None
  try:
    factory = getattr(mod, attr)
  except AttributeError:
    raise TaskError(f"task {name!r}: module {mod_name!r} has no {attr!r}") from None
  if not callable(factory):
    raise TaskError(f"task {name!r}: {attr!r} is not a Task class or factory")
  return factory


def get_task(name: str = "classification", options: Optional[Mapping[str, Any]] = None) -> Task:
  """The task ``name`` (registered, or ``"module:Name"``) built with ``options``.

  Args:
    name: a name of :data:`TASKS` or an import path ``"package.module:Name"``.
    options: keyword arguments of its constructor.

  Returns:
    The task (not yet :meth:`~Task.prepare`-d for a dataset).

  Raises:
    TaskError: unknown name, a module or attribute that does not import, an option the task does
      not take, or what the task's constructor refuses.
  """
  factory = _factory(str(name))
  options = dict(options or {})
  try:
    params = inspect.signature(factory).parameters
  except (TypeError, ValueError):
    params = None
  if params is not None and not any(p.kind == p.VAR_KEYWORD for p in params.values()):
    for k in options:
      if k not in params:
        raise TaskError(f"task {name!r} does not take option {k!r}; its options: "
                        f"{sorted(p for p in params if p != 'self')}", k)
  task = factory(**options)
  missing = [a for a in ("metrics", "selection", "loss", "eval_sums", "finish")
             if not hasattr(task, a)]
  if missing:
    raise TaskError(f"task {name!r} is not a task: it lacks {missing} (subclass jpq_jax.tasks.Task)")
  if "loss" not in task.metrics or task.selection not in task.metrics:
    raise TaskError(f"task {name!r}: its metrics {sorted(task.metrics)} must include 'loss' and "
                    f"its selection metric {task.selection!r}")
  return task
