"""Bad inputs, table-driven: each gets one clear error naming the problem, never a traceback.

CLI rows run the real command (``python -m jpq_jax.cli ...``) in a subprocess and check the exit
code, that stderr names the problem and that it holds no ``Traceback``. Library rows (export
bundles, checkpoints) check the exception type and message.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import test_sweep_helpers as H

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fixtures(tmp):
  """The files the bad-input rows point at."""
  cfg = H.write_tiny_config(os.path.join(tmp, "tiny.py"))
  with open(os.path.join(tmp, "syntax.py"), "w") as f:
    f.write("def get_config(:\n  pass\n")
  with open(os.path.join(tmp, "noget.py"), "w") as f:
    f.write("x = 1\n")
  with open(os.path.join(tmp, "raises.py"), "w") as f:
    f.write("import no_such_module_jpq\n")
  with open(os.path.join(tmp, "a_file"), "w") as f:
    f.write("not a directory\n")
  with open(os.path.join(tmp, "getraises.py"), "w") as f:
    f.write("def get_config():\n  return 1 / 0\n")
  with open(os.path.join(tmp, "typo.py"), "w") as f:
    f.write("from jpq_jax.sweep import demo_config\n\ndef get_config():\n  c = demo_config()\n"
            "  c.serch = {'epochs': 3}\n  return c\n")
  with open(os.path.join(tmp, "getdict.py"), "w") as f:
    f.write("def get_config():\n  return {'name': 'x'}\n")
  os.makedirs(os.path.join(tmp, "cfgdir"))
  bad_json = os.path.join(tmp, "bad_json")
  os.makedirs(bad_json)
  with open(os.path.join(bad_json, "results.json"), "w") as f:
    f.write('{"members": [')
  not_results = os.path.join(tmp, "not_results")
  os.makedirs(not_results)
  with open(os.path.join(not_results, "results.json"), "w") as f:
    json.dump([1, 2], f)
  tiny_res = os.path.join(tmp, "tiny_res")
  os.makedirs(tiny_res)
  with open(os.path.join(tiny_res, "results.json"), "w") as f:
    json.dump({"members": [{"member": 0, "lambda": 0.0, "seed": 1, "costs_argmax": {"size": 1.0},
                            "layers": {}, "groups": {}, "status": "ok"}],
               "pareto_cost": "size", "pareto_metric": "test_acc"}, f)
  other_run = os.path.join(tmp, "other_run")
  os.makedirs(os.path.join(other_run, "warmup"))  # something trained: not reusable
  c = H.tiny_config(lambdas=(1e-6,))
  with open(os.path.join(other_run, "config.json"), "w") as f:
    json.dump({"config": json.loads(c.to_json_best_effort())}, f)
  return cfg


def _sweep(*over, workdir="w"):
  return lambda t: ["sweep", "--config", os.path.join(t, "tiny.py"), "--workdir",
                    os.path.join(t, workdir), "--no-progress", *over]


def _config(name):
  return lambda t: ["sweep", "--config", os.path.join(t, name)]


# (row name, argv builder (tmp dir -> argv), text stderr must contain)
CLI_ROWS = [
    # configs
    ("config file missing", _config("nope.py"), "no such config file"),
    ("config file syntax error", _config("syntax.py"), "syntax.py' line 1"),
    ("config file raises", _config("raises.py"), "ModuleNotFoundError"),
    ("config file without get_config", _config("noget.py"), "defines no get_config"),
    ("config path is a directory", _config("cfgdir"), "is a directory, not a Python config file"),
    ("config file not Python", _config("a_file"), "is not a Python file"),
    ("get_config raises", _config("getraises.py"), "get_config() raised ZeroDivisionError"),
    ("get_config returns a dict", _config("getdict.py"), "returned a dict, not an ml_collections"),
    ("override through a value", _sweep("search.epochs.x=1"), "'search.epochs' is a value (int)"),
    ("unknown field", _sweep("sweep.nope=1"), "unknown config field"),
    ("unparsable value", _sweep("search.epochs=abc"), "cannot parse 'abc'"),
    ("override without =", _sweep("search.epochs"), "expected field=value"),
    ("negative lambda", _sweep("--config.sweep.lambdas=1e-5,-1"), "sweep.lambdas"),
    ("repeated lambda", _sweep("sweep.lambdas=1e-5,1e-5"), "repeated lambda"),
    ("no seeds", _sweep("sweep.seeds="), "sweep.seeds"),
    ("zero search epochs", _sweep("search.epochs=0"), "search.epochs"),
    ("zero batch", _sweep("train.batch_size=0"), "train.batch_size"),
    ("batch larger than the training split", _sweep("train.batch_size=100000"),
     "'train.batch_size': 100000 is larger than the training split"),
    ("zero temperature", _sweep("search.temperature=0"), "search.temperature"),
    ("config file sets an unknown field", _config("typo.py"), "'serch': unknown field"),
    ("negative arch learning rate", _sweep("search.arch_optimizer.lr=-1"),
     "search.arch_optimizer.lr"),
    ("negative temperature decay", _sweep("search.temperature_decay=-5"),
     "search.temperature_decay"),
    ("final temperature above the initial", _sweep("search.final_temperature=3"),
     "search.final_temperature"),
    ("negative patience", _sweep("train.patience=-1"), "train.patience"),
    ("no checkpoint kept", _sweep("sweep.checkpoint_keep=0"), "sweep.checkpoint_keep"),
    ("unknown optimizer", _sweep("warmup.optimizer.name=rmsprop"), "warmup.optimizer.name"),
    ("unknown strategy", _sweep("sweep.strategy=warp"), "sweep.strategy"),
    ("unknown XLA options", _sweep("sweep.xla_options=fastest"), "sweep.xla_options"),
    ("unknown model", _sweep("model.name=vgg"), "model.name"),
    ("bad kill point", _sweep("debug.kill_at=search:x"), "debug.kill_at"),
    ("unknown remat policy", _sweep("train.remat=everything"), "train.remat"),
    # precision sets
    ("repeated precision", _sweep("model.w_precisions=0,3,3"), "model.w_precisions"),
    ("pruning only", _sweep("model.w_precisions=0"), "at least one non-zero bit-width"),
    ("precision out of range", _sweep("model.w_precisions=0,2,64"), "unknown precision 64"),
    ("0-bit activations", _sweep("model.a_precisions=0,8"), "model.a_precisions"),
    ("unknown granularity", _sweep("model.granularity=block"), "model.granularity"),
    ("unknown mixture", _sweep("model.activation_mixture=lazy"), "model.activation_mixture"),
    # cost names
    ("unknown search cost", _sweep("search.cost=energy"), "search.cost"),
    ("pareto cost that cannot cost the model",
     _sweep("sweep.pareto_cost=mpic", "model.w_precisions=0,3,8"),
     "'sweep.pareto_cost': 'mpic' cannot cost this model"),
    ("unknown pareto cost", _sweep("sweep.pareto_cost=latency"), "sweep.pareto_cost"),
    ("unknown report cost", lambda t: ["report", os.path.join(t, "tiny_res"), "--cost", "nope"],
     "--cost 'nope'"),
    # datasets
    ("unknown dataset", _sweep("data.name=mnist"), "unknown dataset 'mnist'"),
    ("unknown dataset option", _sweep("data.options.imagesize=8"),
     "'data.options': dataset 'demo' does not take option(s) ['imagesize']"),
    ("data_dir does not exist", _sweep("data.name=cifar10", "data.data_dir=/nonexistent_jpq"),
     "data.data_dir='/nonexistent_jpq' does not exist (dataset 'cifar10'); give the path"),
    ("dataset not prepared", lambda t: _sweep("data.name=cifar10", f"data.data_dir={t}")(t),
     "from the command line: `jpq sweep ... data.data_dir=PATH`"),
    ("speech data_dir missing", _sweep("data.name=gsc", "data.data_dir=/nonexistent_jpq"),
     "data.data_dir='/nonexistent_jpq' does not exist (dataset 'gsc')"),
    ("image folder missing", _sweep("data.name=folder:/nonexistent_jpq"),
     "'/nonexistent_jpq' does not exist"),
    # work directories
    ("workdir is a file", _sweep(workdir="a_file"), "is a file, not a directory"),
    ("workdir of another run", _sweep(workdir="other_run"), "holds another run"),
    ("warm-up checkpoint is a work directory",
     lambda t: _sweep("warmup.checkpoint=" + os.path.join(t, "other_run"))(t),
     "is a sweep work directory, not a warm-up checkpoint; use"),
    ("warm-up checkpoint missing", _sweep("warmup.checkpoint=/nonexistent_jpq_warm"),
     "is not a directory"),
    ("report of a missing directory", lambda t: ["report", os.path.join(t, "empty")],
     "does not exist"),
    ("report of damaged results", lambda t: ["report", os.path.join(t, "bad_json")],
     "results.json is not valid JSON"),
    ("report of foreign results", lambda t: ["report", os.path.join(t, "not_results")],
     "not a sweep's results"),
    ("inspect member out of range",
     lambda t: ["inspect", os.path.join(t, "tiny_res"), "--member", "7"],
     "member 7 out of range"),
    ("export of unfinished sweep",
     lambda t: ["export", os.path.join(t, "tiny_res"), "--out", os.path.join(t, "b")], "final"),
    # CLI arguments
    ("unknown command", lambda t: ["frobnicate"], "invalid choice"),
    ("no command", lambda t: [], "compare   compare the fronts"),
    ("member not an int", lambda t: ["inspect", t, "--member", "abc"], "invalid int value"),
    ("report extra argument", lambda t: ["report", os.path.join(t, "tiny_res"), "extra"],
     "unexpected arguments"),
]


def _run_cli(argv):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  p = subprocess.run([sys.executable, "-m", "jpq_jax.cli", *argv], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=H.SUBPROCESS_TIMEOUT_S)
  return p.returncode, p.stdout, p.stderr


def _run_cli_in_process(argv):
  """``jpq <argv>`` in this process (the rows fail before anything compiles: a subprocess per row
  cost 40 interpreter and JAX start-ups, 5 minutes of the suite). An exception escaping
  ``cli.main`` is what the user would see as a traceback."""
  import contextlib  # pylint: disable=import-outside-toplevel
  import io  # pylint: disable=import-outside-toplevel
  import traceback  # pylint: disable=import-outside-toplevel
  from jpq_jax import cli  # pylint: disable=import-outside-toplevel
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      rc = cli.main(argv)
    except SystemExit as e:  # argparse's usage errors; SystemExit("text") prints the text
      if isinstance(e.code, str):
        print(e.code, file=sys.stderr)
      rc = e.code if isinstance(e.code, int) else 1
    except Exception:  # pylint: disable=broad-except
      traceback.print_exc()
      rc = 1
  return rc, out.getvalue(), err.getvalue()


def test_bad_cli_inputs(tmp_path):
  """Every row: non-zero exit, stderr names the problem, no traceback, nothing trained."""
  tmp = str(tmp_path)
  _fixtures(tmp)
  argvs = [build(tmp) for _, build, _ in CLI_ROWS]
  outs = [_run_cli_in_process(a) for a in argvs]
  # And one row as a real process (the `python -m jpq_jax.cli` entry point, its exit code).
  outs[0] = _run_cli(argvs[0])
  bad = []
  for (name, _, want), argv, (rc, out, err) in zip(CLI_ROWS, argvs, outs):
    problems = []
    if rc == 0:
      problems.append("exit code 0")
    if want not in err:
      problems.append(f"stderr lacks {want!r}")
    if "Traceback" in err + out:
      problems.append("traceback")
    if len([l for l in err.splitlines() if l.startswith("jpq")]) > 1:
      problems.append("more than one error line")
    if problems:
      bad.append((name, argv, problems, err[-800:]))
  assert not os.path.exists(os.path.join(tmp, "w", "checkpoints")), "a bad input started a run"
  print(f"\nbad CLI inputs tried: {len(CLI_ROWS)}, rejected cleanly: {len(CLI_ROWS) - len(bad)}")
  assert not bad, bad


# ---- library rows ---------------------------------------------------------------------------------------
def _bundle_rows():
  try:
    from jpq_jax import export  # pylint: disable=import-outside-toplevel
  except ImportError:
    return []
  if not hasattr(export, "load_bundle"):
    return []
  man, pay = export.MANIFEST, export.PAYLOAD

  def write(path, manifest, arrays=None, raw=None):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, man), "w") as f:
      f.write(manifest if isinstance(manifest, str) else json.dumps(manifest))
    if raw is not None:
      with open(os.path.join(path, pay), "wb") as f:
        f.write(raw)
    elif arrays is not None:
      np.savez(os.path.join(path, pay), **arrays)
    return path

  ok = {"format_version": export.FORMAT_VERSION,
        "arrays": {"w": {"shape": [4], "dtype": "int8", "sha256": "0" * 64}}}
  w = {"w": np.arange(4, dtype=np.int8)}
  return [
      ("bundle: wrong format version",
       lambda t: export.load_bundle(write(os.path.join(t, "v"), dict(ok, format_version=99), w)),
       export.BundleError, "format_version 99"),
      ("bundle: corrupt payload (checksum)",
       lambda t: export.load_bundle(write(os.path.join(t, "c"), ok, w), allow_unverified=True),
       export.BundleError, "checksum"),
      ("bundle: unreadable payload",
       lambda t: export.load_bundle(write(os.path.join(t, "u"), ok, raw=b"PK\x03\x04garbage"),
                                    allow_unverified=True),
       export.BundleError, "corrupt"),
      ("bundle: manifest without its checksum",
       lambda t: export.load_bundle(write(os.path.join(t, "n"), ok, w)),
       export.BundleError, "no manifest_sha256"),
      ("bundle: manifest not JSON",
       lambda t: export.load_bundle(write(os.path.join(t, "j"), "{", w)),
       export.BundleError, "not valid JSON"),
      ("bundle: missing directory",
       lambda t: export.load_bundle(os.path.join(t, "none")), export.BundleError, "is missing"),
      ("bundle: packed weights at 0 bits",
       lambda t: export.unpack_codes(np.zeros(4, np.uint8), 0, 4), export.BundleError,
       "bit-width 0 outside 1..8"),
  ]


def _checkpoint_rows():
  from jpq_jax import checkpoint as C  # pylint: disable=import-outside-toplevel

  def damaged_tree(t):
    path = os.path.join(t, "tree")
    C.save_tree(path, {"a": np.arange(1000, dtype=np.float32)})
    files = [os.path.join(r, n) for r, _, ns in os.walk(path) for n in ns if n != C.MANIFEST]
    big = max(files, key=os.path.getsize)
    with open(big, "r+b") as f:
      f.seek(os.path.getsize(big) // 2)
      b = f.read(1)
      f.seek(-1, 1)
      f.write(bytes([b[0] ^ 0xFF]))
    return C.load_tree(path)

  def malformed_manifest(t):
    path = os.path.join(t, "tree_m")
    C.save_tree(path, {"a": np.arange(10, dtype=np.float32)})
    with open(os.path.join(path, C.MANIFEST), "w") as f:
      json.dump({"format": 1, "files": {"x": 5}}, f)  # an entry that is not [size, crc]
    return C.load_tree(path)

  return [
      ("checkpoint: missing tree", lambda t: C.load_tree(os.path.join(t, "none")),
       FileNotFoundError, "no checkpoint"),
      ("checkpoint: corrupted tree", damaged_tree, C.CheckpointCorruptError, "corrupted"),
      ("checkpoint: malformed manifest", malformed_manifest, C.CheckpointCorruptError,
       "unreadable manifest"),
  ]


def _mode_rows():
  """Variables of one mode applied in another (each silently wrong or a deep Flax error before)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jpq_jax as jpq  # pylint: disable=import-outside-toplevel
  from jpq_jax.models import DemoNet  # pylint: disable=import-outside-toplevel
  model = DemoNet(width=4)
  x = np.random.RandomState(0).rand(2, 8, 8, 1).astype(np.float32)
  fv = model.init(jax.random.PRNGKey(1), x, jpq.Ctx.float())
  sv = jpq.to_search(model, fv, x)
  table = jpq.trace_table(model, x)
  fx = jpq.to_fixed(sv, table)
  return [
      ("search mode on float variables", lambda t: model.apply(fv, x, jpq.Ctx.search()),
       ValueError, "convert them with jpq_jax.to_search"),
      ("fixed mode on float variables",
       lambda t: model.apply({**fv, "precision": fx["precision"]}, x, jpq.Ctx.fixed()),
       ValueError, "and freeze them with jpq_jax.to_fixed"),
      ("search mode on fixed variables", lambda t: model.apply(fx, x, jpq.Ctx.search()),
       ValueError, "search mode needs an 'arch' collection"),
      ("float mode on search variables", lambda t: model.apply(sv, x, jpq.Ctx()),
       ValueError, r"apply them with jpq_jax.Ctx.search\(\)"),
      ("float mode on fixed variables", lambda t: model.apply(fx, x, jpq.Ctx.float()),
       ValueError, r"apply them with jpq_jax.Ctx.fixed\(\)"),
      ("Ctx.float without parentheses", lambda t: model.apply(fv, x, jpq.Ctx.float), TypeError,
       "forgot the parentheses"),
      ("integer input", lambda t: model.apply(fv, (x * 255).astype(np.uint8), jpq.Ctx.float()),
       TypeError, "dtype uint8; pass a floating-point array"),
      ("precisions as the space",
       lambda t: DemoNet(space=(0, 2, 4, 8)).init(jax.random.PRNGKey(0), x, jpq.Ctx.float()),
       TypeError, "space must be a jpq_jax.SearchSpace, got tuple"),
      ("freeze of fixed variables", lambda t: jpq.freeze(fx, table), ValueError,
       "freeze needs the 'arch' collection"),
      ("freeze with swapped arguments", lambda t: jpq.freeze(table, sv), TypeError,
       "table must be a jpq_jax.LayerTable"),
      ("hand-written bits outside the precision set", lambda t: model.apply(
          {**fx, "precision": {**fx["precision"], "g_res": {
              **fx["precision"]["g_res"],
              "w_bits": np.full_like(fx["precision"]["g_res"]["w_bits"], 3)}}}, x, jpq.Ctx.fixed()),
       ValueError, r"group 'g_res' precision w_bits: bit-width\(s\) \[3\] not in the precision set"),
  ]


