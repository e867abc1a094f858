"""ResNet-18 with the reduced 64-px stem (Tiny ImageNet, 200 classes), METHOD.md §8.3.

conv1 3x3/1 (no max-pool); BasicBlocks; sharing groups per stage: {conv1, bb_1_0.conv2, bb_1_1.conv2},
{bb_2_0.downsample, bb_2_0.conv2, bb_2_1.conv2}, ... ; every block's conv1 is a singleton; {fc}.
Totals at 64 px (float): 11,271,432 parameters, 2,221,772,800 MACs.
"""

from __future__ import annotations

import flax.linen as nn

from jpq_jax import ops
from jpq_jax.layers import Add, Conv, Ctx, Dense, Group, InputQuantizer, QTensor, SearchSpace

_KAIMING_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class ResNet18(nn.Module):
  """ResNet-18 (64-px stem) in float / search / fixed mode.

  Attributes:
    space: search space.
    num_classes: classifier outputs (200).
  """
  space: SearchSpace = SearchSpace()
  num_classes: int = 200

  @nn.compact
  def __call__(self, x, ctx: Ctx) -> QTensor:
    sp = self.space

    def conv(f, k, g, name, s=1, pad=1, relu=False):
      # relu=True: the ReLU that follows the output quantizer (see Group.quantize).
      return Conv(f, k, group=g, strides=s, padding=pad, use_bias=False, use_bn=True,
                  kernel_init=_KAIMING_FAN_OUT, name=name, relu=relu)

    widths = (64, 128, 256, 512)
    stage_groups = [Group(w, sp, name=f"g_stage{i + 1}") for i, w in enumerate(widths)]
    h = InputQuantizer(sp, name="input_q")(x, ctx)
    h = conv(64, 3, stage_groups[0], "conv1", relu=True)(h, ctx)
    cin = 64
    for si, w in enumerate(widths):
      g = stage_groups[si]
      for bi in range(2):
        stride = 2 if (si > 0 and bi == 0) else 1
        pre = f"bb_{si + 1}_{bi}"
        y = conv(w, 3, Group(w, sp, name=f"g_{pre}_conv1"), f"{pre}_conv1", s=stride,
                 relu=True)(h, ctx)
        y = conv(w, 3, g, f"{pre}_conv2")(y, ctx)
        if stride != 1 or cin != w:
          sc = conv(w, 1, g, f"{pre}_downsample", s=stride, pad=0)(h, ctx)
        else:
          sc = h
        h = Add(g, relu=True, name=f"{pre}_add")(y, sc, ctx=ctx)
        cin = w
    h = h.map(ops.global_avg_pool).flatten()
    return Dense(self.num_classes, Group(self.num_classes, sp, output=True, name="g_out"),
                 name="fc")(h, ctx)
