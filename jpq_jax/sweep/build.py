"""What a sweep config builds: its search space, model, layer table and dataset; a run's config.

Both the driver and :func:`jpq_jax.checkpoint.restore_member` (which rebuilds a finished member's
model) use these; this module imports neither of them, so they do not import each other.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from jpq_jax.ctx import Ctx
from jpq_jax.layers import SearchSpace
from jpq_jax.sweep.config import _field_error, resolve_method
from jpq_jax.table import trace_table


def _space(cfg) -> SearchSpace:
  """The :class:`~jpq_jax.SearchSpace` of ``cfg.model``.

  Raises:
    ConfigError: an invalid search space (names the ``model`` field at fault).
  """
  m = cfg["model"]
  inp = tuple(m.get("input_precisions") or ()) or None
  try:
    return SearchSpace(w_precisions=tuple(m["w_precisions"]), a_precisions=tuple(m["a_precisions"]),
                       input_precisions=inp, granularity=m["granularity"],
                       clip_init=float(m["clip_init"]), input_clip_init=float(m["input_clip_init"]),
                       input_signed=bool(m["input_signed"]),
                       input_signed_clips=tuple(m["input_signed_clips"]),
                       activation_mixture=m.get("activation_mixture", "fused"),
                       keep_alive=m.get("keep_alive", 0))
  except ValueError as e:
    field = "model"
    for f in ("w_precisions", "a_precisions", "input_precisions", "granularity", "clip",
              "input_signed_clips", "activation_mixture", "keep_alive"):
      if f in str(e):
        field = f"model.{f}" if f != "clip" else "model.clip_init"
        break
    raise _field_error(field, str(e)) from None


def load_dataset(cfg):
  """The dataset of ``cfg`` through :func:`jpq_jax.data.load`.

  Args:
    cfg: a sweep config (dict or ConfigDict): ``data.name``, ``data.data_dir`` (empty: None),
      ``data.options`` (keyword options of the dataset) and ``seed`` (split and subset seed).

  Returns:
    The :class:`jpq_jax.data.Dataset`.

  Raises:
    ValueError: unknown dataset name.
    ConfigError: an option (``data.options``) the dataset does not take.
    jpq_jax.data.DatasetNotFoundError: the data is not present; the message says how to get it.
    jpq_jax.data.DataError: malformed data.
  """
  # Imported lazily: the data package pulls in tensorflow-datasets, which the library does not need.
  from jpq_jax import data as data_lib  # pylint: disable=import-outside-toplevel
  opts = dict(cfg["data"].get("options") or {})
  data_dir = cfg["data"].get("data_dir") or None
  if data_dir and not os.path.exists(os.path.expanduser(str(data_dir))):
    # Before TFDS looks into it (and logs its own warnings about a missing folder).
    raise data_lib.DatasetNotFoundError(
        f"data.data_dir={data_dir!r} does not exist (dataset {cfg['data']['name']!r}); give the "
        f"path of the data, e.g. `jpq sweep ... data.data_dir=/path/to/cifar10-jpeg.zip` or "
        f"data_dir= in the config file")
  try:
    return data_lib.load(cfg["data"]["name"], data_dir=data_dir, seed=int(cfg["seed"]), **opts)
  except TypeError as e:
    if "does not take option" not in str(e):
      raise
    raise _field_error("data.options", str(e)) from None
  except data_lib.DatasetNotFoundError as e:
    # The data layer speaks Python (load(..., data_dir=...)); a sweep is configured by fields.
    raise data_lib.DatasetNotFoundError(
        f"{e}\n  (in a sweep config these are data.name={cfg['data']['name']!r} and "
        f"data.data_dir={data_dir!r}; from the command line: `jpq sweep ... "
        f"data.data_dir=PATH`)") from None


def _loader_cls(cfg=None):
  """The loader factory of a config: ``fn(split, batch_size, **loader_kwargs) -> loader``.

  :func:`jpq_jax.data.make_loader` with ``data.loader``, ``data.workers`` and
  ``data.worker_type`` (their defaults without a config); imported when first needed (see
  :func:`load_dataset`).
  """
  import functools  # pylint: disable=import-outside-toplevel
  from jpq_jax.data import grain_loader  # pylint: disable=import-outside-toplevel
  d = cfg["data"] if cfg is not None else {}
  return functools.partial(grain_loader.make_loader, kind=str(d.get("loader", "auto")),
                           workers=int(d.get("workers", 0)),
                           worker_type=str(d.get("worker_type", "threads")))


def run_config(workdir: str) -> Dict[str, Any]:
  """The config a sweep in ``workdir`` trained with (its method resolved), from ``config.json``.

  The model of a member must be built from this one, not from the config as given: a method
  rewrites the search space (``fixed`` sets the weight and activation precisions from
  ``fixed_bits``, ``mixprec`` drops the 0 bit, ...; see :func:`resolve_method`).

  Args:
    workdir: the sweep's work directory.

  Returns:
    The resolved config as a dict (``resolved_config`` of ``config.json``; for a work directory
    written before that was recorded, :func:`resolve_method` of its ``config``).

  Raises:
    FileNotFoundError: ``workdir`` holds no ``config.json``.
    ValueError: ``config.json`` is not valid JSON or holds no config.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{workdir!r} holds no config.json: not a sweep work directory")
  try:
    with open(path) as f:
      saved = json.load(f)
  except ValueError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from None
  if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
    raise ValueError(f"{path}: holds no sweep config")
  if isinstance(saved.get("resolved_config"), dict):
    return saved["resolved_config"]
  return resolve_method(ml_collections.ConfigDict(saved["config"])).to_dict()


