"""jpq_jax: joint channel pruning and channel-wise mixed-precision quantization search in JAX/Flax.

The public API, re-exported here:

* search-space layers (:mod:`jpq_jax.layers`): :class:`Ctx`, :class:`QTensor`, :class:`SearchSpace`,
  :class:`Group`, :class:`InputQuantizer`, :class:`Conv`, :class:`Dense`, :class:`Add`;
* quantizers (:mod:`jpq_jax.quant`) and precision choices (:mod:`jpq_jax.choice`);
* cost models and their registry (:mod:`jpq_jax.costs`);
* the static layer table (:func:`trace_table`), theta per group (:func:`thetas`), freezing
  (:func:`freeze`) and conversion of a float model to search form (:func:`to_search`);
* deployment export to a pruned integer bundle with numpy inference (:mod:`jpq_jax.export`);
* the Pareto sweep driver (:func:`run_sweep`) and single-member restore (:func:`restore_member`);
* :func:`compiler_options`: the XLA options jpq compiles its steps with (pass them to ``jax.jit``
  when you compile your own training step around jpq layers).
"""

from jpq_jax import choice, compare, costs, export, ops, pit, quant
from jpq_jax.arch import GroupTheta, freeze, precision_summary, thetas
from jpq_jax.fold import fold_batchnorm, to_fixed, to_search
from jpq_jax.checkpoint import restore_member
from jpq_jax.compiler import compiler_options
from jpq_jax.sweep import ConfigError, base_config, demo_config, run_sweep
from jpq_jax.layers import (MODES, Add, Conv, Ctx, Dense, Group, InputQuantizer, QTensor,
                            SearchSpace)
from jpq_jax.table import GroupRecord, LayerRecord, LayerTable, trace_table

__version__ = "0.1.0"

__all__ = [
    "Add", "Conv", "Ctx", "Dense", "Group", "GroupRecord", "GroupTheta", "InputQuantizer",
    "LayerRecord", "LayerTable", "MODES", "QTensor", "SearchSpace", "choice", "freeze",
    "compare", "compiler_options", "costs", "export", "pit", "ops", "precision_summary", "restore_member", "run_sweep", "base_config", "demo_config", "ConfigError", "quant", "thetas", "trace_table", "fold_batchnorm", "to_fixed", "to_search",
]
