"""A tiny convolutional autoencoder for the built-in 8x8 digits (the ``reconstruction`` task).

Layout: input quantizer -> conv 3x3/2 (8) -> conv 3x3 (4, the 4x4x4 code) -> upsample x2 ->
conv 3x3 (8) -> conv 3x3 to the input's channels (the output group: not quantized, not pruned).
Sharing groups: {enc}, {code}, {dec}, {out}. The output has the input's shape; ``num_classes`` is
not used (it is accepted as every model of :data:`jpq_jax.models.MODELS` takes it).
"""

from __future__ import annotations

import flax.linen as nn

from jpq_jax import ops
from jpq_jax.layers import Conv, Ctx, Group, InputQuantizer, QTensor, SearchSpace


class DemoAutoencoder(nn.Module):
  """Convolutional autoencoder for small NHWC images.

  Attributes:
    space: search space.
    num_classes: unused (the output has the input's channels).
    width: channels of the encoder's and decoder's hidden convs; the code has ``width // 2``.
  """
  space: SearchSpace = SearchSpace()
  num_classes: int = 10
  width: int = 8

  @nn.compact
  def __call__(self, x, ctx: Ctx) -> QTensor:
    sp, w = self.space, self.width
    channels = int(x.shape[-1])
    h = InputQuantizer(sp, name="input_q")(x, ctx)
    h = Conv(w, 3, Group(w, sp, name="g_enc"), strides=2, use_bias=False, use_bn=True, relu=True,
             name="enc")(h, ctx)
    h = Conv(w // 2, 3, Group(w // 2, sp, name="g_code"), use_bias=False, use_bn=True, relu=True,
             name="code")(h, ctx)
    h = h.map(ops.upsample(2))
    h = Conv(w, 3, Group(w, sp, name="g_dec"), use_bias=False, use_bn=True, relu=True,
             name="dec")(h, ctx)
    return Conv(channels, 3, Group(channels, sp, output=True, name="g_out"), name="out")(h, ctx)
