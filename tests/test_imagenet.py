"""ImageNet / ResNet-50 (the paper's fourth experiment): the model's counts and sharing groups, the
image-folder dataset and its augmentation, the config, the benchmark's hardware-cost runs, and
(slow) a whole sweep on a tiny ImageNet-shaped folder."""

import functools
import importlib.util
import io
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import jpq_jax as jpq
from jpq_jax import costs, data
from jpq_jax.data import augment, imagenet
from jpq_jax.models import ResNet50, get_model
from jpq_jax.models import resnet50 as resnet50_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "experiments", "configs", "imagenet_resnet50.py")
WNIDS = ["n01440764", "n01443537", "n01484850"]


def _count(tree):
  return int(sum(np.prod(a.shape) for a in jax.tree_util.tree_leaves(tree)))


@pytest.fixture(scope="module")
def table224():
  return jpq.trace_table(ResNet50(), jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))


def test_resnet50_counts_are_torchvisions(table224):
  """25,557,032 parameters (torchvision's figure: conv/fc weights + BN scales/offsets + fc bias,
  no running statistics) and 4,089,184,256 MACs at 224 px (its "4.09 GFLOPS"); a stride on the
  first 1x1 conv of a block (v1) would give fewer MACs."""
  x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  m = ResNet50()
  v = jax.eval_shape(lambda x: m.init(jax.random.PRNGKey(0), x, jpq.Ctx.float()), x)
  assert _count(v["params"]) == 25_557_032
  bn = [a for p, a in jax.tree_util.tree_leaves_with_path(v["params"])
        if "BatchNorm_0" in jax.tree_util.keystr(p)]
  assert _count(bn) == 53_120
  assert _count(v["batch_stats"]) == 53_120
  t = table224
  assert t.n_weights == 25_502_912 and t.n_weights + 53_120 + 1000 == 25_557_032
  assert t.macs == 4_089_184_256
  assert len(t.layers) == 54  # 1 stem + 16 x 3 + 4 projections + fc
  assert t.layer("conv1").out_hw == (112, 112) and t.layer("conv1").stride == (2, 2)
  assert t.layer("layer1_0_conv1").out_hw == (56, 56)  # after the 3x3/2 max-pool
  assert t.layer("layer2_0_conv1").stride == (1, 1) and t.layer("layer2_0_conv2").stride == (2, 2)
  assert t.layer("layer4_2_conv3").out_hw == (7, 7)
  fc = t.layer("fc")
  assert (fc.cin, fc.cout, fc.in_group) == (2048, 1000, "g_layer4")


def test_resnet50_all8_costs(table224):
  """The all-8-bit network's costs: size = 8 bits x every conv/fc weight; MPIC and NE16 pinned (the
  README's ImageNet fronts lie below them: MPIC ~1.1-1.9e9 cycles)."""
  ref = costs.reference_costs(table224, ("size", "params", "macs", "mpic", "ne16"))
  assert ref["size"] == 8 * 25_502_912 == 204_023_296
  assert ref["params"] == 25_502_912 and ref["macs"] == 4_089_184_256
  assert ref["mpic"] == pytest.approx(1_947_230_976, rel=1e-6)
  assert ref["ne16"] == pytest.approx(63_615_984, rel=1e-6)


def test_inspect_model_resnet50(capsys):
  from jpq_jax import cli  # pylint: disable=import-outside-toplevel
  assert cli.main(["inspect", "--model", "resnet50"]) == 0
  out = capsys.readouterr().out
  assert "layer4_0_downsample" in out and "g_layer4" in out
  assert "204,023,296" in out  # size of the all-8-bit network, bits


