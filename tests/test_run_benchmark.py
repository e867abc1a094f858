"""experiments/run_benchmark.py: the configs of every run of a protocol (no training here)."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def rb():
  spec = importlib.util.spec_from_file_location(
      "run_benchmark", os.path.join(ROOT, "experiments", "run_benchmark.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_cpu_protocol_runs_and_settings(rb):
  cfgs = rb.run_configs("cifar10_resnet8", "cpu", "/data/c10.zip")
  assert list(cfgs) == list(rb.CPU_PROTOCOL["runs"])
  j = cfgs["joint"]
  assert j.method == "joint" and tuple(j.sweep.lambdas) == rb.CPU_PROTOCOL["lambdas"]
  assert j.data.data_dir == "/data/c10.zip"
  assert j.data.options.train_size == rb.CPU_PROTOCOL["data"]["train_size"]
  assert j.search.epochs == rb.CPU_PROTOCOL["epochs"]["search"]
  # Runs with a search phase get the longer PIT search, fixed runs keep the protocol's epochs.
  assert j.pit.search.epochs == rb.CPU_PROTOCOL["search_runs_epochs"]["pit.search"]
  assert cfgs["w8a8"].pit.search.epochs == rb.CPU_PROTOCOL["epochs"]["pit.search"]
  for r, bits in (("w8a8", (8, 8)), ("w4a8", (4, 8)), ("w2a8", (2, 8))):
    assert cfgs[r].method == "fixed" and tuple(cfgs[r].fixed_bits) == bits
    assert cfgs[r].search.epochs == rb.CPU_PROTOCOL["fixed_search_epochs"]
  assert cfgs["pit_mixprec"].pit.strength == rb.CPU_PROTOCOL["pit_strength"]
  # Search phases select their last epoch, fine-tuning keeps best-validation selection, fixed
  # runs keep the reference rule.
  from jpq_jax import train as T  # pylint: disable=import-outside-toplevel
  for r in ("joint", "pit_mixprec"):
    c = cfgs[r]
    assert T.earlystop_start(c.search.epochs, c.train.earlystop_start) == c.search.epochs - 2
    assert T.earlystop_start(c.pit.search.epochs, c.train.earlystop_start) == c.pit.search.epochs - 2
    assert T.earlystop_start(c.finetune.epochs, c.train.earlystop_start) == -1
  assert cfgs["w8a8"].train.earlystop_start == 20
  assert len({c.name for c in cfgs.values()}) == len(cfgs)
  assert {c.sweep.xla_options for c in cfgs.values()} == {"auto"}


def test_code_path_options_reach_every_run(rb):
  cfgs = rb.run_configs("cifar10_resnet8", "cpu", "", extra_runs=("joint_mpic",),
                        xla_options="default", activation_mixture="copies")
  assert {c.sweep.xla_options for c in cfgs.values()} == {"default"}
  assert {c.model.activation_mixture for c in cfgs.values()} == {"copies"}


def test_hardware_runs_rescale_lambdas(rb):
  cfgs = rb.run_configs("cifar10_resnet8", "cpu", "", extra_runs=("joint_mpic", "joint_ne16"))
  scale = rb.all8_costs(cfgs["joint"])
  # The published all-8-bit ResNet-8 figures (METHOD.md; tests/test_costs.py).
  assert scale["size"] == pytest.approx(618880)
  assert scale["ne16"] == pytest.approx(155241)
  for cost in ("mpic", "ne16"):
    c = cfgs[f"joint_{cost}"]
    assert c.search.cost == cost and c.sweep.pareto_cost == cost
    want = [l * scale["size"] / scale[cost] for l in rb.CPU_PROTOCOL["hw_lambdas"][cost]]
    assert list(c.sweep.lambdas) == pytest.approx(want)
    # lambda * cost of the all-8-bit net is the same as with the size cost
    assert c.sweep.lambdas[0] * scale[cost] == pytest.approx(
        rb.CPU_PROTOCOL["hw_lambdas"][cost][0] * scale["size"])


def test_unknown_run(rb):
  with pytest.raises(ValueError, match="unknown run"):
    rb.run_configs("cifar10_resnet8", "cpu", "", extra_runs=("jiont",))


def test_keepalive_run_is_joint_with_one_kept_channel(rb):
  """The named improvement's run differs from ``joint`` only by ``model.keep_alive``."""
  for protocol in ("cpu", "full"):
    assert "joint_keepalive" not in rb.run_configs("cifar10_resnet8", protocol, "")
    cfgs = rb.run_configs("cifar10_resnet8", protocol, "", extra_runs=("joint_keepalive",))
    j, k = cfgs["joint"].to_dict(), cfgs["joint_keepalive"].to_dict()
    assert k["model"].pop("keep_alive") == 1 and j["model"].pop("keep_alive") == 0
    assert k.pop("name").endswith("joint_keepalive") and j.pop("name").endswith("_joint")
    assert k == j
