"""The ``jpq`` command: run a sweep, report its Pareto front, inspect a member.

Usage::

  jpq sweep                                   # demo config, built-in digits, ./runs/demo
  jpq sweep --config experiments/configs/cifar10_resnet8.py --workdir runs/c10 \\
      --config.sweep.lambdas=1e-7,1e-6,1e-5 --config.search.cost=mpic
  jpq sweep --config experiments/configs/demo.py search.epochs=5 sweep.strategy=vmap
  jpq report runs/demo                        # front table (and pareto.png)
  jpq inspect runs/demo --member 3            # per-layer bits and kept channels
  jpq compare runs/joint runs/w8a8 runs/pit_mps --out runs/cmp --cost size   # iso-accuracy

Overrides are ``--config.a.b=value`` or ``a.b=value``; tuples take comma-separated values. A
killed sweep resumes when rerun with the same ``--workdir`` and config.

Multi-host (``jax.distributed``): start one ``jpq sweep`` per process, same config and work
directory (a shared filesystem), each with its ``process_id``::

  jpq sweep --config c.py --workdir runs/x distributed.enabled=true \\
      distributed.coordinator_address=10.0.0.1:9876 distributed.num_processes=2 \\
      distributed.process_id=0        # and =1 on the other process

Only process 0 prints the front and writes the result files.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import math
import os
import sys
from typing import List, Optional, Sequence

import ml_collections

from jpq_jax.sweep.config import FREE_FORM_GROUPS

__all__ = ["main", "load_config", "apply_overrides"]

_EPILOG = """example: jpq sweep && jpq report runs/demo && jpq inspect runs/demo --member 3 --plot m.png
(jpq sweep --help: the config fields and the field=value override syntax)"""

_SWEEP_EPILOG = """config overrides (after the options, any number):
  field=value or --config.field=value, with the config's dotted field names; tuples take
  comma-separated values, booleans true/false; dataset options may be new keys:
    jpq sweep search.epochs=5 sweep.lambdas=1e-6,1e-5,1e-4
    jpq sweep --config experiments/configs/cifar10_resnet8.py data.data_dir=/data/c10.zip \\
        search.cost=mpic sweep.strategy=vmap data.options.train_size=10000

