"""ONNX / QONNX export run in their own runtimes, and the integer-only (fixed-point) bundle.

The trained demo member (test_export's fixture) and a ResNet-8 with random weights frozen to a
mixed architecture are exported, run by onnxruntime (and by qonnx's executor) and compared with
jpq's fixed-mode network; the fixed-point bundle is compared with the float-rescaled one.
"""

import json
import sys

import jax
import numpy as np
import onnx
import pytest

import test_sweep_helpers as H  # also turns on the persistent compilation cache
from test_export import (CLOSE_ATOL, FLIP_RTOL, FlatNet, _apply_fixed,  # noqa: F401
                         _assert_reproduces, _random_vars, _set_precision,
                         demo)  # the trained demo member (a module fixture)
import jpq_jax as jpq
from jpq_jax import cli, export, models
from jpq_jax.deploy import fixed_point, onnx_export
from jpq_jax.data import load

# ONNX and QONNX vs the JAX fixed-mode network: the graph recomputes each residual add with JAX's
# float32 arithmetic (see onnx_export.add_like_jax), so both runtimes give the bundle's integer
# codes but where float32 rounding in a conv moves a value across a PACT floor boundary: the same
# criterion as the bundle's (test_export._assert_reproduces: same argmax, 99% of examples within
# 1e-4, all within 5% of the logit range). Measured (CPU): 2.4e-6 on the trained demo (range ~10).
#
# The fixed-point bundle computes the residual adds exactly in integers, where JAX's float32 sum of
# two operands on one grid lands one code below for a share of the outputs (printed by the test);
# its logits move by a few 1e-2: the same argmax but where the fixed-mode margin between the two
# top classes is below the largest logit error, every logit within 5% of the logit range, the
# median example within 1% of it.
FX_RANGE_RTOL = 0.05
FX_MEDIAN_RTOL = 0.01


def _report(got, ref, what):
  per_example = np.abs(got - ref).max(axis=1)
  print(f"\n{what}: argmax agreement {int((got.argmax(1) == ref.argmax(1)).sum())}/{len(ref)}, "
        f"max |logit diff| {per_example.max():.3g}, median {np.median(per_example):.3g} "
        f"(logit range {np.abs(ref).max():.3g})")
  return per_example


def _compare(got, ref, what):
  _report(got, ref, what)
  _assert_reproduces(got, ref)


def _compare_fixed_point(got, ref, what):
  per_example = _report(got, ref, what)
  top2 = np.sort(ref, axis=1)[:, -2:]
  near_tie = top2[:, 1] - top2[:, 0] <= 2 * per_example.max()
  differ = got.argmax(1) != ref.argmax(1)
  assert not (differ & ~near_tie).any(), np.flatnonzero(differ & ~near_tie)
  rng = float(np.abs(ref).max())
  assert per_example.max() <= FX_RANGE_RTOL * rng and np.median(per_example) <= FX_MEDIAN_RTOL * rng


def _props(model):
  return {p.key: p.value for p in model.metadata_props}


def _check_payload(model, bundle, what):
  payload = onnx_export.weight_payload_bytes(model)
  size_bits = bundle.payload_bits  # = the `size` cost (test_export checks it)
  print(f"{what}: weight payload in the file {payload:,} B; size cost {size_bits:,} bits = "
        f"{size_bits / 8:,.1f} B; bundle (per-channel byte padding) {bundle.payload_bytes:,} B")
  return payload, size_bits


@pytest.fixture(scope="module")
def resnet8():
  space = jpq.SearchSpace(w_precisions=(0, 2, 4, 8), a_precisions=(2, 4, 8))
  model = models.ResNet8(space=space)
  x = np.asarray(jax.random.uniform(jax.random.PRNGKey(1), (8, 32, 32, 3)))
  fv = _random_vars(model, x[:2], 0)
  table = jpq.trace_table(model, x[:1])
  fv = _set_precision(fv, table, np.random.default_rng(0), prune=0.3,
                      a_bits={"g_stage1": 8, "g_convblock1": 4, "g_stage2": 4, "g_convblock2": 8,
                              "g_stage3": 8, "g_convblock3": 2})
  ref = np.asarray(_apply_fixed(model)(fv, x))
  return export.export_model(model, fv, table, x[:1]), x, ref


