"""A user's small CNN for the 8x8 digits in plain Flax NNX (no jpq_jax import): a depthwise conv,
dropout and a residual add in a model that compiles in seconds (``model.name =
"userpkg.nnx_nets:NnxTinyNet"``)."""

import jax.numpy as jnp
from flax import nnx


class Block(nnx.Module):
  """Depthwise-separable residual block."""

  def __init__(self, width: int, *, rngs: nnx.Rngs):
    self.dw = nnx.Conv(width, width, (3, 3), feature_group_count=width, rngs=rngs)
    self.pw = nnx.Conv(width, width, (1, 1), use_bias=False, rngs=rngs)
    self.bn = nnx.BatchNorm(width, rngs=rngs)

  def __call__(self, x):
    return nnx.relu(x + self.bn(self.pw(nnx.relu(self.dw(x)))))


class NnxTinyNet(nnx.Module):
  """stem conv + BatchNorm -> depthwise-separable residual block -> dropout -> mean -> linear."""

  def __init__(self, width: int = 8, num_classes: int = 10, in_channels: int = 1, *,
               rngs: nnx.Rngs):
    self.stem = nnx.Conv(in_channels, width, (3, 3), use_bias=False, rngs=rngs)
    self.bn = nnx.BatchNorm(width, rngs=rngs)
    self.blocks = nnx.List([Block(width, rngs=rngs)])
    self.drop = nnx.Dropout(0.2, rngs=rngs)
    self.head = nnx.Linear(width, num_classes, rngs=rngs)

  def __call__(self, x):
    h = nnx.relu(self.bn(self.stem(x)))
    for b in self.blocks:
      h = b(h)
    h = self.drop(h)
    return self.head(jnp.mean(h, axis=(1, 2)))