def build_model_from_config(cfg, num_classes: int, input_shape: Sequence[int]):
  """The model, its layer table and a sample input (batch 1) of a sweep config (dict or ConfigDict).

  Args:
    cfg: a sweep config; its ``model`` section gives the model name and the search space.
    num_classes: classifier outputs.
    input_shape: shape of one input example, without the batch axis.

  Returns:
    ``(model, table, sample)``: the Flax module, its :class:`jpq_jax.table.LayerTable` and a
    float32 array of zeros of shape ``(1, *input_shape)``.

  Raises:
    ConfigError: an invalid search space in the ``model`` section (names the field).
    ValueError: unknown model name (or an import path that does not import).
    jpq_jax.ConversionError: a user's plain Flax model that cannot be converted.
  """
  from jpq_jax.models import build_model  # pylint: disable=import-outside-toplevel
  sample = jnp.zeros((1,) + tuple(input_shape), jnp.float32)
  # A built-in, registered or import-path model ("pkg.mod:Class"; a plain Flax one is converted).
  model = build_model(cfg["model"]["name"], _space(cfg), int(num_classes), sample,
                      cfg["model"].get("kwargs") or {})
  return model, trace_table(model, sample), sample


def user_float_variables(model, path: str):
  """A user's own trained variables (``warmup.user_checkpoint``) as the converted model's float ones.

  Args:
    model: the converted model (:class:`jpq_jax.Searchable`).
    path: an Orbax tree of the user's model's ``{'params', 'batch_stats'}``
      (:func:`jpq_jax.checkpoint.save_tree`); for a Flax NNX model, its state as a pure dict
      (``nnx.to_pure_dict(nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat)))``).

  Returns:
    ``{'params', 'batch_stats'}`` for the converted model (:func:`jpq_jax.convert_variables`).

  Raises:
    ConfigError: the model is not a converted plain Flax model.
    ValueError: the variables do not belong to the model.
  """
  from jpq_jax import checkpoint as ckpt_lib  # pylint: disable=import-outside-toplevel
  from jpq_jax.convert import Searchable, convert_variables  # pylint: disable=import-outside-toplevel
  if not isinstance(model, Searchable):
    raise _field_error("warmup.user_checkpoint", f"model {type(model).__name__} is a jpq model; "
                       "this field takes the variables of a plain Flax model")
  if type(model).__module__ == "jpq_jax.nnx":
    from jpq_jax import nnx as jpq_nnx  # pylint: disable=import-outside-toplevel
    return jpq_nnx.float_variables_from_state(model, ckpt_lib.load_tree(path))
  return convert_variables(model, ckpt_lib.load_tree(path))