def test_resnet50_sharing_groups(table224):
  t = table224
  groups = {g.name: sorted(l.name for l in t.layers_of(g.name)) for g in t.groups
            if g.kind != "input"}
  assert len(groups) == 38
  blocks = dict(enumerate((3, 4, 6, 3), start=1))
  for s, n in blocks.items():
    # Every residual add ties its operands: the stage's stream is one group.
    assert groups[f"g_layer{s}"] == sorted([f"layer{s}_0_downsample"] +
                                           [f"layer{s}_{b}_conv3" for b in range(n)])
    assert t.group(f"g_layer{s}").channels == 4 * (64 << (s - 1))
    for b in range(n):
      assert groups[f"g_layer{s}_{b}_conv1"] == [f"layer{s}_{b}_conv1"]
      assert groups[f"g_layer{s}_{b}_conv2"] == [f"layer{s}_{b}_conv2"]
      # A block's input is the previous stream (the stem for layer1_0, through the max-pool).
      prev = "g_conv1" if (s, b) == (1, 0) else f"g_layer{s - 1 if b == 0 else s}"
      assert t.layer(f"layer{s}_{b}_conv1").in_group == prev
  assert groups["g_conv1"] == ["conv1"] and groups["g_out"] == ["fc"]
  inp = t.group("input_q")
  assert inp.signed and inp.a_precisions == (8,) and inp.channels == 3


def test_resnet50_modes_and_input_normalisation():
  m = ResNet50(num_classes=10)
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  # Float mode is traced by the table tests; fixed mode (3x slower to trace) runs in the slow sweep.
  out, v = jax.eval_shape(lambda x: _apply_fresh(m, x, jpq.Ctx.search()), x)
  assert out.shape == (2, 10) and v["params"]["fc"]["kernel"].shape == (2048, 10)
  assert v["arch"]["g_layer3"]["alpha_w"].shape == (4, 1024)
  # The input quantizer sees (x - mean) / std: a [0, 1] image becomes ImageNet-normalised. The
  # interceptor stops the (eager, slow) network right there.
  class Seen(Exception):
    pass

  def grab(next_fun, args, kwargs, context):
    if type(context.module).__name__ == "InputQuantizer":
      raise Seen(np.asarray(args[0]))
    return next_fun(*args, **kwargs)

  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  img = jnp.full((1, 4, 4, 3), 0.5)
  with nn.intercept_methods(grab), pytest.raises(Seen) as seen:
    m.init(jax.random.PRNGKey(0), img, jpq.Ctx.float())
  want = (0.5 - np.asarray(resnet50_lib.IMAGENET_MEAN)) / np.asarray(resnet50_lib.IMAGENET_STD)
  np.testing.assert_allclose(seen.value.args[0][0, 0, 0], want, rtol=1e-6)
  # An unsigned input quantizer would clip the normalised input's negative half: a warning.
  with nn.intercept_methods(grab), pytest.raises(Seen), pytest.warns(UserWarning, match="signed"):
    ResNet50(space=jpq.SearchSpace()).init(jax.random.PRNGKey(0), img, jpq.Ctx.search())
  with pytest.raises(ValueError, match="input_mean and input_std"):
    ResNet50(input_std=None).init(jax.random.PRNGKey(0), img, jpq.Ctx.float())
  assert isinstance(get_model("resnet50", num_classes=5), ResNet50)