def _quant_rows():
  import jpq_jax as jpq  # pylint: disable=import-outside-toplevel
  from jpq_jax import quant  # pylint: disable=import-outside-toplevel
  return [
      ("search temperature 0", lambda t: jpq.Ctx.search(0.0), ValueError, "finite number > 0"),
      ("negative member temperatures", lambda t: jpq.Ctx.search(np.array([1.0, -1.0])),
       ValueError, "finite number > 0"),
      ("freeze at NaN temperature", lambda t: jpq.freeze({}, None, float("nan")), ValueError,
       "freeze: temperature"),
      ("activation scale at 0 bits", lambda t: quant.pact_scale(1.0, 0), ValueError, "bits > 0"),
      ("signed activation scale at 0 bits", lambda t: quant.pact_signed_scale(-1.0, 1.0, 0),
       ValueError, "bits > 0"),
  ]


def test_bad_library_inputs(tmp_path):
  rows = _bundle_rows() + _checkpoint_rows() + _quant_rows() + _mode_rows()
  if not _bundle_rows():
    print("\n(export.load_bundle not available: bundle rows skipped)")
  for name, call, exc, want in rows:
    with pytest.raises(exc, match=want):
      call(str(tmp_path))
  print(f"\nbad library inputs tried: {len(rows)} (export bundles {len(_bundle_rows())})")


