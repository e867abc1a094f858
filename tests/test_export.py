"""Deployment export: pruned integer bundle == fixed-mode fake-quant network, sizes, bad input.

The central check follows STYLE.md item 7: train a small model, export it, zero the source model's
float weights (which must change its output), and show that the integer numpy inference of the saved
bundle alone reproduces the fixed-mode network on every test example.
"""

import json
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import test_sweep_helpers as H  # also turns on the persistent compilation cache
import jpq_jax as jpq
from jpq_jax import cli, export, models, ops
from jpq_jax.arch import get_path
from jpq_jax.data import load

# Logits of the integer inference vs the JAX fixed-mode apply. Both compute the same integer codes
# except where float32 rounding in JAX's convs moves a value across a PACT floor boundary (one code;
# measured on CPU: none in these models, max |diff| 1.4e-6 on the trained demo; ResNet-18 with random
# weights, not tested here, has its first flip in 1 of 45,824 codes and then 2.8e-3). So: every
# example's logits within 1e-4 but for at most 1% of them (a flip), and all within 5% of the logit
# range (a one-code flip of a 4-bit activation feeding the classifier moves a logit by ~1e-2).
CLOSE_ATOL = 1e-4
FLIP_RTOL = 0.05


def _random_vars(model, x, seed=0):
  """Fixed-mode variables with random weights, built from the abstract init (no init compile):
  He-normal kernels, small uniform biases, PACT clips at their usual initial values."""
  abstract = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, jpq.Ctx.fixed()), x)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return (rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    if name == "bias":
      return rng.uniform(-0.1, 0.1, leaf.shape).astype(np.float32)
    if name == "clip":
      return np.full(leaf.shape, 1.0 if path[0].key == "input_q" else 6.0, np.float32)
    if name in ("clip_inf", "clip_sup"):
      return np.full(leaf.shape, -6.0 if name == "clip_inf" else 6.0, np.float32)
    raise AssertionError(f"unexpected parameter {path}")

  params = jax.tree_util.tree_map_with_path(fill, abstract["params"])
  prec = jax.tree_util.tree_map(lambda l: np.zeros(l.shape, l.dtype), abstract["precision"])
  return {"params": params, "precision": prec}


def _set_precision(fv, table, rng, prune=0.3, a_bits=None):
  """Force a mixed architecture: ``prune`` of every prunable group's channels at 0 bit, the rest
  cycling through the group's non-zero bit-widths; activation bits from ``a_bits`` (group name ->
  bits), else the group's highest."""
  prec = jax.tree_util.tree_map(np.asarray, fv["precision"])
  for g in table.groups:
    node = get_path(prec, g.path)
    if g.kind != "input":
      nz = [b for b in g.w_precisions if b]
      bits = np.array([nz[i % len(nz)] for i in range(g.channels)], np.int32)
      if 0 in g.w_precisions:
        bits[rng.permutation(g.channels)[:int(round(prune * g.channels))]] = 0
      node["w_bits"] = rng.permutation(bits) if g.kind == "output" else bits
    if g.a_precisions:
      node["a_bits"] = np.asarray((a_bits or {}).get(g.name, max(g.a_precisions)), np.int32)
  return {"params": fv["params"], "precision": prec}


def _apply_fixed(model):
  """The jitted fixed-mode logits. Full float32 convs: on GPUs the default precision (TF32)
  would move many codes, and the export reproduces the float32 network."""
  fn = jax.jit(lambda v, x: model.apply(v, x, jpq.Ctx.fixed()).value)

  def run(v, x):
    with jax.default_matmul_precision("highest"):
      return fn(v, x)

  return run


def _assert_reproduces(got, ref):
  """Same argmax everywhere; logits equal up to float32 rounding (see CLOSE_ATOL)."""
  np.testing.assert_array_equal(got.argmax(1), ref.argmax(1))
  per_example = np.abs(got - ref).max(axis=1)
  assert (per_example < CLOSE_ATOL).mean() >= 0.99, np.sort(per_example)[-5:]
  assert per_example.max() < FLIP_RTOL * np.abs(ref).max()


def _size_bits(fv, table):
  theta = jpq.thetas(fv, table, jpq.Ctx.fixed())
  return float(jpq.costs.get_cost("size")(table, theta))


def _check_payload(bundle, fv, table):
  size = _size_bits(fv, table)
  kept_channels = sum(l["cout"] for l in bundle.manifest["layers"].values())
  # Unpadded bits equal the size model (depthwise layers carry its 1e-4 epsilon).
  assert bundle.payload_bits == pytest.approx(size, rel=1e-5)
  # Packed bytes: each kept channel rounds up to a whole byte.
  assert 0 <= bundle.payload_bytes - size / 8 < kept_channels
  return size


# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_pack_roundtrip(bits):
  rng = np.random.default_rng(bits)
  for n in (0, 1, 7, 9, 64):
    codes = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=n)
    buf = export.pack_codes(codes, bits)
    assert buf.dtype == np.uint8 and buf.size == (n * bits + 7) // 8
    np.testing.assert_array_equal(export.unpack_codes(buf, bits, n), codes)


