"""Quick demo: DemoNet on the built-in 8x8 digits (scikit-learn), 8 lambdas, size cost.

Launch::

  jpq sweep                                           # same as --config experiments/configs/demo.py
  jpq sweep --config experiments/configs/demo.py --workdir runs/demo sweep.lambdas=0,1e-5,1e-4

Expected: a few minutes on a 2-core CPU; a Pareto front of accuracy vs weight size (bits) with
at least 5 distinct points (from ~77 kbit all-8-bit to a few kbit).
"""

from jpq_jax.sweep import demo_config


def get_config():
  """The demo sweep config (see :func:`jpq_jax.sweep.demo_config`)."""
  return demo_config()