def test_workdir_of_a_run_that_trained_nothing_is_reusable(tmp_path):
  """A run stopped before anything was trained (only config.json) does not lock its directory."""
  from jpq_jax import sweep  # pylint: disable=import-outside-toplevel
  wd = str(tmp_path / "w")
  os.makedirs(wd)
  with open(os.path.join(wd, "config.json"), "w") as f:
    json.dump({"config": json.loads(H.tiny_config(lambdas=(1e-6,)).to_json_best_effort())}, f)
  sweep.validate_config(H.tiny_config(), wd)  # different lambdas, nothing trained: accepted
  os.makedirs(os.path.join(wd, "checkpoints", "0"))
  with pytest.raises(sweep.ConfigError, match="holds another run"):
    sweep.validate_config(H.tiny_config(), wd)


def test_a_run_with_a_replaced_group_resumes_with_its_own_config(tmp_path):
  """A config that replaces a whole group (a cosine schedule given as ``{"kind": "cosine"}``, as
  the CPU protocol does, drops the default's ``gamma``) resumes and reads back its finished run;
  a changed field of that group is still refused. (Before 2026-12-02 only the saved side had the
  defaults filled in: the rerun of such a finished run was refused at ``gamma``.)"""
  from jpq_jax import sweep  # pylint: disable=import-outside-toplevel
  c = H.tiny_config()
  c.finetune.schedule = {"kind": "cosine"}
  wd = str(tmp_path / "w")
  os.makedirs(os.path.join(wd, "checkpoints", "0"))
  with open(os.path.join(wd, "config.json"), "w") as f:
    json.dump({"config": json.loads(c.to_json_best_effort())}, f)
  again = H.tiny_config()
  again.finetune.schedule = {"kind": "cosine"}
  sweep.validate_config(again, wd)
  other = H.tiny_config()
  other.finetune.schedule = {"kind": "exp", "gamma": 0.5}
  with pytest.raises(sweep.ConfigError, match="finetune.schedule"):
    sweep.validate_config(other, wd)


