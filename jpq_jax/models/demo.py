"""A tiny residual CNN for the built-in 8x8 digits demo: the whole sweep runs in minutes on a CPU.

Layout: input quantizer -> conv 3x3 (16) -> [conv 3x3 (16) -> conv 3x3 (16)] + residual ->
conv 3x3/2 (32) -> global average pool -> classifier. Sharing groups: {stem, block conv b}
(residual), {block conv a}, {down}, {out}.
"""

from __future__ import annotations

import flax.linen as nn

from jpq_jax import ops
from jpq_jax.layers import Add, Conv, Ctx, Dense, Group, InputQuantizer, QTensor, SearchSpace


class DemoNet(nn.Module):
  """Small residual CNN for 8x8x1 inputs.

  Attributes:
    space: search space.
    num_classes: classifier outputs.
    width: channels of the first stage (the second has twice as many).
  """
  space: SearchSpace = SearchSpace()
  num_classes: int = 10
  width: int = 16

  @nn.compact
  def __call__(self, x, ctx: Ctx) -> QTensor:
    sp, w = self.space, self.width
    g1 = Group(w, sp, name="g_res")
    h = InputQuantizer(sp, name="input_q")(x, ctx)
    # relu=True: the ReLU that follows the output quantizer (see Group.quantize).
    h = Conv(w, 3, g1, use_bias=False, use_bn=True, relu=True, name="stem")(h, ctx)
    y = Conv(w, 3, Group(w, sp, name="g_block_a"), use_bias=False, use_bn=True, relu=True,
             name="block_a")(h, ctx)
    y = Conv(w, 3, g1, use_bias=False, use_bn=True, name="block_b")(y, ctx)
    h = Add(g1, relu=True, name="add")(h, y, ctx=ctx)
    h = Conv(2 * w, 3, Group(2 * w, sp, name="g_down"), strides=2, use_bias=False, use_bn=True,
             relu=True, name="down")(h, ctx)
    h = h.map(ops.global_avg_pool).flatten()
    return Dense(self.num_classes, Group(self.num_classes, sp, output=True, name="g_out"),
                 name="out")(h, ctx)
