"""Input-pipeline throughput and memory: today's numpy loader against the grain loader.

Two measurements, in one run:

* **throughput** (images/s) of one epoch of training batches (batch 128, shuffled, the ``'cifar'``
  augmentation: rotation, translation, flip) of an in-memory uint8 dataset at 32 px and at 64 px,
  for :class:`jpq_jax.data.Loader` (``old``: one background thread) and
  :class:`jpq_jax.data.GrainLoader` with 0, 1 and 2 worker threads and 2 worker processes. The
  loaders are run in turn, ``--repeats`` times, and the median is kept, so that a load that
  comes and goes on the machine hits them alike. Both loaders give the same batches (the tests
  check it bit for bit), so this compares only their speed.
* **resident memory** (RSS before the first batch and its peak sampled after every batch; the
  same for the process's own, anonymous, memory; the mapped files' pages at the end) of a fresh
  process that streams ``--rss-steps`` shuffled batches of 64 px images through
  the grain loader (2 threads) from a generated array_record file of about 0.5 GB and of about
  4 GB (under ``--tmp``, deleted afterwards): flat if nothing but the current batches is held in
  memory. The numpy loader would hold the whole split (0.5 GB, 4 GB) in RAM.

Prints a table and writes ``benchmarks/results/data.json`` (``ratio_grain_vs_old_32px``: the grain
loader with 2 worker threads over the old loader at 32 px; the load average of the machine before
and after, since these timings are only comparable on the same machine under the same load).

Usage::

  python benchmarks/data.py
  python benchmarks/data.py --repeats 5 --sizes-gb 0.5 4 --tmp /tmp
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

BATCH = 128
LOADERS = [("old", None, None), ("grain", 0, "threads"), ("grain", 1, "threads"),
           ("grain", 2, "threads"), ("grain", 2, "processes")]


def _loader(kind, workers, worker_type, split):
  from jpq_jax import data  # pylint: disable=import-outside-toplevel
  kw = dict(seed=0, shuffle=True, augment="cifar", process_index=0, process_count=1)
  if kind == "old":
    return data.Loader(split, BATCH, **kw)
  return data.GrainLoader(split, BATCH, workers=workers, worker_type=worker_type, **kw)


def _images_per_s(loader, epoch: int) -> float:
  t0 = time.perf_counter()
  n = sum(len(y) for _, y in loader.epoch(epoch))
  return n / (time.perf_counter() - t0)


def throughput(px: int, n: int, repeats: int) -> list:
  """Median images/s of every loader on ``n`` random ``px``-pixel images."""
  from jpq_jax import data  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  split = data.Split(rng.integers(0, 256, (n, px, px, 3), dtype=np.uint8),
                     rng.integers(0, 10, n).astype(np.int32))
  loaders = [(k, w, t, _loader(k, w, t, split)) for k, w, t in LOADERS]
  times = {i: [] for i in range(len(loaders))}
  for r in range(repeats):
    for i, (_, _, _, loader) in enumerate(loaders):
      times[i].append(_images_per_s(loader, r))
  rows = []
  for i, (k, w, t, _) in enumerate(loaders):
    rows.append({"px": px, "images": n, "loader": k, "workers": w, "worker_type": t,
                 "images_per_s": statistics.median(times[i]),
                 "all_images_per_s": [round(v, 1) for v in times[i]]})
  return rows


def write_dataset(path: str, gb: float, px: int = 64) -> int:
  """An array_record file of about ``gb`` GB of ``px``-pixel images; returns the image count."""
  from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel
  per = px * px * 3 + 4
  n = int(gb * 1e9 // per)
  pool = np.random.default_rng(1).integers(0, 256, (997, px * px * 3), dtype=np.uint8)
  # Uncompressed, one record per chunk: the file is as large as the images, a read is one image.
  writer = array_record_module.ArrayRecordWriter(path, "group_size:1,uncompressed")
  try:
    for i in range(n):
      writer.write(np.int32(i % 10).tobytes() + pool[i % 997].tobytes())
  finally:
    writer.close()
  return n


def _rss_mb(field: str = "VmRSS") -> float:
  """This process's resident memory (``VmRSS``) or its high-water mark (``VmHWM``), in MB."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith(field + ":"):
        return int(line.split()[1]) / 1024
  return float("nan")


def _child_rss(path: str, px: int, steps: int) -> None:
  """In a fresh process: stream ``steps`` batches, print resident memory and images/s as JSON.

  ``peak_rss_streaming_mb`` is the largest resident size sampled after every batch; the
  high-water mark ``hwm_mb`` also counts the imports (JAX, grain), which happen before any data.
  """
  from jpq_jax import data  # pylint: disable=import-outside-toplevel
  split = data.SourceSplit(data.ArrayRecordImages([path], (px, px, 3)))
  loader = data.GrainLoader(split, BATCH, seed=0, shuffle=True, augment="cifar", process_index=0,
                            process_count=1, workers=2)
  rss0, anon0 = _rss_mb(), _rss_mb("RssAnon")
  peak, peak_anon = rss0, anon0
  t0 = time.perf_counter()
  n = 0
  for i, (_, y) in enumerate(loader.epoch(0)):
    n += len(y)
    peak, peak_anon = max(peak, _rss_mb()), max(peak_anon, _rss_mb("RssAnon"))
    if i + 1 >= steps:
      break
  dt = time.perf_counter() - t0
  # RssFile: pages of the mapped files (the data file's, reclaimable cache); RssAnon: the
  # process's own memory, what would grow if the loader held the data.
  print(json.dumps({"images": len(split), "streamed": n, "images_per_s": n / dt,
                    "rss_before_mb": round(rss0, 1), "peak_rss_streaming_mb": round(peak, 1),
                    "anon_before_mb": round(anon0, 1),
                    "peak_anon_streaming_mb": round(peak_anon, 1),
                    "rss_file_end_mb": round(_rss_mb("RssFile"), 1),
                    "hwm_mb": round(_rss_mb("VmHWM"), 1)}))


