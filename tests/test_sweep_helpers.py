"""Shared helpers of the sweep/CLI tests: a tiny demo config and a persistent compile cache.

Every sweep in these tests compiles the same step programs (lambda and the temperature are arrays),
so JAX's persistent compilation cache (also handed to subprocesses through the environment) turns
all compiles after the first into cache hits.
"""

import os

import jax

# The same cache as .ci/run's and the README's (not /tmp: the tests leave nothing there).
CACHE_DIR = os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                                  os.path.expanduser("~/.cache/jpq_jax/jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

# Subprocess limits are hang guards only, never performance checks: a loaded 2-core machine runs
# a tiny sweep 5-10x slower than an idle one (JPQ_TEST_TIMEOUT_S overrides).
SUBPROCESS_TIMEOUT_S = float(os.environ.get("JPQ_TEST_TIMEOUT_S", 3600))

LAMBDAS = (1e-5, 2e-4, 1e-3)

TINY_CONFIG_SOURCE = '''
from jpq_jax.sweep import demo_config

def get_config():
  c = demo_config()
  c.name = "tiny"
  c.train.batch_size = 16
  c.train.eval_batch_size = 128
  c.warmup.epochs = 2
  c.search.epochs = 3
  c.finetune.epochs = 2
  c.debug.max_steps_per_epoch = 4
  c.sweep.lambdas = {lambdas}
  c.sweep.strategy = "loop"
  return c
'''


def tiny_config(lambdas=LAMBDAS, strategy="loop"):
  """The tiny demo config used across tests (seconds per sweep once compiled)."""
  ns = {}
  exec(TINY_CONFIG_SOURCE.format(lambdas=tuple(lambdas)), ns)  # pylint: disable=exec-used
  c = ns["get_config"]()
  c.sweep.strategy = strategy
  return c


def write_tiny_config(path, lambdas=LAMBDAS):
  """Write the tiny config as a config file for the CLI."""
  with open(path, "w") as f:
    f.write(TINY_CONFIG_SOURCE.format(lambdas=tuple(lambdas)))
  return str(path)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_RUNS = {}
_SCRATCH = []


def scratch_dir(prefix: str) -> str:
  """A temporary directory that lives until the end of the test session (see :func:`cleanup`)."""
  import tempfile  # pylint: disable=import-outside-toplevel
  d = tempfile.mkdtemp(prefix=prefix)
  _SCRATCH.append(d)
  return d


def cleanup() -> None:
  """Remove every :func:`scratch_dir` of this process (conftest calls it at the session's end)."""
  import shutil  # pylint: disable=import-outside-toplevel
  while _SCRATCH:
    shutil.rmtree(_SCRATCH.pop(), ignore_errors=True)


def shared_run(name):
  """Sweeps shared by the test modules of one process (each runs once, in a temporary dir).

  ``warm``: single member LAMBDAS[0] (loop), also providing the shared warm-up;
  ``loop3`` / ``vmap3``: the 3 LAMBDAS members with that strategy, reusing the warm-up.
  Returns ``(workdir, results)``.
  """
  from jpq_jax import sweep  # pylint: disable=import-outside-toplevel
  if name not in _RUNS:
    wd = scratch_dir(f"jpq_test_{name}_")
    if name == "warm":
      c = tiny_config(lambdas=LAMBDAS[:1])
    else:
      c = tiny_config(strategy=name[:-1])
      c.warmup.checkpoint = os.path.join(shared_run("warm")[0], "warmup")
    _RUNS[name] = (wd, sweep.run_sweep(c, wd, progress=False))
  return _RUNS[name]
