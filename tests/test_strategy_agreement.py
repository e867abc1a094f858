"""The ``vmap`` strategy computes what ``loop`` computes: same quantizer codes, ulp-level steps.

Before 2026-12-01, ``jax.vmap`` over the sweep members turned every division by a per-member
scalar (PACT's ``/ k``, the activation scale ``clip / (2^b - 1)``, the temperature of
``softmax(alpha / T)``) into a multiplication by the reciprocal, one ulp off for many elements:
the next quantizer's rounding ties moved, so a vmapped member trained on other quantized values
than the same member in the loop from its very first step (demo: 5% of the stem's outputs
differed, up to 13 quantization levels; the first-step loss of member 0 by 1e-3 relative; the
weights after one step by 3e-3). ``benchmarks/agreement.py`` measures the trajectories.
"""


import jax
import jax.numpy as jnp
import numpy as np

import test_sweep_helpers as H  # sets up the persistent compile cache first
from jpq_jax import choice, quant, sweep
from jpq_jax.layers import Ctx


def test_pact_vmapped_over_clips_is_the_per_member_pact():
  x = jax.random.uniform(jax.random.PRNGKey(0), (16, 8, 8, 4), minval=-1.0, maxval=7.0)
  clips = jnp.asarray([6.0, 5.3, 1.0, 2.718, 0.37], jnp.float32)
  for bits in (2, 4, 8):
    single = np.stack([np.asarray(jax.jit(lambda c: quant.pact(x, c, bits))(c)) for c in clips])
    batched = np.asarray(jax.jit(jax.vmap(lambda c: quant.pact(x, c, bits)))(clips))
    np.testing.assert_array_equal(batched, single)
    lo, hi = -clips, clips
    s1 = np.stack([np.asarray(jax.jit(lambda a, b: quant.pact_signed(x, a, b, bits))(a, b))
                   for a, b in zip(lo, hi)])
    s2 = np.asarray(jax.jit(jax.vmap(lambda a, b: quant.pact_signed(x, a, b, bits)))(lo, hi))
    np.testing.assert_array_equal(s2, s1)
    sc1 = np.stack([np.asarray(jax.jit(lambda c: quant.pact_scale(c, bits))(c)) for c in clips])
    sc2 = np.asarray(jax.jit(jax.vmap(lambda c: quant.pact_scale(c, bits)))(clips))
    np.testing.assert_array_equal(sc2, sc1)


def test_mixture_and_softmax_vmapped_are_the_per_member_ones():
  x = jax.random.uniform(jax.random.PRNGKey(1), (8, 6, 6, 3), minval=-1.0, maxval=7.0)
  clips = jnp.asarray([[6.0, 5.0, 4.0], [3.3, 2.2, 1.1]], jnp.float32)
  alpha = jax.random.normal(jax.random.PRNGKey(2), (2, 3, 5))
  temps = jnp.asarray([0.7, 0.31], jnp.float32)
  th = lambda a, t: choice.sample_theta(a, t, train=True)
  mix = lambda c, a, t: quant.pact_mixture(x, c, th(a, t)[:, 0], (2, 4, 8), relu=True)
  one = [jax.jit(mix)(c, a, t) for c, a, t in zip(clips, alpha, temps)]
  many = jax.jit(jax.vmap(mix))(clips, alpha, temps)
  # The mixture sums theta-weighted copies: the batched reduction may add in another order (1 ulp).
  np.testing.assert_array_max_ulp(np.asarray(many), np.stack([np.asarray(o) for o in one]), 4)
  # theta: the softmax's own exp / sum / normalisation may round differently batched (4 ulps);
  # the division by T itself is exact (it was a reciprocal multiplication: up to 6e-7 relative).
  np.testing.assert_array_max_ulp(np.asarray(jax.jit(jax.vmap(th))(alpha, temps)),
                                  np.stack([np.asarray(jax.jit(th)(a, t))
                                            for a, t in zip(alpha, temps)]), 4)
  z1 = np.stack([np.asarray(jax.jit(quant.div_by_scalar)(a, t)) for a, t in zip(alpha, temps)])
  np.testing.assert_array_equal(np.asarray(jax.jit(jax.vmap(quant.div_by_scalar))(alpha, temps)),
                                z1)
  # ... and the gradients reaching the logits through the temperature division agree too.
  g = lambda a, t: jax.grad(lambda a: jnp.sum(th(a, t) ** 2))(a)
  np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(g))(alpha, temps)),
                             np.stack([np.asarray(jax.jit(g)(a, t)) for a, t in zip(alpha, temps)]),
                             rtol=1e-6, atol=1e-7)


