"""Tests of the Speech Commands pipeline: MFCC features and the 12-class protocol."""

import importlib.util
import os

import numpy as np
import pytest
from scipy.io import wavfile

from jpq_jax import data
from jpq_jax.data import mfcc as mfcc_lib
from jpq_jax.data import speech


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
  monkeypatch.setenv("JPQ_JAX_CACHE", str(tmp_path / "cache"))


def _synthetic_audio(n=4, seed=0):
  """Tones, a chirp and noise at several levels, as int16 clips of various lengths."""
  rng = np.random.default_rng(seed)
  t = np.arange(16000) / 16000.0
  clips = [
      0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(16000),
      0.5 * np.sin(2 * np.pi * (100 + 1800 * t) * t),
      0.05 * rng.standard_normal(16000),
      0.2 * np.sin(2 * np.pi * 1234 * t[:12000]),  # short clip: zero-padded to 1 s
  ][:n]
  return [np.round(np.clip(c, -1, 1) * 32767).astype(np.int16) for c in clips]


def _librosa_mfcc(y):
  """Independent reference: librosa's mel spectrogram + scipy's DCT with the same parameters."""
  librosa = pytest.importorskip("librosa")
  import scipy.fft  # pylint: disable=import-outside-toplevel
  mel = librosa.feature.melspectrogram(
      y=y, sr=16000, n_fft=512, hop_length=320, win_length=480, window="hann", center=False,
      power=2.0, n_mels=40, fmin=20.0, fmax=4000.0, htk=True, norm=None)
  return scipy.fft.dct(np.log(mel + 1e-6), type=2, norm="ortho", axis=0)[:10].T


def test_mfcc_matches_librosa():
  clips = _synthetic_audio()
  feats = mfcc_lib.speech_features(clips)
  assert feats.shape == (4, 49, 10, 1) and feats.dtype == np.float32
  for clip, f in zip(clips, feats):
    y = np.zeros(16000)
    y[:len(clip)] = clip / 32768.0
    ref = _librosa_mfcc(y)
    assert ref.shape == (49, 10)
    np.testing.assert_allclose(f[..., 0], ref, rtol=1e-4, atol=1e-3)


def test_mfcc_building_blocks_match_librosa_and_scipy():
  librosa = pytest.importorskip("librosa")
  import scipy.fft  # pylint: disable=import-outside-toplevel
  import scipy.signal  # pylint: disable=import-outside-toplevel
  fb = mfcc_lib.mel_filterbank(257, 20.0, 4000.0, 40, 16000)
  ref_fb = librosa.filters.mel(sr=16000, n_fft=512, n_mels=40, fmin=20.0, fmax=4000.0, htk=True,
                               norm=None)
  np.testing.assert_allclose(fb.T, ref_fb, atol=1e-6)
  np.testing.assert_allclose(mfcc_lib.dct_matrix(10, 40).T,
                             scipy.fft.dct(np.eye(40), type=2, norm="ortho", axis=0)[:10],
                             atol=1e-12)
  np.testing.assert_allclose(mfcc_lib.hann_window(480),
                             scipy.signal.get_window("hann", 480, fftbins=True), atol=1e-12)


def test_prepare_waveform_scaling_padding_and_shift():
  clip = np.array([16384, -32768, 1], np.int16)
  w = mfcc_lib.prepare_waveform(clip)
  assert w.shape == (1, 16000)
  np.testing.assert_array_equal(w[0, :3], [0.5, -1.0, 1 / 32768])
  assert not w[0, 3:].any()
  long = np.arange(17000, dtype=np.int16)
  np.testing.assert_array_equal(mfcc_lib.prepare_waveform(long)[0] * 32768, np.arange(16000))
  # The specified shift takes [2, 16002) of the 2-padded clip; other offsets move the clip.
  shifted = mfcc_lib.prepare_waveform(clip, mfcc_lib.MfccConfig(shift=-2))
  np.testing.assert_array_equal(shifted[0, :5], [0, 0, 0.5, -1.0, 1 / 32768])
  assert mfcc_lib.MfccConfig().num_frames == 49


def test_label_mapping_and_silence_cutting():
  assert [speech.label_of(w) for w in speech.WORDS] == list(range(10))
  assert speech.label_of("_silence_") == speech.label_of("_background_noise_") == 10
  assert speech.label_of("marvin") == speech.label_of("_unknown_") == 11
  assert speech.CLASS_NAMES[:3] == ["down", "go", "left"] and len(speech.CLASS_NAMES) == 12
  audio = np.arange(40000)
  windows = speech.cut_silence(audio)
  assert [w[0] for w in windows] == [0, 8000, 16000]
  assert all(len(w) == 16000 for w in windows)
  # A 60 s recording gives 118 windows (TFDS's convention, the reference's counts).
  assert len(speech.cut_silence(np.zeros(960000))) == 118


def _wav(path, seconds, seed):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  rng = np.random.default_rng(seed)
  wavfile.write(path, 16000, rng.integers(-3000, 3000, int(16000 * seconds), dtype=np.int16))