def memory(sizes_gb, tmp: str, steps: int) -> list:
  """Peak RSS of streaming from generated datasets of the given sizes."""
  rows = []
  folder = tempfile.mkdtemp(prefix="jpq_data_bench_", dir=tmp)
  try:
    for gb in sizes_gb:
      path = os.path.join(folder, f"images_{gb}gb.array_record")
      t0 = time.perf_counter()
      n = write_dataset(path, gb)
      made = time.perf_counter() - t0
      out = subprocess.run([sys.executable, __file__, "--child-rss", path, "--rss-steps",
                            str(steps)], capture_output=True, text=True, check=True, cwd=ROOT)
      res = json.loads(out.stdout.strip().splitlines()[-1])
      rows.append({"dataset_gb": round(os.path.getsize(path) / 1e9, 3), "images": n,
                   "write_s": round(made, 1), **res})
      os.remove(path)
  finally:
    shutil.rmtree(folder, ignore_errors=True)
  return rows


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--n32", type=int, default=8192, help="images of the 32 px dataset")
  ap.add_argument("--n64", type=int, default=4096, help="images of the 64 px dataset")
  ap.add_argument("--sizes-gb", type=float, nargs="*", default=[0.5, 4.0])
  ap.add_argument("--rss-steps", type=int, default=300, help="batches streamed per dataset")
  ap.add_argument("--tmp", default=tempfile.gettempdir(), help="where the datasets are generated")
  ap.add_argument("--note", default="", help="free text recorded in the JSON (e.g. machine load)")
  ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "data.json"))
  ap.add_argument("--child-rss", default="", help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.child_rss:
    _child_rss(args.child_rss, 64, args.rss_steps)
    return
  load_before = os.getloadavg()
  rows = throughput(32, args.n32, args.repeats) + throughput(64, args.n64, args.repeats)
  print(f"{'px':>3} {'loader':<6} {'workers':>7} {'type':<9} {'images/s':>9} {'vs old':>6}")
  old = {r["px"]: r["images_per_s"] for r in rows if r["loader"] == "old"}
  for r in rows:
    r["vs_old"] = r["images_per_s"] / old[r["px"]]
    workers = "-" if r["workers"] is None else str(r["workers"])
    print(f"{r['px']:>3} {r['loader']:<6} {workers:>7} "
          f"{str(r['worker_type'] or '-'):<9} {r['images_per_s']:9.0f} {r['vs_old']:6.2f}")
  mem = memory(args.sizes_gb, args.tmp, args.rss_steps) if args.sizes_gb else []
  if mem:
    print(f"\n{'dataset GB':>10} {'images':>8} {'streamed':>8} {'images/s':>9} "
          f"{'RSS before MB':>13} {'peak RSS MB':>11} {'anon before':>11} {'peak anon':>9} "
          f"{'file at end':>11}")
    for m in mem:
      print(f"{m['dataset_gb']:10.2f} {m['images']:8d} {m['streamed']:8d} "
            f"{m['images_per_s']:9.0f} {m['rss_before_mb']:13.0f} "
            f"{m['peak_rss_streaming_mb']:11.0f} {m['anon_before_mb']:11.0f} "
            f"{m['peak_anon_streaming_mb']:9.0f} {m['rss_file_end_mb']:11.0f}")
  load_after = os.getloadavg()

  def ratio(px, workers, wtype="threads"):
    return next(r["vs_old"] for r in rows if r["px"] == px and r["loader"] == "grain"
                and r["workers"] == workers and r["worker_type"] == wtype)

  result = {
      "rows": rows, "memory": mem, "batch": BATCH, "augment": "cifar", "repeats": args.repeats,
      "ratio_grain_vs_old_32px": ratio(32, 2), "ratio_grain_vs_old_64px": ratio(64, 2),
      "ratio_definition": "grain loader, 2 worker threads / old numpy loader, median images/s",
      "cpu_count": os.cpu_count(), "loadavg_before": load_before, "loadavg_after": load_after,
      "machine_loaded": max(load_before[0], load_after[0]) > (os.cpu_count() or 1) * 0.5,
      "note": args.note}
  print(f"\ngrain (2 threads) / old: {result['ratio_grain_vs_old_32px']:.2f} at 32 px, "
        f"{result['ratio_grain_vs_old_64px']:.2f} at 64 px; load average {load_before[0]:.1f} "
        f"-> {load_after[0]:.1f} on {os.cpu_count()} cores")
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