the fields: jpq_jax.sweep.base_config's docstring (python -c "import jpq_jax.sweep as s;
help(s.base_config)") and README "Running a sweep"; shipped configs: experiments/configs/*.py.
A rerun with the same --workdir and config resumes a killed sweep."""


def load_config(path: Optional[str]) -> ml_collections.ConfigDict:
  """Load a config file (a Python file with ``get_config()``), or the demo config for None.

  Args:
    path: path of the Python config file; None (or empty) selects ``sweep.demo_config()``.

  Returns:
    The ``ml_collections.ConfigDict`` returned by the file's ``get_config()`` (or the demo config).

  Raises:
    FileNotFoundError: no such file.
    ValueError: the path is a directory or not a Python file; the file has no ``get_config``, has
      a syntax error, raises while it is executed or while ``get_config()`` runs, or
      ``get_config()`` returns something else than a ``ConfigDict`` (the message names the file
      and the error).
  """
  from jpq_jax import sweep  # pylint: disable=import-outside-toplevel
  if not path:
    return sweep.demo_config()
  if not os.path.exists(path):
    shipped = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "experiments", "configs")
    names = sorted(n for n in os.listdir(shipped) if n.endswith(".py")) if os.path.isdir(
        shipped) else []
    hint = (f"; shipped configs: {', '.join(os.path.join('experiments', 'configs', n) for n in names)}"
            if names else "")
    raise FileNotFoundError(f"--config: no such config file {path!r}{hint}")
  if os.path.isdir(path):
    raise ValueError(f"--config: {path!r} is a directory, not a Python config file")
  spec = importlib.util.spec_from_file_location("jpq_config", path)
  if spec is None or spec.loader is None:
    raise ValueError(f"--config: {path!r} is not a Python file (expected a .py file defining "
                     "get_config())")
  mod = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(mod)
  except SyntaxError as e:
    raise ValueError(f"--config: {path!r} line {e.lineno}: {e.msg}") from None
  except Exception as e:  # pylint: disable=broad-except
    # The config file is user code: whatever it raises, say which file and what.
    raise ValueError(f"--config: {path!r} failed to load: {type(e).__name__}: {e}") from None
  if not hasattr(mod, "get_config"):
    raise ValueError(f"--config: {path!r} defines no get_config()")
  try:
    cfg = mod.get_config()
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"--config: {path!r}: get_config() raised {type(e).__name__}: {e}") from None
  if not isinstance(cfg, ml_collections.ConfigDict):
    raise ValueError(f"--config: {path!r}: get_config() returned a {type(cfg).__name__}, not an "
                     "ml_collections.ConfigDict (start from jpq_jax.base_config())")
  return cfg


def _parse_value(text: str, current):
  if isinstance(current, bool):
    if text.lower() in ("1", "true", "yes", "on"):
      return True
    if text.lower() in ("0", "false", "no", "off"):
      return False
    raise ValueError(f"expected a boolean, got {text!r}")
  if isinstance(current, (tuple, list)):
    text = text.strip().strip("()[]")
    if not text:
      return ()
    elem = type(current[0]) if current else None
    out = []
    for part in text.split(","):
      part = part.strip()
      if elem is float:
        out.append(float(part))
      elif elem is int:
        try:
          out.append(int(part))
        except ValueError:
          out.append(float(part))
      else:
        try:
          out.append(ast.literal_eval(part))
        except (ValueError, SyntaxError):
          out.append(part)
    return tuple(out)
  if isinstance(current, int):
    return int(text)
  if isinstance(current, float):
    return float(text)
  if isinstance(current, str) or current is None:
    return text
  return ast.literal_eval(text)


# Config groups whose keys are not fixed: an override may add one (``data.options.image_size=32``).
# The sweep config's own list (its schema check skips them); jpq_jax.sweep.config needs no JAX.
FREE_FORM = FREE_FORM_GROUPS


def apply_overrides(cfg: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
  """Apply ``a.b=value`` overrides in place (the value is parsed as the field's current type).

  Args:
    cfg: the config to modify (in place; locked ``ConfigDict`` nodes are unlocked for the write).
    overrides: strings ``a.b=value`` or ``--config.a.b=value``, applied in order. Booleans take
      ``1/true/yes/on`` or ``0/false/no/off``; tuples and lists take comma-separated values
      (optionally in brackets), parsed as the type of the current first element; a field that is
      None or a string takes the text as is; other types are parsed with ``ast.literal_eval``.
      A key of a free-form group (:data:`FREE_FORM`, e.g. ``data.options.image_size=32``) may be
      new; its value is ``true``/``false`` (any case) as a boolean, else parsed with
      ``ast.literal_eval``, else kept as text.

  Returns:
    None; ``cfg`` is updated in place.

  Raises:
    ValueError: an override without ``=``, an unknown field, a path through a value that is not a
      group of fields, or an unparsable value (the message names the field).
  """
  for ov in overrides:
    if ov.startswith("--config."):
      ov = ov[len("--config."):]
    if "=" not in ov:
      raise ValueError(f"override {ov!r}: expected field=value")
    key, text = ov.split("=", 1)
    node = cfg
    parts = key.split(".")
    for i, p in enumerate(parts[:-1]):
      if p not in node:
        raise ValueError(f"override {key!r}: unknown config field {p!r}; known here: "
                         f"{sorted(node.keys())}")
      node = node[p]
      if not isinstance(node, (dict, ml_collections.ConfigDict)):
        raise ValueError(f"override {key!r}: {'.'.join(parts[:i + 1])!r} is a value "
                         f"({type(node).__name__}), not a group of fields")
    leaf = parts[-1]
    if leaf not in node and ".".join(parts[:-1]) in FREE_FORM:
      # A new keyword option of the dataset: its type is the value's own.
      if text.lower() in ("true", "false"):
        value = text.lower() == "true"
      else:
        try:
          value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
          value = text
      with node.unlocked() if hasattr(node, "unlocked") else _null():
        node[leaf] = value
      continue
    if leaf not in node:
      raise ValueError(f"override {key!r}: unknown config field; known here: {sorted(node.keys())}")
    try:
      value = _parse_value(text, node[leaf])
    except (ValueError, SyntaxError) as e:
      raise ValueError(f"override {key!r}: cannot parse {text!r}: {e}") from None
    with node.unlocked() if hasattr(node, "unlocked") else _null():
      node[leaf] = value


class _null:
  def __enter__(self):
    return self

  def __exit__(self, *a):
    return False


def _cmd_sweep(args, rest: List[str]) -> int:
  from jpq_jax import pareto, sweep  # pylint: disable=import-outside-toplevel
  cfg = load_config(args.config)
  apply_overrides(cfg, rest)
  workdir = args.workdir or os.path.join("runs", cfg.name)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"--workdir {workdir!r} is a file, not a directory")
  try:
    results = sweep.run_sweep(cfg, workdir, progress=not args.no_progress)
  except sweep.ConfigError as e:
    print(f"jpq sweep: invalid config: {e}", file=sys.stderr)
    return 2
  import jax  # pylint: disable=import-outside-toplevel
  if jax.process_index() == 0:  # the other processes of a multi-host sweep print nothing
    print(pareto.format_front(results))
    print(f"results in {os.path.abspath(workdir)} (results.json, pareto.json/.csv/.png, "
          "tensorboard/)")
  return 0


def _cmd_report(args, rest) -> int:
  from jpq_jax import pareto  # pylint: disable=import-outside-toplevel
  if rest:
    raise SystemExit(f"jpq report: unexpected arguments {rest}")
  results = pareto.load_results(args.workdir)
  if args.cost:
    known = sorted({c for m in results["members"] for c in m.get("costs_argmax", {})})
    if args.cost not in known:
      raise ValueError(f"--cost {args.cost!r}: this sweep has no such cost; it reports {known}")
    results = dict(results, pareto_cost=args.cost)
  print(pareto.format_front(results))
  png = os.path.join(args.workdir, "pareto.png")
  if args.cost or not os.path.exists(png):
    png = os.path.join(args.workdir, f"pareto_{pareto.default_cost(results)}.png")
    pareto.plot_front(results, png)
  print(f"plot: {png}")
  return 0


_MODEL_SHAPES = {"demo": ((8, 8, 1), 10), "resnet8": ((32, 32, 3), 10),
                 "dscnn": ((49, 10, 1), 12), "resnet18": ((64, 64, 3), 200),
                 "resnet50": ((224, 224, 3), 1000)}


def _format_reference_costs(refs, classes: int) -> str:
  """The scale of lambda per cost model: the top-precision network's cost (see
  :func:`jpq_jax.costs.reference_costs`) and the lambda that weighs it 1.0 in the loss."""
  from jpq_jax import costs  # pylint: disable=import-outside-toplevel
  lines = ["", "cost of the network at its top precision (the start of a search); lambda * cost is",
           f"the regulariser's initial weight, next to a cross-entropy of ~ln({classes}) = "
           f"{math.log(classes):.2f}:",
           f"{'cost':<14} {'value':>18} {'unit':<10} {'lambda for 1.0':>14}"]
  for name, v in refs.items():
    lam = f"{1.0 / v:.3g}" if v > 0 else "-"
    val = f"{v:,.0f}" if v >= 100 else f"{v:.4g}"
    lines.append(f"{name:<14} {val:>18} {costs.cost_unit(name):<10} {lam:>14}")
  return "\n".join(lines)


def _cmd_inspect(args, rest) -> int:
  from jpq_jax import pareto  # pylint: disable=import-outside-toplevel
  from jpq_jax import sweep as sweep_lib  # pylint: disable=import-outside-toplevel
  if rest:
    raise SystemExit(f"jpq inspect: unexpected arguments {rest}")
  if args.model:  # the static layer table of a built-in model, no run needed
    from jpq_jax.models import get_model  # pylint: disable=import-outside-toplevel
    if args.model not in _MODEL_SHAPES:
      raise ValueError(f"unknown model {args.model!r}; available: {sorted(_MODEL_SHAPES)}")
    shape, classes = _MODEL_SHAPES[args.model]
    space = None
    if args.model in ("dscnn", "resnet50"):
      # Their reference spaces have a signed input quantizer (their class default), not get_model's.
      from jpq_jax.models import MODELS  # pylint: disable=import-outside-toplevel
      space = MODELS[args.model].space
    model = get_model(args.model, space, classes) if space else get_model(args.model,
                                                                          num_classes=classes)
    from jpq_jax.table import trace_table  # pylint: disable=import-outside-toplevel
    from jpq_jax import costs  # pylint: disable=import-outside-toplevel
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    table = trace_table(model, jnp.zeros((1,) + shape))
    print(table)
    print(_format_reference_costs(costs.reference_costs(table), classes))
    return 0
  if not args.workdir:
    raise ValueError("jpq inspect: give a sweep work directory or --model NAME")
  results = pareto.load_results(args.workdir)
  if args.table:  # the run's model as a static layer table (channels, kernels, groups, MACs)
    cfg = sweep_lib.run_config(args.workdir)
    _, table, _ = sweep_lib.build_model_from_config(cfg, results["num_classes"],
                                                    results["input_shape"])
    print(table)
    return 0
  print(pareto.format_member(results, args.member))
  if args.plot:
    pareto.plot_member(results, args.member, args.plot)
    print(f"heatmap of member {args.member}: {os.path.abspath(args.plot)} (and .pdf)")
  return 0


def _cmd_export(args, rest) -> int:
  from jpq_jax import export  # pylint: disable=import-outside-toplevel
  if rest:
    raise SystemExit(f"jpq export: unexpected arguments {rest}")
  if args.format != "bundle":
    if args.requant != "float":
      raise ValueError("--requant applies to the bundle (--format bundle); ONNX/QONNX hold the "
                       "quantizers' scales and leave requantization to the runtime")
    from jpq_jax.deploy import onnx_export  # pylint: disable=import-outside-toplevel
    onnx_export.require("onnx")  # before the export's work: a missing extra is one line
    bundle = export.export_member(args.workdir, args.member, None, allow_failed=args.allow_failed)
    model = export.to_onnx(bundle, args.out, flavor=args.format)
    props = {p.key: p.value for p in model.metadata_props}
    print(bundle.report())
    print(f"{args.format} model: {os.path.abspath(args.out)} (opset {props['jpq.opset']}, checked "
          f"by onnx.checker); weight payload in the file "
          f"{onnx_export.weight_payload_bytes(model):,} B; size cost {bundle.payload_bits:,} bits "
          f"= {bundle.payload_bits / 8:,.1f} B")
    return 0
  bundle = export.export_member(args.workdir, args.member, args.out,
                                allow_failed=args.allow_failed, requant=args.requant)
  print(bundle.report())
  print(f"bundle: {os.path.abspath(args.out)} (manifest.json, weights.npz"
        + (", integer-only fixed-point requantization)" if args.requant == "fixed_point" else ")"))
  return 0


def _cmd_compare(args, rest) -> int:
  from jpq_jax import compare  # pylint: disable=import-outside-toplevel
  if rest:
    raise SystemExit(f"jpq compare: unexpected arguments {rest}")
  runs = [compare.load_run(d, cost=args.cost, metric=args.metric, select=args.select)
          for d in args.workdirs]
  names = [r.name for r in runs]
  for i, r in enumerate(runs):  # two runs of one method (e.g. two fixed precisions): tell apart
    if names.count(r.name) > 1:
      r.name = f"{r.name} ({os.path.basename(os.path.normpath(args.workdirs[i]))})"
  comp = compare.write_comparison(runs, args.out, reference=args.reference)
  with open(os.path.join(args.out, "compare.md")) as f:
    print(f.read())
  print(f"comparison of {len(runs)} runs on {comp['cost']}: {os.path.abspath(args.out)} "
        "(compare.md, compare.json, compare.png)")
  return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Entry point of the ``jpq`` command (``[project.scripts] jpq = "jpq_jax.cli:main"``).

  Subcommands: ``sweep``, ``report``, ``inspect``, ``export``, ``compare`` (see the module
  docstring). Bad input (``ValueError``, ``OSError``, ``IndexError``, ``KeyError``,
  ``FloatingPointError``, and ``ImportError`` for a missing optional dependency) is reported as
  one line on stderr instead of a traceback, unless the environment variable ``JPQ_TRACEBACK`` is
  set, in which case it is re-raised.

  Args:
    argv: command-line arguments without the program name; None uses ``sys.argv[1:]``. For
      ``sweep``, arguments argparse does not know are config overrides (see
      :func:`apply_overrides`).

  Returns:
    Exit status: 0 on success, 2 on bad input or an invalid sweep config.

  Raises:
    SystemExit: from argparse (usage error or ``--help``), or unexpected extra arguments to
      ``report``, ``inspect``, ``export`` or ``compare``.
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(prog="jpq", description=(__doc__ or "jpq").split("\n")[0],
                                   epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = parser.add_subparsers(dest="cmd", metavar="COMMAND")
  p = sub.add_parser("sweep", help="run or resume a Pareto sweep", epilog=_SWEEP_EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     usage="jpq sweep [--config FILE] [--workdir DIR] [--no-progress] "
                           "[field=value ...]")
  p.add_argument("--config", default=None, help="config file (default: the demo config)")
  p.add_argument("--workdir", default=None, help="work directory (default: runs/<config name>)")
  p.add_argument("--no-progress", action="store_true", help="no progress bars")
  p = sub.add_parser("report", help="print the Pareto front of a finished sweep")
  p.add_argument("workdir")
  p.add_argument("--cost", default=None, help="cost of the x axis (default: the sweep's)")
  p = sub.add_parser("inspect", help="per-layer bits and kept channels of one member, or a "
                     "model's static layer table (--table, --model)")
  p.add_argument("workdir", nargs="?", default="")
  p.add_argument("--member", type=int, default=0)
  p.add_argument("--table", action="store_true", help="print the run's static layer table")
  p.add_argument("--model", default="", help="print a built-in model's layer table (no run needed)")
  p.add_argument("--plot", default="", metavar="PNG",
                 help="also write the member's layers x bit-widths heatmap to this image (+ .pdf)")
  p = sub.add_parser("export", help="export one member as a compact integer bundle, ONNX or QONNX")
  p.add_argument("workdir")
  p.add_argument("--member", type=int, default=0)
  p.add_argument("--out", required=True,
                 help="bundle directory to write (the .onnx file for --format onnx/qonnx)")
  p.add_argument("--format", choices=("bundle", "onnx", "qonnx"), default="bundle",
                 help="bundle (jpq's, numpy inference), onnx (QuantizeLinear/DequantizeLinear, "
                      "onnxruntime) or qonnx (Quant nodes with exact bit-widths); onnx/qonnx need "
                      "pip install 'jpq-jax[onnx]'")
  p.add_argument("--requant", choices=("float", "fixed_point"), default="float",
                 help="bundle only: fixed_point stores int32 multipliers and shifts and runs "
                      "integer-only (MCU-style) instead of float32 rescaling")
  p.add_argument("--allow-failed", action="store_true",
                 help="export a member the sweep marked failed (refused by default)")
  p = sub.add_parser("compare", help="compare the fronts of several sweeps (iso-accuracy, or "
                     "iso-loss for a lower-is-better task metric)")
  p.add_argument("workdirs", nargs="+", help="sweep work directories (the first is the reference)")
  p.add_argument("--out", default="compare", help="output directory (default ./compare)")
  p.add_argument("--cost", default=None, help="cost of the x axis (default: each run's own)")
  p.add_argument("--metric", default=None,
                 help="metric reported and compared at iso-metric (default test_<m> of the runs' "
                      "task metric m: test_acc for a classification, test_loss for a regression)")
  p.add_argument("--select", default=None,
                 help="metric that chooses each front's points (default val_<m>, e.g. val_acc: "
                      "the test set never picks them; test_acc is the explicit, optimistic "
                      "choice)")
  p.add_argument("--reference", default=None, help="run name whose reductions are reported")
  args, rest = parser.parse_known_args(argv)
  if args.cmd is None:  # `jpq` alone: the commands, not argparse's "required: cmd"
    parser.print_help(sys.stderr)
    return 2
  try:
    if args.cmd == "sweep":
      return _cmd_sweep(args, rest)
    if args.cmd == "report":
      return _cmd_report(args, rest)
    if args.cmd == "export":
      return _cmd_export(args, rest)
    if args.cmd == "compare":
      return _cmd_compare(args, rest)
    return _cmd_inspect(args, rest)
  except KeyboardInterrupt:  # a second Ctrl-C during a sweep's clean stop, or Ctrl-C elsewhere
    print(f"\njpq {args.cmd}: aborted; a sweep keeps its last committed checkpoint (rerun the "
          "same command to resume from it)", file=sys.stderr)
    return 130
  except Exception as e:  # pylint: disable=broad-except
    from jpq_jax.sweep import SweepInterrupted  # pylint: disable=import-outside-toplevel
    if isinstance(e, SweepInterrupted):
      # A clean stop, not an error: the state is saved; the shell's convention for a process
      # ended by a signal (130 for SIGINT, 143 for SIGTERM) tells schedulers what happened.
      print(f"jpq {args.cmd}: {e}", file=sys.stderr)
      return 128 + int(e.signum)
    if os.environ.get("JPQ_TRACEBACK"):
      raise
    from jpq_jax.checkpoint import storage_error  # pylint: disable=import-outside-toplevel
    cause = storage_error(e)
    if cause is not None:
      # Disk full, permissions, read-only: Orbax and TensorStore wrap the cause in pages of
      # traceback. The steps committed before it are intact (Orbax writes into temporary
      # directories and renames a complete step).
      print(f"jpq {args.cmd}: cannot write: {cause}. Checkpoints committed before it are kept; "
            "fix it and rerun the same command to resume (JPQ_TRACEBACK=1 shows the traceback)",
            file=sys.stderr)
      return 1
    if not isinstance(e, (ValueError, OSError, IndexError, KeyError, FloatingPointError,
                          ImportError)):
      raise
    # Bad input of any kind (config, data, work directory, checkpoint): one line naming the
    # problem, no traceback. JPQ_TRACEBACK=1 shows it, for debugging.
    if isinstance(e, KeyError):  # str(KeyError) is only the quoted key
      msg = f"missing key {e.args[0]!r}" if e.args else "missing key"
    else:
      msg = str(e)
    print(f"jpq {args.cmd}: {msg}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
