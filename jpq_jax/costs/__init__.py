"""Cost models of the search: pure, differentiable functions ``cost(table, theta) -> scalar``.

Costs know nothing about Flax (DESIGN.md principle 4): they read the static
:class:`~jpq_jax.table.LayerTable` and the theta mapping ``{group name: GroupTheta}`` returned by
:func:`jpq_jax.thetas`, and are jit-able, differentiable and vmap-able over a leading member axis
of theta. Formulas, epsilons and gradient behaviour follow the reference (METHOD.md §2.5, §5).

Main entry points:

* :func:`get_cost` / :func:`list_costs` / :func:`cost_unit` / :data:`COST_UNITS`: the registry
  (built-ins ``size``, ``size_nodetach``, ``params``, ``macs``, ``bitops``, ``mpic``,
  ``mpic_energy``, ``ne16``);
* :func:`register_cost` / :func:`register_lut_cost`: add a hardware model;
* :func:`validate_cost` / :func:`bind_cost`: check a model against a table up front;
* :func:`all_costs`: every registered cost at once (cheap under ``jit(vmap(...))``);
* :func:`effective_channels`: ``Cout_eff`` per sharing group;
* :func:`cost_report` / :func:`format_cost_report`: per-layer and total reports with units;
* :func:`reference_costs`: every cost of the top-precision network, the scale of lambda.
"""

from jpq_jax.costs.channels import (UNQUANTIZED_INPUT_BITS, LayerView, effective_channels,
                                    layer_views)
from jpq_jax.costs.hardware import MPIC_LUT, ne16_kernel_latency
from jpq_jax.costs.registry import (COST_UNITS, CostModel, all_costs, bind_cost, cost_unit,
                                    cost_units, get_cost, list_costs, per_layer_costs,
                                    register_cost, register_lut_cost, unregister_cost,
                                    validate_cost)
from jpq_jax.costs.report import (argmax_theta, cost_report, format_cost_report, reference_costs,
                                  top_precision_theta)

__all__ = [
    "COST_UNITS", "CostModel", "LayerView", "MPIC_LUT", "UNQUANTIZED_INPUT_BITS", "all_costs",
    "argmax_theta", "bind_cost", "cost_report", "cost_unit", "cost_units", "effective_channels",
    "format_cost_report", "get_cost", "layer_views", "list_costs", "ne16_kernel_latency",
    "per_layer_costs", "reference_costs", "register_cost", "register_lut_cost",
    "top_precision_theta", "unregister_cost", "validate_cost",
]
