"""ResNet-8 and a small depthwise/residual CNN written in plain Flax NNX, the way an NNX user writes
them (no jpq_jax import).

Used by tests/test_nnx.py: :class:`NnxResNet8` mirrors tests/plain_flax.py's ``PlainResNet8`` (the
same layer names, so weights map one to one onto :class:`jpq_jax.models.ResNet8`). The small model
of the other NNX tests, also run by the sweep by import path, is ``userpkg.nnx_nets.NnxTinyNet``.
"""

import jax.numpy as jnp
from flax import nnx

_HE = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")


class NnxResNet8(nnx.Module):
  """ResNet-8 (MLPerf Tiny IC) in plain NNX."""

  def __init__(self, num_classes: int = 10, *, rngs: nnx.Rngs):
    def conv(cin, f, k, s=1, bias=False, pad=1):
      return nnx.Conv(cin, f, (k, k), strides=s, padding=pad, use_bias=bias, kernel_init=_HE,
                      rngs=rngs)

    def bn(c):
      return nnx.BatchNorm(c, momentum=0.9, epsilon=1e-5, rngs=rngs)

    self.inputblock_conv1, self.bn0 = conv(3, 16, 3), bn(16)
    self.convblock1_conv1, self.bn1a = conv(16, 16, 3), bn(16)
    self.conv1, self.bn1b = conv(16, 16, 3, bias=True), bn(16)
    self.convblock2_conv1, self.bn2a = conv(16, 32, 3, s=2), bn(32)
    self.conv2y, self.bn2b = conv(32, 32, 3, bias=True), bn(32)
    self.conv2x = conv(16, 32, 1, s=2, bias=True, pad=0)
    self.convblock3_conv1, self.bn3a = conv(32, 64, 3, s=2), bn(64)
    self.conv3y, self.bn3b = conv(64, 64, 3, bias=True), bn(64)
    self.conv3x = conv(32, 64, 1, s=2, bias=True, pad=0)
    self.out = nnx.Linear(64, num_classes, kernel_init=_HE, rngs=rngs)

  def __call__(self, x):
    h = nnx.relu(self.bn0(self.inputblock_conv1(x)))
    y = nnx.relu(self.bn1a(self.convblock1_conv1(h)))
    y = self.bn1b(self.conv1(y))
    h = nnx.relu(h + y)
    y = nnx.relu(self.bn2a(self.convblock2_conv1(h)))
    y = self.bn2b(self.conv2y(y))
    h = nnx.relu(y + self.conv2x(h))
    y = nnx.relu(self.bn3a(self.convblock3_conv1(h)))
    y = self.bn3b(self.conv3y(y))
    h = nnx.relu(y + self.conv3x(h))
    h = nnx.avg_pool(h, (8, 8))
    h = h.reshape((h.shape[0], -1))
    return self.out(h)
