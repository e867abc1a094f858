"""A user's plain Flax model in the sweep by import path (``model.name = "userpkg.nets:DigitsNet"``)
and by jpq_jax.register_model: the CLI sweep runs it, and a fresh process restores, exports,
inspects and resumes the run from config.json alone."""

import json
import os
import subprocess
import sys

import pytest

import jpq_jax as jpq
from jpq_jax.sweep.config import resolve_method
from test_sweep_helpers import ROOT, SUBPROCESS_TIMEOUT_S, tiny_config, write_tiny_config

TESTS = os.path.dirname(os.path.abspath(__file__))


def _env():
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([TESTS, ROOT, env.get("PYTHONPATH", "")])
  return env


def _run(args, cwd):
  res = subprocess.run([sys.executable] + args, cwd=cwd, env=_env(), capture_output=True,
                       text=True, timeout=SUBPROCESS_TIMEOUT_S)
  assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
  return res.stdout + res.stderr


def test_register_model_resolves_to_an_import_path():
  from userpkg.nets import DigitsNet  # pylint: disable=import-outside-toplevel
  jpq.register_model("my_digits", DigitsNet)
  cfg = tiny_config()
  cfg.model.name = "my_digits"
  assert resolve_method(cfg).model.name == "userpkg.nets:DigitsNet"
  with pytest.raises(ValueError, match="built-in"):
    jpq.register_model("resnet8", DigitsNet)
  with pytest.raises(jpq.ConfigError, match=r"model.name.*cannot import"):
    from jpq_jax.sweep import validation  # pylint: disable=import-outside-toplevel
    bad = tiny_config()
    bad.model.name = "no_such_pkg.nets:Net"
    validation.validate_config(bad)


@pytest.mark.slow  # a CLI sweep and four fresh processes: ~5 min on the loaded 2-core machine
def test_import_path_model_sweep_then_fresh_processes(tmp_path):
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jpq_jax.checkpoint import load_tree, save_tree  # pylint: disable=import-outside-toplevel
  from userpkg.nets import DigitsNet  # pylint: disable=import-outside-toplevel
  # The user's own "trained" model: its variables are the warm-up (no float training).
  user_v = jax.jit(DigitsNet(width=8).init)(jax.random.PRNGKey(7), jnp.zeros((1, 8, 8, 1)))
  save_tree(str(tmp_path / "user_ckpt"), user_v)
  cfg_file = write_tiny_config(tmp_path / "tiny.py", lambdas=(1e-5, 1e-3))
  work = str(tmp_path / "run")
  sweep = ["-m", "jpq_jax.cli", "sweep", "--config", cfg_file, "--workdir", work, "--no-progress",
           "model.name=userpkg.nets:DigitsNet", "model.kwargs.width=8",
           f"warmup.user_checkpoint={tmp_path / 'user_ckpt'}"]
  _run(sweep, ROOT)
  warm = load_tree(os.path.join(work, "warmup"))
  np.testing.assert_array_equal(warm["params"]["ResBlock_0.Conv_1"]["kernel"],
                                user_v["params"]["ResBlock_0"]["Conv_1"]["kernel"])
  np.testing.assert_array_equal(warm["batch_stats"]["Conv_0"]["BatchNorm_0"]["var"],
                                user_v["batch_stats"]["BatchNorm_0"]["var"])
  with open(os.path.join(work, "config.json")) as f:
    saved = json.load(f)
  assert saved["resolved_config"]["model"]["name"] == "userpkg.nets:DigitsNet"
  assert saved["resolved_config"]["model"]["kwargs"] == {"width": 8}
  # A fresh process rebuilds the converted model from config.json and runs the restored member.
  code = (
      "import numpy as np, jax.numpy as jnp, jpq_jax as jpq\n"
      f"model, v, table = jpq.restore_member({work!r}, 1)\n"
      "assert type(model).__name__ == 'Searchable', type(model)\n"
      "assert [l.name for l in table.layers][:2] == ['Conv_0', 'ResBlock_0.Conv_0']\n"
      "assert table.layer('Conv_0').cout == 8\n"
      "out = model.apply(v, jnp.zeros((2, 8, 8, 1)), jpq.Ctx.fixed()).value\n"
      "assert out.shape == (2, 10) and np.isfinite(np.asarray(out)).all()\n"
      "print('restored OK')\n")
  assert "restored OK" in _run(["-c", code], str(tmp_path))
  out = _run(["-m", "jpq_jax.cli", "export", work, "--member", "1", "--out",
              str(tmp_path / "bundle")], str(tmp_path))
  assert os.path.exists(tmp_path / "bundle"), out
  assert "ResBlock_0.Conv_0" in _run(["-m", "jpq_jax.cli", "inspect", work, "--member", "1"],
                                     str(tmp_path))
  # Rerunning the same command finds the finished run and does not start over.
  again = _run(sweep, ROOT)
  assert "Traceback" not in again


def test_user_checkpoint_config_errors(tmp_path):
  from jpq_jax.sweep import validation  # pylint: disable=import-outside-toplevel
  cfg = tiny_config()
  cfg.warmup.user_checkpoint = str(tmp_path / "missing")
  cfg.model.name = "userpkg.nets:DigitsNet"
  with pytest.raises(jpq.ConfigError, match=r"warmup.user_checkpoint.*not a directory"):
    validation.validate_config(cfg)
  cfg.warmup.user_checkpoint = str(tmp_path)
  cfg.model.name = "demo"
  with pytest.raises(jpq.ConfigError, match=r"warmup.user_checkpoint.*built-in jpq model"):
    validation.validate_config(cfg)
  cfg.warmup.checkpoint = str(tmp_path)
  with pytest.raises(jpq.ConfigError, match=r"not both"):
    validation.validate_config(cfg)
