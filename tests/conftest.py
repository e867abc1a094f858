"""Shared test fixtures: golden vectors from the reference implementation, shared compiles."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
GOLDEN = SHARED / "golden"

# Every temporary file of the session (the libraries' too: TFDS leaves empty tmp*tfds folders,
# subprocesses inherit TMPDIR) goes to one folder that the process that made it removes at the
# end (pytest_unconfigure). pytest's own tmp_path folders stay under the system's temp root
# (PYTEST_DEBUG_TEMPROOT), where its retention policy keeps those of failing tests.
if "JPQ_TEST_TMPDIR" not in os.environ:  # the first pytest process; xdist workers inherit it
  os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", tempfile.gettempdir())
  os.environ["JPQ_TEST_TMPDIR"] = tempfile.mkdtemp(prefix="jpq_tests_")
  os.environ["JPQ_TEST_TMPDIR_OWNER"] = str(os.getpid())
  os.environ["TMPDIR"] = os.environ["JPQ_TEST_TMPDIR"]
  tempfile.tempdir = None  # gettempdir() reads TMPDIR again


def pytest_unconfigure(config):  # pylint: disable=unused-argument
  if os.environ.get("JPQ_TEST_TMPDIR_OWNER") == str(os.getpid()):
    shutil.rmtree(os.environ["JPQ_TEST_TMPDIR"], ignore_errors=True)


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
