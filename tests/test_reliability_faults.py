"""Fault isolation: a NaN member, a member that prunes whole groups, degenerate lambdas.

One sweep holds the reference members (lambdas 1e-5 and 1e-3 of the shared 3-member run) next to
members forced into trouble; the reference members must come out bit for bit as in the clean run,
and the troubled ones must say what happened in ``results.json`` and in ``jpq report``.

Finding (see ``test_fully_pruned_group_cost_is_finite_under_jit``): with every channel of a group
pruned, the reference's ``p_eff = sum(P n_w) / (Cout_eff + 1e-10)`` is 0 when evaluated op by op,
but XLA reassociates ``(C - sum(theta_0)) + 1e-10`` into ``(C + 1e-10) - sum(theta_0)``, where the
epsilon vanishes in float32, so a naive jitted cost is 0/0 = NaN. The cost models keep ``Cout_eff``
behind an optimisation barrier so the jitted costs equal the reference's eager values; a member
that prunes whole groups is then reported as degenerate rather than failing.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import test_sweep_helpers as H  # sets up the persistent compile cache first
from jpq_jax import cli, sweep

CLOCK = ("train_time_s", "sweep_time_s")
# members: 0 and 2 = the clean run's members 0 and 2; 1: prunes everything (lambda 1); 3: lambda so
# large the loss overflows at once; 4: lambda so small it does nothing; 5: NaN forced at epoch 1.
LAMBDAS = (H.LAMBDAS[0], 1.0, H.LAMBDAS[2], 1e30, 1e-30, 3e-4)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("faults") / "run")
  c = H.tiny_config(lambdas=LAMBDAS)
  c.warmup.checkpoint = os.path.join(H.shared_run("warm")[0], "warmup")
  c.debug.nan_member = 5
  c.debug.nan_epoch = 1
  return wd, sweep.run_sweep(c, wd, progress=False)


def _clean(m):
  return {k: v for k, v in m.items() if k not in CLOCK + ("member",)}


def test_other_members_unchanged(faulty):
  """The reference members are bit-for-bit those of the clean 3-member run."""
  ref = H.shared_run("loop3")[1]["members"]
  ms = faulty[1]["members"]
  for k_faulty, k_ref in ((0, 0), (2, 2)):
    a, b = _clean(ms[k_faulty]), _clean(ref[k_ref])
    assert a == b, [(f, a.get(f), b.get(f)) for f in a if a.get(f) != b.get(f)][:4]
    assert a["status"] == "ok"


def test_faults_reported(faulty, capsys):
  wd, res = faulty
  ms = res["members"]
  with open(os.path.join(wd, "results.json")) as f:
    assert json.load(f)["members"][1]["status"] == ms[1]["status"]
  # The forced NaN: failed at the epoch it was injected.
  assert ms[5]["failed"] and ms[5]["status"].startswith("failed: non-finite loss at search epoch 1")
  assert ms[5]["failed_at"] == "search epoch 1" and ms[5]["test_acc"] is None
  # Lambda 1: every prunable group pruned. Its costs are finite (see the module docstring), so it
  # trains to the end and is reported as degenerate, not failed.
  assert not ms[1]["failed"]
  assert ms[1]["status"].startswith("degenerate: all channels of groups"), ms[1]["status"]
  assert "g_res" in ms[1]["degenerate_groups"]
  assert not ms[1].get("nonfinite_costs")
  assert all(np.isfinite(v) for v in ms[1]["costs_argmax"].values() if v is not None)
  # Lambda 1e30: the cost gradient swamps the task's. Which way the member goes wrong depends on
  # float32 rounding of 1e30 * cost (CI's CPU and this one differ): the loss overflows (failed),
  # the costs overflow (named), or Adam's normalised steps prune every group (degenerate). It is
  # never reported as ok, and the status always names which of the three happened.
  m3 = ms[3]
  assert m3["status"] != "ok"
  if m3["failed"]:
    assert m3["status"].startswith("failed: non-finite") and m3["failed_at"], m3["status"]
  elif m3.get("nonfinite_costs"):
    assert "non-finite cost" in m3["status"], m3["status"]
  else:
    assert m3["status"].startswith("degenerate: all channels of groups"), m3["status"]
    assert m3["degenerate_groups"], m3
  # A vanishing lambda is a valid (uncompressed) member, not a fault.
  assert ms[4]["status"] == "ok" and not ms[4]["degenerate_groups"] and ms[4]["test_acc"] > 0
  with open(os.path.join(wd, "pareto.json")) as f:
    on_front = {r["member"] for r in json.load(f)["front"]}
  assert not on_front & {1, 3, 5}
  # `jpq report` shows every member's status.
  assert cli.main(["report", wd]) == 0
  out = capsys.readouterr().out
  for k in (1, 3, 5):
    assert ms[k]["status"] in out
  print(f"\nfault members reported: {sum(m['status'] != 'ok' for m in ms)} of {len(ms)}; "
        f"clean members unchanged: 2 of 2")


def test_degenerate_member_without_failure():
  """A member that kept training with a whole group pruned (and its null costs) is flagged."""
  res = {"method": "joint", "members": [
      {"failed": False, "status": "ok", "groups": {"g_a": {"kept": 0, "channels": 8},
                                                   "g_b": {"kept": 3, "channels": 8}},
       "layers": {"conv_a": {"group": "g_a"}, "conv_b": {"group": "g_b"}},
       "costs_soft": {"size": 10.0}, "costs_argmax": {"size": None, "macs": 0.0}},
      {"failed": False, "status": "ok", "groups": {"g_a": {"kept": 8}}, "layers": {},
       "costs_soft": {"size": 1.0}, "costs_argmax": {"size": 1.0}}]}
  sweep.annotate_status(res)
  m0, m1 = res["members"]
  assert m0["status"] == ("degenerate: all channels of group g_a pruned (layers conv_a); "
                          "non-finite cost size (argmax)")
  assert m0["degenerate_groups"] == ["g_a"] and m0["nonfinite_costs"] == {"argmax": ["size"]}
  assert m1["status"] == "ok"
  sweep.annotate_status(res)  # idempotent
  assert res["members"][0]["status"] == m0["status"]


def test_fully_pruned_group_cost_is_finite_under_jit():
  """Documents the finding above and checks the cost models are immune to it."""
  c, eps = jnp.float32(16.0), jnp.float32(1e-10)
  p_eff = lambda s: jnp.float32(0.0) / ((c - s) + eps)
  assert float(p_eff(jnp.float32(16.0))) == 0.0
  assert np.isnan(float(jax.jit(p_eff)(jnp.float32(16.0))))  # what XLA does to the naive formula
  import jpq_jax as jpq
  from jpq_jax.models import DemoNet
  m, x = DemoNet(), jnp.zeros((1, 8, 8, 1))
  table = jpq.trace_table(m, x)
  prec = jpq.freeze(m.init(jax.random.PRNGKey(0), x, jpq.Ctx.search())["arch"], table)
  prec["g_res"]["w_bits"] = jnp.zeros((16,), jnp.int32)
  theta = jpq.thetas(prec, table, jpq.Ctx.fixed())
  eager = jpq.costs.all_costs(table, theta)
  jitted = jax.jit(jpq.costs.all_costs, static_argnums=0)(table, theta)
  for k in eager:
    assert np.isfinite(float(jitted[k])), k
    np.testing.assert_allclose(float(jitted[k]), float(eager[k]), rtol=1e-6)
  assert float(jitted["size"]) == 320 * 8  # only the classifier (32 -> 10) is left, at 8 bits
