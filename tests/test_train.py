"""Training blocks: optimizer routing and L2 decay, schedules, strength ramp, early stopping, NaN."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import test_sweep_helpers  # noqa: F401  (persistent compile cache)
from jpq_jax import train as T


def test_param_labels():
  p = {"params": {"conv": {"kernel": 1.0, "bias": 2.0}, "g": {"clip": 3.0},
                  "in": {"clip_inf": 0.0, "clip_sup": 1.0}},
       "arch": {"g": {"alpha_w": 0.0}}}
  lab = T.param_labels(p)
  assert lab["params"]["conv"]["kernel"] == "net_wd"
  assert lab["params"]["g"]["clip"] == "net_nowd"
  assert lab["params"]["in"]["clip_sup"] == "net_nowd"
  assert lab["arch"]["g"]["alpha_w"] == "arch"


def test_optimizer_l2_in_gradient_and_groups():
  """Adam with decay = Adam on (g + wd * w) (PyTorch L2), clips undecayed, arch SGD-momentum."""
  p = {"params": {"k": jnp.array([1.0, -2.0]), "clip": jnp.array([6.0])},
       "arch": {"a": jnp.array([0.5])}}
  g = {"params": {"k": jnp.array([0.1, 0.2]), "clip": jnp.array([0.3])},
       "arch": {"a": jnp.array([0.4])}}
  tx = T.make_optimizer({"name": "adam", "lr": 1e-3, "wd": 1e-2},
                        {"name": "sgd", "lr": 1e-2, "momentum": 0.9})
  u, _ = tx.update(g, tx.init(p), p)
  ref_k, _ = optax.adam(1e-3).update(g["params"]["k"] + 1e-2 * p["params"]["k"],
                                     optax.adam(1e-3).init(p["params"]["k"]))
  np.testing.assert_allclose(u["params"]["k"], ref_k, rtol=1e-6)
  ref_c, _ = optax.adam(1e-3).update(g["params"]["clip"], optax.adam(1e-3).init(p["params"]["clip"]))
  np.testing.assert_allclose(u["params"]["clip"], ref_c, rtol=1e-6)
  np.testing.assert_allclose(u["arch"]["a"], -1e-2 * 0.4, rtol=1e-6)


def test_schedules():
  assert T.lr_factor({"kind": "exp", "gamma": 0.99}, 10, 500) == pytest.approx(0.99 ** 10)
  ms = {"kind": "multistep", "milestones": (50, 100, 150), "factors": (0.5, 0.5, 0.4)}
  assert [T.lr_factor(ms, e, 200) for e in (49, 50, 100, 150)] == pytest.approx([1, .5, .25, .1])
  assert T.lr_factor({"kind": "step", "step_size": 7, "gamma": 0.1}, 14, 50) == pytest.approx(0.01)
  assert T.temperature_at(1.0, 0.045, 2) == pytest.approx(math.exp(-0.09))
  lam = T.strength_at([1.0], 0, 10, True)
  assert lam[0] == pytest.approx(0.01)
  assert T.strength_at([1.0], 2, 10, True)[0] == pytest.approx(0.01 + 2 * 0.99 / 5)
  assert T.strength_at([1.0], 5, 10, True)[0] == pytest.approx(1.0)
  assert T.strength_at([2.0], 3, 10, False)[0] == 2.0
  assert T.earlystop_start(500) == 20 and T.earlystop_start(20) == -1


def _dummy_state():
  tx = optax.sgd(1.0)
  params = {"params": {"w": jnp.zeros(2)}}
  return T.init_state("finetune", params, tx, key=jax.random.PRNGKey(0))


def test_end_epoch_window_and_patience():
  s = _dummy_state()
  end = jax.jit(lambda s, m: T.end_epoch(s, m, start=1, patience=2, temperature_decay=0.5))
  for m in (0.9, 0.95):  # epochs 0 and 1 never count
    s = end(s, jnp.float32(m))
  assert int(s.best_epoch) == -1
  s = s.replace(params={"params": {"w": jnp.ones(2)}})
  s = end(s, jnp.float32(0.5))  # epoch 2: first eligible -> saved
  assert int(s.best_epoch) == 2 and float(s.best_metric) == 0.5
  s = s.replace(params={"params": {"w": 2 * jnp.ones(2)}})
  s = end(s, jnp.float32(0.5))  # not strictly better
  s = end(s, jnp.float32(jnp.nan))
  assert bool(s.stopped) and int(s.best_epoch) == 2
  np.testing.assert_allclose(s.temperature, math.exp(-0.5 * 5), rtol=1e-6)
  s = T.restore_best(s)
  np.testing.assert_allclose(s.params["params"]["w"], 1.0)


def test_nan_step_freezes_member():
  from jpq_jax.models import get_model
  from jpq_jax import trace_table, to_search
  model = get_model("demo")
  x = jnp.ones((4, 8, 8, 1))
  y = jnp.arange(4) % 10
  fv = model.init(jax.random.PRNGKey(0), x, T.Ctx.float())
  sv = to_search(model, fv, x[:1])
  table = trace_table(model, x[:1])
  tx = T.make_optimizer({"name": "adam", "lr": 1e-3, "wd": 1e-4},
                        {"name": "sgd", "lr": 1e-2, "momentum": 0.9})
  step = jax.jit(T.make_train_step(model, table, "search", tx, cost="size"))
  s0 = T.init_state("search", sv, tx, key=jax.random.PRNGKey(1), lam=1e-6)
  s1, m = step(s0, x, y, jnp.float32(1e-6), jnp.float32(1.0), jnp.float32(0.0))
  assert bool(m["ok"]) and not bool(s1.failed) and int(s1.step) == 1
  assert float(m["cost"]) > 0
  s2, m = step(s1, x, y, jnp.float32(1e-6), jnp.float32(1.0), jnp.float32(jnp.nan))
  assert not bool(m["ok"]) and bool(s2.failed) and int(s2.step) == 1
  jax.tree_util.tree_map(np.testing.assert_array_equal, s2.params, s1.params)
  s3, _ = step(s2, x, y, jnp.float32(1e-6), jnp.float32(1.0), jnp.float32(0.0))
  assert bool(s3.failed) and int(s3.step) == 1  # stays frozen


@pytest.mark.parametrize("phase", ["warmup", "search", "finetune"])
def test_remat_dots_is_the_same_step(phase):
  """``remat="dots"`` recomputes the elementwise work in the backward: same loss, metrics and
  updated state up to float32 roundoff of the recomputation, in every phase."""
  from jpq_jax.models import get_model
  from jpq_jax import trace_table, to_search, to_fixed
  model = get_model("demo")
  x = jax.random.uniform(jax.random.PRNGKey(3), (8, 8, 8, 1))
  y = jnp.arange(8) % 10
  fv = model.init(jax.random.PRNGKey(0), x, T.Ctx.float())
  table = trace_table(model, x[:1])
  sv = to_search(model, fv, x[:1])
  variables = {"warmup": fv, "search": sv, "finetune": to_fixed(sv, table)}[phase]
  tx = T.make_optimizer({"name": "adam", "lr": 1e-3, "wd": 1e-4},
                        {"name": "sgd", "lr": 1e-2, "momentum": 0.9} if phase == "search" else None)
  s0 = T.init_state(phase, variables, tx, key=jax.random.PRNGKey(1), lam=1e-6)
  args = (x, y, jnp.float32(1e-3), jnp.float32(1.0), jnp.float32(0.0))
  outs = [jax.jit(T.make_train_step(model, table, phase, tx, cost="size", remat=r))(s0, *args)
          for r in T.REMAT_POLICIES]
  (s_a, m_a), (s_b, m_b) = outs
  assert bool(m_a["ok"]) and bool(m_b["ok"])
  for a, b in zip(jax.tree_util.tree_leaves((s_a, m_a)), jax.tree_util.tree_leaves((s_b, m_b))):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                               rtol=1e-4, atol=1e-6)
  jaxprs = [str(jax.make_jaxpr(T.make_train_step(model, table, phase, tx, cost="size", remat=r))(
      s0, *args)) for r in T.REMAT_POLICIES]
  assert "checkpoint[" not in jaxprs[0] and "policy=" not in jaxprs[0]
  assert "dots_saveable" in jaxprs[1] or "DotsSaveable" in jaxprs[1]
  with pytest.raises(ValueError, match="unknown remat policy 'all'"):
    T.make_train_step(model, table, phase, tx, remat="all")


def test_unknown_phase_is_rejected():
  # A typo must not silently select the fixed-precision path.
  from jpq_jax import pit
  from jpq_jax.models import DemoNet
  tx = T.make_optimizer({"name": "sgd", "lr": 0.1})
  with pytest.raises(ValueError, match="unknown phase 'serach'"):
    T.make_train_step(DemoNet(), None, "serach", tx)
  with pytest.raises(ValueError, match="unknown phase 'fine-tune'"):
    T.make_eval_step(DemoNet(), "fine-tune")
  with pytest.raises(ValueError, match="unknown phase 'warm'"):
    T.init_state("warm", {"params": {}}, tx, key=jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="unknown PIT phase 'search'"):
    pit.make_eval_step(DemoNet(), None, "search")
