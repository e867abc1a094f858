"""The ``sharded`` strategy on 2 forced host devices gives the results of 1 device."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

import test_sweep_helpers as H

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r'''
import os, sys, json
sys.path.insert(0, {tests!r})
import test_sweep_helpers as H
import jax
assert jax.device_count() == {devices}, jax.devices()
from jpq_jax import sweep
c = H.tiny_config(strategy="sharded")
c.warmup.checkpoint = {warm!r}
c.debug.kill_at = {kill!r}
res = sweep.run_sweep(c, {wd!r}, progress=False)
print("STRATEGY", res["strategy"], len(res["members"]))
'''


def _run(wd, warm, devices=2, kill=""):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             JAX_PLATFORMS="cpu")
  script = SCRIPT.format(tests=os.path.dirname(__file__), warm=warm, wd=wd, devices=devices,
                         kill=kill)
  return subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=H.SUBPROCESS_TIMEOUT_S)


def _losses(wd):
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    return np.asarray([json.loads(l)["train_loss"] for l in f
                       if json.loads(l)["phase"] == "search"], np.float64)


def test_two_devices_match_one(tmp_path):
  vmap_wd, vmap_res = H.shared_run("vmap3")
  warm = os.path.join(H.shared_run("warm")[0], "warmup")
  wd = str(tmp_path / "sharded")
  out = _run(wd, warm)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
  assert "STRATEGY sharded 3" in out.stdout  # 3 members padded to 4 over 2 devices, 3 reported
  np.testing.assert_allclose(_losses(wd), _losses(vmap_wd), rtol=1e-2, atol=1e-3)
  with open(os.path.join(wd, "results.json")) as f:
    res = json.load(f)
  for a, b in zip(res["members"], vmap_res["members"]):
    assert a["lambda"] == b["lambda"]
    np.testing.assert_allclose(a["test_acc"], b["test_acc"], atol=0.03)


@pytest.mark.slow  # 3-4 minutes of subprocesses; test_two_devices_match_one stays in the default
def test_resume_on_other_device_counts(tmp_path):
  """A preempted sharded sweep resumes on whatever devices it gets: 3 members are padded to 4 on 2
  devices, killed in the search; resumed on 1 device (no padding: the restore drops the padding
  member), killed after the fine-tuning's first checkpoint; finished on 2 devices again (padding
  rebuilt). The trajectory is the uninterrupted one's, up to the roundoff of other batch shapes."""
  vmap_wd, vmap_res = H.shared_run("vmap3")
  warm = os.path.join(H.shared_run("warm")[0], "warmup")
  wd = str(tmp_path / "moved")
  for devices, kill in ((2, "search:1:after_save"), (1, "finetune:1:after_save"), (2, "")):
    out = _run(wd, warm, devices=devices, kill=kill)
    if kill:
      assert out.returncode == -signal.SIGKILL, (kill, out.stdout[-2000:] + out.stderr[-4000:])
    else:
      assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
  assert "STRATEGY sharded 3" in out.stdout
  assert "padded to 3" in out.stderr or "padded to 4" in out.stderr
  np.testing.assert_allclose(_losses(wd), _losses(vmap_wd), rtol=1e-2, atol=1e-3)
  with open(os.path.join(wd, "results.json")) as f:
    res = json.load(f)
  assert len(res["members"]) == 3
  for a, b in zip(res["members"], vmap_res["members"]):
    assert a["lambda"] == b["lambda"] and not a.get("failed")
    np.testing.assert_allclose(a["test_acc"], b["test_acc"], atol=0.03)
