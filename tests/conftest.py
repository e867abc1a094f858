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


@pytest.fixture(scope="session")
def golden_quantizers():
  return _load_golden("quantizers.json")


@pytest.fixture(scope="session")
def golden_conv():
  return _load_golden("mixprec_conv_layer.json")
