"""ResNet-8 and DS-CNN written in plain Flax Linen, the way a Flax user writes them.

Used by tests/test_convert.py to prove that :func:`jpq_jax.searchable` converts them to the same
layer table, sharing groups, costs and logits as the hand-written :class:`jpq_jax.models.ResNet8`
and :class:`jpq_jax.models.DSCNN`. Layer names match the hand-written models' so weights map
one to one; the BatchNorms get their own names, as a Flax user writes them.
"""

import flax.linen as nn
import jax.numpy as jnp

_HE = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


class PlainResNet8(nn.Module):
  """ResNet-8 (MLPerf Tiny IC) in plain Flax."""
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False):
    def conv(f, k, name, s=1, bias=False, pad=1):
      return nn.Conv(f, (k, k), strides=s, padding=pad, use_bias=bias, kernel_init=_HE, name=name)

    def bn(name):
      return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)

    h = nn.relu(bn("bn0")(conv(16, 3, "inputblock_conv1")(x)))
    y = nn.relu(bn("bn1a")(conv(16, 3, "convblock1_conv1")(h)))
    y = bn("bn1b")(conv(16, 3, "conv1", bias=True)(y))
    h = nn.relu(h + y)
    y = nn.relu(bn("bn2a")(conv(32, 3, "convblock2_conv1", s=2)(h)))
    y = bn("bn2b")(conv(32, 3, "conv2y", bias=True)(y))
    h = nn.relu(y + conv(32, 1, "conv2x", s=2, bias=True, pad=0)(h))
    y = nn.relu(bn("bn3a")(conv(64, 3, "convblock3_conv1", s=2)(h)))
    y = bn("bn3b")(conv(64, 3, "conv3y", bias=True)(y))
    h = nn.relu(y + conv(64, 1, "conv3x", s=2, bias=True, pad=0)(h))
    h = nn.avg_pool(h, (8, 8))
    h = h.reshape((h.shape[0], -1))
    return nn.Dense(self.num_classes, kernel_init=_HE, name="out")(h)


class PlainDSCNN(nn.Module):
  """DS-CNN (MLPerf Tiny KWS) in plain Flax: depthwise convs via feature_group_count."""
  num_classes: int = 12

  @nn.compact
  def __call__(self, x, train: bool = False):
    def bn(name):
      return nn.BatchNorm(use_running_average=not train, momentum=0.01, epsilon=1e-5, name=name)

    h = nn.Conv(64, (10, 4), strides=2, padding=((5, 5), (1, 1)), name="inputlayer")(x)
    h = nn.relu(bn("bn_in")(h))
    h = nn.Dropout(0.2, deterministic=not train)(h)
    for k in range(1, 5):
      h = nn.Conv(64, (3, 3), padding=1, feature_group_count=64, name=f"depthwise{k}")(h)
      h = nn.relu(bn(f"bn_dw{k}")(h))
      h = nn.Conv(64, (1, 1), padding=0, name=f"pointwise{k}")(h)
      h = nn.relu(bn(f"bn_pw{k}")(h))
    h = nn.Dropout(0.4, deterministic=not train)(h)
    h = jnp.mean(h, axis=(1, 2))
    return nn.Dense(self.num_classes, name="out")(h)
