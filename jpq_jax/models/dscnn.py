"""DS-CNN (MLPerf Tiny keyword spotting, Speech Commands 49x10x1 MFCC), METHOD.md §8.2.

Sharing groups (§2.6): each depthwise conv joins the group of the conv that produced its input:
{inputlayer, depthwise1}, {pointwise1, depthwise2}, {pointwise2, depthwise3}, {pointwise3,
depthwise4}, {pointwise4}, {out}. Totals (float): 23,756 parameters, 2,656,768 MACs.
BatchNorm momentum 0.99 in PyTorch convention = 0.01 in Flax's.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jpq_jax import ops
from jpq_jax.layers import Conv, Ctx, Dense, Group, InputQuantizer, QTensor, SearchSpace


def _torch_uniform(fan_in: int):
  """PyTorch's default conv/linear init: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in))."""
  bound = 1.0 / np.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    import jax
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class DSCNN(nn.Module):
  """DS-CNN in float / search / fixed mode (input quantizer: signed PACT, 8 bit, +-6).

  Attributes:
    space: search space; use ``SearchSpace(input_signed=True, input_precisions=(8,))`` for the
      reference protocol (see :func:`reference_space`).
    num_classes: classifier outputs (12).
  """
  space: SearchSpace = SearchSpace(input_signed=True, input_precisions=(8,))
  num_classes: int = 12

  @nn.compact
  def __call__(self, x, ctx: Ctx) -> QTensor:
    sp = self.space
    bn = dict(use_bn=True, bn_momentum=0.01, bn_eps=1e-5)
    drop = lambda rate: ops.dropout(rate, deterministic=not ctx.train)
    h = InputQuantizer(sp, name="input_q")(x, ctx)
    g = Group(64, sp, name="g_inputlayer")
    # relu=True: the ReLU that follows the output quantizer (see Group.quantize).
    h = Conv(64, (10, 4), g, strides=2, padding=((5, 5), (1, 1)), kernel_init=_torch_uniform(40),
             relu=True, name="inputlayer", **bn)(h, ctx)
    h = h.map(drop(0.2))
    for k in range(1, 5):
      h = Conv(64, 3, g, padding=1, depthwise=True, kernel_init=_torch_uniform(9), relu=True,
               name=f"depthwise{k}", **bn)(h, ctx)
      g = Group(64, sp, name=f"g_pointwise{k}")
      h = Conv(64, 1, g, padding=0, kernel_init=_torch_uniform(64), relu=True,
               name=f"pointwise{k}", **bn)(h, ctx)
    h = h.map(drop(0.4))
    h = h.map(ops.global_avg_pool).flatten()
    return Dense(self.num_classes, Group(self.num_classes, sp, output=True, name="g_out"),
                 kernel_init=_torch_uniform(64), name="out")(h, ctx)
