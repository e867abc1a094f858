"""What a user reads while a sweep trains: the header, "compiling...", one line per epoch in logs."""

import os

import test_sweep_helpers as H  # sets up the persistent compile cache first
from jpq_jax import sweep


def test_log_output_header_compiling_and_one_line_per_epoch(tmp_path, capsys):
  """stderr is not a terminal here (as in a batch job's log): no carriage-return bars, a header
  before anything compiles, a compile notice per phase, and one line per epoch with units."""
  c = H.tiny_config(lambdas=H.LAMBDAS[:2])
  c.warmup.checkpoint = os.path.join(H.shared_run("warm")[0], "warmup")
  wd = str(tmp_path / "run")
  sweep.run_sweep(c, wd, progress=True)
  err = capsys.readouterr().err
  assert "\r" not in err
  lines = err.splitlines()
  head = lines.index(next(l for l in lines if l.startswith("jpq sweep: tiny: method joint")))
  assert "model demo, dataset demo (1258/180/359 train/val/test examples, 8x8x1, 10 classes)" \
      in lines[head]
  assert lines[head + 1].strip() == "2 members: lambda 1e-05, 0.0002 (seed 14), cost size"
  assert lines[head + 2].strip().startswith("strategy loop on 1 cpu device(s)")
  assert "search 3, fine-tune 2; 4 steps of batch 16 per epoch" in lines[head + 3]
  assert lines[head + 4].strip() == f"work directory: {os.path.abspath(wd)}"
  # The header comes before the first compile.
  first_compile = lines.index("search: compiling the training step...")
  assert first_compile > head + 4
  assert "finetune: compiling the training step..." in lines
  search = [l for l in lines if l.startswith("search epoch ")]
  finetune = [l for l in lines if l.startswith("finetune epoch ")]
  assert [l.split(" (")[0] for l in search] == [f"search epoch {e}/3" for e in (1, 2, 3)]
  assert [l.split(" (")[0] for l in finetune] == [f"finetune epoch {e}/2" for e in (1, 2)]
  for l in search:
    assert "val_acc " in l and "%" in l and " kB" in l and ", T " in l and "0/2 failed" in l, l
  for l in finetune:
    assert "val_acc " in l and " kB" not in l, l