@pytest.fixture(scope="module")
def demo_export(demo):  # noqa: F811 (the imported fixture)
  model, fv, table, ds = demo
  x = ds.test.x
  ref = np.asarray(_apply_fixed(model)(fv, x))
  return export.export_model(model, fv, table, x[:1]), np.asarray(x), ref, ds.test.y


# ------------------------------------------------------------------------------------------------
def test_demo_onnx_in_onnxruntime(demo_export, tmp_path):
  bundle, x, ref, y = demo_export
  path = str(tmp_path / "demo.onnx")
  export.to_onnx(bundle, path)
  model = onnx.load(path)
  onnx.checker.check_model(model, full_check=True)
  got = onnx_export.run_onnx(path, x)
  _compare(got, ref, f"demo, onnxruntime, all {len(y)} test examples")
  print(f"test accuracy: fixed mode {(ref.argmax(1) == y).mean():.4f}, "
        f"onnxruntime {(got.argmax(1) == y).mean():.4f}")
  payload, size_bits = _check_payload(model, bundle, "demo onnx")
  # int2/int4/int8 initializers packed without per-channel padding: within a byte per segment.
  n_segments = len(json.loads(_props(model)["jpq.weight_inits"]))
  assert size_bits / 8 <= payload < size_bits / 8 + n_segments
  # The true bit-widths and the narrowest container of each.
  props = _props(model)
  containers = json.loads(props["jpq.containers"])
  caps = onnx_export.capabilities()
  narrowest = {b: min(t for t, _ in caps["int"] if t >= b) for b in (2, 4, 8)}
  for name, seg in containers.items():
    if ".w" in name and "Quant" not in seg:
      b = int(name.rsplit(".w", 1)[1])
      assert seg == f"INT{narrowest[b]}", (name, seg)
  layers = json.loads(props["jpq.layers"])
  for name, l in bundle.manifest["layers"].items():
    assert sorted(layers[name]["w_bits"]) == sorted(bundle.arrays[f"{name}.w_bits"].tolist())
    assert sorted(layers[name]["channels"]) == l["kept_out"]
  ops_seen = {n.op_type for n in model.graph.node}
  assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"} <= ops_seen


def test_resnet8_onnx_in_onnxruntime(resnet8):
  bundle, x, ref = resnet8
  model = export.to_onnx(bundle)
  onnx.checker.check_model(model, full_check=True)
  _compare(onnx_export.run_onnx(model, x), ref, "ResNet-8 (random weights), onnxruntime")
  payload, size_bits = _check_payload(model, bundle, "ResNet-8 onnx")
  assert size_bits / 8 <= payload < size_bits / 8 + 3 * len(bundle.manifest["layers"])
  # Three adds (one exact QDQ each), activation containers UINT2/UINT4/UINT8 as searched.
  containers = json.loads(_props(model)["jpq.containers"])
  assert containers["convblock3_conv1.out"] == "UINT2"
  assert containers["add2.out"] == "UINT4" and containers["add1.out"] == "UINT8"


def test_converted_plain_flax_resnet8_onnx_in_onnxruntime():
  """A ResNet-8 written in plain Flax (tests/plain_flax.py), made searchable by
  :func:`jpq_jax.searchable`, frozen to a mixed architecture (30% of every group pruned) and
  exported: the ONNX model runs in onnxruntime as the converted model's fixed mode does."""
  from plain_flax import PlainResNet8  # pylint: disable=import-outside-toplevel
  space = jpq.SearchSpace(w_precisions=(0, 2, 4, 8), a_precisions=(2, 4, 8))
  x = np.asarray(jax.random.uniform(jax.random.PRNGKey(2), (8, 32, 32, 3)))
  net = jpq.searchable(PlainResNet8(), x[:1], space)
  fv = _random_vars(net, x[:2], 1)
  table = jpq.trace_table(net, x[:1])
  fv = _set_precision(fv, table, np.random.default_rng(1), prune=0.3)
  ref = np.asarray(_apply_fixed(net)(fv, x))
  bundle = export.export_model(net, fv, table, x[:1])
  model = export.to_onnx(bundle)
  onnx.checker.check_model(model, full_check=True)
  got = onnx_export.run_onnx(model, x)
  per_example = _report(got, ref, "converted plain-Flax ResNet-8, onnxruntime")
  # Same argmax everywhere; float32 rounding at most (one activation code that flips at a
  # quantizer boundary, as onnxruntime and XLA accumulate a conv in another order, is allowed in
  # one example of the 8: measured 5.8e-4 on a logit range of 2.0, the other 7 below 5e-7).
  np.testing.assert_array_equal(got.argmax(1), ref.argmax(1))
  assert (per_example < CLOSE_ATOL).sum() >= len(x) - 1, np.sort(per_example)
  assert per_example.max() < FLIP_RTOL * np.abs(ref).max()
  payload, size_bits = _check_payload(model, bundle, "converted ResNet-8 onnx")
  assert size_bits / 8 <= payload < size_bits / 8 + 3 * len(bundle.manifest["layers"])