def test_pack_layout_and_range():
  # 2-bit codes [1, -2, 0, -1] -> fields [1, 2, 0, 3], first code in the low bits.
  assert export.pack_codes(np.array([1, -2, 0, -1]), 2).tolist() == [1 | 2 << 2 | 0 << 4 | 3 << 6]
  assert export.pack_codes(np.array([-8, 7, 3]), 4).tolist() == [0x78, 0x03]
  with pytest.raises(ValueError, match="outside"):
    export.pack_codes(np.array([2]), 2)


# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo():
  """DemoNet trained for a few hundred steps in fixed mode on a forced architecture: 25% of every
  hidden group pruned, 2/4/8-bit weights, 4- and 8-bit activations."""
  ds = load("demo")
  space = jpq.SearchSpace(w_precisions=(0, 2, 4, 8), a_precisions=(4, 8))
  model = models.DemoNet(space=space)
  x_test = ds.test.x
  fv = _random_vars(model, x_test[:2])
  table = jpq.trace_table(model, x_test[:1])
  fv = _set_precision(fv, table, np.random.default_rng(0), prune=0.25,
                      a_bits={"g_block_a": 4, "g_down": 4})
  tx = optax.adam(3e-3)
  params, opt = fv["params"], tx.init(fv["params"])
  prec = fv["precision"]

  @jax.jit
  def step(params, opt, x, y):
    def loss(p):
      logits = model.apply({"params": p, "precision": prec}, x, jpq.Ctx.fixed(train=True)).value
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    g = jax.grad(loss)(params)
    upd, opt = tx.update(g, opt, params)
    return optax.apply_updates(params, upd), opt

  rng = np.random.default_rng(1)
  xtr, ytr = ds.train.x, ds.train.y
  for _ in range(300):
    idx = rng.integers(0, len(ytr), 64)
    params, opt = step(params, opt, xtr[idx], ytr[idx])
  fv = {"params": params, "precision": prec}
  return model, fv, table, ds


def test_demo_bundle_reproduces_fixed_mode(demo, tmp_path):
  model, fv, table, ds = demo
  x, y = ds.test.x, ds.test.y
  ref = np.asarray(_apply_fixed(model)(fv, x))
  acc = float((ref.argmax(1) == y).mean())
  assert acc > 0.8, f"the demo model did not train (test accuracy {acc:.3f})"

  t0 = time.time()
  bundle = export.export_model(model, fv, table, x[:1])
  bundle.save(str(tmp_path / "b"))
  t_export = time.time() - t0

  # Zero the source model's float weights: the model's output must change (they are used) ...
  zero = {"params": jax.tree_util.tree_map(jnp.zeros_like, fv["params"]),
          "precision": fv["precision"]}
  assert not np.allclose(np.asarray(_apply_fixed(model)(zero, x)), ref)
  del fv, zero
  # ... and the bundle read back from disk alone reproduces it.
  loaded = export.load_bundle(str(tmp_path / "b"))
  t0 = time.time()
  got = export.run_bundle(loaded, x)
  t_run = time.time() - t0
  diff = float(np.abs(got - ref).max())
  same = int((got.argmax(1) == ref.argmax(1)).sum())
  print(f"\ndemo: test acc {acc:.4f}, argmax agreement {same}/{len(y)}, max |logit diff| {diff:.3g} "
        f"(logit range {np.abs(ref).max():.3g}); export {t_export:.2f}s, numpy inference "
        f"{t_run:.2f}s; payload {loaded.payload_bytes} B")
  assert same == len(y)
  _assert_reproduces(got, ref)


