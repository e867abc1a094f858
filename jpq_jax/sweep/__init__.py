"""The Pareto sweep: N members (lambdas x seeds) trained together, in one job, one compile.

``jpq_jax.sweep.run_sweep(config, workdir)`` runs the protocol of METHOD.md §6 (warm-up, search,
fine-tuning; or a baseline method) for every member and writes the results and the Pareto front.
The package's modules, in the order a run uses them:

* :mod:`~jpq_jax.sweep.config`: every field with its defaults (:func:`base_config`,
  :func:`demo_config`), what a method resolves to (:func:`resolve_method`), the members;
* :mod:`~jpq_jax.sweep.validation`: :func:`validate_config` (fields, names, ranges, the work
  directory's run);
* :mod:`~jpq_jax.sweep.build`: the model, layer table and dataset of a config, a run's config;
* :mod:`~jpq_jax.sweep.driver`: :class:`Sweep` and :func:`run_sweep`, the protocol top to bottom;
* :mod:`~jpq_jax.sweep.phases`: one training phase (data, step, end-of-epoch rule, selection) and
  its epoch loop; :mod:`~jpq_jax.sweep.stages`: the warm-up, the conversions, PIT's stages;
* :mod:`~jpq_jax.sweep.states`: the members' stacked states (initial, padding, templates, restore);
* :mod:`~jpq_jax.sweep.executors`: how the member axis runs (``loop``, ``vmap``, chunked,
  ``sharded`` over a mesh); :mod:`~jpq_jax.sweep.distributed`: several processes;
* :mod:`~jpq_jax.sweep.interrupt`: SIGINT/SIGTERM, the mid-epoch checkpoint, the tests' kill points;
* :mod:`~jpq_jax.sweep.records`: ``metrics.jsonl``, TensorBoard, ``config.json``, ``final/``,
  member status; :mod:`~jpq_jax.sweep.results`: ``results.json``;
  :mod:`~jpq_jax.sweep.progress`: what a running sweep prints.

Everything the run produces goes to its work directory: ``config.json`` (config as given and
resolved, library versions, command and start time of the run; each later invocation in the same
directory is appended to its ``resumed`` list), ``metrics.jsonl``, ``checkpoints/`` (Orbax, every
epoch and phase boundary), ``warmup/`` (the float model, reusable by other runs), ``final/``
(fine-tuned members), ``results.json`` and the Pareto front (``pareto.json``, ``pareto.csv``,
``pareto.png``).

The names below are re-exported here and loaded on first use (PEP 562), so that importing the
package (e.g. for :data:`~jpq_jax.sweep.config.FREE_FORM_GROUPS`, or from
:mod:`jpq_jax.checkpoint`, which the driver imports) loads no module it does not need.
"""

import importlib as _importlib

__all__ = [
    "STRATEGIES", "base_config", "demo_config", "validate_config", "ConfigError", "run_sweep",
    "SweepInterrupted",
    "build_model_from_config", "fixed_variables_template", "choose_strategy", "make_executor",
    "load_dataset", "library_versions", "init_distributed", "METHODS", "resolve_method",
    "run_config",
]

# name -> the package module that defines it. The private names are those that tests/,
# benchmarks/ and experiments/ scripts reach for (they were module globals of the former
# jpq_jax/sweep.py).
_NAMES = {
    "STRATEGIES": "config", "METHODS": "config", "FREE_FORM_GROUPS": "config",
    "KILL_WHEN": "config", "STOP_SIGNALS": "config", "ConfigError": "config",
    "base_config": "config", "demo_config": "config", "temperature_decay_of": "config",
    "members_of": "config", "resolve_method": "config", "_field_error": "config",
    "validate_config": "validation", "RESUME_MAY_CHANGE": "validation",
    "_writable": "validation", "_holds_work": "validation",
    "build_model_from_config": "build", "fixed_variables_template": "build",
    "load_dataset": "build", "run_config": "build", "_space": "build",
    "init_distributed": "distributed", "_host": "distributed", "_host_tree": "distributed",
    "choose_strategy": "executors", "make_executor": "executors", "make_mesh": "executors",
    "LoopExecutor": "executors", "ChunkedExecutor": "executors", "VmapExecutor": "executors",
    "_stack": "executors", "_unstack": "executors", "_to_host": "executors",
    "SweepInterrupted": "interrupt", "kill_point": "interrupt", "signal_point": "interrupt",
    "PHASE_TAGS": "phases",
    "library_versions": "records", "annotate_status": "records", "_Log": "records",
    "Sweep": "driver", "run_sweep": "driver",
}
# Modules the former jpq_jax/sweep.py imported under these names (benchmarks use ``sweep.T``).
_MODULES = {"T": "jpq_jax.train", "ckpt_lib": "jpq_jax.checkpoint"}


def __getattr__(name):
  if name in _NAMES:
    value = getattr(_importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
  elif name in _MODULES:
    value = _importlib.import_module(_MODULES[name])
  else:
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
  globals()[name] = value  # later lookups skip __getattr__
  return value


def __dir__():
  return sorted(set(globals()) | set(_NAMES) | set(_MODULES))
