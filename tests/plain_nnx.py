"""ResNet-8 and a small depthwise/residual CNN written in plain Flax NNX, the way an NNX user writes
them (no jpq_jax import).

Used by tests/test_nnx.py: :class:`NnxResNet8` and :class:`NnxDSCNN` mirror tests/plain_flax.py's
``PlainResNet8`` and ``PlainDSCNN`` (the same layer names, so weights map one to one onto
:class:`jpq_jax.models.ResNet8` and :class:`jpq_jax.models.DSCNN`). The small model
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


class NnxDSCNN(nnx.Module):
  """DS-CNN (MLPerf Tiny KWS) in plain NNX: depthwise convs via feature_group_count."""

  def __init__(self, num_classes: int = 12, *, rngs: nnx.Rngs):
    def bn():
      return nnx.BatchNorm(64, momentum=0.01, epsilon=1e-5, rngs=rngs)

    self.inputlayer = nnx.Conv(1, 64, (10, 4), strides=2, padding=((5, 5), (1, 1)), rngs=rngs)
    self.bn_in = bn()
    self.drop_in = nnx.Dropout(0.2, rngs=rngs)
    for k in range(1, 5):
      setattr(self, f"depthwise{k}", nnx.Conv(64, 64, (3, 3), padding=1, feature_group_count=64,
                                              rngs=rngs))
      setattr(self, f"bn_dw{k}", bn())
      setattr(self, f"pointwise{k}", nnx.Conv(64, 64, (1, 1), padding=0, rngs=rngs))
      setattr(self, f"bn_pw{k}", bn())
    self.drop_out = nnx.Dropout(0.4, rngs=rngs)
    self.out = nnx.Linear(64, num_classes, rngs=rngs)

  def __call__(self, x):
    h = self.drop_in(nnx.relu(self.bn_in(self.inputlayer(x))))
    for k in range(1, 5):
      h = nnx.relu(getattr(self, f"bn_dw{k}")(getattr(self, f"depthwise{k}")(h)))
      h = nnx.relu(getattr(self, f"bn_pw{k}")(getattr(self, f"pointwise{k}")(h)))
    h = self.drop_out(h)
    return self.out(jnp.mean(h, axis=(1, 2)))
