"""Human-readable cost reports: per layer and total, for the given theta and its one-hot argmax.

A report is plain data (floats, strings), so it can be logged as JSON; :func:`format_cost_report`
renders it as fixed-width text with every unit stated.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp

from jpq_jax.costs.channels import effective_channels, layer_views
from jpq_jax.costs.registry import get_cost, list_costs
from jpq_jax.table import LayerTable

__all__ = ["argmax_theta", "cost_report", "format_cost_report", "top_precision_theta",
           "reference_costs"]

# Columns of the text report: (cost name, header, scale, format). Costs not listed here are shown
# with a generic column.
_COLUMNS = {
    "size": ("size [bits]", 1.0, "{:,.0f}"),
    "size_nodetach": ("size_nd [bits]", 1.0, "{:,.0f}"),
    "params": ("params [w]", 1.0, "{:,.1f}"),
    "macs": ("MACs", 1.0, "{:,.0f}"),
    "bitops": ("bitops", 1.0, "{:,.0f}"),
    "mpic": ("MPIC [cyc]", 1.0, "{:,.0f}"),
    "mpic_energy": ("MPIC [uJ]", 1e6, "{:,.3f}"),
    "ne16": ("NE16 [cyc]", 1.0, "{:,.0f}"),
}


def argmax_theta(theta: Mapping) -> Dict[str, Any]:
  """The one-hot (frozen) architecture of ``theta``: argmax over the precision axis per channel.

  The argmax of ``softmax(alpha / T)`` is the argmax of theta, so for softmax theta this is the
  architecture :func:`jpq_jax.freeze` produces.

  Args:
    theta: ``{group name: GroupTheta}``.

  Returns:
    The same structure with one-hot ``w`` and ``a``.
  """
  def hard(x):
    if x is None:
      return None
    x = jnp.asarray(x)
    return jax.nn.one_hot(jnp.argmax(x, axis=0), x.shape[0], axis=0, dtype=x.dtype)
  return {k: t.replace(w=hard(t.w), a=hard(t.a)) for k, t in theta.items()}


def top_precision_theta(table: LayerTable) -> Dict[str, Any]:
  """The one-hot theta of the network at its top precision everywhere (e.g. all 8 bit).

  Every channel of every group at its largest weight bit-width (nothing pruned) and every
  activation quantizer at its largest activation bit-width: the start of a search from the
  reference initialisation, whose argmax is that architecture.

  Args:
    table: the model's :class:`LayerTable`.

  Returns:
    ``{group name: GroupTheta}``.
  """
  from jpq_jax.arch import GroupTheta  # pylint: disable=import-outside-toplevel
  out = {}
  for g in table.groups:
    w = a = None
    if g.kind != "input":
      w = jnp.zeros((len(g.w_precisions), g.channels)).at[
          g.w_precisions.index(max(g.w_precisions))].set(1.0)
    if g.a_precisions:
      a = jnp.zeros((len(g.a_precisions),)).at[g.a_precisions.index(max(g.a_precisions))].set(1.0)
    out[g.name] = GroupTheta(w=w, a=a)
  return out


def reference_costs(table: LayerTable, names: Optional[Sequence[str]] = None) -> Dict[str, float]:
  """Every cost of the top-precision network (:func:`top_precision_theta`): the scale of lambda.

  The search minimises ``task loss + lambda * cost``; at the start the cost is about this value,
  so ``lambda * reference_costs(table)[cost]`` is the regulariser's initial weight next to a
  cross-entropy of about ``ln(classes)``. The same relative strength on another cost model or
  network needs ``lambda`` rescaled by the ratio of these values.

  Args:
    table: the model's :class:`LayerTable`.
    names: cost names (default: every registered cost); a cost that cannot cost this table (e.g.
      ``mpic`` with a bit-width outside its LUT) is left out.

  Returns:
    ``{cost name: value}`` as Python floats.
  """
  theta = top_precision_theta(table)
  out = {}
  for name in (list_costs() if names is None else names):
    try:
      out[name] = float(get_cost(name)(table, theta))
    except (ValueError, KeyError):
      pass
  return out


@functools.partial(jax.jit, static_argnums=(0, 1))
def _section_arrays(table: LayerTable, names: Tuple[str, ...], theta: Mapping) -> Dict[str, Any]:
  # One compiled program for the whole section: eager evaluation of the many tiny per-layer ops
  # would take seconds.
  views = layer_views(table, theta)
  models = [get_cost(n) for n in names]
  return {
      "per": {m.name: jnp.stack(m.layers(table, theta, views)) for m in models if m.per_layer},
      "totals": {m.name: m(table, theta) for m in models},
      "cout": effective_channels(table, theta),
      "cin_eff": jnp.stack([v.cin_eff for v in views]),
      "cout_eff": jnp.stack([v.cout_eff for v in views]),
      "p_eff": jnp.stack([v.p_eff for v in views]),
      "a_in": jnp.stack([v.a_in_eff for v in views]),
      "n_w": [v.n_w for v in views],
  }


def _section(table: LayerTable, theta: Mapping, names: Sequence[str]) -> Dict[str, Any]:
  arr = jax.device_get(_section_arrays(table, tuple(names), dict(theta)))
  rows: List[Dict[str, Any]] = []
  for i, r in enumerate(table.layers):
    ps = table.group(r.w_group).w_precisions
    rows.append({
        "layer": r.name, "kind": r.kind, "group": r.w_group, "in_group": r.in_group,
        "cin": r.cin, "cout": r.cout, "cin_eff": float(arr["cin_eff"][i]),
        "cout_eff": float(arr["cout_eff"][i]), "kept_channels": float(arr["cout_eff"][i]),
        "w_bits_eff": float(arr["p_eff"][i]), "a_in_bits_eff": float(arr["a_in"][i]),
        "channels_per_w_bits": {int(p): float(n) for p, n in zip(ps, arr["n_w"][i])},
        "costs": {n: float(vals[i]) for n, vals in arr["per"].items()},
    })
  totals = {n: float(v) for n, v in arr["totals"].items()}
  groups = {g: float(v) for g, v in arr["cout"].items()}
  return {"layers": rows, "totals": totals, "cout_eff": groups}


def cost_report(table: LayerTable, theta: Mapping, names: Optional[Sequence[str]] = None,
                hard: bool = True) -> Dict[str, Any]:
  """Per-layer and total costs of ``theta`` and of its one-hot argmax architecture.

  Runs eagerly (host floats); not meant for use inside ``jit``. Pass one member's theta.

  Args:
    table: the model's :class:`LayerTable`.
    theta: ``{group name: GroupTheta}`` (one member, no member axis).
    names: costs to include (default: every registered cost).
    hard: also report the one-hot (argmax) architecture.

  Returns:
    ``{"units": {name: unit}, "descriptions": {...}, "theta": section, "argmax": section}`` where a
    section is ``{"layers": [row per layer], "totals": {name: value}, "cout_eff": {group: value}}``
    and a row has ``layer, kind, group, in_group, cin, cout, cin_eff, cout_eff, kept_channels,
    w_bits_eff`` (bits per kept weight), ``a_in_bits_eff``, ``channels_per_w_bits`` and
    ``costs`` ``{name: value}``. Sizes are in bits; ``size_kB`` totals (bits / 8 / 1000) are added.
  """
  names = list_costs() if names is None else list(names)
  out: Dict[str, Any] = {
      "units": {n: get_cost(n).unit for n in names},
      "descriptions": {n: get_cost(n).description for n in names},
  }
  sections = [("theta", theta)] + ([("argmax", argmax_theta(theta))] if hard else [])
  for key, th in sections:
    sec = _section(table, th, names)
    for n in ("size", "size_nodetach"):
      if n in sec["totals"]:
        sec["totals"][n + "_kB"] = sec["totals"][n] / 8 / 1000
    out[key] = sec
  return out


def _fmt(name: str, value: float) -> str:
  _, scale, f = _COLUMNS.get(name, (name, 1.0, "{:,.4g}"))
  return f.format(value * scale)


def format_cost_report(report: Mapping[str, Any]) -> str:
  """Render a :func:`cost_report` as fixed-width text (units in every header).

  Args:
    report: the dict returned by :func:`cost_report`.

  Returns:
    A multi-line string: per section a table of layers (kept channels, effective bits, costs) and
    a totals block listing each cost with its unit.
  """
  units = report["units"]
  names = list(units)
  lines: List[str] = []
  titles = {"theta": "theta as given (soft or one-hot)", "argmax": "one-hot argmax architecture"}
  for key in ("theta", "argmax"):
    if key not in report:
      continue
    sec = report[key]
    layer_names = [n for n in names if sec["layers"] and n in sec["layers"][0]["costs"]]
    heads = [(_COLUMNS.get(n, (f"{n} [{units[n]}]",))[0]) for n in layer_names]
    widths = [max(len(h), 12) for h in heads]
    lw = max([len("layer")] + [len(r["layer"]) for r in sec["layers"]]) + 1
    hdr = (f"{'layer':<{lw}} {'kind':<9} {'cin_eff':>8} {'cout_eff':>8} {'w bits':>6} {'a_in':>5} "
           + " ".join(f"{h:>{w}}" for h, w in zip(heads, widths)))
    lines += [f"== costs: {titles[key]} ==", hdr, "-" * len(hdr)]
    for r in sec["layers"]:
      cells = " ".join(f"{_fmt(n, r['costs'][n]):>{w}}" for n, w in zip(layer_names, widths))
      lines.append(f"{r['layer']:<{lw}} {r['kind']:<9} {r['cin_eff']:>8.2f} {r['cout_eff']:>8.2f} "
                   f"{r['w_bits_eff']:>6.2f} {r['a_in_bits_eff']:>5.2f} {cells}")
    lines.append("totals:")
    for n in names:
      v = sec["totals"][n]
      extra = f"  ({sec['totals'][n + '_kB']:,.3f} kB)" if n + "_kB" in sec["totals"] else ""
      lines.append(f"  {n:<14} {v:>20,.6g} {units[n]}{extra}")
    lines.append("")
  return "\n".join(lines).rstrip() + "\n"