def test_demo_codes_match_layer_by_layer(demo):
  """The integer codes of every quantizer/layer/add output equal the fake-quant graph's."""
  model, fv, table, ds = demo
  x = ds.test.x
  recorded = (jpq.InputQuantizer, jpq.Conv, jpq.Dense, jpq.Add)

  def with_intermediates(v, x):
    acts = {}

    def grab(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if context.method_name == "__call__" and isinstance(context.module, recorded):
        acts["/".join(context.module.scope.path)] = out.value
      return out

    with nn.intercept_methods(grab):
      model.apply(v, x, jpq.Ctx.fixed())
    return acts

  with jax.default_matmul_precision("highest"):
    acts = jax.jit(with_intermediates)(fv, x)
  bundle = export.export_model(model, fv, table, x[:1])
  mine = {}
  export.run_bundle(bundle, x, activations=mine)
  m = bundle.manifest
  kept = {l["group"]: l["kept_out"] for l in m["layers"].values()}
  kept["input_q"] = list(range(x.shape[-1]))
  checked = 0
  for n in m["nodes"]:
    q = m["quantizers"].get(n.get("group"))
    if "name" not in n or q is None:
      continue
    codes, _ = mine[n["name"]]
    # The fake-quant value is code / k: recover JAX's codes of the kept channels.
    theirs = np.round(np.asarray(acts[n["name"]])[..., kept[n["group"]]] * q["k"]).astype(np.int64)
    np.testing.assert_array_equal(codes, theirs, err_msg=n["name"])
    checked += 1
  assert checked == 6  # input_q, stem, block_a, block_b, add, down


def test_demo_pruned_shapes_payload_and_report(demo):
  model, fv, table, ds = demo
  bundle = export.export_model(model, fv, table, ds.test.x[:1])
  summary = jpq.precision_summary(fv["precision"], table)
  layers = bundle.manifest["layers"]
  for rec in table.layers:
    l = layers[rec.name]
    kept_out = summary[rec.w_group]["kept"]
    in_g = summary[rec.in_group]
    kept_in = in_g.get("kept", in_g["channels"]) * rec.in_mult
    assert (l["cout"], l["cin"]) == (kept_out, kept_in), rec.name
    kh, kw = rec.kernel
    want = (kh, kw, kept_in, kept_out) if rec.kind != "dense" else (kept_in, kept_out)
    assert tuple(l["kernel_shape"]) == want, rec.name
    assert l["w_bits_hist"] == {str(b): n for b, n in summary[rec.w_group]["w_bits_hist"].items()
                                if b}
    assert bundle.arrays[f"{rec.name}.w_packed"].size == l["weight_bytes"]
  # The forced architecture prunes every hidden group (the classifier keeps its 10 outputs).
  assert layers["block_a"]["cout"] == 12 and layers["down"]["cout"] == 24
  assert layers["out"]["cout"] == 10 and layers["out"]["cin"] == 24
  size = _check_payload(bundle, fv, table)
  print(f"\ndemo payload: {bundle.payload_bits} bits = size cost {size:.1f} bits; "
        f"{bundle.payload_bytes} bytes packed vs {size / 8:.1f}; total with biases/scales "
        f"{bundle.total_bytes} B\n" + bundle.report())
  report = bundle.report()
  for name in layers:
    assert name in report
  assert f"{bundle.payload_bytes:,}" in report


# ------------------------------------------------------------------------------------------------
def _export_and_compare(model, x, a_bits=None, prune=0.3, seed=0):
  fv = _random_vars(model, x[:2], seed)
  table = jpq.trace_table(model, x[:1])
  fv = _set_precision(fv, table, np.random.default_rng(seed), prune=prune, a_bits=a_bits)
  ref = np.asarray(_apply_fixed(model)(fv, x))
  bundle = export.export_model(model, fv, table, x[:1])
  got = export.run_bundle(bundle, np.asarray(x))
  _assert_reproduces(got, ref)
  _check_payload(bundle, fv, table)
  return bundle, fv, table


def test_resnet8_random_weights():
  space = jpq.SearchSpace(w_precisions=(0, 2, 4, 8), a_precisions=(2, 4, 8))
  x = jax.random.uniform(jax.random.PRNGKey(1), (3, 32, 32, 3))
  bundle, _, _ = _export_and_compare(
      models.ResNet8(space=space), x,
      a_bits={"g_stage1": 8, "g_convblock1": 4, "g_stage2": 4, "g_convblock2": 8, "g_stage3": 8,
              "g_convblock3": 2})
  ops_seen = [n["op"] for n in bundle.manifest["nodes"]]
  assert ops_seen.count("add") == 3 and "global_avg_pool" in ops_seen and "flatten" in ops_seen
  # Residual groups: both operands of add2 (conv2y, conv2x) keep the same channels.
  l = bundle.manifest["layers"]
  assert l["conv2y"]["kept_out"] == l["conv2x"]["kept_out"]


def test_dscnn_signed_input_and_depthwise():
  x = 4.0 * jax.random.normal(jax.random.PRNGKey(2), (3, 49, 10, 1))
  bundle, fv, table = _export_and_compare(models.DSCNN(), x)
  m = bundle.manifest
  assert m["quantizers"]["input_q"]["signed"]
  for k in range(1, 5):
    dw = m["layers"][f"depthwise{k}"]
    assert dw["feature_groups"] == dw["cout"] == dw["cin"]
    assert dw["kernel_shape"][2] == 1
  assert [n["op"] for n in m["nodes"]].count("dropout") == 2


class FlatNet(nn.Module):
  """Flatten of a spatial map straight into the classifier, with max and average pooling."""
  space: jpq.SearchSpace = jpq.SearchSpace(a_precisions=(4, 8))

  @nn.compact
  def __call__(self, x, ctx):
    sp = self.space
    h = jpq.InputQuantizer(sp, name="input_q")(x, ctx)
    h = jpq.Conv(8, 3, jpq.Group(8, sp, name="g1"), name="c1")(h, ctx).map(ops.relu)
    h = h.map(ops.max_pool(2)).map(ops.avg_pool(2, 1, "SAME"))
    h = jpq.Conv(6, 3, jpq.Group(6, sp, name="g2"), strides=2, name="c2")(h, ctx).map(nn.relu)
    return jpq.Dense(5, jpq.Group(5, sp, output=True, name="g_out"), name="out")(h.flatten(), ctx)


def test_flatten_channels_last_pruning():
  x = jax.random.uniform(jax.random.PRNGKey(3), (4, 12, 12, 2))
  bundle, fv, table = _export_and_compare(FlatNet(), x, a_bits={"g1": 4}, prune=0.5)
  l = bundle.manifest["layers"]["out"]
  assert l["cin_orig"] == 3 * 3 * 6 and l["cin"] == 3 * 3 * 3


# ------------------------------------------------------------------------------------------------
class LambdaNet(nn.Module):
  """The README style: relu by nn.relu (exportable) and a mean pool by lambda (not exportable)."""

  @nn.compact
  def __call__(self, x, ctx):
    sp = jpq.SearchSpace()
    h = jpq.InputQuantizer(sp, name="input_q")(x, ctx)
    h = jpq.Conv(4, 3, jpq.Group(4, sp, name="g1"), name="c1")(h, ctx).map(nn.relu)
    h = h.map(lambda v: v.mean(axis=(1, 2), keepdims=True)).flatten()
    return jpq.Dense(3, jpq.Group(3, sp, output=True, name="g_out"), name="out")(h, ctx)


class RawOpNet(LambdaNet):
  """An op applied to ``.value`` outside QTensor.map: the classifier's input has no known origin."""

  @nn.compact
  def __call__(self, x, ctx):
    sp = jpq.SearchSpace()
    h = jpq.InputQuantizer(sp, name="input_q")(x, ctx)
    h = jpq.Conv(4, 3, jpq.Group(4, sp, name="g1"), name="c1")(h, ctx)
    h = h.replace(value=h.value * 1.0).map(ops.global_avg_pool).flatten()
    return jpq.Dense(3, jpq.Group(3, sp, output=True, name="g_out"), name="out")(h, ctx)


def test_unexportable_models_give_clear_errors():
  x = jnp.ones((2, 6, 6, 1))
  model = LambdaNet()
  fv = _random_vars(model, x)
  fv["precision"] = jax.tree_util.tree_map(lambda v: v + 8, fv["precision"])
  assert np.isfinite(np.asarray(_apply_fixed(model)(fv, x))).all()  # still runs
  with pytest.raises(export.BundleError, match=r"<lambda>.*dense 'out'.*jpq_jax.ops"):
    export.export_model(model, fv, None, x)
  model = RawOpNet()
  fv = _random_vars(model, x)
  with pytest.raises(export.BundleError, match="no known origin"):
    export.export_model(model, fv, None, x)


def test_no_frozen_architecture():
  model = models.DemoNet()
  x = jnp.ones((1, 8, 8, 1))
  sv = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, jpq.Ctx.search()), x)
  with pytest.raises(export.BundleError, match="no frozen architecture"):
    export.export_model(model, {"params": sv["params"], "arch": sv["arch"]}, None, x)


