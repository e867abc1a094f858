"""TensorBoard summaries of a sweep: one run per member, the metrics of metrics.jsonl as scalars."""

import glob
import json
import os
import struct

import numpy as np
import pytest

import test_sweep_helpers as H

event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")


def read_scalars(run_dir):
  """``{tag: [(step, value), ...]}`` of every event file of a TensorBoard run directory.

  Reads the TFRecord framing directly (length, CRC, payload, CRC) into tensorboardX's ``Event``
  proto, so the test needs neither TensorFlow nor tensorboard.
  """
  out = {}
  for path in sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))):
    with open(path, "rb") as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      (n,) = struct.unpack("<Q", data[pos:pos + 8])
      ev = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
      pos += 12 + n + 4
      for v in ev.summary.value:
        out.setdefault(v.tag, []).append((ev.step, v.simple_value))
  return out


def _records(wd):
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    return [json.loads(l) for l in f]


def test_member_runs_and_tags():
  wd, res = H.shared_run("loop3")
  tb = os.path.join(wd, "tensorboard")
  runs = sorted(os.listdir(tb))
  assert runs == ["m00_lam1e-05_seed14", "m01_lam0.0002_seed14", "m02_lam0.001_seed14"], runs
  recs = _records(wd)
  for k, run in enumerate(runs):
    sc = read_scalars(os.path.join(tb, run))
    expected = {f"{ph}/{m}" for ph in ("search", "finetune")
                for m in ("train_loss", "train_acc", "val_acc", "val_loss", "temperature",
                          "lr_factor", "best_epoch")}
    expected |= {"search/cost_soft_size", "search/cost_argmax_size", "search/lambda",
                 "final/val_acc", "final/test_acc", "final/cost_size", "final/cost_bitops"}
    assert expected <= set(sc), expected - set(sc)
    # Every epoch of every phase, at the checkpoint step of metrics.jsonl, with its value.
    for key, tag in (("train_loss", "train_loss"), ("val_acc", "val_acc"),
                     ("temperature", "temperature"), ("cost_argmax", "cost_argmax_size")):
      for phase in ("search", "finetune"):
        want = [(r["ckpt"], r[key][k]) for r in recs if r["phase"] == phase and key in r]
        got = sc.get(f"{phase}/{tag}", [])
        assert [s for s, _ in got] == [s for s, _ in want], (phase, tag)
        np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=1e-6)
    np.testing.assert_allclose(sc["final/test_acc"][0][1], res["members"][k]["test_acc"],
                               rtol=1e-6)


def test_warmup_run():
  wd, _ = H.shared_run("warm")
  sc = read_scalars(os.path.join(wd, "tensorboard", "warmup"))
  warm = [r for r in _records(wd) if r["phase"] == "warmup"]
  assert [s for s, _ in sc["warmup/train_loss"]] == [r["ckpt"] for r in warm]
  assert {"warmup/val_acc", "warmup/train_acc", "warmup/lr_factor"} <= set(sc)
  assert not any(t.startswith("warmup/") for t in
                 read_scalars(os.path.join(wd, "tensorboard", "m00_lam1e-05_seed14")))
