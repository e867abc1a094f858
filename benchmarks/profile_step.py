"""Where a search step's time goes: XLA operations grouped by kind, from a JAX profiler trace.

Builds the same ResNet-8 search step as ``benchmarks/sweep.py`` (``loop`` or ``vmap`` over N
members, batch 32, size cost, jpq's XLA options), runs it under ``jax.profiler.trace`` and sums the
durations of the compiled program's operations per group:

* ``convolution`` (forward and both gradients), ``dot``;
* ``layout`` (transposes and copies: the activations' transposed copies for the weight gradients;
  in the vmapped step, the member axis moved between the convolutions' and the other ops' layouts);
* ``reduction`` (fusions ending in a reduction: batch-norm statistics, the mixture's gradients);
* ``elementwise`` (the other fusions: quantizers, optimizer, masks);

and per operation name (numbers stripped). On XLA:CPU the operations are the thunks of the
compiled program (each may use every core); on a GPU, its kernels. ``busy ms`` is their summed
recorded time per step, ``wall ms`` the step time while profiled (the profiler adds overhead). On
XLA:CPU a thunk that hands its work to the thread pool asynchronously records less than that work,
so read the groups' shares rather than their sum against the wall time.

Usage::

  python benchmarks/profile_step.py                          # one member, loop
  python benchmarks/profile_step.py --members 4 --strategy vmap
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sweep as sweep_bench  # pylint: disable=wrong-import-position

GROUPS = ("convolution", "dot", "layout", "reduction", "elementwise")


def group_of(name: str) -> str:
  """The group of an operation's name (:data:`GROUPS`)."""
  n = name.lower()
  if "conv" in n:
    return "convolution"
  if "dot" in n or "gemm" in n or "matmul" in n:
    return "dot"
  if "transpose" in n or n.startswith("copy"):
    return "layout"
  if "reduce" in n or "reduction" in n:
    return "reduction"
  return "elementwise"


def _op_events(trace: dict) -> list:
  """The compiled program's operation events of a Chrome trace (device kernels when there are)."""
  procs = {e["pid"]: e["args"].get("name", "") for e in trace["traceEvents"]
           if e.get("ph") == "M" and e.get("name") == "process_name"}
  device = {pid for pid, name in procs.items() if "/device:" in name and "CPU" not in name}
  out = []
  for e in trace["traceEvents"]:
    if e.get("ph") != "X":
      continue
    if device:
      if e["pid"] in device:
        out.append(e)
      continue
    name = e["name"]
    # Host-side: XLA:CPU thunks are named after their HLO instructions; the runtime's own events
    # (C++ scopes, Python frames, executable launches) are not operations.
    if (name.startswith("$") or "::" in name
        or name.startswith(("Pjit", "ParseArguments", "H2D", "DevicePut"))):
      continue
    out.append(e)
  return out


def profile(model: str, members: int, strategy: str, batch: int, steps: int, xla: str) -> dict:
  """Profile ``steps`` steps (after two warm-up steps) and group their operations.

  Returns:
    A dict with ``wall_ms`` and ``busy_ms`` per step, ``groups`` ({group: ms per step}) and
    ``ops`` (the 25 costliest operation names: ms per step and count per step).
  """
  import jax  # pylint: disable=import-outside-toplevel

  ex, args, _ = sweep_bench.build(model, members, strategy, batch, xla)
  for _ in range(2):
    jax.block_until_ready(ex.train_step(*args))
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d):
      t0 = time.perf_counter()
      for _ in range(steps):
        out = ex.train_step(*args)
      jax.block_until_ready(out)
      wall = (time.perf_counter() - t0) / steps
    files = glob.glob(os.path.join(d, "**", "*.trace.json.gz"), recursive=True)
    if not files:
      raise RuntimeError(f"the profiler wrote no trace.json.gz under {d}")
    with gzip.open(files[0]) as f:
      trace = json.load(f)
  groups = collections.Counter()
  ops = collections.Counter()
  counts = collections.Counter()
  for e in _op_events(trace):
    name = re.sub(r"(\.\d+)+$", "", e["name"])
    groups[group_of(name)] += e["dur"] / 1e3 / steps
    ops[name] += e["dur"] / 1e3 / steps
    counts[name] += 1 / steps
  return {"model": model, "members": members, "strategy": strategy, "batch": batch, "xla": xla,
          "backend": jax.default_backend(), "steps": steps, "wall_ms": 1e3 * wall,
          "busy_ms": sum(groups.values()), "groups": {g: groups.get(g, 0.0) for g in GROUPS},
          "ops": [{"name": n, "ms": v, "count": counts[n]} for n, v in ops.most_common(25)]}


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--model", default="resnet8", choices=sorted(sweep_bench.SHAPES))
  ap.add_argument("--members", type=int, default=1)
  ap.add_argument("--strategy", default="loop", choices=["loop", "vmap"])
  ap.add_argument("--batch", type=int, default=32)
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--xla", default="auto", choices=["auto", "default"])
  ap.add_argument("--out", default="", help="JSON path (default benchmarks/results/"
                  "profile-<model>-<strategy>-<N>.json)")
  args = ap.parse_args()
  r = profile(args.model, args.members, args.strategy, args.batch, args.steps, args.xla)
  r["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
  print(f"{args.model}, {args.members} member(s), {args.strategy}, batch {args.batch}, backend "
        f"{r['backend']}: wall {r['wall_ms']:.1f} ms/step (profiled), operations {r['busy_ms']:.1f} ms/step")
  print(f"{'group':<12} {'ms/step':>8} {'share':>6}")
  for g in GROUPS:
    print(f"{g:<12} {r['groups'][g]:>8.2f} {r['groups'][g] / max(r['busy_ms'], 1e-9):>6.1%}")
  print(f"\n{'operation':<40} {'ms/step':>8} {'per step':>8}")
  for o in r["ops"][:15]:
    print(f"{o['name'][:40]:<40} {o['ms']:>8.2f} {o['count']:>8.0f}")
  out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                 f"profile-{args.model}-{args.strategy}-{args.members}.json")
  os.makedirs(os.path.dirname(out), exist_ok=True)
  with open(out, "w") as f:
    json.dump(r, f, indent=2)
  print(f"written {out}")


if __name__ == "__main__":
  main()
