"""The ``jpq`` command: a real SIGKILL + resume gives the same results; report; inspect; bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import test_sweep_helpers as H
from jpq_jax import cli, sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(args, **kw):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.Popen([sys.executable, "-m", "jpq_jax.cli"] + args, cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def _stable(res):
  """results.json without the wall-clock fields."""
  # Wall-clock fields differ; the reference reused the shared warm-up (no warm-up epoch recorded).
  drop = ("train_time_s", "sweep_time_s", "warmup_best_epoch")
  return [{k: v for k, v in m.items() if k not in drop} for m in res["members"]]


@pytest.fixture(scope="module")
def reference():
  """The uninterrupted run (in-process: same code and config; its warm-up is the shared one,
  which is the same deterministic computation)."""
  return H.shared_run("loop3")


def test_kill_and_resume_matches_uninterrupted(reference, tmp_path):
  cfg = H.write_tiny_config(tmp_path / "tiny.py")
  wd = str(tmp_path / "run")
  p = _cli(["sweep", "--config", cfg, "--workdir", wd, "--no-progress"])
  ckdir = os.path.join(wd, "checkpoints")
  deadline = time.time() + H.SUBPROCESS_TIMEOUT_S
  killed = False
  while time.time() < deadline and p.poll() is None:
    # Kill once a search-epoch checkpoint exists (warm-up done, search under way).
    steps = [int(s) for s in os.listdir(ckdir) if s.isdigit()] if os.path.isdir(ckdir) else []
    if any(s >= 4 for s in steps):
      p.send_signal(signal.SIGKILL)
      killed = True
      break
    time.sleep(0.05)
  p.wait()
  assert killed, "the run finished before it could be killed: " + p.stdout.read().decode()[-2000:]
  assert not os.path.exists(os.path.join(wd, "results.json"))
  p = _cli(["sweep", "--config", cfg, "--workdir", wd, "--no-progress"])
  out = p.communicate(timeout=H.SUBPROCESS_TIMEOUT_S)[0].decode()
  assert p.returncode == 0, out[-3000:]
  with open(os.path.join(wd, "results.json")) as f:
    res = json.load(f)
  a, b = _stable(res), _stable(reference[1])
  diffs = [(k, f, a[k][f], b[k].get(f)) for k in range(len(a)) for f in a[k] if a[k][f] != b[k].get(f)]
  assert not diffs, diffs[:4]


def test_report_and_inspect(reference, capsys):
  wd = reference[0]
  assert cli.main(["report", wd]) == 0
  out = capsys.readouterr().out
  assert "Pareto front" in out and "lambda" in out
  assert cli.main(["inspect", wd, "--member", "1"]) == 0
  out = capsys.readouterr().out
  assert "kept/cout" in out and "stem" in out
  assert cli.main(["inspect", wd, "--member", "9"]) == 2


def test_cli_bad_config_fails_fast(tmp_path, capsys):
  cfg = H.write_tiny_config(tmp_path / "tiny.py")
  rc = cli.main(["sweep", "--config", cfg, "--workdir", str(tmp_path / "w"),
                 "--config.sweep.lambdas=-1e-5", "--no-progress"])
  assert rc == 2
  assert "sweep.lambdas" in capsys.readouterr().err
  rc = cli.main(["sweep", "--config", cfg, "search.cost=foo", "--no-progress"])
  assert rc == 2
  rc = cli.main(["sweep", "--config", cfg, "sweep.nope=1", "--no-progress"])
  assert rc == 2


def test_overrides():
  c = H.tiny_config()
  cli.apply_overrides(c, ["--config.sweep.lambdas=1e-6,1e-5", "search.epochs=7",
                          "search.cost=mpic", "sweep.async_checkpoint=false"])
  assert c.sweep.lambdas == (1e-6, 1e-5) and c.search.epochs == 7
  assert c.search.cost == "mpic" and c.sweep.async_checkpoint is False
  # Dataset options are free-form: a new key takes the value's own type.
  cli.apply_overrides(c, ["data.options.image_size=32", "data.options.grayscale=true"])
  assert c.data.options.image_size == 32 and c.data.options.grayscale is True


def test_cli_explains_itself(capsys, tmp_path):
  """`jpq` alone lists the commands; sweep --help shows the override syntax; a missing config
  lists the shipped ones; report on a missing or empty directory says which."""
  from jpq_jax import cli as C  # pylint: disable=import-outside-toplevel
  assert C.main([]) == 2
  out = capsys.readouterr().err
  assert all(c in out for c in ("sweep", "report", "inspect", "export", "compare"))
  with pytest.raises(SystemExit):
    C.main(["sweep", "--help"])
  out = capsys.readouterr().out
  assert "field=value" in out and "sweep.lambdas=1e-6,1e-5,1e-4" in out and "base_config" in out
  assert C.main(["sweep", "--config", str(tmp_path / "nope.py")]) == 2
  assert "shipped configs: experiments/configs/cifar10_resnet8.py" in capsys.readouterr().err
  assert C.main(["report", str(tmp_path / "missing")]) == 2
  assert "does not exist" in capsys.readouterr().err
  assert C.main(["report", str(tmp_path)]) == 2
  assert "holds no sweep" in capsys.readouterr().err
  assert C.main(["sweep", "serch.epochs=1"]) == 2
  assert "known here" in capsys.readouterr().err


def test_help_report_and_inspect_do_not_import_jax():
  """The command's light paths start without JAX/Flax/Orbax (measured: well under 2 s)."""
  code = ("import sys, jpq_jax.cli, jpq_jax.pareto; import jpq_jax; jpq_jax.__version__; "
          "print(any(m in sys.modules for m in ('jax', 'flax', 'orbax')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "False"
