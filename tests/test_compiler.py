"""jpq's XLA compiler options: chosen per backend, and they do not change what a step computes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jpq_jax as jpq
from jpq_jax import compiler
from jpq_jax.models import get_model


def test_settings_and_backends():
  assert compiler.compiler_options("default") is None
  assert compiler.compiler_options("auto", backend="gpu") is None
  assert compiler.compiler_options("auto", backend="tpu") is None
  # This machine's XLA:CPU supports the options (jaxlib pinned by pyproject.toml).
  assert compiler.compiler_options("auto", backend="cpu") == compiler.CPU_OPTIONS
  # A copy: callers may not edit the module's constant through it.
  compiler.compiler_options("auto", backend="cpu")["x"] = 1
  assert "x" not in compiler.CPU_OPTIONS
  with pytest.raises(ValueError, match="unknown XLA options setting 'fast'"):
    compiler.compiler_options("fast")


def test_options_keep_the_search_gradients():
  """A search-mode forward + backward compiled with and without the options agree to rounding."""
  model = get_model("demo", jpq.SearchSpace(a_precisions=(2, 4, 8)))
  x = jax.random.uniform(jax.random.PRNGKey(0), (4, 8, 8, 1))
  v = model.init(jax.random.PRNGKey(1), x, jpq.Ctx.search())

  def loss(params, arch):
    out = model.apply({"params": params, "arch": arch}, x, jpq.Ctx.search(0.5, train=True))
    return jnp.mean(out.value ** 2)

  f = jax.value_and_grad(loss, argnums=(0, 1))
  ref = jax.jit(f)(v["params"], v["arch"])
  opt = jax.jit(f, compiler_options=compiler.compiler_options(backend="cpu"))(v["params"], v["arch"])
  for a, b in zip(jax.tree_util.tree_leaves(ref), jax.tree_util.tree_leaves(opt)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
