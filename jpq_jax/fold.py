"""Conversion of a trained float model to search form, and fixed-mode variables from a search.

METHOD.md §2.8, §4: every BatchNorm is folded into the preceding conv with its *running* statistics
(``W' = W * g / sqrt(var + eps)`` per output channel, ``b' = (b - mean) * g / sqrt(var + eps) + beta``)
and disappears for the rest of the pipeline; the weight logits start at ``p / max(p)``; and, in
channel-wise mode with a 0-bit option, each folded weight is divided by ``1 - theta_0`` (theta at
T = 1 from the initial logits) so that the first forward's theta-mixture, whose 0-bit branch
contributes zeros, approximately reproduces the float weight. Biases are not rescaled.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import jax
import jax.numpy as jnp

from jpq_jax import choice
from jpq_jax.arch import freeze, get_path, set_path
from jpq_jax.layers import Ctx
from jpq_jax.table import LayerTable, trace_table

__all__ = ["fold_batchnorm", "to_search", "to_fixed"]


def fold_batchnorm(kernel: jax.Array, bias: Optional[jax.Array], scale: jax.Array,
                   beta: jax.Array, mean: jax.Array, var: jax.Array, eps: float):
  """Fold a BatchNorm (running statistics) into the preceding conv/dense.

  Args:
    kernel: weights, output channel last.
    bias: conv bias or None.
    scale, beta: BatchNorm gamma and beta, shape ``(C,)``.
    mean, var: running mean and variance, shape ``(C,)``.
    eps: BatchNorm epsilon.

  Returns:
    ``(kernel', bias')``.
  """
  inv = scale / jnp.sqrt(var + eps)
  b = jnp.zeros_like(mean) if bias is None else bias
  return kernel * inv, (b - mean) * inv + beta


def _fetch(tree: Mapping, path, what: str, layer: str):
  try:
    return get_path(tree, path)
  except KeyError:
    raise ValueError(f"conversion: the float variables have no {what} for layer {layer!r} "
                     f"(looked at {'/'.join(path)!r}); were they made by the same model?") from None


def to_search(model: Any, float_variables: Mapping, sample_input: Any, *, compensate: bool = True,
              table: Optional[LayerTable] = None, rng: Optional[jax.Array] = None) -> Dict[str, Any]:
  """Convert trained float variables into search-mode variables.

  Args:
    model: the Flax model (built from jpq_jax layers).
    float_variables: ``{'params', 'batch_stats'}`` of the trained float model.
    sample_input: an array or ShapeDtypeStruct with the input shape (batch included).
    compensate: divide weights by ``1 - theta_0`` (the reference's conversion; METHOD.md §2.8).
    table: the model's layer table (traced if not given).
    rng: PRNG key for the search-mode init (only the quantizer clips and logits are taken from it,
      and those are deterministic).

  Returns:
    ``{'params': ..., 'arch': ...}`` for ``model.apply(..., Ctx.search(...))``.

  Raises:
    ValueError: a layer is missing from the float variables, or a channel/shape mismatch.
  """
  if "params" not in float_variables:
    raise ValueError("conversion: float_variables must hold a 'params' collection")
  table = table or trace_table(model, sample_input)
  x = jax.ShapeDtypeStruct(sample_input.shape, getattr(sample_input, "dtype", jnp.float32))
  rng = jax.random.PRNGKey(0) if rng is None else rng
  # The search-mode init provides the clips and the logits (p / max(p)); its kernels are replaced.
  search = jax.jit(lambda x: model.init(rng, x, Ctx.search()))(jnp.zeros(x.shape, x.dtype))
  params = _to_mutable(search["params"])
  fparams = float_variables["params"]
  stats = float_variables.get("batch_stats", {})
  for layer in table.layers:
    fl = _fetch(fparams, layer.path, "parameters", layer.name)
    target = get_path(search["params"], layer.path)
    kernel = jnp.asarray(fl["kernel"])
    if kernel.shape != target["kernel"].shape:
      raise ValueError(f"conversion: layer {layer.name!r} kernel shape {kernel.shape} in the float "
                       f"variables does not match the search model's {target['kernel'].shape} "
                       "(channel or shape mismatch)")
    bias = jnp.asarray(fl["bias"]) if "bias" in fl else None
    if layer.bn:
      bnp = _fetch(fparams, layer.path + ("BatchNorm_0",), "BatchNorm parameters", layer.name)
      bns = _fetch(stats, layer.path + ("BatchNorm_0",), "BatchNorm running statistics",
                   layer.name)
      for nm, arr in (("scale", bnp["scale"]), ("bias", bnp["bias"]), ("mean", bns["mean"]),
                      ("var", bns["var"])):
        if arr.shape != (layer.cout,):
          raise ValueError(f"conversion: layer {layer.name!r} BatchNorm {nm} has shape {arr.shape}, "
                           f"expected ({layer.cout},)")
      kernel, bias = fold_batchnorm(kernel, bias, bnp["scale"], bnp["bias"], bns["mean"],
                                    bns["var"], layer.bn_eps)
    if compensate:
      g = table.group(layer.w_group)
      if g.prunable:
        # Per output channel (last kernel axis): keep-alive channels have theta_0 = 0, so their
        # weights are not scaled (SearchSpace.keep_alive; with 0 every channel gets the same factor).
        init = g.weight_logits(choice.init_logits(g.w_precisions, g.channels))
        th0 = jax.nn.softmax(init, axis=0)[g.zero_index]
        kernel = kernel / (1.0 - th0)
    entry = {"kernel": kernel}
    if "bias" in target:
      if bias is None:
        bias = jnp.zeros((layer.cout,), kernel.dtype)
      if bias.shape != target["bias"].shape:
        raise ValueError(f"conversion: layer {layer.name!r} bias shape {bias.shape} does not match "
                         f"{target['bias'].shape}")
      entry["bias"] = bias
    node = get_path(params, layer.path)
    node.update(entry)
  return {"params": params, "arch": search["arch"]}


def _to_mutable(tree):
  if isinstance(tree, Mapping):
    return {k: _to_mutable(v) for k, v in tree.items()}
  return tree


def to_fixed(search_variables: Mapping, table: LayerTable, temperature: float = 1.0) -> Dict[str, Any]:
  """Fixed-mode variables from search variables: same params, ``arch`` frozen into ``precision``.

  Args:
    search_variables: ``{'params', 'arch'}``.
    table: the model's layer table.
    temperature: temperature of the argmax (see :func:`jpq_jax.freeze`).

  Returns:
    ``{'params', 'precision'}``.
  """
  if "arch" not in search_variables:
    raise ValueError("to_fixed: the variables have no 'arch' collection to freeze")
  return {"params": search_variables["params"],
          "precision": freeze(search_variables["arch"], table, temperature)}