def _quant_bits(model):
  inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
  return sorted({int(inits[n.input[3]]) for n in model.graph.node if n.op_type == "Quant"})


def test_qonnx_runs_in_qonnx(demo_export, resnet8):
  bundle, x, ref, _ = demo_export
  model = export.to_onnx(bundle, flavor="qonnx")
  onnx.checker.check_model(model)
  assert _quant_bits(model) == [2, 4, 8, 16, 32]  # weights 2/4/8, activations 4/8, pool, bias
  sel = np.arange(0, len(x), 6)  # qonnx executes node by node in Python: 60 examples
  _compare(onnx_export.run_qonnx(model, x[sel]), ref[sel], f"demo, qonnx, {len(sel)} examples")
  _check_payload(model, bundle, "demo qonnx (float32 weights)")
  bundle, x, ref = resnet8
  model = export.to_onnx(bundle, flavor="qonnx")
  assert _quant_bits(model) == [2, 4, 8, 16, 32]
  _compare(onnx_export.run_qonnx(model, x[:4]), ref[:4], "ResNet-8, qonnx")


# ------------------------------------------------------------------------------------------------
def test_quantize_multiplier():
  m = np.array([0.75, 1e-3, 3.0, 2.0**-40, 0.0])
  m0, shift = fixed_point.quantize_multiplier(m)
  assert ((m0[:3] >= 2**30) & (m0[:3] < 2**31)).all() and shift.max() <= 62
  np.testing.assert_allclose(m0 * 2.0**-shift.astype(np.float64), m, rtol=2**-30)
  assert (m0[-1], shift[-1]) == (0, 0)
  with pytest.raises(ValueError, match="< 2\\^31"):
    fixed_point.quantize_multiplier([2.0**31])


def test_demo_fixed_point_bundle(demo, demo_export, tmp_path):  # noqa: F811
  model, fv, table, ds = demo
  bundle, x, ref, y = demo_export
  fx = export.export_model(model, fv, table, x[:1], requant="fixed_point")
  fx.save(str(tmp_path / "fx"))
  loaded = export.load_bundle(str(tmp_path / "fx"))  # the plan's arrays are checksummed too
  acts = {}
  got = export.run_bundle(loaded, x, activations=acts)
  for name, (codes, _) in acts.items():  # integer-only between the layers
    if name != "out":
      assert np.issubdtype(codes.dtype, np.integer), name
  float_acts = {}
  floats = export.run_bundle(bundle, x, activations=float_acts)
  _compare_fixed_point(got, floats, "demo, fixed-point vs float-rescaled bundle")
  print(f"test accuracy: fixed-point {(got.argmax(1) == y).mean():.4f}, float-rescaled "
        f"{(floats.argmax(1) == y).mean():.4f}")
  # JAX's (and the float bundle's) residual add vs the exact integer sum of the same operands.
  lo, hi = loaded.manifest["fixed_point"]["codes_range"]["g_res"]
  exact = np.clip(float_acts["stem"][0].clip(0) + float_acts["block_b"][0], lo, hi)
  nonzero = exact > 0
  below = (float_acts["add"][0] < exact) & nonzero
  assert ((float_acts["add"][0] == exact) | below).all()  # never above, at most one code below
  assert (exact - float_acts["add"][0]).max() <= 1
  print(f"float32 residual add one code below the exact sum in {below.sum() / nonzero.sum():.1%} "
        "of its non-zero outputs")
  np.testing.assert_array_equal(got.argmax(1), floats.argmax(1))  # measured: all 359 agree


