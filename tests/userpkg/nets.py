"""A user's small residual CNN for the 8x8 digits, in plain Flax (no jpq_jax import)."""

import flax.linen as nn
import jax.numpy as jnp


class ResBlock(nn.Module):
  width: int

  @nn.compact
  def __call__(self, x, train: bool):
    y = nn.Conv(self.width, (3, 3), use_bias=False)(x)
    y = nn.relu(nn.BatchNorm(use_running_average=not train)(y))
    y = nn.Conv(self.width, (3, 3), use_bias=False)(y)
    y = nn.BatchNorm(use_running_average=not train)(y)
    return nn.relu(x + y)


class DigitsNet(nn.Module):
  """conv -> residual block -> strided conv -> mean -> dense."""
  width: int = 16
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = nn.relu(nn.BatchNorm(use_running_average=not train)(
        nn.Conv(self.width, (3, 3), use_bias=False)(x)))
    h = ResBlock(self.width)(h, train)
    h = nn.relu(nn.Conv(2 * self.width, (3, 3), strides=2)(h))
    return nn.Dense(self.num_classes)(jnp.mean(h, axis=(1, 2)))
