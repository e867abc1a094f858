"""ImageNet (ILSVRC 2012, 224 px, 1000 classes) / ResNet-50, the imn_* reference protocol.

The paper's fourth experiment (README figure "ImageNet_MPIC_and_NE16": fronts searched with the
MPIC and NE16 costs). Settings from METHOD.md §6.2 and §2.4:

* weights SGD lr 1e-3, momentum 0.9, Nesterov, weight decay 4e-5 (none on the PACT clips); arch
  logits SGD lr 1e-3, momentum 0.9, Nesterov, no decay; StepLR(30, 0.1) on both;
* batch 128 per device (the reference runs DDP, 128 per GPU): ``train.batch_size`` is the global
  batch, so on D devices set ``train.batch_size=128*D``;
* label smoothing 0.1 (the reference's train loop default, every phase);
* temperature T <- T exp(-0.225) per search epoch (the 500-epoch final value over 100 epochs);
* early stopping on validation accuracy, patience 20 (hard-coded in the reference), selection
  from epoch 21;
* weights (0, 2, 4, 8), activations 8 bit, network input signed PACT at 8 bit with clips
  initialised at (-3, 3) (METHOD.md §3.3), after the ImageNet mean/std normalisation (done by
  the model, :class:`jpq_jax.models.ResNet50`);
* data: a seeded 10% of the training images is the validation split, the official validation
  set the test split; RandomResizedCrop 224 + flip for training, Resize 256 + CenterCrop 224 for
  evaluation (METHOD.md §9.4).

Epochs: the reference's command-line default is 1 epoch per phase and the values the paper used
are not in the repository; its temperature decay is rescaled to 100 epochs, which this config
takes as the length of the search and of the fine-tuning (``search.epochs`` /
``finetune.epochs`` to change).

Warm-up: the reference does not train one, it starts from torchvision's pretrained
``IMAGENET1K_V2`` weights. Converted with :func:`jpq_jax.models.resnet50.torchvision_variables`
and saved with :func:`jpq_jax.checkpoint.save_tree` as ``<dir>/warmup``, they are the warm-up
with ``warmup.checkpoint=<dir>/warmup`` (``run_benchmark.py``: ``--warmup-from <dir>/warmup``).
Without them this config trains the float model from scratch with torchvision's classic recipe
(SGD lr 0.1, momentum 0.9, wd 1e-4, StepLR(30, 0.1), 90 epochs), which is jpq's choice, not the
reference's.

Lambdas: the size of the all-8-bit network is 204,023,296 bits (25,502,912 weights; ResNet-8's
is 618,880), so lambda * size at the start of the search is 0.06 .. 2 for the lambdas below,
next to a cross-entropy of ln(1000) = 6.9. ``experiments/run_benchmark.py`` rescales them for
the MPIC and NE16 runs (all-8-bit: 1,947,230,976 and 63,615,984 cycles).

Data: ``data.name = "imagenet"`` reads an image folder or zip with ``train/<wnid>/*.JPEG`` and
``val/<wnid>/*.JPEG`` into host memory (:mod:`jpq_jax.data.imagenet`: ~150 kB per image at
224 px, so the full 1.28M images need ~190 GB; ``data.options.train_per_class=N`` keeps N per
class). A prepared TFDS copy is ``data.name = "tfds:imagenet2012"`` with ``data.data_dir`` the
TFDS data directory, where jpq's streaming TFDS source is available (issue 20): give it
``data.options.image_size=224`` and ``data.options.augment="imagenet"``, and no ``mean``/``std``
(the model normalises; normalising twice would feed the network the wrong range). Its images
are resized to 224 x 224 as a whole (aspect ratio not kept), not Resize 256 + CenterCrop 224.

Launch (an accelerator; one ImageNet epoch of ResNet-50 is ~4 GMACs x 3 x 1.15M images per
member)::

  python experiments/run_benchmark.py imagenet_resnet50 --data-dir /data/imagenet \\
      --runs joint_mpic,joint_ne16 --warmup-from /data/resnet50_v2/warmup
  jpq sweep --config experiments/configs/imagenet_resnet50.py --workdir runs/imn_size \\
      data.data_dir=/data/imagenet warmup.checkpoint=/data/resnet50_v2/warmup
"""

from jpq_jax.sweep import base_config


def get_config():
  """ImageNet / ResNet-50 sweep config."""
  c = base_config()
  c.name = "imagenet_resnet50"
  c.data.name = "imagenet"  # or "tfds:imagenet2012" (a TFDS data directory in data.data_dir)
  c.model.name = "resnet50"
  c.model.w_precisions = (0, 2, 4, 8)
  c.model.a_precisions = (8,)
  c.model.input_signed = True
  c.model.input_precisions = (8,)
  c.model.input_signed_clips = (-3.0, 3.0)
  c.task.options.label_smoothing = 0.1
  c.train.batch_size = 128
  c.train.eval_batch_size = 256
  c.train.monitor = "acc"
  c.train.patience = 20
  c.train.earlystop_start = 20
  for ph in ("search", "finetune"):
    c[ph].epochs = 100
    c[ph].optimizer.name = "sgd"
    c[ph].optimizer.lr = 1e-3
    c[ph].optimizer.momentum = 0.9
    c[ph].optimizer.nesterov = True
    c[ph].optimizer.wd = 4e-5
    c[ph].schedule = {"kind": "step", "step_size": 30, "gamma": 0.1}
  # Float model from scratch (only without warmup.checkpoint): torchvision's classic recipe.
  c.warmup.epochs = 90
  c.warmup.optimizer.name = "sgd"
  c.warmup.optimizer.lr = 0.1
  c.warmup.optimizer.momentum = 0.9
  c.warmup.optimizer.wd = 1e-4
  c.warmup.schedule = {"kind": "step", "step_size": 30, "gamma": 0.1}
  c.search.arch_optimizer.name = "sgd"
  c.search.arch_optimizer.lr = 1e-3
  c.search.arch_optimizer.momentum = 0.9
  c.search.arch_optimizer.nesterov = True
  c.search.arch_optimizer.wd = 0.0
  c.search.temperature_decay = 0.225
  c.search.cost = "size"
  c.sweep.lambdas = (3e-10, 1e-9, 3e-9, 1e-8)
  return c