def test_resume_may_move_data_and_devices(tmp_path, capsys):
  """Launch details may change on resume (data mounted elsewhere, other devices or evaluation
  batch); what the run computes may not."""
  from jpq_jax import sweep  # pylint: disable=import-outside-toplevel
  wd = str(tmp_path / "w")
  os.makedirs(os.path.join(wd, "checkpoints", "0"))
  with open(os.path.join(wd, "config.json"), "w") as f:
    json.dump({"config": json.loads(H.tiny_config().to_json_best_effort())}, f)
  moved = H.tiny_config()
  moved.data.data_dir = "/mnt/elsewhere"
  moved.train.eval_batch_size = 64
  moved.sweep.strategy = "vmap"
  sweep.validate_config(moved, wd)
  assert "data.data_dir='/mnt/elsewhere'" in capsys.readouterr().err
  other = H.tiny_config()
  other.train.batch_size = 8
  with pytest.raises(sweep.ConfigError, match="train.batch_size"):
    sweep.validate_config(other, wd)


def test_traced_bits_outside_the_precision_set_are_loud():
  """Inside jit a bad bit-width cannot raise: its theta column is NaN, so the output is NaN where
  it used to be a silently zeroed channel; valid bits give exactly the eager one-hot."""
  import jax  # pylint: disable=import-outside-toplevel
  import jpq_jax as jpq  # pylint: disable=import-outside-toplevel
  from jpq_jax import choice  # pylint: disable=import-outside-toplevel
  from jpq_jax.models import DemoNet  # pylint: disable=import-outside-toplevel
  traced = jax.jit(lambda b: choice.onehot_from_bits(b, (0, 2, 4, 8)))
  ok = np.array([0, 8, 2, 4, 8], np.int32)
  np.testing.assert_array_equal(np.asarray(traced(ok)),
                                np.asarray(choice.onehot_from_bits(ok, (0, 2, 4, 8))))
  th = np.asarray(traced(np.array([0, 3, 8], np.int32)))
  assert np.isnan(th[:, 1]).all() and np.isfinite(th[:, [0, 2]]).all()
  model = DemoNet(width=4)
  x = np.random.RandomState(0).rand(2, 8, 8, 1).astype(np.float32)
  sv = jpq.to_search(model, model.init(jax.random.PRNGKey(1), x, jpq.Ctx.float()), x)
  fx = jpq.to_fixed(sv, jpq.trace_table(model, x))
  run = jax.jit(lambda v: jax.tree_util.tree_leaves(model.apply(v, x, jpq.Ctx.fixed()))[0])
  assert np.isfinite(np.asarray(run(fx))).all()
  # Eager and jitted application agree to float32 roundoff (no moved rounding tie: a moved code
  # is a whole quantization step, ~1e-2 here).
  eager = jax.tree_util.tree_leaves(model.apply(fx, x, jpq.Ctx.fixed()))[0]
  np.testing.assert_allclose(np.asarray(eager), np.asarray(run(fx)), atol=2e-6)
  wb = np.array(fx["precision"]["g_res"]["w_bits"])
  wb[0] = 3
  bad = {**fx, "precision": {**fx["precision"], "g_res": {**fx["precision"]["g_res"], "w_bits": wb}}}
  assert np.isnan(np.asarray(run(bad))).any()
