"""Shared test fixtures: golden vectors from the reference implementation, shared compiles."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
GOLDEN = SHARED / "golden"


def _load_golden(name):
  path = GOLDEN / name
  if not path.exists():
    pytest.skip(f"golden vectors {path} not available")
  with open(path) as f:
    return json.load(f)


@pytest.fixture(scope="session", autouse=True)
def _no_scratch_left():
  """The sweeps shared across test modules live in temporary directories: removed at the end."""
  yield
  import test_sweep_helpers  # pylint: disable=import-outside-toplevel
  test_sweep_helpers.cleanup()


@pytest.fixture(scope="session")
def golden_quantizers():
  return _load_golden("quantizers.json")


@pytest.fixture(scope="session")
def golden_conv():
  return _load_golden("mixprec_conv_layer.json")