def test_resnet8_fixed_point(resnet8):
  bundle, x, ref = resnet8
  fx = dict(bundle.manifest)
  arrays = dict(bundle.arrays)
  fixed_point.add_plan(fx, arrays, lambda n: export._layer_weights(bundle, n)[1])
  got = fixed_point.run_integer(export.Bundle(manifest=fx, arrays=arrays), x)
  _compare_fixed_point(got, ref, "ResNet-8, fixed-point")
  assert arrays["add1.fx_m"].tolist() == [2**30, 2**30]  # operands on the output's grid: exact


# ------------------------------------------------------------------------------------------------
def test_bad_input(resnet8, monkeypatch):
  bundle, _, _ = resnet8
  with pytest.raises(ValueError, match="unknown ONNX flavor 'tflite'"):
    export.to_onnx(bundle, flavor="tflite")
  # Degenerate: a fully pruned group (the network's output no longer depends on its input).
  flat = FlatNet()
  x = np.ones((2, 12, 12, 2), np.float32)
  fv = _random_vars(flat, x)
  fv["precision"] = jax.tree_util.tree_map(lambda v: v + 8, fv["precision"])
  fv["precision"]["g1"]["w_bits"] = np.zeros_like(fv["precision"]["g1"]["w_bits"])
  with pytest.raises(export.BundleError, match="degenerate member: layer 'c1' keeps no output"):
    export.export_model(flat, fv, None, x)
  m = json.loads(json.dumps(bundle.manifest))  # an in-memory bundle that was not checked so
  m["layers"]["convblock2_conv1"]["cout"] = 0
  with pytest.raises(export.BundleError, match="degenerate member: layer 'convblock2_conv1'"):
    export.to_onnx(export.Bundle(manifest=m, arrays=bundle.arrays))
  # An op ONNX cannot express here: a training-mode dropout; and a 32-bit activation.
  m = json.loads(json.dumps(bundle.manifest))
  relu = next(n for n in m["nodes"] if n["op"] == "relu")
  relu.update(op="dropout", rate=0.5, deterministic=False)
  with pytest.raises(export.BundleError, match="cannot express a training-mode dropout"):
    export.to_onnx(export.Bundle(manifest=m, arrays=bundle.arrays))
  m = json.loads(json.dumps(bundle.manifest))
  m["quantizers"]["g_stage2"]["bits"] = 32
  with pytest.raises(export.BundleError, match="32-bit activation has no ONNX integer type"):
    export.to_onnx(export.Bundle(manifest=m, arrays=bundle.arrays))
  with pytest.raises(export.BundleError, match="unknown requant 'int'"):
    export.export_model(None, {}, None, None, requant="int")
  # A missing optional dependency: one line naming it and the extra.
  monkeypatch.setitem(sys.modules, "onnx", None)
  with pytest.raises(ImportError, match="optional dependency 'onnx'.*jpq-jax\\[onnx\\]"):
    export.to_onnx(bundle)


def test_cli_export_onnx_and_qonnx(tmp_path, capsys, monkeypatch):
  wd, _ = H.shared_run("warm")
  path = str(tmp_path / "m0.onnx")
  assert cli.main(["export", wd, "--member", "0", "--format", "onnx", "--out", path]) == 0
  printed = capsys.readouterr().out
  assert "weight payload" in printed and path in printed and "size cost" in printed
  x = load("demo").test.x
  _, fv, _ = jpq.restore_member(wd, 0)
  model, _, _ = jpq.restore_member(wd, 0)
  ref = np.asarray(_apply_fixed(model)(fv, x))
  _compare(onnx_export.run_onnx(path, x), ref, "sweep member 0, jpq export --format onnx")
  qpath = str(tmp_path / "m0.qonnx.onnx")
  assert cli.main(["export", wd, "--format", "qonnx", "--out", qpath]) == 0
  assert _quant_bits(onnx.load(qpath))
  out = str(tmp_path / "fx")
  assert cli.main(["export", wd, "--requant", "fixed_point", "--out", out]) == 0
  got = export.run_bundle(export.load_bundle(out), x)
  _compare_fixed_point(got, ref, "sweep member 0, --requant fixed_point")
  capsys.readouterr()
  assert cli.main(["export", wd, "--format", "onnx", "--requant", "fixed_point",
                   "--out", path]) == 2
  assert "--requant applies to the bundle" in capsys.readouterr().err
  monkeypatch.setitem(sys.modules, "onnx", None)
  assert cli.main(["export", wd, "--format", "onnx", "--out", path]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "optional dependency 'onnx'" in err[0]
