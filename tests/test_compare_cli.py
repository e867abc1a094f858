"""``jpq compare``: the comparison report of several methods' sweeps."""

import json
import os

import test_baselines as B
from jpq_jax import cli


def test_compare_cli(tmp_path, capsys):
  dirs = [B.method_run(m)[0] for m in ("joint", "fixed", "pit_mixprec", "pit")]
  out = tmp_path / "cmp"
  assert cli.main(["compare", *dirs, "--out", str(out), "--cost", "size"]) == 0
  for f in ("compare.md", "compare.json", "compare.png"):
    assert (out / f).stat().st_size > 0
  comp = json.loads((out / "compare.json").read_text())
  assert [r["name"] for r in comp["runs"]] == ["joint", "w4a6", "pit_mixprec", "pit"]
  assert comp["reference"] == "joint" and len(comp["comparisons"]) == 3
  times = {r["name"]: r["train_time_s"] for r in comp["runs"]}
  res = json.loads(open(os.path.join(dirs[2], "results.json")).read())
  assert times["pit_mixprec"] == res["train_time_s"]
  assert "iso-accuracy" in capsys.readouterr().out
  # Hardware x axis: the float PIT networks have no NE16 latency and are left out, not failed.
  out2 = tmp_path / "ne16"
  assert cli.main(["compare", *dirs, "--out", str(out2), "--cost", "ne16",
                   "--reference", "pit_mixprec"]) == 0
  comp = json.loads((out2 / "compare.json").read_text())
  pit_run = next(r for r in comp["runs"] if r["name"] == "pit")
  assert pit_run["front"] == [] and pit_run["failed"] == 0 and pit_run["not_applicable"] == 2
  assert comp["reference"] == "pit_mixprec" and comp["unit"] == "cycles"


def test_compare_cli_errors(tmp_path, capsys):
  assert cli.main(["compare", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "o")]) == 2
  assert "no finished sweep" in capsys.readouterr().err
