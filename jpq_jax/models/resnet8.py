"""ResNet-8 (MLPerf Tiny image classification, CIFAR-10 32x32x3), METHOD.md §8.1.

Sharing groups (§2.6): {inputblock_conv1, conv1}, {conv2x, conv2y}, {conv3x, conv3y}; the
``convblock*`` convs are singletons; the classifier ``out`` has its own output group.
Totals (float): 78,058 parameters, 12,501,632 MACs.
"""

from __future__ import annotations

import flax.linen as nn

from jpq_jax import ops
from jpq_jax.layers import Add, Conv, Ctx, Dense, Group, InputQuantizer, QTensor, SearchSpace


class ResNet8(nn.Module):
  """ResNet-8 in float / search / fixed mode.

  Attributes:
    space: search space.
    num_classes: classifier outputs (10).
  """
  space: SearchSpace = SearchSpace()
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, ctx: Ctx) -> QTensor:
    sp = self.space
    # relu=True: the ReLU that follows the output quantizer (Conv/Add apply it, see Group.quantize).
    conv = lambda f, k, g, name, s=1, bias=False, bn=True, pad=1, relu=False: Conv(
        f, k, group=g, strides=s, padding=pad, use_bias=bias, use_bn=bn, name=name, relu=relu)
    g1 = Group(16, sp, name="g_stage1")
    g2 = Group(32, sp, name="g_stage2")
    g3 = Group(64, sp, name="g_stage3")
    h = InputQuantizer(sp, name="input_q")(x, ctx)
    h = conv(16, 3, g1, "inputblock_conv1", relu=True)(h, ctx)
    # Stack 1: identity shortcut.
    y = conv(16, 3, Group(16, sp, name="g_convblock1"), "convblock1_conv1", relu=True)(h, ctx)
    y = conv(16, 3, g1, "conv1", bias=True)(y, ctx)
    h = Add(g1, relu=True, name="add1")(h, y, ctx=ctx)
    # Stack 2: 1x1 strided projection shortcut (no BN).
    y = conv(32, 3, Group(32, sp, name="g_convblock2"), "convblock2_conv1", s=2, relu=True)(h, ctx)
    y = conv(32, 3, g2, "conv2y", bias=True)(y, ctx)
    sc = conv(32, 1, g2, "conv2x", s=2, bias=True, bn=False, pad=0)(h, ctx)
    h = Add(g2, relu=True, name="add2")(y, sc, ctx=ctx)
    # Stack 3.
    y = conv(64, 3, Group(64, sp, name="g_convblock3"), "convblock3_conv1", s=2, relu=True)(h, ctx)
    y = conv(64, 3, g3, "conv3y", bias=True)(y, ctx)
    sc = conv(64, 1, g3, "conv3x", s=2, bias=True, bn=False, pad=0)(h, ctx)
    h = Add(g3, relu=True, name="add3")(y, sc, ctx=ctx)
    # AvgPool 8x8 -> flatten -> classifier.
    h = h.map(ops.global_avg_pool).flatten()
    return Dense(self.num_classes, Group(self.num_classes, sp, output=True, name="g_out"),
                 name="out")(h, ctx)