def test_export_member_of_unfinished_sweep(tmp_path):
  with pytest.raises(FileNotFoundError, match="holds no sweep"):
    export.export_member(str(tmp_path), 0, str(tmp_path / "out"))  # empty: no sweep there


def test_edited_manifest_is_refused(tmp_path):
  x = jax.random.uniform(jax.random.PRNGKey(3), (2, 12, 12, 2))
  model = FlatNet()
  fv = _random_vars(model, x)
  fv["precision"] = jax.tree_util.tree_map(lambda v: v + 8, fv["precision"])
  path = export.export_model(model, fv, None, x).save(str(tmp_path / "b"))
  export.load_bundle(path)  # as saved: fine
  mpath = os.path.join(path, export.MANIFEST)
  with open(mpath) as f:
    text = f.read()
  doc = json.loads(text)
  doc["arrays"] = {}  # would switch off every payload checksum
  with open(mpath, "w") as f:
    json.dump(doc, f)
  with pytest.raises(export.BundleError, match="manifest.json was modified after export"):
    export.load_bundle(path)
  with open(mpath, "w") as f:  # re-indented but unchanged: still accepted
    json.dump(json.loads(text), f, indent=4)
  export.load_bundle(path)


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory):
  x = jax.random.uniform(jax.random.PRNGKey(3), (2, 12, 12, 2))
  model = FlatNet()
  fv = _random_vars(model, x)
  fv["precision"] = jax.tree_util.tree_map(lambda v: v + 8, fv["precision"])
  path = str(tmp_path_factory.mktemp("bundle") / "b")
  export.export_model(model, fv, None, x).save(path)
  return path, np.asarray(x)


