"""ResNet-50 (ImageNet, 224 px, 1000 classes): torchvision's ``resnet50``, METHOD.md §8.4.

The reference searches torchvision's ResNet-50 (v1.5: the stride of a downsampling bottleneck is on
its 3x3 conv, not on the first 1x1). Stem: conv1 7x7/2 (pad 3, no bias), BN, ReLU, max-pool 3x3/2
(pad 1). Bottleneck(in, width, stride): conv1 1x1 (in -> width), BN, ReLU; conv2 3x3/stride
(width -> width), BN, ReLU; conv3 1x1 (width -> 4 width), BN; shortcut = identity, or
downsample 1x1/stride (in -> 4 width) + BN in the first block of every stage; add, ReLU. Stages
[3, 4, 6, 3] blocks of widths 64, 128, 256, 512 (outputs 256, 512, 1024, 2048); global average
pool; fc 2048 -> 1000 with bias. Layer names follow torchvision's (``layer2_0_conv2`` is
``layer2.0.conv2``), so a torchvision state dict maps onto them name by name.

Sharing groups (§2.6, the union of the operands of every residual add): one group per stage's
residual stream, ``g_layer<s>`` = {layer<s>_0_downsample, layer<s>_<b>_conv3 for every block b}.
The stem conv is a singleton (a max-pool and the first block's 1x1 convs and projection separate it
from the stream: every stage starts with a projection), every block's conv1 and conv2 are
singletons, and fc has the output group. 38 groups with the input quantizer's excluded.

Totals at 224 px (float): 25,557,032 parameters (25,502,912 conv/fc weights, 53,120 BatchNorm
scales and offsets, 1,000 fc biases; torchvision's figure, BN running statistics not counted),
4,089,184,256 MACs (conv and fc multiply-accumulates; torchvision's "4.09 GFLOPS").

Input: images in [0, 1] (what the data pipeline gives), NHWC. The model normalises them with the
ImageNet mean and standard deviation (torchvision's ``Normalize``, which the reference applies in
its data transform) before the network-input quantizer, which is the reference's signed PACT at
8 bit with clips initialised at (-3, 3) (METHOD.md §3.3); the ``imagenet_resnet50`` config sets
that search space. Normalising in the model keeps the data pipeline's contract (uint8 images
scaled to [0, 1]) unchanged; the deployment export's input is then the normalised image.

The reference starts from torchvision's pretrained ``IMAGENET1K_V2`` weights instead of a warm-up:
:func:`torchvision_variables` converts such a state dict into this model's float variables, to be
saved with :func:`jpq_jax.checkpoint.save_tree` and given to a sweep as ``warmup.checkpoint``.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jpq_jax import ops
from jpq_jax.layers import Add, Conv, Ctx, Dense, Group, InputQuantizer, QTensor, SearchSpace

__all__ = ["ResNet50", "IMAGENET_MEAN", "IMAGENET_STD", "STAGES", "reference_space",
           "torchvision_variables"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# (blocks, bottleneck width) per stage; a block's output is 4 x its width.
STAGES = ((3, 64), (4, 128), (6, 256), (3, 512))
EXPANSION = 4

# torchvision's init: kaiming_normal_(mode="fan_out", nonlinearity="relu") for every conv, and
# nn.Linear's default for fc (kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in))).
_KAIMING_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_TORCH_LINEAR = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def reference_space(**overrides) -> SearchSpace:
  """The ImageNet search space of the reference (METHOD.md §3.3, §3.5).

  Weights (0, 2, 4, 8), activations 8 bit, network input signed PACT at 8 bit, clips (-3, 3).

  Args:
    **overrides: other :class:`~jpq_jax.SearchSpace` fields.

  Returns:
    The search space.
  """
  fields = dict(input_signed=True, input_precisions=(8,), input_signed_clips=(-3.0, 3.0))
  fields.update(overrides)
  return SearchSpace(**fields)


class ResNet50(nn.Module):
  """torchvision's ResNet-50 (v1.5) in float / search / fixed mode.

  Attributes:
    space: search space (default :func:`reference_space`).
    num_classes: classifier outputs (1000).
    input_mean: per-channel mean subtracted from the [0, 1] input; ``None`` feeds the input to the
      input quantizer as it is (then ``input_std`` must be ``None`` too).
    input_std: per-channel standard deviation the centred input is divided by.
  """
  space: SearchSpace = reference_space()
  num_classes: int = 1000
  input_mean: Optional[Tuple[float, ...]] = IMAGENET_MEAN
  input_std: Optional[Tuple[float, ...]] = IMAGENET_STD

  @nn.compact
  def __call__(self, x, ctx: Ctx) -> QTensor:
    sp = self.space
    if isinstance(x, QTensor):
      x = x.value
    if (self.input_mean is None) != (self.input_std is None):
      raise ValueError("ResNet50: give both input_mean and input_std, or neither (no "
                       "normalisation)")
    if self.input_mean is not None:
      if len(self.input_mean) != x.shape[-1] or len(self.input_std) != x.shape[-1]:
        raise ValueError(f"ResNet50: input has {x.shape[-1]} channels but input_mean/input_std "
                         f"have {len(self.input_mean)}/{len(self.input_std)} values")
      x = (x - jnp.asarray(self.input_mean, x.dtype)) / jnp.asarray(self.input_std, x.dtype)
      if ctx.mode != "float" and not sp.input_signed:
        # Not an error: a user may mean it. But an unsigned PACT clamps the normalised input
        # (about [-2.1, 2.6]) to [0, clip], which silently discards half of every channel.
        warnings.warn("ResNet50 normalises its input to about [-2.1, 2.6], but its input quantizer "
                      "is unsigned and clips the negative values: use a signed one "
                      "(model.input_signed=True, as jpq_jax.models.resnet50.reference_space())",
                      stacklevel=2)

    def conv(f, k, g, name, s=1, pad=0, relu=False):
      # relu=True: the ReLU that follows the output quantizer (see Group.quantize).
      return Conv(f, k, group=g, strides=s, padding=pad, use_bias=False, use_bn=True,
                  kernel_init=_KAIMING_FAN_OUT, name=name, relu=relu)

    h = InputQuantizer(sp, name="input_q")(x, ctx)
    h = conv(64, 7, Group(64, sp, name="g_conv1"), "conv1", s=2, pad=3, relu=True)(h, ctx)
    h = h.map(ops.max_pool(3, 2, ((1, 1), (1, 1))))
    for si, (blocks, width) in enumerate(STAGES):
      out = EXPANSION * width
      stream = Group(out, sp, name=f"g_layer{si + 1}")
      for bi in range(blocks):
        stride = 2 if (si > 0 and bi == 0) else 1
        pre = f"layer{si + 1}_{bi}"
        y = conv(width, 1, Group(width, sp, name=f"g_{pre}_conv1"), f"{pre}_conv1",
                 relu=True)(h, ctx)
        y = conv(width, 3, Group(width, sp, name=f"g_{pre}_conv2"), f"{pre}_conv2", s=stride,
                 pad=1, relu=True)(y, ctx)
        y = conv(out, 1, stream, f"{pre}_conv3")(y, ctx)
        # Every stage's first block changes the channel count (64 -> 256 in stage 1), so it
        # always has the projection; the later blocks add the stream itself.
        sc = conv(out, 1, stream, f"{pre}_downsample", s=stride)(h, ctx) if bi == 0 else h
        h = Add(stream, relu=True, name=f"{pre}_add")(y, sc, ctx=ctx)
    h = h.map(ops.global_avg_pool).flatten()
    return Dense(self.num_classes, Group(self.num_classes, sp, output=True, name="g_out"),
                 kernel_init=_TORCH_LINEAR, name="fc")(h, ctx)


def _torch_names(num_blocks=STAGES):
  """``{(flax layer, flax conv name): (torchvision conv prefix, torchvision BN prefix)}``."""
  out = {"conv1": ("conv1", "bn1")}
  for si, (blocks, _) in enumerate(num_blocks):
    for bi in range(blocks):
      tv, jp = f"layer{si + 1}.{bi}", f"layer{si + 1}_{bi}"
      for k in (1, 2, 3):
        out[f"{jp}_conv{k}"] = (f"{tv}.conv{k}", f"{tv}.bn{k}")
      if bi == 0:
        out[f"{jp}_downsample"] = (f"{tv}.downsample.0", f"{tv}.downsample.1")
  return out


def torchvision_variables(state_dict: Mapping[str, Any], num_classes: int = 1000) -> Dict[str, Any]:
  """torchvision ``resnet50`` weights as :class:`ResNet50`'s float variables.

  Conv kernels go from PyTorch's ``(out, in, kh, kw)`` to Flax's ``(kh, kw, in, out)``, the fc
  weight from ``(out, in)`` to ``(in, out)``; BatchNorm ``weight``/``bias`` become
  ``scale``/``bias`` in ``params`` and ``running_mean``/``running_var`` become ``mean``/``var`` in
  ``batch_stats`` (``num_batches_tracked`` is dropped). Both use the same BN epsilon (1e-5).

  Usage (where torch and torchvision are installed; jpq does not need them)::

    import torchvision
    sd = torchvision.models.resnet50(weights="IMAGENET1K_V2").state_dict()
    jpq_jax.checkpoint.save_tree("/data/resnet50_v2/warmup", torchvision_variables(sd))
    # then: a sweep's warmup.checkpoint=/data/resnet50_v2/warmup, or every run of
    # experiments/run_benchmark.py imagenet_resnet50 with --warmup-from /data/resnet50_v2/warmup

  Args:
    state_dict: name -> array (numpy arrays, or torch tensors: anything with ``.numpy()`` or that
      ``numpy.asarray`` takes).
    num_classes: the classifier's outputs (must match ``fc.weight``).

  Returns:
    ``{'params': ..., 'batch_stats': ...}`` as nested dicts of float32 numpy arrays, shaped like
    ``ResNet50(num_classes=num_classes).init(...)``'s.

  Raises:
    ValueError: a missing or unexpected entry, or an entry of the wrong shape (named).
  """
  def arr(name):
    if name not in state_dict:
      raise ValueError(f"torchvision_variables: the state dict has no {name!r} (not a torchvision "
                       "resnet50 state dict?)")
    v = state_dict[name]
    if hasattr(v, "detach"):  # a torch tensor
      v = v.detach().cpu().numpy()
    return np.asarray(v, np.float32)

  used = set()

  def take(name):
    used.add(name)
    return arr(name)

  params: Dict[str, Any] = {}
  stats: Dict[str, Any] = {}
  for flax_name, (conv, bn) in _torch_names().items():
    params[flax_name] = {
        "kernel": np.transpose(take(f"{conv}.weight"), (2, 3, 1, 0)),
        "BatchNorm_0": {"scale": take(f"{bn}.weight"), "bias": take(f"{bn}.bias")}}
    stats[flax_name] = {"BatchNorm_0": {"mean": take(f"{bn}.running_mean"),
                                        "var": take(f"{bn}.running_var")}}
    used.add(f"{bn}.num_batches_tracked")
  params["fc"] = {"kernel": take("fc.weight").T, "bias": take("fc.bias")}
  extra = sorted(set(state_dict) - used)
  if extra:
    raise ValueError(f"torchvision_variables: unexpected entries {extra[:5]} (not torchvision's "
                     "resnet50?)")
  out = {"params": params, "batch_stats": stats}
  # Every shape must be the model's (a resnet101 state dict, say, or another class count).
  want = jax.eval_shape(
      lambda x: ResNet50(num_classes=num_classes).init(jax.random.PRNGKey(0), x, Ctx.float()),
      jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
  want = {"params": want["params"], "batch_stats": want["batch_stats"]}
  if jax.tree_util.tree_structure(out) != jax.tree_util.tree_structure(want):
    raise ValueError("torchvision_variables: the converted tree does not have ResNet50's layers")
  for path, leaf in jax.tree_util.tree_leaves_with_path(out):
    ref = want
    for k in path:
      ref = ref[k.key]
    if tuple(leaf.shape) != tuple(ref.shape):
      raise ValueError(f"torchvision_variables: {jax.tree_util.keystr(path)} has shape "
                       f"{leaf.shape}, ResNet50(num_classes={num_classes}) needs {ref.shape}")
  return out
