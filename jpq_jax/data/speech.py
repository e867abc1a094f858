"""Google Speech Commands v0.02 with the 12-class protocol (METHOD.md §9.2).

Classes: the keywords down, go, left, no, off, on, right, stop, up, yes (labels 0-9), ``_silence_``
(10) and ``_unknown_`` (11) for every other word; no subsampling of ``_unknown_``, hence the class
weights ``w_k = sum(counts) / count_k`` for the loss.

Splits, from the extracted archives (``speech_commands_v0.02`` and the separate
``speech_commands_test_set_v0.02``):

* train: every clip listed in neither ``validation_list.txt`` nor ``testing_list.txt``, plus silence
  cut from every ``_background_noise_/*.wav`` except ``running_tap.wav`` (i.e. dude_miaowing,
  white_noise, exercise_bike, doing_the_dishes, pink_noise);
* val: the clips of ``validation_list.txt``, plus silence cut from ``running_tap.wav``;
* test: the official test archive (it has its own ``_silence_`` and ``_unknown_`` folders).

Silence windows are 1 s long with a 0.5 s hop, starting at ``range(0, len - 16000, 8000)`` -- the
convention of TFDS's ``speech_commands`` builder, which gives the reference's 668 training silence
clips. The TFDS builder implements exactly this protocol with the same label order, so the TFDS
source (which needs TensorFlow) and the extracted-directory source (which does not) agree.

Features: MFCCs of :mod:`jpq_jax.data.mfcc`, ``(49, 10, 1)`` float32 per clip, computed once and
cached as ``.npz`` in the cache directory.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Optional

import numpy as np

from jpq_jax.data import tfds_io
from jpq_jax.data.core import (DataError, Dataset, DatasetNotFoundError, Split, cache_dir,
                               cache_key, class_weights, load_cache, save_cache, source_stamp)
from jpq_jax.data.mfcc import MfccConfig, speech_features

__all__ = ["WORDS", "CLASS_NAMES", "label_of", "read_wav", "cut_silence", "find_speech_dirs",
           "read_speech_directory", "load_speech_commands"]

WORDS = ["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes"]
SILENCE = "_silence_"
UNKNOWN = "_unknown_"
CLASS_NAMES = WORDS + [SILENCE, UNKNOWN]
BACKGROUND_NOISE = "_background_noise_"
VAL_NOISE_FILES = ("running_tap.wav",)
SAMPLE_RATE = 16000
TRAIN_DIR_NAME = "speech_commands_v0.02"
TEST_DIR_NAME = "speech_commands_test_set_v0.02"

# Bump when features or split rules change so that stale caches are not reused.
_CACHE_VERSION = 1


def label_of(word: str) -> int:
  """The 12-class label of a folder name.

  Args:
    word: folder name (a word, ``_silence_``, ``_background_noise_`` or ``_unknown_``).

  Returns:
    0-9 for the keywords, 10 for silence/background noise, 11 for anything else.
  """
  if word in WORDS:
    return WORDS.index(word)
  if word in (SILENCE, BACKGROUND_NOISE):
    return 10
  return 11


def read_wav(path: str) -> np.ndarray:
  """Reads a mono 16-bit PCM wav file.

  Args:
    path: file path.

  Returns:
    ``(T,)`` int16 samples (the first channel of a multi-channel file).

  Raises:
    DataError: the file is not 16-bit PCM.
  """
  from scipy.io import wavfile  # pylint: disable=import-outside-toplevel
  _, data = wavfile.read(path)
  if data.dtype != np.int16:
    raise DataError(f"{path}: expected 16-bit PCM samples, got {data.dtype}")
  return data[:, 0] if data.ndim == 2 else data


def cut_silence(audio: np.ndarray, length: int = SAMPLE_RATE,
                hop: int = SAMPLE_RATE // 2) -> list:
  """Cuts a background-noise recording into overlapping windows.

  Args:
    audio: ``(T,)`` samples.
    length: window length (1 s).
    hop: hop between windows (0.5 s).

  Returns:
    List of ``(length,)`` arrays starting at ``range(0, T - length, hop)`` (TFDS's convention).
  """
  return [audio[s:s + length] for s in range(0, len(audio) - length, hop)]


def find_speech_dirs(data_dir: str, test_dir: Optional[str] = None) -> tuple[str, str]:
  """Locates the extracted training and test archives.

  Args:
    data_dir: the extracted ``speech_commands_v0.02`` directory, or a directory that contains it
      (and, usually, ``speech_commands_test_set_v0.02``).
    test_dir: the extracted test archive; default: ``speech_commands_test_set_v0.02`` inside or
      next to the training directory.

  Returns:
    ``(train_root, test_root)``.

  Raises:
    DatasetNotFoundError: either directory is missing.
  """
  root = data_dir
  if not os.path.exists(os.path.join(root, "validation_list.txt")):
    root = os.path.join(data_dir, TRAIN_DIR_NAME)
  if not os.path.exists(os.path.join(root, "validation_list.txt")):
    raise DatasetNotFoundError(
        f"{data_dir!r} is not an extracted Speech Commands v0.02 archive (no validation_list.txt "
        f"in it or in {TRAIN_DIR_NAME}/); extract speech_commands_v0.02.tar.gz and "
        "speech_commands_test_set_v0.02.tar.gz from http://download.tensorflow.org/data/ there")
  if test_dir is None:
    for cand in (os.path.join(root, TEST_DIR_NAME),
                 os.path.join(os.path.dirname(os.path.abspath(root)), TEST_DIR_NAME),
                 os.path.join(data_dir, TEST_DIR_NAME)):
      if os.path.isdir(cand):
        test_dir = cand
        break
  if test_dir is None or not os.path.isdir(test_dir):
    raise DatasetNotFoundError(
        f"the Speech Commands test set was not found (looked for {TEST_DIR_NAME}/ in and next to "
        f"{root!r}); extract speech_commands_test_set_v0.02.tar.gz there or pass test_dir=...")
  return root, test_dir


def _wavs(root: str) -> list:
  """Relative paths ``word/file.wav`` of every clip under ``root``, sorted."""
  out = []
  for word in sorted(os.listdir(root)):
    d = os.path.join(root, word)
    if not os.path.isdir(d) or word == BACKGROUND_NOISE or word.startswith("."):
      continue
    out += [f"{word}/{f}" for f in sorted(os.listdir(d)) if f.endswith(".wav")]
  return out


def _read_list(path: str) -> set:
  with open(path, encoding="utf-8") as f:
    return {line.strip() for line in f if line.strip()}


def read_speech_directory(train_root: str, test_root: str) -> dict:
  """Reads the clips and 12-class labels of the three splits from extracted archives.

  Args:
    train_root: extracted ``speech_commands_v0.02``.
    test_root: extracted ``speech_commands_test_set_v0.02``.

  Returns:
    ``{'train'|'val'|'test': (list of int16 clips, (N,) int32 labels)}``.
  """
  val_list = _read_list(os.path.join(train_root, "validation_list.txt"))
  test_list = _read_list(os.path.join(train_root, "testing_list.txt"))
  clips = {"train": ([], []), "val": ([], []), "test": ([], [])}
  for rel in _wavs(train_root):
    split = "val" if rel in val_list else None if rel in test_list else "train"
    if split is not None:
      clips[split][0].append(read_wav(os.path.join(train_root, rel)))
      clips[split][1].append(label_of(rel.split("/")[0]))
  noise_dir = os.path.join(train_root, BACKGROUND_NOISE)
  noise_files = sorted(f for f in os.listdir(noise_dir) if f.endswith(".wav")) if os.path.isdir(
      noise_dir) else []
  for f in noise_files:
    split = "val" if f in VAL_NOISE_FILES else "train"
    windows = cut_silence(read_wav(os.path.join(noise_dir, f)))
    clips[split][0].extend(windows)
    clips[split][1].extend([10] * len(windows))
  for rel in _wavs(test_root):
    clips["test"][0].append(read_wav(os.path.join(test_root, rel)))
    clips["test"][1].append(label_of(rel.split("/")[0]))
  return {k: (v[0], np.asarray(v[1], np.int32)) for k, v in clips.items()}


def _read_tfds(data_dir: Optional[str], download: bool) -> dict:
  how = ("  * or the extracted archives, without TensorFlow: load('speech_commands', "
         f"data_dir='/path/to/{TRAIN_DIR_NAME}') with {TEST_DIR_NAME}/ next to it or inside it")
  builder = tfds_io.get_builder("speech_commands", data_dir, download=download, how_to_get=how)
  out = {}
  for ours, theirs in (("train", "train"), ("val", "validation"), ("test", "test")):
    d = tfds_io.read_split(builder, theirs, ("audio", "label"))
    out[ours] = ([np.asarray(a) for a in d["audio"]], np.asarray(d["label"], np.int32))
  return out


def load_speech_commands(data_dir: Optional[str] = None, seed: int = 14, *,
                         test_dir: Optional[str] = None, download: bool = False,
                         use_cache: bool = True, cache_path: Optional[str] = None,
                         name: str = "speech_commands") -> Dataset:
  """Loads Speech Commands v0.02 as MFCC features with the 12-class protocol.

  Args:
    data_dir: extracted ``speech_commands_v0.02`` (or its parent), or a TFDS data directory
      (default: TFDS's) where ``speech_commands`` is prepared.
    seed: unused by the protocol (the splits are fixed lists); kept for a uniform signature.
    test_dir: extracted test archive (default: found next to the training directory).
    download: let TFDS download and prepare the data if missing (internet + TensorFlow).
    use_cache: read/write the features from/to the cache directory.
    cache_path: cache directory override.
    name: name recorded in the dataset.

  Returns:
    The dataset: float32 ``(49, 10, 1)`` features, 12 classes, class weights from the training
    label counts, no augmentation.

  Raises:
    DatasetNotFoundError: the data is not present; the message says how to get it.
    ImportError: the TFDS path needs TensorFlow, which is missing.
  """
  del seed
  config = MfccConfig()
  if (data_dir is not None and not download and importlib.util.find_spec("tensorflow") is None
      and not (os.path.isdir(data_dir) and (
          os.path.exists(os.path.join(data_dir, "validation_list.txt")) or
          os.path.isdir(os.path.join(data_dir, TRAIN_DIR_NAME)) or
          os.path.isdir(os.path.join(data_dir, "speech_commands"))))):
    # Neither the extracted archives nor a TFDS directory holding speech_commands, and no
    # TensorFlow for TFDS anyway: say that, rather than "install TensorFlow".
    what = "does not exist" if not os.path.exists(data_dir) else (
        f"holds neither validation_list.txt, {TRAIN_DIR_NAME}/ nor a TFDS speech_commands/")
    raise DatasetNotFoundError(
        f"no Speech Commands data at {data_dir!r}: it {what}. Extract {TRAIN_DIR_NAME}.tar.gz "
        "(and the test archive next to it) and point data_dir at it, or prepare it with TFDS "
        "(pip install tensorflow)")
  local = data_dir is not None and (
      os.path.exists(os.path.join(data_dir, "validation_list.txt")) or
      os.path.exists(os.path.join(data_dir, TRAIN_DIR_NAME, "validation_list.txt")))
  if local:
    train_root, test_root = find_speech_dirs(data_dir, test_dir)
    stamp = (source_stamp(train_root), source_stamp(test_root))
  else:
    stamp = ("tfds", os.path.abspath(data_dir or tfds_io.default_data_dir()))
  cached, cache_file = None, None
  if use_cache:
    key = cache_key(_CACHE_VERSION, stamp, config)
    cache_file = os.path.join(cache_dir(cache_path), f"speech_commands-{key}.npz")
    cached = load_cache(cache_file)
  if cached is None:
    raw = read_speech_directory(train_root, test_root) if local else _read_tfds(data_dir, download)
    cached = {}
    for split, (clips, labels) in raw.items():
      if not clips:
        raise DataError(f"{name}/{split}: no clips found")
      cached["x_" + split] = speech_features(clips, config)
      cached["y_" + split] = labels
    if cache_file is not None:
      save_cache(cache_file, **cached)
  splits = {s: Split(cached["x_" + s], cached["y_" + s].astype(np.int32))
            for s in ("train", "val", "test")}
  return Dataset(name=name, train=splits["train"], val=splits["val"], test=splits["test"],
                 num_classes=12, input_shape=(config.num_frames, config.n_mfcc, 1),
                 class_weights=class_weights(splits["train"].y, 12), augment=None,
                 extra_tests={}, class_names=list(CLASS_NAMES))