def _copy(src, dst):
  os.makedirs(dst)
  for f in os.listdir(src):
    with open(os.path.join(src, f), "rb") as a, open(os.path.join(dst, f), "wb") as b:
      b.write(a.read())
  return dst


def test_bad_bundles(small_bundle, tmp_path):
  path, x = small_bundle
  export.run_bundle(export.load_bundle(path), x)
  # Wrong format version.
  p = _copy(path, str(tmp_path / "v"))
  with open(os.path.join(p, "manifest.json")) as f:
    m = json.load(f)
  m["format_version"] = 99
  with open(os.path.join(p, "manifest.json"), "w") as f:
    json.dump(m, f)
  with pytest.raises(export.BundleError, match="format_version 99"):
    export.load_bundle(p)
  # A modified weight byte: the array's checksum no longer matches.
  p = _copy(path, str(tmp_path / "c"))
  b = export.load_bundle(p)
  arrays = dict(b.arrays)
  arrays["c2.w_packed"] = arrays["c2.w_packed"].copy()
  arrays["c2.w_packed"][0] ^= 0x5A
  np.savez(os.path.join(p, "weights.npz"), **arrays)
  with pytest.raises(export.BundleError, match="'c2.w_packed'.*checksum"):
    export.load_bundle(p)
  # A truncated payload file.
  p = _copy(path, str(tmp_path / "t"))
  w = os.path.join(p, "weights.npz")
  with open(w, "rb") as f:
    data = f.read()
  with open(w, "wb") as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(export.BundleError, match="corrupt"):
    export.load_bundle(p)
  # Missing files, wrong input shape.
  with pytest.raises(export.BundleError, match="not a jpq_jax bundle"):
    export.load_bundle(str(tmp_path))
  with pytest.raises(export.BundleError, match="input shape"):
    export.run_bundle(export.load_bundle(path), x[:, :8])


# ------------------------------------------------------------------------------------------------
def test_cli_export_of_a_sweep_member(tmp_path, capsys):
  wd, _ = H.shared_run("warm")
  out = str(tmp_path / "member0")
  assert cli.main(["export", wd, "--member", "0", "--out", out]) == 0
  printed = capsys.readouterr().out
  assert "weight payload" in printed and out in printed
  model, fv, table = jpq.restore_member(wd, 0)
  # The whole test set (359): "at most 1% flips" needs more than 64 examples to allow one.
  x = load("demo").test.x
  ref = np.asarray(_apply_fixed(model)(fv, x))
  got = export.run_bundle(export.load_bundle(out), x)
  _assert_reproduces(got, ref)
  assert cli.main(["export", wd, "--member", "7", "--out", str(tmp_path / "x")]) == 2