def fixed_variables_template(model, sample, n_members: int):
  """Abstract ``{'params', 'precision'}`` of ``n_members`` stacked fixed-mode members.

  Args:
    model: the Flax model.
    sample: an input batch for the model (e.g. the ``sample`` of :func:`build_model_from_config`).
    n_members: number of stacked members (size of the leading axis).

  Returns:
    A ``{'params', 'precision'}`` tree of ``jax.ShapeDtypeStruct`` (nothing is computed), each
    leaf with a leading ``(n_members,)`` axis.
  """
  v = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, Ctx.fixed()), sample)
  v = {k: v[k] for k in ("params", "precision")}
  return jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct((n_members,) + s.shape, s.dtype), v)


# Classification's options that older configs give as train fields (their defaults there).
_LEGACY_TASK_FIELDS = {"label_smoothing": 0.0, "class_weights": False}


def build_task(cfg, dataset=None):
  """The :class:`jpq_jax.tasks.Task` of a sweep config, bound to ``dataset`` when given.

  ``task.name`` and ``task.options``; classification's ``label_smoothing`` and ``class_weights``
  may also come from the ``train`` fields of the same names (configs written before tasks), but
  not from both with different values.

  Args:
    cfg: a sweep config (dict or ConfigDict).
    dataset: the run's dataset (class weights, number of classes), or None (the checks only).

  Returns:
    The task.

  Raises:
    ConfigError: an unknown task, a bad import path, an option it does not take or refuses
      (naming ``task.name`` or ``task.options``), or a ``train`` field that contradicts it.
  """
  from jpq_jax import tasks as tasks_lib  # pylint: disable=import-outside-toplevel
  tc = cfg.get("task") or {}
  name = str(tc.get("name") or "classification")
  options = dict(tc.get("options") or {})
  factory = tasks_lib.TASKS.get(name)
  train = cfg["train"]
  for k, default in _LEGACY_TASK_FIELDS.items():
    v = train.get(k, default)
    if v == default:
      continue
    if factory is not tasks_lib.Classification:
      raise _field_error(f"train.{k}", f"is an option of the classification task, not of task "
                         f"{name!r}")
    if k in options and options[k] != v:
      raise _field_error(f"task.options.{k}", f"{options[k]!r} contradicts train.{k}={v!r}; give "
                         "it once")
    options[k] = v
  try:
    task = tasks_lib.get_task(name, options)
    return task.prepare(dataset) if dataset is not None else task
  except tasks_lib.TaskError as e:
    raise _field_error(f"task.options.{e.option}" if e.option else "task.name", str(e)) from None


def monitor_of(cfg, task) -> str:
  """The metric each phase selects its best epoch on: ``train.monitor``, ``auto`` resolved.

  Args:
    cfg: a sweep config; task: its task (:func:`build_task`).

  Returns:
    A metric of the task (``auto``: :attr:`jpq_jax.tasks.Task.selection`).
  """
  m = str(cfg["train"].get("monitor", "auto") or "auto")
  return task.selection if m == "auto" else m


def pareto_metric_of(cfg, task) -> str:
  """The results' metric that chooses the front: ``sweep.pareto_metric``, ``auto`` resolved.

  Args:
    cfg: a sweep config; task: its task (:func:`build_task`).

  Returns:
    ``<split>_<metric>`` (``auto``: ``val_<task.selection>``, e.g. ``val_acc``, ``val_loss``).
  """
  m = str(cfg["sweep"].get("pareto_metric", "auto") or "auto")
  return f"val_{task.selection}" if m == "auto" else m