def _fake_speech_tree(root):
  """A miniature of both extracted archives with every class present in train."""
  train = os.path.join(root, "speech_commands_v0.02")
  test = os.path.join(root, "speech_commands_test_set_v0.02")
  val_list, test_list = [], []
  seed = 0
  for word in speech.WORDS + ["marvin", "cat"]:
    for k in range(3):
      rel = f"{word}/{k:08x}_nohash_0.wav"
      _wav(os.path.join(train, rel), 0.1, seed)
      seed += 1
      if k == 1:
        val_list.append(rel)
      elif k == 2:
        test_list.append(rel)
  _wav(os.path.join(train, "_background_noise_", "white_noise.wav"), 2.5, 100)  # 3 windows
  _wav(os.path.join(train, "_background_noise_", "pink_noise.wav"), 1.5, 101)  # 1 window
  _wav(os.path.join(train, "_background_noise_", "running_tap.wav"), 2.0, 102)  # 2 windows (val)
  with open(os.path.join(train, "_background_noise_", "README.md"), "w") as f:
    f.write("not audio")
  with open(os.path.join(train, "validation_list.txt"), "w") as f:
    f.write("\n".join(val_list) + "\n")
  with open(os.path.join(train, "testing_list.txt"), "w") as f:
    f.write("\n".join(test_list) + "\n")
  for folder, n in (("yes", 2), ("_silence_", 3), ("_unknown_", 4)):
    for k in range(n):
      _wav(os.path.join(test, folder, f"t{k}.wav"), 1.0, 200 + k)
  return train, test


def test_speech_directory_protocol(tmp_path):
  train_root, _ = _fake_speech_tree(tmp_path)
  ds = data.load("speech_commands", data_dir=str(tmp_path))
  # train: one clip per word folder (12) + 3 + 1 silence windows; val: 12 clips + 2 running_tap.
  np.testing.assert_array_equal(np.bincount(ds.train.y, minlength=12),
                                [1] * 10 + [4, 2])
  np.testing.assert_array_equal(np.bincount(ds.val.y, minlength=12), [1] * 10 + [2, 2])
  np.testing.assert_array_equal(np.bincount(ds.test.y, minlength=12),
                                [0] * 9 + [2] + [3, 4])
  assert ds.input_shape == (49, 10, 1) and ds.num_classes == 12
  assert ds.train.x.dtype == np.float32 and ds.augment is None
  np.testing.assert_allclose(ds.class_weights, 16 / np.array([1] * 10 + [4, 2]))
  # Features are the MFCCs of the clips, in sorted path order: cat/..., then down/...
  assert ds.train.y[0] == 11 and ds.train.y[1] == 0
  clip = speech.read_wav(os.path.join(train_root, "down", "00000000_nohash_0.wav"))
  np.testing.assert_array_equal(ds.train.x[1], mfcc_lib.speech_features([clip])[0])
  # Pointing at the training directory itself works too, and the second load hits the cache.
  cache = os.environ["JPQ_JAX_CACHE"]
  assert len([f for f in os.listdir(cache) if f.startswith("speech_commands-")]) == 1
  again = data.load("gsc", data_dir=train_root)
  np.testing.assert_array_equal(again.test.x, ds.test.x)


def test_speech_missing_test_set_and_missing_dataset(tmp_path):
  train_root, test_root = _fake_speech_tree(tmp_path)
  os.rename(test_root, str(tmp_path / "elsewhere"))
  with pytest.raises(data.DatasetNotFoundError, match="test_dir"):
    data.load("speech_commands", data_dir=train_root)
  ds = data.load("speech_commands", data_dir=train_root, test_dir=str(tmp_path / "elsewhere"))
  assert len(ds.test) == 9


def test_speech_tfds_path(tmp_path):
  if importlib.util.find_spec("tensorflow") is None:
    # Without TF the TFDS builder cannot even be built: the error must say what to do.
    os.makedirs(tmp_path / "tfds" / "speech_commands")  # looks like TFDS data: TFDS is asked
    with pytest.raises(ImportError) as info:
      data.load("speech_commands", data_dir=str(tmp_path / "tfds"))
    assert "pip install tensorflow" in str(info.value)
    assert "speech_commands_v0.02" in str(info.value)
    # A data_dir that holds no speech data at all (a typo) says so.
    for bad, what in ((tmp_path / "typo", "does not exist"), (tmp_path, "holds neither")):
      with pytest.raises(data.DatasetNotFoundError, match=what) as info:
        data.load("speech_commands", data_dir=str(bad))
      assert "speech_commands_v0.02.tar.gz" in str(info.value)
    return
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from unittest import mock  # pylint: disable=import-outside-toplevel
  with tfds.testing.mock_data(num_examples=300, policy=tfds.testing.MockPolicy.USE_CODE), \
      mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", return_value=True):
    ds = data.load("speech_commands", data_dir=str(tmp_path / "tfds"), use_cache=False)
  assert ds.input_shape == (49, 10, 1) and len(ds.train) == 300
