"""`jpq inspect --model NAME` prints a built-in model's static layer table."""

import pytest

from jpq_jax import cli


def test_inspect_model_table(capsys):
  assert cli.main(["inspect", "--model", "dscnn"]) == 0
  out = capsys.readouterr().out
  assert "depthwise1" in out and "g_inputlayer" in out and "(signed)" in out
  assert "2,656,768" in out  # total MACs of DS-CNN


def test_inspect_needs_a_target(capsys):
  assert cli.main(["inspect", "--model", "vgg"]) != 0
  assert "unknown model" in capsys.readouterr().err
