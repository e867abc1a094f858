"""Architecture state: theta per sharing group, freezing ``arch`` into ``precision``, inspection.

``thetas`` computes, outside the model, exactly the theta the model's layers compute inside it (same
sampling function, same per-group PRNG key), so the cost of a step is a pure function of the same
choices the forward pass used. Costs consume the returned ``{group name: GroupTheta}`` mapping.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from jpq_jax import choice
from jpq_jax.layers import Ctx
from jpq_jax.table import GroupRecord, LayerTable

__all__ = ["GroupTheta", "thetas", "freeze", "get_path", "set_path", "precision_summary"]


@struct.dataclass
class GroupTheta:
  """Mixing coefficients of one sharing group.

  Attributes:
    w: weight theta ``(n_wbits, C)`` (row i is ``record.w_precisions[i]``), None for the input group.
    a: activation theta ``(n_abits,)``, None when the group's output is not quantized.
  """
  w: Optional[jax.Array] = None
  a: Optional[jax.Array] = None


def get_path(tree: Mapping, path) -> Any:
  """``tree[p0][p1]...`` for a module path; KeyError names the missing path.

  Args:
    tree: nested mapping (e.g. a Flax variable collection).
    path: sequence of string keys ``(p0, p1, ...)`` from the root down.

  Returns:
    The node found at ``path`` (the tree itself for an empty path).

  Raises:
    KeyError: some key on the path is missing, or a node on the way is not indexable; the message
      names the full path joined with ``/``.
  """
  node = tree
  for p in path:
    try:
      node = node[p]
    except (KeyError, TypeError):
      raise KeyError(f"no entry at {'/'.join(path)!r}") from None
  return node


def set_path(tree: dict, path, value) -> None:
  """Set ``tree[p0][p1]... = value``, creating dicts on the way.

  Args:
    tree: nested dict, modified in place.
    path: non-empty sequence of keys ``(p0, p1, ...)``; missing intermediate keys get empty dicts.
    value: what to store at the last key (replacing any existing entry).

  Returns:
    None; ``tree`` is updated in place.
  """
  node = tree
  for p in path[:-1]:
    node = node.setdefault(p, {})
  node[path[-1]] = value


def thetas(variables: Mapping, table: LayerTable, ctx: Ctx) -> Dict[str, GroupTheta]:
  """theta of every group, as the model computes it under ``ctx``.

  Args:
    variables: model variables with an ``arch`` collection (search mode) or a ``precision``
      collection (fixed mode), or just that collection's dict.
    table: the model's :class:`LayerTable`.
    ctx: :class:`Ctx` in search mode (sampled from ``arch``) or fixed mode (one-hot of ``precision``).

  Returns:
    ``{group name: GroupTheta}`` for every group of the table (input group included).

  Raises:
    ValueError: float mode, or the needed collection is missing.
  """
  if ctx.mode == "float":
    raise ValueError("thetas: float mode has no precision choices; use a search or fixed Ctx")
  col = "arch" if ctx.mode == "search" else "precision"
  tree = variables.get(col, variables) if isinstance(variables, Mapping) else variables
  if isinstance(variables, Mapping) and col not in variables and "params" in variables:
    raise ValueError(f"thetas: {ctx.mode} mode needs a {col!r} collection in the variables")
  out: Dict[str, GroupTheta] = {}
  for g in table.groups:
    try:
      node = get_path(tree, g.path)
    except KeyError:
      raise ValueError(f"thetas: group {g.name!r} has no entry in the {col!r} collection") from None
    w = a = None
    if ctx.mode == "search":
      if g.kind != "input":
        w = choice.sample_theta(g.weight_logits(node["alpha_w"]), ctx.temperature, train=ctx.train,
                                sampling=ctx.sampling, key=choice.weight_key(ctx.key, g.name))
        if w.ndim == 1:
          w = jnp.broadcast_to(w[:, None], (w.shape[0], g.channels))
      if g.a_precisions:
        a = choice.sample_theta(node["alpha_a"], ctx.temperature, train=ctx.train,
                                sampling=ctx.sampling,
                                key=choice.activation_key(ctx.key, g.name, g.kind == "input"))
    else:
      if g.kind != "input":
        w = choice.onehot_from_bits(node["w_bits"], g.w_precisions, f"group {g.name!r} w_bits")
      if g.a_precisions:
        a = choice.onehot_from_bits(node["a_bits"], g.a_precisions, f"group {g.name!r} a_bits")
    out[g.name] = GroupTheta(w=w, a=a)
  return out


def freeze(arch: Mapping, table: LayerTable, temperature: float = 1.0) -> Dict[str, Any]:
  """Discretise ``arch`` into a ``precision`` collection (argmax per channel; 0 = pruned).

  The argmax is that of ``softmax(alpha / T)``, as the reference's evaluation mode takes it.

  Args:
    arch: the ``arch`` collection (or variables holding it).
    table: the model's :class:`LayerTable`.
    temperature: temperature of the softmax whose argmax is taken.

  Returns:
    A ``precision`` collection: per group ``w_bits`` (C,) int32 and ``a_bits`` () int32.

  Raises:
    ValueError: a concrete temperature that is not a finite number > 0, or variables without an
      ``arch`` collection.
    TypeError: ``table`` is not a :class:`LayerTable`.
  """
  choice.check_temperature(temperature, "freeze")
  if not isinstance(table, LayerTable):
    raise TypeError(f"freeze: table must be a jpq_jax.LayerTable (jpq_jax.trace_table(model, x)), "
                    f"got {type(table).__name__}")
  if isinstance(arch, Mapping) and "arch" in arch:
    arch = arch["arch"]
  elif isinstance(arch, Mapping) and {"params", "precision", "batch_stats"} & set(arch):
    raise ValueError(f"freeze needs the 'arch' collection (search variables, see "
                     f"jpq_jax.to_search); got a mapping with keys {sorted(arch)}")
  out: Dict[str, Any] = {}
  for g in table.groups:
    node = get_path(arch, g.path)
    entry = {}
    if g.kind != "input":
      th = jax.nn.softmax(g.weight_logits(jnp.asarray(node["alpha_w"])) / temperature, axis=0)
      idx = jnp.argmax(th, axis=0)
      bits = jnp.asarray(g.w_precisions, jnp.int32)[idx]
      if bits.ndim == 0:
        bits = jnp.full((g.channels,), bits, jnp.int32)
      entry["w_bits"] = bits
    if g.a_precisions:
      th = jax.nn.softmax(jnp.asarray(node["alpha_a"]) / temperature)
      entry["a_bits"] = jnp.asarray(g.a_precisions, jnp.int32)[jnp.argmax(th)]
    set_path(out, g.path, entry)
  return out


def precision_summary(precision: Mapping, table: LayerTable) -> Dict[str, Dict[str, Any]]:
  """Per-group summary of a frozen architecture: kept channels and a bit-width histogram.

  Args:
    precision: a ``precision`` collection (or variables holding it).
    table: the model's :class:`LayerTable`.

  Returns:
    ``{group: {"channels", "kept", "w_bits_hist": {bits: count}, "a_bits"}}``.
  """
  if isinstance(precision, Mapping) and "precision" in precision:
    precision = precision["precision"]
  out = {}
  for g in table.groups:
    node = get_path(precision, g.path)
    rec: Dict[str, Any] = {"channels": g.channels, "kind": g.kind}
    if "w_bits" in node:
      wb = np.asarray(node["w_bits"])
      rec["kept"] = int((wb > 0).sum())
      rec["w_bits_hist"] = {int(b): int((wb == b).sum()) for b in g.w_precisions}
    if "a_bits" in node:
      rec["a_bits"] = int(np.asarray(node["a_bits"]))
    out[g.name] = rec
  return out
