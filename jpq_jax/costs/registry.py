"""The cost registry: named cost models, their units, validation against a table, evaluation.

A cost model is a pure function ``cost(table, theta) -> scalar`` (DESIGN.md principle 4). Most
models are sums over layers of a per-layer function of a :class:`LayerView`; registering the
per-layer function (``per_layer=True``, the default) also gives per-layer breakdowns in reports.

Built-in models (units in brackets):

==================  ===========  ==========================================================
name                unit         what
==================  ===========  ==========================================================
``size``            bits         weight memory, reference formula (Cin_eff detached)
``size_nodetach``   bits         same value, Cin_eff attached (deviation, see size.py)
``params``          weights      effective weight count (PIT's size regulariser, float)
``macs``            MACs         effective multiply-accumulates
``bitops``          bitops       MACs x input activation bits x weight bits
``mpic``            cycles       MPIC latency, LUT of MACs/cycle over (a bits, w bits)
``mpic_energy``     J            MPIC cycles / 250 MHz x 5.3825 mW
``ne16``            cycles       NE16 analytical latency model (8-bit activations)
==================  ===========  ==========================================================

Adding a model::

  import jpq_jax.costs as C
  # a LUT over (input activation bits, weight bits): MACs per cycle ...
  C.register_lut_cost("my_mcu", {8: {2: 3.0, 4: 2.5, 8: 2.0}}, unit="cycles")
  # ... or a cost per MAC (e.g. pJ per MAC)
  C.register_lut_cost("my_energy", {(8, 8): 1.1, (8, 4): 0.6}, mode="cost", unit="pJ")
  # any function of a layer (a LayerView: record, theta_w, n_w, cout_eff, cin_eff, theta_in, ...)
  C.register_cost("weights_kept", lambda v: v.cout_eff * v.record.kernel[0], unit="weights")

A LUT that lacks a (bits, bits) pair the table's search space can produce fails when the cost is
bound to a table (:func:`validate_cost`, :func:`bind_cost`, or the first call of ``get_cost(name)``)
with an error naming the layer and the missing pairs.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from jpq_jax.costs import hardware, size
from jpq_jax.costs.channels import LayerView, check_table, effective_channels, layer_views
from jpq_jax.table import LayerTable

__all__ = [
    "CostModel", "register_cost", "register_lut_cost", "unregister_cost", "get_cost", "bind_cost",
    "list_costs", "cost_unit", "cost_units", "validate_cost", "all_costs", "per_layer_costs",
    "COST_UNITS",
]


@dataclasses.dataclass(frozen=True, eq=False)
class CostModel:
  """A registered cost model; calling it computes the cost.

  Attributes:
    name: registry name.
    fn: per-layer ``fn(view) -> scalar`` when ``per_layer``, else ``fn(table, theta) -> scalar``.
    unit: unit of the value (e.g. ``"bits"``, ``"cycles"``).
    description: one line shown by reports and :func:`list_costs`.
    per_layer: whether ``fn`` is per layer (then the total is the sum over layers).
    validator: optional ``validator(table)`` raising ValueError when the model cannot cost the table.
  """
  name: str
  fn: Callable
  unit: str
  description: str = ""
  per_layer: bool = True
  validator: Optional[Callable[[LayerTable], None]] = None

  def validate(self, table: LayerTable) -> None:
    """Check that this model can cost ``table``; raises ValueError otherwise."""
    _validate_cached(self, table)

  def __call__(self, table: LayerTable, theta: Mapping) -> jax.Array:
    """Total cost of the architecture ``theta`` of ``table`` (scalar, jit/vmap/grad friendly).

    Args:
      table: the model's :class:`LayerTable` (static).
      theta: ``{group name: GroupTheta}`` from :func:`jpq_jax.thetas`.

    Returns:
      Scalar in :attr:`unit`.
    """
    self.validate(table)
    if not self.per_layer:
      return jnp.asarray(self.fn(table, theta))
    return sum(self.layers(table, theta))

  def layers(self, table: LayerTable, theta: Mapping,
             views: Optional[Sequence[LayerView]] = None) -> Tuple[jax.Array, ...]:
    """Per-layer costs in table order (only for per-layer models).

    Raises:
      ValueError: the model is not per layer.
    """
    if not self.per_layer:
      raise ValueError(f"cost {self.name!r} is a whole-network function; it has no per-layer values")
    self.validate(table)
    if views is None:
      views = layer_views(table, theta)
    return tuple(jnp.asarray(self.fn(v)) for v in views)


@functools.lru_cache(maxsize=256)
def _validate_cached(model: CostModel, table: LayerTable) -> None:
  # Validation is pure Python on static data; caching makes repeated traces free. Failures are
  # not cached (lru_cache does not store exceptions).
  check_table(table)
  if model.validator is not None:
    model.validator(table)


_REGISTRY: Dict[str, CostModel] = {}


def register_cost(name: str, fn: Callable, *, unit: str, description: str = "",
                  per_layer: bool = True, validator: Optional[Callable[[LayerTable], None]] = None,
                  overwrite: bool = False) -> CostModel:
  """Register a cost model under ``name``.

  Args:
    name: registry name (used by :func:`get_cost`, reports and sweep configs).
    fn: with ``per_layer=True`` a function ``fn(view: LayerView) -> scalar`` of one layer (the total
      is the sum over layers); otherwise ``fn(table, theta) -> scalar`` for the whole network. It
      must use ``jax.numpy`` only so the cost stays differentiable, jit-able and vmap-able.
    unit: unit of the value, e.g. ``"bits"``, ``"cycles"``, ``"J"``.
    description: one line for reports.
    per_layer: see ``fn``.
    validator: optional ``validator(table)`` that raises ValueError when the model cannot cost a
      table (called when the cost is bound to a table).
    overwrite: allow replacing an existing model of that name.

  Returns:
    The registered :class:`CostModel`.

  Raises:
    ValueError: the name is taken (and not ``overwrite``), empty, or ``fn`` is not callable.
  """
  if not isinstance(name, str) or not name:
    raise ValueError(f"cost name must be a non-empty string, got {name!r}")
  if not callable(fn):
    raise ValueError(f"cost {name!r}: fn must be callable, got {fn!r}")
  if name in _REGISTRY and not overwrite:
    raise ValueError(f"a cost named {name!r} is already registered (pass overwrite=True to replace "
                     f"it); registered: {list_costs()}")
  model = CostModel(name=name, fn=fn, unit=unit, description=description, per_layer=per_layer,
                    validator=validator)
  _REGISTRY[name] = model
  return model


def register_lut_cost(name: str, lut: hardware.LutLike, *, mode: str = "throughput",
                      unit: str = "cycles", description: str = "",
                      overwrite: bool = False) -> CostModel:
  """Register a hardware model given by a LUT over (input activation bits, weight bits).

  The layer cost is ``sum_a theta_in[a] * MACs * sum_{w != 0} N_w / (Cout_eff + 1e-6) * c(a, w)``
  (the MPIC structure, METHOD.md §5.3), with ``c = 1 / LUT`` for ``mode="throughput"`` (MACs per
  unit, e.g. MACs/cycle) or ``c = LUT`` for ``mode="cost"`` (cost per MAC).

  Args:
    name: registry name.
    lut: ``{a_bits: {w_bits: value}}``, ``{(a_bits, w_bits): value}`` or ``f(a_bits, w_bits)``.
    mode: ``"throughput"`` or ``"cost"``.
    unit: unit of the result (``"cycles"`` for a MACs/cycle LUT).
    description: one line for reports.
    overwrite: allow replacing an existing model.

  Returns:
    The registered :class:`CostModel`.

  Raises:
    ValueError: malformed LUT or mode, or the name is taken.
  """
  if mode not in ("throughput", "cost"):
    raise ValueError(f"LUT mode must be 'throughput' or 'cost', got {mode!r}")
  flat = hardware.normalize_lut(lut)

  def validator(table: LayerTable) -> None:
    missing = hardware.lut_missing_pairs(flat, table)
    if missing:
      lines = "; ".join(f"{l}: {list(p)}" for l, p in missing.items())
      have = "a function" if callable(flat) else sorted(flat)
      raise ValueError(
          f"cost {name!r}: its LUT lacks (activation bits, weight bits) pairs that this table's "
          f"search space can produce -- {lines}. LUT pairs: {have}. Add the pairs or restrict the "
          "precisions of the search space")

  def fn(v: LayerView) -> jax.Array:
    return hardware.lut_layer_cost(v, flat, mode)

  desc = description or f"LUT ({mode}) over (input activation bits, weight bits)"
  return register_cost(name, fn, unit=unit, description=desc, validator=validator,
                       overwrite=overwrite)


def unregister_cost(name: str) -> None:
  """Remove a registered model (mainly for tests).

  Built-in models can be removed too; :class:`CostModel` objects already obtained stay usable.

  Args:
    name: registry name of the model to remove.

  Returns:
    None.

  Raises:
    KeyError: unknown name; the message lists the registered names.
  """
  _get_model(name)
  del _REGISTRY[name]


def _get_model(name: str) -> CostModel:
  try:
    return _REGISTRY[name]
  except KeyError:
    raise KeyError(f"unknown cost {name!r}; registered costs: {list_costs()} (add one with "
                   "jpq_jax.costs.register_cost or register_lut_cost)") from None


def get_cost(name: str) -> CostModel:
  """The cost model called ``name``: a callable ``cost(table, theta) -> scalar``.

  The model validates the table on first use (at trace time, cached per table).

  Args:
    name: a registered name (see :func:`list_costs`).

  Returns:
    The :class:`CostModel` (with ``.unit``, ``.description``, ``.layers(table, theta)``).

  Raises:
    KeyError: unknown name; the message lists the registered names.
  """
  return _get_model(name)


def bind_cost(name: str, table: LayerTable) -> Callable[[Mapping], jax.Array]:
  """Validate ``name`` against ``table`` now and return ``cost(theta) -> scalar``.

  Args:
    name: registered cost name.
    table: the model's :class:`LayerTable`.

  Returns:
    A function of theta only.

  Raises:
    KeyError: unknown name.
    ValueError: the model cannot cost this table (no searchable layer, missing LUT pairs, ...).
  """
  model = _get_model(name)
  model.validate(table)
  return functools.partial(model.__call__, table)


def validate_cost(name: str, table: LayerTable) -> None:
  """Check that cost ``name`` can be computed on ``table``.

  Args:
    name: registered cost name.
    table: the model's :class:`LayerTable`.

  Raises:
    KeyError: unknown name.
    ValueError: no searchable layer, or the model (e.g. a LUT) does not cover the table's search
      space; the message says which layer and which (bits, bits) pairs.
  """
  _get_model(name).validate(table)


def list_costs() -> List[str]:
  """Names of all registered cost models, in registration order."""
  return list(_REGISTRY)


def cost_unit(name: str) -> str:
  """Unit of cost ``name`` (e.g. ``"bits"``).

  Args:
    name: a registered cost name (see :func:`list_costs`).

  Returns:
    The model's unit string, e.g. ``"bits"``, ``"cycles"``, ``"J"``.

  Raises:
    KeyError: unknown name; the message lists the registered names.
  """
  return _get_model(name).unit


def cost_units() -> Dict[str, str]:
  """``{name: unit}`` of every registered cost (a fresh dict; see also :data:`COST_UNITS`)."""
  return {n: m.unit for n, m in _REGISTRY.items()}


class _Units(Mapping):
  """Live read-only ``{name: unit}`` view of the registry (follows later registrations)."""

  def __getitem__(self, k):
    return cost_unit(k)

  def __iter__(self):
    return iter(list(_REGISTRY))

  def __len__(self):
    return len(_REGISTRY)

  def __repr__(self):
    return repr(cost_units())


COST_UNITS: Mapping[str, str] = _Units()


def all_costs(table: LayerTable, theta: Mapping,
              names: Optional[Sequence[str]] = None) -> Dict[str, jax.Array]:
  """Every registered cost (or ``names``) of one architecture.

  Shared quantities (effective channels, layer views) are built once. Pure and jit/vmap-able,
  e.g. ``jax.jit(jax.vmap(lambda th: all_costs(table, th)))(theta_members)``.

  Args:
    table: the model's :class:`LayerTable` (static).
    theta: ``{group name: GroupTheta}``.
    names: subset of registered names (default: all).

  Returns:
    ``{name: scalar}``.

  Raises:
    KeyError: unknown name.
    ValueError: a model cannot cost this table.
  """
  names = list_costs() if names is None else list(names)
  models = [_get_model(n) for n in names]
  for m in models:
    m.validate(table)
  views = layer_views(table, theta, effective_channels(table, theta))
  out = {}
  for m in models:
    out[m.name] = sum(m.layers(table, theta, views)) if m.per_layer else m(table, theta)
  return out


def per_layer_costs(table: LayerTable, theta: Mapping,
                    names: Optional[Sequence[str]] = None) -> Dict[str, Tuple[jax.Array, ...]]:
  """Per-layer values of every per-layer cost (whole-network costs are skipped).

  Args:
    table: the model's :class:`LayerTable`.
    theta: ``{group name: GroupTheta}``.
    names: subset of registered names (default: all).

  Returns:
    ``{name: (value per layer in table order)}``.
  """
  names = list_costs() if names is None else list(names)
  views = layer_views(table, theta)
  return {n: _get_model(n).layers(table, theta, views) for n in names if _get_model(n).per_layer}


# ---- built-ins ----------------------------------------------------------------------------------
def _register_builtins() -> None:
  register_cost("size", size.layer_size_bits, unit="bits",
                description="weight memory (bits), Cin_eff detached as in the reference")
  register_cost("size_nodetach", size.layer_size_bits_nodetach, unit="bits",
                description="weight memory (bits), Cin_eff not detached (deviation)")
  register_cost("params", size.layer_params, unit="weights",
                description="effective weight count (PIT size, no bits)")
  register_cost("macs", size.layer_macs, unit="MACs", description="effective multiply-accumulates")
  register_cost("bitops", hardware.bitops_layer, unit="bitops",
                description="MACs x input activation bits x weight bits")
  register_lut_cost("mpic", hardware.MPIC_LUT, mode="throughput", unit="cycles",
                    description="MPIC latency, LUT of MACs/cycle (Ottavi et al.)")
  mpic_validator = _REGISTRY["mpic"].validator
  register_cost("mpic_energy", hardware.mpic_layer_energy, unit="J",
                description="MPIC energy = cycles / 250 MHz x 5.3825 mW", validator=mpic_validator)
  register_cost("ne16", hardware.ne16_layer_cycles, unit="cycles",
                description="NE16 accelerator latency model (8-bit activations)")


_register_builtins()
