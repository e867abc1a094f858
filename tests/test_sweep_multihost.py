"""Multi-host through ``jax.distributed``: 2 local CPU processes give the results of 1 process.

Two ``jpq sweep`` processes (1 CPU device each) form one global mesh (strategy ``sharded``), in its
two layouts: ``members``, the 3 members (padded to 4) spread over the processes, each process fed
the whole global batch; ``data`` (``sweep.data_devices=2``), every member on both processes and the
batch split between them, each process reading only its slice (the Loader's process sharding).
Process 0 writes the result files. The coordinator listens on 127.0.0.1 only. A 2-process run
killed after a checkpoint resumes as one process (another member padding).
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import test_sweep_helpers as H

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = H.SUBPROCESS_TIMEOUT_S


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _losses(wd, key="train_loss"):
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    return np.asarray([json.loads(l)[key] for l in f if json.loads(l)["phase"] == "search"],
                      np.float64)


def _launch(tmp_path, wd, warm, extra=(), expect_rc=0):
  """Start the 2 processes of one sweep; returns their outputs after both exit."""
  cfg = H.write_tiny_config(tmp_path / "tiny.py")
  port = _free_port()
  # One CPU device per process (a parent XLA_FLAGS forcing more would make a 4-device mesh).
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
  procs = []
  for pid in range(2):
    cmd = [sys.executable, "-m", "jpq_jax.cli", "sweep", "--config", cfg, "--workdir", wd,
           "--no-progress", "sweep.strategy=sharded",
           *([f"warmup.checkpoint={warm}"] if warm else []),
           "distributed.enabled=true", f"distributed.coordinator_address=127.0.0.1:{port}",
           f"distributed.coordinator_bind_address=127.0.0.1:{port}",
           "distributed.num_processes=2", f"distributed.process_id={pid}", *extra]
    log = open(tmp_path / f"proc{pid}.log", "w")  # files, not pipes: a full pipe would block
    procs.append((subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT),
                  log))
  deadline = time.monotonic() + TIMEOUT_S
  try:
    for p, _ in procs:
      p.wait(timeout=max(deadline - time.monotonic(), 1))
  except subprocess.TimeoutExpired:
    pass
  finally:
    for p, log in procs:
      if p.poll() is None:  # only our own children, by their pid
        p.kill()
        p.wait()
      log.close()
  outs = [(p.returncode, open(tmp_path / f"proc{k}.log").read()) for k, (p, _) in enumerate(procs)]
  report = "\n\n".join(f"process {k} rc={r}:\n{o[-4000:]}" for k, (r, o) in enumerate(outs))
  assert all(rc == expect_rc for rc, _ in outs), report
  return outs


@pytest.mark.slow  # about 45-60 s per layout on a 2-core machine, plus the 1-process references
@pytest.mark.parametrize("layout", ["members", "data"])
def test_two_processes_match_one(tmp_path, layout):
  # The coordinator is bound to 127.0.0.1 explicitly; gloo (CPU collectives) listens on the address
  # the host name resolves to, so keep off machines where that is not the loopback.
  if not socket.gethostbyname(socket.gethostname()).startswith("127."):
    pytest.skip("host name does not resolve to the loopback: gloo would listen on the network")
  vmap_wd, vmap_res = H.shared_run("vmap3")
  warm = os.path.join(H.shared_run("warm")[0], "warmup")
  wd = str(tmp_path / "multihost")
  if layout == "members":
    _launch(tmp_path, wd, warm)
  else:
    # Also trains the shared warm-up in the 2 processes (each on whole global batches, identically)
    # and saves it through Orbax from both; it equals the 1-process warm-up reused by vmap3.
    _launch(tmp_path, wd, None, extra=("sweep.data_devices=2",))
    assert os.path.exists(os.path.join(wd, "warmup"))
    with open(os.path.join(wd, "metrics.jsonl")) as f:
      w2 = [json.loads(l)["train_loss"] for l in f if json.loads(l)["phase"] == "warmup"]
    with open(os.path.join(H.shared_run("warm")[0], "metrics.jsonl")) as f:
      w1 = [json.loads(l)["train_loss"] for l in f if json.loads(l)["phase"] == "warmup"]
    np.testing.assert_allclose(w2, w1, rtol=1e-5)
  with open(os.path.join(wd, "config.json")) as f:
    meta = json.load(f)
  assert meta["strategy"] == "sharded" and meta["versions"]["device_count"] == "2"
  np.testing.assert_allclose(_losses(wd), _losses(vmap_wd), rtol=1e-2, atol=1e-3)
  with open(os.path.join(wd, "results.json")) as f:
    res = json.load(f)
  assert len(res["members"]) == 3  # (members layout: padded to 4 over 2 processes) 3 reported
  for a, b in zip(res["members"], vmap_res["members"]):
    assert a["lambda"] == b["lambda"]
    np.testing.assert_allclose(a["test_acc"], b["test_acc"], atol=0.03)
  for f in ("pareto.json", "metrics.jsonl", "final", "tensorboard"):
    assert os.path.exists(os.path.join(wd, f)), f
  # One writer: metrics.jsonl has each epoch once (process 1 writes nothing).
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    recs = [json.loads(l) for l in f]
  assert len({r["ckpt"] for r in recs}) == len(recs)
  # The final checkpoint restores as a standalone member in a plain (1-process) session.
  from jpq_jax.checkpoint import restore_member
  _, variables, _ = restore_member(wd, 2)
  assert set(variables) == {"params", "precision"}


PRIMITIVES = r'''
import sys
import jax
import numpy as np
pid, port = int(sys.argv[1]), sys.argv[2]
from jpq_jax import sweep
c = sweep.base_config()
c.distributed.update(enabled=True, coordinator_address=f"127.0.0.1:{port}",
                     coordinator_bind_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid)
sweep.init_distributed(c)
assert jax.process_count() == 2 and jax.device_count() == 2 and jax.local_device_count() == 1
assert sweep.choose_strategy("auto") == "sharded" and sweep.choose_strategy("measure") == "sharded"
step = lambda s, x, y, lam, lr, poison: (s + lam * lr * x.sum(), {"loss": s + y.sum()})
ev = lambda p, e, t, x, y, m: {"n": p + m.sum()}
end = lambda s, m: s + m
whole = np.arange(8, dtype=np.float32)
for dd, split in ((1, False), (2, True)):
  n = 4 if dd == 1 else 2  # a multiple of the member axis (2 or 1 devices)
  ex = sweep.make_executor("sharded", step, ev, end, n, dd)
  assert ex.splits_batch(8) == split, (dd, split)
  ex.local_batch = split
  ex.set_states(np.arange(n, dtype=np.float32))
  x = whole[pid * 4:(pid + 1) * 4] if split else whole  # what the train loader would give
  m = ex.train_step(x, x, np.ones(n, np.float32), 1.0, np.zeros(n, np.float32))
  got = sweep._host(ex.stacked())
  np.testing.assert_allclose(got, np.arange(n) + whole.sum())
  np.testing.assert_allclose(sweep._host(m["loss"]), np.arange(n) + whole.sum())
  out = ex.evaluate(whole, whole, np.ones(8, np.float32), lambda s: (s, s, s))
  out = sweep._to_host(out)["n"]
  np.testing.assert_allclose(out, got + 8)
print("OK", pid)
'''


def test_distributed_primitives(tmp_path):
  """Fast check of the multi-process building blocks: strategy rule, batch layouts, host gathers."""
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
  script = tmp_path / "prim.py"
  script.write_text(PRIMITIVES)
  procs = [subprocess.Popen([sys.executable, str(script), str(pid), str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for pid in range(2)]
  outs = []
  for p in procs:
    try:
      outs.append(p.communicate(timeout=H.SUBPROCESS_TIMEOUT_S)[0])
    except subprocess.TimeoutExpired:
      p.kill()
      outs.append(p.communicate()[0])
  for k, (p, out) in enumerate(zip(procs, outs)):
    assert p.returncode == 0 and f"OK {k}" in out, f"process {k}:\n{out[-4000:]}"


@pytest.mark.slow  # about 2 minutes on a 2-core machine
def test_two_processes_preempted_resume_on_one(tmp_path):
  """A 2-process sweep (3 members padded to 4 over the 2 processes) killed after a search
  checkpoint resumes as ONE process on one device: the padding is rebuilt (to 3) and the run
  finishes with the trajectory of the uninterrupted one, up to the roundoff of other layouts."""
  import signal  # pylint: disable=import-outside-toplevel
  if not socket.gethostbyname(socket.gethostname()).startswith("127."):
    pytest.skip("host name does not resolve to the loopback: gloo would listen on the network")
  vmap_wd, vmap_res = H.shared_run("vmap3")
  warm = os.path.join(H.shared_run("warm")[0], "warmup")
  wd = str(tmp_path / "preempted")
  _launch(tmp_path, wd, warm, extra=("debug.kill_at=search:1:after_save",),
          expect_rc=-signal.SIGKILL)
  assert not os.path.exists(os.path.join(wd, "results.json"))
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-m", "jpq_jax.cli", "sweep", "--config",
                        str(tmp_path / "tiny.py"), "--workdir", wd, "--no-progress",
                        "sweep.strategy=sharded", f"warmup.checkpoint={warm}"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
  assert "member axis padded to 4; padded to 3 for 1 device(s)" in out.stderr, out.stderr[-2000:]
  np.testing.assert_allclose(_losses(wd), _losses(vmap_wd), rtol=1e-2, atol=1e-3)
  with open(os.path.join(wd, "results.json")) as f:
    res = json.load(f)
  assert len(res["members"]) == 3
  for a, b in zip(res["members"], vmap_res["members"]):
    assert a["lambda"] == b["lambda"] and a["status"] == "ok"
    np.testing.assert_allclose(a["test_acc"], b["test_acc"], atol=0.03)
  with open(os.path.join(wd, "config.json")) as f:
    record = json.load(f)
  # What the run started as (2 devices over 2 processes) and what resumed it (1 device).
  assert record["versions"]["device_count"] == "2"
  assert [r["versions"]["device_count"] for r in record["resumed"]] == ["1"]
