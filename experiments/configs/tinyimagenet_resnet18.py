"""Tiny ImageNet (64 px, 200 classes) / ResNet-18 with the reduced stem, the tin_* reference protocol.

50 epochs per phase, batch 100, SGD lr 1e-3 momentum 0.9 wd 1e-4 on the weights, arch SGD lr 1e-3
momentum 0.9; StepLR(7, 0.1); temperature T <- T exp(-0.45) per epoch (the same final value as
500 epochs of exp(-0.045)); early stopping (patience 50) on validation accuracy from epoch 21.

The reference's two-stage warm-up (224 px ImageNet-pretrained, then 64 px) is NOT reproduced: the
warm-up here trains the 64-px model from scratch with the fine-tune optimizer; reuse an externally
trained float model with ``warmup.checkpoint=<dir>`` (a ``warmup/`` directory of an earlier run).

Launch::

  jpq sweep --config experiments/configs/tinyimagenet_resnet18.py --workdir runs/tin \\
      --config.sweep.lambdas=1e-9,1e-8,1e-7
"""

from jpq_jax.sweep import base_config


def get_config():
  """Tiny ImageNet / ResNet-18 sweep config."""
  c = base_config()
  c.name = "tinyimagenet_resnet18"
  c.data.name = "tinyimagenet"
  c.model.name = "resnet18"
  c.train.batch_size = 100
  c.train.eval_batch_size = 200
  c.train.monitor = "acc"
  c.train.patience = 50
  for ph in ("warmup", "search", "finetune"):
    c[ph].epochs = 50
    c[ph].optimizer.name = "sgd"
    c[ph].optimizer.lr = 1e-3
    c[ph].optimizer.momentum = 0.9
    c[ph].optimizer.wd = 1e-4
    c[ph].schedule = {"kind": "step", "step_size": 7, "gamma": 0.1}
  c.search.arch_optimizer.lr = 1e-3
  c.search.temperature_decay = 0.45
  c.sweep.lambdas = (1e-9, 1e-8, 1e-7)
  return c