def _torchvision_state_dict(num_classes, seed=0):
  """Random weights under torchvision resnet50's names and PyTorch layouts (written out here, not
  derived from jpq's model)."""
  rng = np.random.default_rng(seed)
  sd = {}

  def conv(name, o, i, k):
    sd[f"{name}.weight"] = rng.standard_normal((o, i, k, k), np.float32)

  def bn(name, c):
    sd[f"{name}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    sd[f"{name}.bias"] = rng.standard_normal(c, np.float32)
    sd[f"{name}.running_mean"] = rng.standard_normal(c, np.float32)
    sd[f"{name}.running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
    sd[f"{name}.num_batches_tracked"] = np.asarray(7)

  conv("conv1", 64, 3, 7)
  bn("bn1", 64)
  cin = 64
  for s, (n, w) in enumerate(((3, 64), (4, 128), (6, 256), (3, 512)), start=1):
    for b in range(n):
      p = f"layer{s}.{b}"
      conv(f"{p}.conv1", w, cin, 1), bn(f"{p}.bn1", w)
      conv(f"{p}.conv2", w, w, 3), bn(f"{p}.bn2", w)
      conv(f"{p}.conv3", 4 * w, w, 1), bn(f"{p}.bn3", 4 * w)
      if b == 0:
        conv(f"{p}.downsample.0", 4 * w, cin, 1), bn(f"{p}.downsample.1", 4 * w)
      cin = 4 * w
  sd["fc.weight"] = rng.standard_normal((num_classes, 2048), np.float32)
  sd["fc.bias"] = rng.standard_normal(num_classes, np.float32)
  return sd


def test_torchvision_weights_import(tmp_path):
  from jpq_jax import checkpoint  # pylint: disable=import-outside-toplevel
  sd = _torchvision_state_dict(10)
  v = resnet50_lib.torchvision_variables(sd, num_classes=10)
  p, st = v["params"], v["batch_stats"]
  # The stem conv computes what PyTorch's conv2d (cross-correlation, NCHW/OIHW) computes.
  x = np.random.default_rng(1).standard_normal((1, 3, 9, 9)).astype(np.float32)
  w = sd["conv1.weight"]
  xp = np.pad(x, ((0, 0), (0, 0), (3, 3), (3, 3)))
  ref = np.stack([np.stack([np.einsum("ihw,oihw->o", xp[0, :, 2 * r:2 * r + 7, 2 * c:2 * c + 7], w)
                            for c in range(5)], -1) for r in range(5)], -2)  # (o, 5, 5)
  got = jax.lax.conv_general_dilated(jnp.asarray(x.transpose(0, 2, 3, 1)), p["conv1"]["kernel"],
                                     (2, 2), ((3, 3), (3, 3)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(np.asarray(got)[0].transpose(2, 0, 1), ref, rtol=1e-4, atol=1e-4)
  f = np.random.default_rng(2).standard_normal((2, 2048)).astype(np.float32)
  np.testing.assert_allclose(f @ p["fc"]["kernel"] + p["fc"]["bias"],
                             f @ sd["fc.weight"].T + sd["fc.bias"], rtol=1e-5)
  ds = p["layer2_0_downsample"]
  np.testing.assert_array_equal(ds["BatchNorm_0"]["scale"], sd["layer2.0.downsample.1.weight"])
  np.testing.assert_array_equal(st["layer3_5_conv2"]["BatchNorm_0"]["var"],
                                sd["layer3.5.bn2.running_var"])
  # Saved, they restore into the float model's template: the sweep's warmup.checkpoint, or, saved
  # as <dir>/warmup, every benchmark run's with --warmup-from (none then trains a warm-up).
  warm = tmp_path / "resnet50_v2" / "warmup"
  checkpoint.save_tree(str(warm), v)
  assert _run_benchmark().find_warmup(str(warm)) == str(warm)
  m = ResNet50(num_classes=10)
  tmpl = jax.eval_shape(lambda x: m.init(jax.random.PRNGKey(0), x, jpq.Ctx.float()),
                        jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
  back = checkpoint.load_tree(str(warm),
                              {"params": tmpl["params"], "batch_stats": tmpl["batch_stats"]})
  np.testing.assert_array_equal(np.asarray(back["params"]["layer4_2_conv3"]["kernel"]),
                                sd["layer4.2.conv3.weight"].transpose(2, 3, 1, 0))
  with pytest.raises(ValueError, match="needs"):
    resnet50_lib.torchvision_variables(sd, num_classes=1000)
  with pytest.raises(ValueError, match="no 'layer1.0.bn3.weight'"):
    resnet50_lib.torchvision_variables({k: a for k, a in sd.items() if k != "layer1.0.bn3.weight"},
                                       num_classes=10)
  with pytest.raises(ValueError, match="unexpected entries.*layer4.3"):
    resnet50_lib.torchvision_variables(dict(sd, **{"layer4.3.conv1.weight": w}), num_classes=10)


def _apply_fresh(m, x, ctx):
  v = m.init(jax.random.PRNGKey(0), x, ctx)
  return m.apply(v, x, ctx).value, v


# ---- data -----------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
  monkeypatch.setenv("JPQ_JAX_CACHE", str(tmp_path / "cache"))


def _image(rng, hw, mode="RGB", fmt="JPEG"):
  shape = hw + ((3,) if mode == "RGB" else ())
  buf = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(buf, format=fmt)
  return buf.getvalue()


def make_folder(root, train_per_class=5, val_per_class=2, seed=0):
  """A tiny ImageNet-shaped folder: wnid class folders, JPEGs of mixed sizes and orientations, one
  grayscale JPEG and one PNG (both exist in ILSVRC 2012)."""
  rng = np.random.default_rng(seed)
  sizes = [(40, 30), (30, 44), (36, 36)]
  for split, n in (("train", train_per_class), ("val", val_per_class)):
    for ci, w in enumerate(WNIDS):
      os.makedirs(os.path.join(root, split, w), exist_ok=True)
      for k in range(n):
        gray = split == "train" and (ci, k) == (1, 0)
        png = split == "train" and (ci, k) == (2, 1)
        name = f"{w}_{k}.JPEG" if split == "train" else f"ILSVRC2012_val_{ci * n + k:08d}.JPEG"
        with open(os.path.join(root, split, w, name), "wb") as f:
          f.write(_image(rng, sizes[(ci + k) % 3], "L" if gray else "RGB",
                         "PNG" if png else "JPEG"))
  return str(root)


def test_decode_center_is_torchvisions_resize_then_center_crop():
  rng = np.random.default_rng(1)
  raw = _image(rng, (30, 45), fmt="PNG")  # lossless: the reference below sees the same pixels
  out = imagenet.decode_center(raw, 20, 16)
  # Resize(20): the shorter side (30 rows) -> 20, the longer 45 -> int(20 * 45 / 30) = 30;
  # CenterCrop(16): offsets round((20 - 16) / 2) = 2 and round((30 - 16) / 2) = 7.
  img = Image.open(io.BytesIO(raw)).convert("RGB").resize((30, 20), Image.BILINEAR)
  np.testing.assert_array_equal(out, np.asarray(img)[2:18, 7:23])
  assert imagenet.eval_size(224) == 256 and imagenet.eval_size(32) == 37


def test_imagenet_folder_protocol(tmp_path):
  root = make_folder(tmp_path / "imagenet")
  ds = data.load("imagenet", data_dir=root, seed=3, image_size=16, val_fraction=0.2, workers=2)
  assert ds.num_classes == 1000 and ds.class_names == WNIDS
  assert (len(ds.train), len(ds.val), len(ds.test)) == (12, 3, 6)
  assert ds.input_shape == (16, 16, 3) and ds.train.x.dtype == np.uint8
  assert ds.augment == "imagenet"
  np.testing.assert_array_equal(np.bincount(ds.test.y), [2, 2, 2])
  # Test images: the evaluation transform (shorter side 18, centre 16) of val/<wnid>/, in order.
  first = sorted(os.listdir(os.path.join(root, "val", WNIDS[0])))[0]
  with open(os.path.join(root, "val", WNIDS[0], first), "rb") as f:
    np.testing.assert_array_equal(ds.test.x[0], imagenet.decode_center(f.read(), 18, 16))
  # The validation images are held out of train/ (seeded) and get the evaluation transform too;
  # the training images keep the whole centred square for the random crops.
  names = [f"{w}/{n}" for w in WNIDS for n in sorted(os.listdir(os.path.join(root, "train", w)))]
  val_idx, train_idx = data.core.seeded_partition(15, [3], 3)
  for split, idx, resize in ((ds.val, val_idx, 18), (ds.train, train_idx, 16)):
    with open(os.path.join(root, "train", names[idx[0]]), "rb") as f:
      np.testing.assert_array_equal(split.x[0], imagenet.decode_center(f.read(), resize, 16))
    np.testing.assert_array_equal(split.y, idx // 5)
  # A second load reads the cache; a per-class subset is drawn before the split.
  again = data.load("imagenet", data_dir=root, seed=3, image_size=16, val_fraction=0.2)
  np.testing.assert_array_equal(again.train.x, ds.train.x)
  few = data.load("imagenet", data_dir=root, seed=3, image_size=16, val_fraction=0.2,
                  train_per_class=3)
  assert len(few.train) + len(few.val) == 9 and len(few.test) == 6
  # The same folder as a zip under one wrapping directory gives the same arrays.
  import shutil  # pylint: disable=import-outside-toplevel
  zipped = shutil.make_archive(str(tmp_path / "ilsvrc"), "zip", str(tmp_path), "imagenet")
  z = data.load("imagenet", data_dir=zipped, seed=3, image_size=16, val_fraction=0.2, workers=3)
  for a, b in ((z.train, ds.train), (z.val, ds.val), (z.test, ds.test)):
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)


def test_imagenet_folder_errors(tmp_path):
  with pytest.raises(data.DatasetNotFoundError, match="tfds:imagenet2012"):
    data.load("imagenet")
  root = make_folder(tmp_path / "a")
  with pytest.raises(data.DataError, match="image_size"):
    data.load("imagenet", data_dir=root, image_size=4)
  flat = tmp_path / "b"
  os.makedirs(flat / "train" / WNIDS[0])
  os.makedirs(flat / "train" / WNIDS[1])
  os.makedirs(flat / "val")
  rng = np.random.default_rng(0)
  for w in WNIDS[:2]:
    (flat / "train" / w / "x.JPEG").write_bytes(_image(rng, (20, 20)))
  (flat / "val" / "ILSVRC2012_val_00000001.JPEG").write_bytes(_image(rng, (20, 20)))
  with pytest.raises(data.DataError, match="val/<wnid>"):
    data.load("imagenet", data_dir=str(flat))
  (flat / "train" / WNIDS[0] / "bad.JPEG").write_bytes(b"not a jpeg")
  os.makedirs(flat / "val" / WNIDS[0])
  (flat / "val" / WNIDS[0] / "v.JPEG").write_bytes(_image(rng, (20, 20)))
  with pytest.raises(data.DataError, match="bad.JPEG.*not a readable image"):
    data.load("imagenet", data_dir=str(flat), image_size=8, val_fraction=0.3)


def test_random_resized_crop_augmentation():
  rng = augment.augment_rng(0, 0, 0)
  p = augment.sample_params("imagenet", 2000, (32, 48), rng)
  h, w = p["height"], p["width"]
  assert (p["top"] >= 0).all() and (p["left"] >= 0).all()
  assert (p["top"] + h <= 32).all() and (p["left"] + w <= 48).all()
  area = h * w / (32 * 48)
  assert area.min() >= 0.07 and area.max() <= 1.0 and 0.4 < p["flip"].mean() < 0.6
  ratio = w / h
  assert ratio.min() > 0.7 and ratio.max() < 1.45
  # Deterministic in (seed, epoch, batch).
  q = augment.sample_params("imagenet", 2000, (32, 48), augment.augment_rng(0, 0, 0))
  np.testing.assert_array_equal(q["top"], p["top"])
  x = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
  whole = dict(top=np.zeros(3, int), left=np.zeros(3, int), height=np.full(3, 16),
               width=np.full(3, 16), flip=np.array([False, True, False]))
  y = augment.apply(x, "imagenet", whole)
  np.testing.assert_array_equal(y[0], x[0])
  np.testing.assert_array_equal(y[1], x[1, :, ::-1])
  half = dict(whole, height=np.full(3, 8), width=np.full(3, 8), flip=np.zeros(3, bool))
  y = augment.apply(x, "imagenet", half)
  assert y.shape == x.shape and y.dtype == np.uint8
  # An 8x8 box scaled 2x: every output pixel comes from the top-left quarter.
  assert y[2].min() >= x[2, :8, :8].min() and y[2].max() <= x[2, :8, :8].max()
  yf = augment.apply(x.astype(np.float32), "imagenet", whole)
  np.testing.assert_array_equal(yf[1], x[1, :, ::-1].astype(np.float32))


# ---- config and benchmark ------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _run_benchmark():
  # One module for the whole file: its all-8-bit costs cache then traces ResNet-50 once.
  spec = importlib.util.spec_from_file_location(
      "run_benchmark", os.path.join(ROOT, "experiments", "run_benchmark.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_config_is_the_reference_imagenet_protocol():
  from jpq_jax import sweep  # pylint: disable=import-outside-toplevel
  from jpq_jax.cli import load_config  # pylint: disable=import-outside-toplevel
  c = load_config(CONFIG)
  assert (c.data.name, c.model.name) == ("imagenet", "resnet50")
  for ph in ("search", "finetune"):
    o = c[ph].optimizer
    assert (o.name, o.lr, o.momentum, o.nesterov, o.wd) == ("sgd", 1e-3, 0.9, True, 4e-5)
    assert dict(c[ph].schedule) == {"kind": "step", "step_size": 30, "gamma": 0.1}
  a = c.search.arch_optimizer
  assert (a.name, a.lr, a.momentum, a.nesterov, a.wd) == ("sgd", 1e-3, 0.9, True, 0.0)
  assert c.task.options.label_smoothing == 0.1 and c.train.batch_size == 128
  assert (c.train.patience, c.search.temperature_decay) == (20, 0.225)
  assert sweep._space(c) == resnet50_lib.reference_space()  # pylint: disable=protected-access
  sweep.validate_config(c)


def test_benchmark_has_the_hardware_cost_runs():
  rb = _run_benchmark()
  cfgs = rb.run_configs("imagenet_resnet50", "full", "/data/imagenet",
                        extra_runs=("joint_mpic", "joint_ne16"))
  assert {"joint", "joint_mpic", "joint_ne16", "w8a8", "pit_mixprec"} <= set(cfgs)
  scale = rb.all8_costs(cfgs["joint"])
  assert scale["size"] == 204_023_296
  for cost in ("mpic", "ne16"):
    c = cfgs[f"joint_{cost}"]
    assert (c.search.cost, c.sweep.pareto_cost, c.data.data_dir) == (cost, cost, "/data/imagenet")
    # lambda * cost of the all-8-bit network is the size run's lambda * size.
    np.testing.assert_allclose(np.asarray(c.sweep.lambdas) * scale[cost],
                               np.asarray(cfgs["joint"].sweep.lambdas) * scale["size"])


# ---- end to end (slow: ResNet-50 compiles for minutes on a 2-core CPU) ------------------------

@pytest.mark.slow
def test_imagenet_resnet50_sweep_smoke(tmp_path):
  """The config's whole pipeline (warm-up, search, fine-tune, results) on a tiny ImageNet-shaped
  folder: 32-px inputs through the same architecture, batch 2, one step per epoch."""
  from jpq_jax import sweep  # pylint: disable=import-outside-toplevel
  from jpq_jax.cli import load_config  # pylint: disable=import-outside-toplevel
  root = make_folder(tmp_path / "imagenet", train_per_class=4, val_per_class=2)
  c = load_config(CONFIG)
  c.data.data_dir = root
  c.data.options.image_size = 32
  c.data.options.val_fraction = 0.25
  c.train.batch_size = 2
  c.train.eval_batch_size = 3
  c.debug.max_steps_per_epoch = 1
  for ph in ("warmup", "search", "finetune"):
    c[ph].epochs = 1
  c.sweep.lambdas = (1e-8,)
  c.sweep.strategy = "loop"
  res = sweep.run_sweep(c, str(tmp_path / "run"), progress=False)
  assert res["num_classes"] == 1000 and tuple(res["input_shape"]) == (32, 32, 3)
  (m,) = res["members"]
  assert 0.0 <= m["test_acc"] <= 1.0
  # Costs of the argmax architecture are the 32-px network's, at most the all-8-bit size.
  assert 0 < m["costs_argmax"]["size"] <= 204_023_296
  assert set(m["costs_argmax"]) >= {"size", "mpic", "ne16"}

