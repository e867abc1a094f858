"""XLA compiler options for jpq's compiled training and evaluation steps.

On XLA:CPU (jaxlib 0.10) the default pipeline hands reductions to YNNPACK fusions, which read
materialised inputs: every elementwise expression feeding a reduction (the activation mixture of
:func:`jpq_jax.quant.pact_mixture`, the masks and products of its backward, batch-norm statistics)
is written out to a full-size buffer first. Restricting YNNPACK to dots
(``xla_cpu_experimental_ynn_fusion_type``) lets XLA's own reduction emitter fuse those inputs.
Measured on a 2-core CPU (``benchmarks/step.py``, ResNet-8, batch 32): with the fused mixture the
search step with activations {2,4,8} needs 28.5 MB and ~49 ms (71 MB and ~70 ms as a sum of copies
with XLA's defaults; the fused mixture with XLA's defaults 104 MB), the float step 24 MB instead of
34 MB at about the same speed. Other backends get no options.

The options change only how XLA schedules and fuses the computation, not what it computes; sums may
be ordered differently (float32 rounding).
"""

from __future__ import annotations

import functools
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp

__all__ = ["SETTINGS", "CPU_OPTIONS", "compiler_options"]

SETTINGS = ("auto", "default")

CPU_OPTIONS: Dict[str, Any] = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
}


@functools.lru_cache(maxsize=None)
def _cpu_options_supported() -> bool:
  """Whether this jaxlib's XLA:CPU knows :data:`CPU_OPTIONS` (they are experimental flags)."""
  try:
    x = jax.device_put(jnp.zeros(2), jax.devices("cpu")[0])
    jax.jit(lambda x: x + 1, compiler_options=dict(CPU_OPTIONS)).lower(x).compile()
    return True
  except Exception:  # pylint: disable=broad-except
    # Unknown flag or enum value in another jaxlib: compile with XLA's defaults instead.
    return False


def compiler_options(setting: str = "auto", backend: Optional[str] = None) -> Optional[Dict[str, Any]]:
  """The ``compiler_options`` to give ``jax.jit`` for a jpq training or evaluation step.

  Args:
    setting: ``"auto"`` (jpq's options for the backend, when this jaxlib supports them) or
      ``"default"`` (XLA's defaults).
    backend: the backend the step runs on (default ``jax.default_backend()``).

  Returns:
    A dict for ``jax.jit(..., compiler_options=...)``, or ``None`` for XLA's defaults.

  Raises:
    ValueError: an unknown ``setting``.
  """
  if setting not in SETTINGS:
    raise ValueError(f"unknown XLA options setting {setting!r}; use one of {SETTINGS}")
  if setting == "default":
    return None
  if (backend or jax.default_backend()) != "cpu" or not _cpu_options_supported():
    return None
  return dict(CPU_OPTIONS)
