"""MFCC features of the Speech Commands protocol, in numpy (METHOD.md §9.2).

What is implemented, step by step (torchaudio's ``MFCC`` conventions, which the reference uses):

1. int16 samples are divided by 32768; the clip is zero-padded or truncated to 16,000 samples.
2. The fixed shift: pad 2 zeros on both sides and take samples ``[2, 16002)``. Taken literally this
   gives back the clip unchanged; it is kept as written (``shift=0`` offset into the padded clip)
   so that the code matches the specification and a different offset can be tried.
3. Framing with ``center=False``: frames of ``n_fft = 512`` samples every ``hop = 320`` samples,
   which gives ``1 + (16000 - 512) // 320 = 49`` frames.
4. Window: a *periodic* Hann window of ``win_length = 480`` samples (``torch.hann_window`` default),
   zero-padded on both sides to 512 (16 zeros left, 16 right) as ``torch.stft`` does.
5. Power spectrogram ``|rfft(frame * window)|^2`` (257 bins, no normalisation).
6. Mel filterbank: 40 triangular filters between 20 and 4000 Hz on the HTK mel scale
   (``2595 * log10(1 + f / 700)``, torchaudio's default), bin frequencies ``linspace(0, 8000,
   257)``, no area normalisation (``norm=None``).
7. Log-mel: ``log(mel + 1e-6)`` (torchaudio ``MFCC(log_mels=True)``).
8. DCT-II with orthonormal scaling over the 40 mel bands, keeping the first 10 coefficients
   (torchaudio ``create_dct(10, 40, 'ortho')``).

The result of one clip is laid out ``(49, 10)`` = (time, coefficient), i.e. ``(49, 10, 1)`` as an
NHWC example (the reference's ``(1, 49, 10)`` in NCHW). Arithmetic is float64; the output float32.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["MfccConfig", "hann_window", "mel_filterbank", "dct_matrix", "prepare_waveform",
           "mfcc", "speech_features"]


@dataclasses.dataclass(frozen=True)
class MfccConfig:
  """Parameters of the feature extraction (defaults: METHOD.md §9.2)."""

  sample_rate: int = 16000
  num_samples: int = 16000
  shift_pad: int = 2
  shift: int = 0
  n_fft: int = 512
  win_length: int = 480
  hop_length: int = 320
  n_mels: int = 40
  f_min: float = 20.0
  f_max: float = 4000.0
  n_mfcc: int = 10
  log_offset: float = 1e-6

  @property
  def num_frames(self) -> int:
    """Frames per clip (49 with the defaults)."""
    return 1 + (self.num_samples - self.n_fft) // self.hop_length


def hann_window(length: int) -> np.ndarray:
  """Periodic Hann window, like ``torch.hann_window(length)``.

  Args:
    length: window length.

  Returns:
    ``(length,)`` float64 window ``0.5 - 0.5 cos(2 pi n / length)``.
  """
  n = np.arange(length, dtype=np.float64)
  return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)


def _hz_to_mel(f):
  return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def _mel_to_hz(m):
  return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


def mel_filterbank(n_freqs: int, f_min: float, f_max: float, n_mels: int,
                   sample_rate: int) -> np.ndarray:
  """Triangular HTK-mel filterbank without normalisation (torchaudio ``melscale_fbanks``).

  Args:
    n_freqs: number of rfft bins (``n_fft // 2 + 1``).
    f_min: lowest filter edge in Hz.
    f_max: highest filter edge in Hz.
    n_mels: number of filters.
    sample_rate: sample rate in Hz.

  Returns:
    ``(n_freqs, n_mels)`` float64 matrix.
  """
  all_freqs = np.linspace(0.0, sample_rate // 2, n_freqs)
  m_pts = np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2)
  f_pts = _mel_to_hz(m_pts)
  f_diff = f_pts[1:] - f_pts[:-1]
  slopes = f_pts[None, :] - all_freqs[:, None]
  down = -slopes[:, :-2] / f_diff[:-1]
  up = slopes[:, 2:] / f_diff[1:]
  return np.maximum(0.0, np.minimum(down, up))


def dct_matrix(n_mfcc: int, n_mels: int) -> np.ndarray:
  """Orthonormal DCT-II matrix (torchaudio ``create_dct(n_mfcc, n_mels, 'ortho')``).

  Args:
    n_mfcc: coefficients kept.
    n_mels: input bands.

  Returns:
    ``(n_mels, n_mfcc)`` float64 matrix ``D`` so that ``mfcc = logmel @ D``.
  """
  n = np.arange(n_mels, dtype=np.float64)
  k = np.arange(n_mfcc, dtype=np.float64)[:, None]
  dct = np.cos(np.pi / n_mels * (n + 0.5) * k)
  dct[0] *= 1.0 / np.sqrt(2.0)
  dct *= np.sqrt(2.0 / n_mels)
  return dct.T


def prepare_waveform(audio: np.ndarray, config: MfccConfig = MfccConfig()) -> np.ndarray:
  """Scales, pads/truncates and shifts clips (steps 1 and 2 of the module docstring).

  Args:
    audio: ``(T,)`` or ``(B, T)`` samples; integer arrays are int16 samples (divided by 32768),
      float arrays are used as they are.
    config: parameters.

  Returns:
    ``(B, num_samples)`` float64 array (``B = 1`` for a single clip).
  """
  audio = np.asarray(audio)
  if audio.ndim == 1:
    audio = audio[None]
  x = audio.astype(np.float64)
  if np.issubdtype(audio.dtype, np.integer):
    x = x / 32768.0
  n = config.num_samples
  x = x[:, :n] if x.shape[1] >= n else np.pad(x, ((0, 0), (0, n - x.shape[1])))
  p = config.shift_pad
  x = np.pad(x, ((0, 0), (p, p)))
  start = p + config.shift
  return x[:, start:start + n]


def mfcc(waveforms: np.ndarray, config: MfccConfig = MfccConfig()) -> np.ndarray:
  """MFCCs of prepared waveforms (steps 3 to 8 of the module docstring).

  Args:
    waveforms: ``(B, T)`` float waveforms (output of :func:`prepare_waveform`).
    config: parameters.

  Returns:
    ``(B, frames, n_mfcc)`` float32.
  """
  w = np.asarray(waveforms, np.float64)
  n_frames = 1 + (w.shape[1] - config.n_fft) // config.hop_length
  starts = np.arange(n_frames) * config.hop_length
  frames = w[:, starts[:, None] + np.arange(config.n_fft)[None, :]]
  window = np.zeros(config.n_fft)
  left = (config.n_fft - config.win_length) // 2
  window[left:left + config.win_length] = hann_window(config.win_length)
  power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2
  fb = mel_filterbank(config.n_fft // 2 + 1, config.f_min, config.f_max, config.n_mels,
                      config.sample_rate)
  logmel = np.log(power @ fb + config.log_offset)
  return (logmel @ dct_matrix(config.n_mfcc, config.n_mels)).astype(np.float32)


def speech_features(clips, config: MfccConfig = MfccConfig(), chunk: int = 512) -> np.ndarray:
  """Features of many clips as NHWC examples ``(N, 49, 10, 1)``.

  Args:
    clips: sequence of 1-D sample arrays (int16 or float), possibly of different lengths.
    config: parameters.
    chunk: clips processed together (bounds memory).

  Returns:
    ``(N, frames, n_mfcc, 1)`` float32.
  """
  out = np.empty((len(clips), config.num_frames, config.n_mfcc, 1), np.float32)
  for a in range(0, len(clips), chunk):
    batch = np.concatenate([prepare_waveform(c, config) for c in clips[a:a + chunk]])
    out[a:a + len(batch), :, :, 0] = mfcc(batch, config)
  return out
