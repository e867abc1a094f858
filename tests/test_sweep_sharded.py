"""The ``sharded`` strategy on 2 forced host devices gives the results of 1 device."""

import json
import os
import subprocess
import sys

import numpy as np

import test_sweep_helpers as H

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r'''
import os, sys, json
sys.path.insert(0, {tests!r})
import test_sweep_helpers as H
import jax
assert jax.device_count() == 2, jax.devices()
from jpq_jax import sweep
c = H.tiny_config(strategy="sharded")
c.warmup.checkpoint = {warm!r}
res = sweep.run_sweep(c, {wd!r}, progress=False)
print("STRATEGY", res["strategy"], len(res["members"]))
'''


def _losses(wd):
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    return np.asarray([json.loads(l)["train_loss"] for l in f
                       if json.loads(l)["phase"] == "search"], np.float64)


def test_two_devices_match_one(tmp_path):
  vmap_wd, vmap_res = H.shared_run("vmap3")
  warm = os.path.join(H.shared_run("warm")[0], "warmup")
  wd = str(tmp_path / "sharded")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", SCRIPT.format(tests=os.path.dirname(__file__),
                                                            warm=warm, wd=wd)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
  assert "STRATEGY sharded 3" in out.stdout  # 3 members padded to 4 over 2 devices, 3 reported
  np.testing.assert_allclose(_losses(wd), _losses(vmap_wd), rtol=1e-2, atol=1e-3)
  with open(os.path.join(wd, "results.json")) as f:
    res = json.load(f)
  for a, b in zip(res["members"], vmap_res["members"]):
    assert a["lambda"] == b["lambda"]
    np.testing.assert_allclose(a["test_acc"], b["test_acc"], atol=0.03)
