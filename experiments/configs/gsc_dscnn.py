"""Google Speech Commands v2 (12 classes) / DS-CNN (MLPerf Tiny KWS), the kws_* reference protocol.

200 epochs per phase, batch 100, Adam lr 1e-3 wd 1e-4, arch SGD lr 1e-2 momentum 0.9; step
schedule x0.5 after epoch 50, x0.5 after 100, x0.4 after 150; class-weighted cross-entropy;
early stopping (patience 50) on the validation LOSS, which in the search includes lambda times the
argmax cost; signed 8-bit PACT input quantizer with clips (-6, 6). METHOD.md §6.

Launch::

  jpq sweep --config experiments/configs/gsc_dscnn.py --workdir runs/gsc \\
      --config.sweep.lambdas=1e-7,1e-6,1e-5
"""

from jpq_jax.sweep import base_config


def get_config():
  """GSC / DS-CNN sweep config."""
  c = base_config()
  c.name = "gsc_dscnn"
  c.data.name = "gsc"
  c.model.name = "dscnn"
  c.model.input_signed = True
  c.model.input_precisions = (8,)
  c.model.input_signed_clips = (-6.0, 6.0)
  c.train.batch_size = 100
  c.train.eval_batch_size = 200
  c.train.monitor = "loss"
  c.train.class_weights = True
  c.train.patience = 50
  for ph in ("warmup", "search", "finetune"):
    c[ph].epochs = 200
    c[ph].optimizer.name = "adam"
    c[ph].optimizer.lr = 1e-3
    c[ph].optimizer.wd = 1e-4
    c[ph].schedule = {"kind": "multistep", "milestones": (50, 100, 150),
                      "factors": (0.5, 0.5, 0.4)}
  c.search.arch_optimizer.lr = 1e-2
  c.search.temperature_decay = 0.045
  c.sweep.lambdas = (1e-7, 1e-6, 1e-5)
  return c
