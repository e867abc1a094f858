"""jpq_jax: joint channel pruning and channel-wise mixed-precision quantization search in JAX/Flax.

The public API, re-exported here:

* search-space layers (:mod:`jpq_jax.layers`): :class:`Ctx`, :class:`QTensor`, :class:`SearchSpace`,
  :class:`Group`, :class:`InputQuantizer`, :class:`Conv`, :class:`Dense`, :class:`Add`;
* quantizers (:mod:`jpq_jax.quant`) and precision choices (:mod:`jpq_jax.choice`);
* cost models and their registry (:mod:`jpq_jax.costs`);
* the static layer table (:func:`trace_table`), theta per group (:func:`thetas`), freezing
  (:func:`freeze`) and conversion of a float model to search form (:func:`to_search`);
* deployment export to a pruned integer bundle with numpy inference (:mod:`jpq_jax.export`), to
  ONNX / QONNX and with integer-only requantization (:mod:`jpq_jax.deploy`);
* the Pareto sweep driver (:func:`run_sweep`) and single-member restore (:func:`restore_member`);
* tasks, the loss and metrics a sweep trains and selects on (:mod:`jpq_jax.tasks`);
* automatic conversion of a plain Flax Linen model (:func:`searchable`, :func:`convert_variables`)
  and user models for the sweep (:func:`register_model`, or an import path in the config);
* Flax NNX models (:mod:`jpq_jax.nnx`): :func:`nnx_searchable` makes an ``nnx.Module`` searchable,
  with its search state as NNX variables (``jpq_jax.nnx.ArchLogits``, ``jpq_jax.nnx.Precision``);
* :func:`compiler_options`: the XLA options jpq compiles its steps with (pass them to ``jax.jit``
  when you compile your own training step around jpq layers).
"""

import importlib as _importlib

# Lazy: ``import jpq_jax`` is cheap (the ``jpq`` command's help, report and inspect start in well
# under a second); JAX, Flax and Orbax load when a name that needs them is first used (PEP 562).
_SUBMODULES = ("arch", "checkpoint", "choice", "compare", "compiler", "convert", "costs", "data",
               "deploy", "export", "fold", "layers", "models", "nnx", "ops", "pareto", "pit",
               "quant", "sweep", "table", "tasks", "train")
_NAMES = {
    "GroupTheta": "arch", "freeze": "arch", "precision_summary": "arch", "thetas": "arch",
    "fold_batchnorm": "fold", "to_fixed": "fold", "to_search": "fold",
    "restore_member": "checkpoint", "compiler_options": "compiler",
    "ConfigError": "sweep", "SweepInterrupted": "sweep", "base_config": "sweep",
    "demo_config": "sweep", "run_sweep": "sweep",
    "MODES": "layers", "Add": "layers", "Conv": "layers", "Ctx": "layers", "Dense": "layers",
    "Group": "layers", "InputQuantizer": "layers", "QTensor": "layers", "SearchSpace": "layers",
    "GroupRecord": "table", "LayerRecord": "table", "LayerTable": "table",
    "trace_table": "table",
    "ConversionError": "convert", "Searchable": "convert", "convert_variables": "convert",
    "searchable": "convert", "register_model": "models", "nnx_searchable": "nnx",
}

__version__ = "0.1.0"

__all__ = [
    "Add", "Conv", "Ctx", "Dense", "Group", "GroupRecord", "GroupTheta", "InputQuantizer",
    "LayerRecord", "LayerTable", "MODES", "QTensor", "SearchSpace", "choice", "freeze",
    "compare", "compiler_options", "costs", "data", "deploy", "export", "pit", "ops",
    "precision_summary",
    "restore_member", "run_sweep", "base_config", "demo_config", "ConfigError", "SweepInterrupted",
    "quant", "tasks", "thetas",
    "trace_table", "fold_batchnorm", "to_fixed", "to_search",
    "ConversionError", "Searchable", "convert_variables", "searchable", "register_model",
    "nnx", "nnx_searchable",
]


def __getattr__(name):
  if name in _NAMES:
    value = getattr(_importlib.import_module(f"jpq_jax.{_NAMES[name]}"), name)
  elif name in _SUBMODULES:
    value = _importlib.import_module(f"jpq_jax.{name}")
  else:
    raise AttributeError(f"module 'jpq_jax' has no attribute {name!r}")
  globals()[name] = value  # later lookups skip __getattr__
  return value


def __dir__():
  return sorted(set(globals()) | set(__all__) | set(_SUBMODULES))
