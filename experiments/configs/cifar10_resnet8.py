"""CIFAR-10 / ResNet-8 (MLPerf Tiny IC), the reference protocol of icl_mixprec_training_cost_*.py.

Warm-up, search and fine-tune of 500 epochs each (early stopping, patience 50, on validation
accuracy, only from epoch 21); Adam lr 1e-3 with L2 weight decay 1e-4 (no decay on PACT clips);
arch logits SGD lr 1e-2 momentum 0.9; LambdaLR 0.99^epoch on both; batch 32; temperature
T <- T exp(-0.045) per search epoch; weight precisions (0, 2, 4, 8), activations 8 bit; unsigned
PACT input quantizer with clip 1 (images in [0, 1], no normalisation). METHOD.md §6.

Launch (lambdas are unnormalised: size in bits is ~6e5 at all-8-bit)::

  jpq sweep --config experiments/configs/cifar10_resnet8.py --workdir runs/c10_size \\
      --config.sweep.lambdas=1e-7,3e-7,1e-6,3e-6,1e-5
  jpq sweep --config experiments/configs/cifar10_resnet8.py search.cost=mpic sweep.lambdas=1e-8,1e-7

A ResNet-8 search step compiles in 10-16 s on a CPU; a full run needs an accelerator (hours).
"""

from jpq_jax.sweep import base_config


def get_config():
  """CIFAR-10 / ResNet-8 sweep config."""
  c = base_config()
  c.name = "cifar10_resnet8"
  c.data.name = "cifar10"
  c.model.name = "resnet8"
  c.model.w_precisions = (0, 2, 4, 8)
  c.model.a_precisions = (8,)
  c.model.input_clip_init = 1.0
  c.train.batch_size = 32
  c.train.monitor = "acc"
  c.train.patience = 50
  for ph in ("warmup", "search", "finetune"):
    c[ph].epochs = 500
    c[ph].optimizer.name = "adam"
    c[ph].optimizer.lr = 1e-3
    c[ph].optimizer.wd = 1e-4
    c[ph].schedule.kind = "exp"
    c[ph].schedule.gamma = 0.99
  c.search.arch_optimizer.lr = 1e-2
  c.search.temperature_decay = 0.045
  c.search.cost = "size"
  c.sweep.lambdas = (1e-7, 3e-7, 1e-6, 3e-6, 1e-5)
  return c
