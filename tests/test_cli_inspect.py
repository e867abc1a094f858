"""`jpq inspect --model NAME` prints a built-in model's static layer table."""

import pytest

from jpq_jax import cli


def test_inspect_model_table(capsys):
  assert cli.main(["inspect", "--model", "dscnn"]) == 0
  out = capsys.readouterr().out
  assert "depthwise1" in out and "g_inputlayer" in out and "(signed)" in out
  assert "2,656,768" in out  # total MACs of DS-CNN
  # The scale of lambda per cost model: the all-top-precision cost and 1 / it.
  assert "lambda for 1.0" in out and "ln(12) = 2.48" in out
  size = next(l for l in out.splitlines() if l.startswith("size "))
  bits = float(size.split()[1].replace(",", ""))
  assert bits > 0 and f"{1 / bits:.3g}" in size


def test_inspect_needs_a_target(capsys):
  assert cli.main(["inspect", "--model", "vgg"]) != 0
  assert "unknown model" in capsys.readouterr().err