def test_demo_search_step_vmapped_matches_single_members():
  """One search step of 4 demo members (different lambdas and temperatures): every quantized
  activation of the forward is bit-identical in both programs, the loss equal to roundoff of the
  unquantized classifier, and the new states equal to gradient roundoff (was 1e-3 and 3e-3)."""
  from jpq_jax.fold import to_search  # pylint: disable=import-outside-toplevel
  from jpq_jax.train import _ctx  # pylint: disable=import-outside-toplevel
  c = H.tiny_config(lambdas=(0.0, 1e-5, 2e-4, 1e-3))
  sw = sweep.Sweep(c, H.scratch_dir("jpq_test_agree_"), progress=False)
  sw._setup()  # pylint: disable=protected-access
  v = jax.jit(lambda x: sw.model.init(jax.random.PRNGKey(0), x, Ctx.float()))(sw.sample)
  svars = to_search(sw.model, {k: v[k] for k in ("params", "batch_stats")}, sw.sample,
                    table=sw.table)
  tx, step, _, _ = sw._phase_fns("search")  # pylint: disable=protected-access
  st = sw._initial_states("search", tx, [svars] * sw.n, 1.0)  # pylint: disable=protected-access
  st = st.replace(temperature=jnp.asarray([1.0, 0.83, 0.52, 0.3], jnp.float32))
  x, y = next(iter(sw.train_loader.epoch(0)))
  lams = np.asarray([m["lam"] for m in sw.members], np.float32)

  def fwd(params, extra, temperature):
    out, inter = sw.model.apply({**params, **extra}, x, _ctx("search", True, temperature),
                                capture_intermediates=True, mutable=["intermediates"])
    return inter

  many = jax.jit(jax.vmap(fwd))(st.params, st.extra, st.temperature)
  vstep = jax.jit(jax.vmap(step, in_axes=(0, None, None, 0, None, 0)))
  new_v, m_v = vstep(st, x, y, lams, np.float32(1.0), np.zeros(4, np.float32))
  one_step, one_fwd = jax.jit(step), jax.jit(fwd)
  for k in range(4):
    sk = jax.tree_util.tree_map(lambda a, k=k: a[k], st)
    inter = one_fwd(sk.params, sk.extra, sk.temperature)
    flat1 = jax.tree_util.tree_flatten_with_path(inter)[0]
    flatv = jax.tree_util.tree_flatten_with_path(many)[0]
    for (path, a), (_, b) in zip(flat1, flatv):
      name = jax.tree_util.keystr(path)
      if "'out'" in name or name.startswith("['intermediates']['__call__']"):
        continue  # the unquantized classifier output: float32 roundoff of a batched matmul
      np.testing.assert_array_equal(np.asarray(b[k]), np.asarray(a), err_msg=f"member {k} {name}")
    new_1, m_1 = one_step(sk, x, y, lams[k], np.float32(1.0), np.float32(0.0))
    np.testing.assert_allclose(float(m_v["loss"][k]), float(m_1["loss"]), rtol=1e-6)
    for (path, a), (_, b) in zip(jax.tree_util.tree_flatten_with_path(new_1.params)[0],
                                 jax.tree_util.tree_flatten_with_path(new_v.params)[0]):
      a, b = np.asarray(a), np.asarray(b[k])
      scale = max(float(np.max(np.abs(a))), 1e-30)
      # Gradient roundoff of the batched (grouped) convolutions, through Adam's first step
      # g / (|g| + eps), where tiny gradients magnify it: measured <= 7e-6 (was 3e-3).
      assert float(np.max(np.abs(a - b))) / scale < 1e-4, (k, jax.tree_util.keystr(path))
