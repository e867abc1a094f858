"""The exported bundle: its container, bit packing, checksums and loading.

A bundle is a directory with ``manifest.json`` (format version, input spec, quantizers, graph,
layer metadata, the SHA-256 of every array and of the manifest itself) and ``weights.npz`` (packed
weight codes, bit-widths, scales, bias codes). :mod:`jpq_jax.export` builds it from a fixed model,
:mod:`jpq_jax.bundle_run` runs it, :mod:`jpq_jax.deploy` converts it to ONNX / QONNX.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Dict, Mapping

import numpy as np

__all__ = ["FORMAT_VERSION", "MANIFEST", "PAYLOAD", "BundleError", "Bundle", "load_bundle",
           "pack_codes", "unpack_codes"]

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PAYLOAD = "weights.npz"
_F32 = np.float32


class BundleError(ValueError):
  """A model that cannot be exported, or a bundle that cannot be read."""



# ------------------------------------------------------------------------------------------------
# Bit packing
# ------------------------------------------------------------------------------------------------
def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
  """Pack signed integer codes at ``bits`` bits each (two's complement, little-endian bit order).

  Code ``i`` occupies bits ``[i*bits, (i+1)*bits)`` of the stream, so with 2 bits a byte holds codes
  0..3 from its low to its high bits, with 4 bits the low nibble is the first code.

  Args:
    codes: integers in ``[-2^(bits-1), 2^(bits-1) - 1]``.
    bits: 1..8.

  Returns:
    ``ceil(len(codes) * bits / 8)`` bytes (uint8).

  Raises:
    ValueError: a code out of range, or bits out of 1..8.
  """
  if not 1 <= bits <= 8:
    raise ValueError(f"pack_codes: bits must be in 1..8, got {bits}")
  c = np.asarray(codes, np.int64).ravel()
  lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
  if c.size and (c.min() < lo or c.max() > hi):
    raise ValueError(f"pack_codes: codes outside [{lo}, {hi}] for {bits} bits")
  u = (c & ((1 << bits) - 1)).astype(np.uint8)
  stream = ((u[:, None] >> np.arange(bits, dtype=np.uint8)) & 1).astype(np.uint8).ravel()
  return np.packbits(stream, bitorder="little")


def unpack_codes(buf: np.ndarray, bits: int, n: int) -> np.ndarray:
  """Inverse of :func:`pack_codes`: ``n`` signed codes (int64) from packed bytes.

  Args:
    buf: packed bytes (anything ``np.asarray(buf, np.uint8)`` accepts), as :func:`pack_codes`
      writes them; bits past the first ``n * bits`` (padding) are ignored.
    bits: bit-width of each code (as passed to :func:`pack_codes`, 1..8).
    n: number of codes to read.

  Returns:
    int64 array of shape ``(n,)`` with the two's-complement codes, in
    ``[-2^(bits-1), 2^(bits-1) - 1]``.

  Raises:
    BundleError: ``bits`` outside 1..8 (a damaged bundle), or ``buf`` holds fewer than
      ``n * bits`` bits.
  """
  if not 1 <= int(bits) <= 8:
    raise BundleError(f"packed weights: bit-width {bits} outside 1..8 (damaged bundle?)")
  stream = np.unpackbits(np.asarray(buf, np.uint8), bitorder="little")[:n * bits]
  if stream.size != n * bits:
    raise BundleError(f"packed weights too short: need {n * bits} bits, have {stream.size}")
  u = (stream.reshape(n, bits).astype(np.int64) << np.arange(bits, dtype=np.int64)).sum(axis=1)
  return np.where(u >= (1 << (bits - 1)), u - (1 << bits), u)


def _key(layer: str, what: str) -> str:
  return f"{layer.replace('/', '.')}.{what}"


def _sha(a: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@dataclasses.dataclass
class Bundle:
  """An exported integer network: the manifest (JSON-able dict) and its arrays.

  Attributes:
    manifest: format version, input spec, quantizers, graph nodes, layer metadata, checksums.
    arrays: ``{name: numpy array}`` (packed weights, bit-widths, scales, bias codes).
  """
  manifest: Dict[str, Any]
  arrays: Dict[str, np.ndarray]

  def save(self, path: str) -> str:
    """Write ``path/manifest.json`` and ``path/weights.npz`` (``path`` is created).

    Returns:
      The bundle directory.
    """
    os.makedirs(path, exist_ok=True)
    np.savez(os.path.join(path, PAYLOAD), **self.arrays)
    self.manifest["manifest_sha256"] = _manifest_sha(self.manifest)
    with open(os.path.join(path, MANIFEST), "w") as f:
      json.dump(self.manifest, f, indent=1)
    return path

  @property
  def payload_bytes(self) -> int:
    """Bytes of packed weight codes (what the size cost model estimates)."""
    return int(sum(l["weight_bytes"] for l in self.manifest["layers"].values()))

  @property
  def payload_bits(self) -> int:
    """Weight bits before per-channel byte padding (sum of codes x bit-width)."""
    return int(sum(l["weight_bits"] for l in self.manifest["layers"].values()))

  @property
  def total_bytes(self) -> int:
    """Weights + biases (int32) + per-channel scales (two float32)."""
    return int(sum(l["total_bytes"] for l in self.manifest["layers"].values()))

  def report(self) -> str:
    """Per-layer table: channels kept, bits-per-channel histogram, bytes; then totals."""
    m = self.manifest
    bits_all = sorted({int(b) for l in m["layers"].values() for b in l["w_bits_hist"]})
    hdr = (f"{'layer':<24} {'kind':<9} {'out kept':>9} {'in kept':>9} "
           + " ".join(f"{f'{b}b':>4}" for b in bits_all)
           + f" {'weight B':>9} {'bias+scale B':>12} {'total B':>9}")
    rows = [hdr, "-" * len(hdr)]
    for name, l in m["layers"].items():
      hist = " ".join(f"{l['w_bits_hist'].get(str(b), 0):>4}" for b in bits_all)
      rows.append(f"{name:<24} {l['kind']:<9} {l['cout']:>4}/{l['cout_orig']:<4} "
                  f"{l['cin']:>4}/{l['cin_orig']:<4} {hist} {l['weight_bytes']:>9,} "
                  f"{l['total_bytes'] - l['weight_bytes']:>12,} {l['total_bytes']:>9,}")
    rows.append("-" * len(hdr))
    rows.append(f"{'total':<24} {'':<9} {'':>9} {'':>9} " + " ".join(f"{'':>4}" for _ in bits_all)
                + f" {self.payload_bytes:>9,} {self.total_bytes - self.payload_bytes:>12,} "
                f"{self.total_bytes:>9,}")
    rows.append(f"weight payload: {self.payload_bits:,} bits = {self.payload_bits / 8:,.1f} bytes "
                f"unpadded, {self.payload_bytes:,} bytes packed per channel")
    q = ", ".join(f"{g}: {v['bits']}b" + (" signed" if v["signed"] else "")
                  for g, v in m["quantizers"].items())
    rows.append(f"activation quantizers: {q}")
    return "\n".join(rows)




# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------
def _manifest_sha(manifest: Mapping) -> str:
  """SHA-256 of the manifest's canonical JSON, without its own checksum field."""
  body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
  return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def load_bundle(path: str, allow_unverified: bool = False) -> Bundle:
  """Read a bundle directory written by :meth:`Bundle.save`, verifying version and checksums.

  The manifest's ``manifest_sha256`` and the payload's per-array SHA-256 detect damage (a
  truncated copy, flipped bits, a hand edit that forgot the checksum); they do not protect
  against tampering (whoever edits the bundle can recompute them).

  Args:
    path: the bundle directory (or its ``manifest.json``).
    allow_unverified: accept a bundle whose manifest has no ``manifest_sha256`` (exported by jpq
      before 2026-11-30); such a manifest cannot be checked, so it is refused by default.

  Returns:
    The bundle.

  Raises:
    BundleError: missing files, unsupported ``format_version``, a corrupt or tampered payload, a
      manifest edited after export, or (without ``allow_unverified``) one without its checksum.
  """
  if os.path.basename(path) == MANIFEST:
    path = os.path.dirname(path)
  mpath, wpath = os.path.join(path, MANIFEST), os.path.join(path, PAYLOAD)
  for p in (mpath, wpath):
    if not os.path.exists(p):
      raise BundleError(f"{path!r} is not a jpq_jax bundle: {os.path.basename(p)} is missing")
  try:
    with open(mpath) as f:
      manifest = json.load(f)
  except json.JSONDecodeError as e:
    raise BundleError(f"bundle {path!r}: manifest.json is not valid JSON ({e})") from None
  version = manifest.get("format_version") if isinstance(manifest, dict) else None
  if version != FORMAT_VERSION:
    raise BundleError(f"bundle {path!r} has format_version {version!r}; this jpq_jax reads "
                      f"format_version {FORMAT_VERSION} (re-export it with this version)")
  try:
    with np.load(wpath, allow_pickle=False) as z:
      arrays = {k: z[k] for k in z.files}
  except Exception as e:  # zipfile/format errors of a damaged file
    raise BundleError(f"bundle {path!r}: {PAYLOAD} is corrupt and cannot be read ({e})") from None
  if "manifest_sha256" not in manifest and not allow_unverified:
    raise BundleError(f"bundle {path!r}: manifest.json has no manifest_sha256, so its clips, "
                      "scales and graph cannot be verified (an edit, or a bundle exported before "
                      "jpq 2026-11-30); re-export the member, or load it with "
                      "allow_unverified=True if you trust it")
  if "manifest_sha256" in manifest and manifest["manifest_sha256"] != _manifest_sha(manifest):
    # The manifest drives the integer inference (clips, scales, the graph): an edited one would
    # run silently with other numbers.
    raise BundleError(f"bundle {path!r}: manifest.json was modified after export (its checksum "
                      "differs); re-export the member")
  expected = manifest.get("arrays", {})
  missing = sorted(set(expected) - set(arrays))
  if missing:
    raise BundleError(f"bundle {path!r}: {PAYLOAD} lacks arrays {missing}")
  for k, spec in expected.items():
    a = arrays[k]
    if list(a.shape) != spec["shape"] or str(a.dtype) != spec["dtype"] or _sha(a) != spec["sha256"]:
      raise BundleError(f"bundle {path!r}: array {k!r} does not match the manifest's checksum "
                        "(corrupt or modified payload)")
  return Bundle(manifest=manifest, arrays=arrays)

