"""Voice cues: prosodic signals of each kept segment's WAV clip, for annotators and samplers.

No model here says which emotion a voice carries (none that ships in a package measures usably), so
these are signals, not emotions: the pitch (F0 by YIN on 40 ms frames every 10 ms; a frame is voiced
when its cumulative mean normalised difference dips under `voice.aperiodicity` and it is loud
enough) as its median and 10th-90th percentile range, the range in semitones, the share of voiced
frames, the energy (RMS in dBFS, mean and spread over the voiced frames) and the speaking rate from
the transcript (words and characters per second of the clip).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from modalink.config import Section, register_section
from modalink.stages import SegmentStage, register
from modalink.wav import read_span

FRAME_S, HOP_S = 0.040, 0.010
SILENCE_DB = -60.0  # dBFS: quieter frames are never voiced


@dataclass(frozen=True)
class VoiceConfig(Section):
    enabled: bool = True
    fmin_hz: float = 65.0  # the pitch searched between these
    fmax_hz: float = 400.0
    voiced_db: float = -35.0  # frames quieter than this below the clip's loudest frame are not voiced
    aperiodicity: float = 0.2  # YIN's threshold: a frame whose normalised difference dips under it is voiced

    def problems(self) -> list[str]:
        return [message for ok, message in [
            (0 < self.fmin_hz < self.fmax_hz, "need 0 < voice.fmin_hz < voice.fmax_hz"),
            (0 < self.aperiodicity < 1, "voice.aperiodicity must be in (0, 1)"),
        ] if not ok]


register_section("voice", VoiceConfig)


@dataclass(frozen=True)
class VoiceCues:
    pitch_median_hz: float | None
    pitch_p10_hz: float | None
    pitch_p90_hz: float | None
    pitch_range_semitones: float | None
    voiced_share: float
    energy_mean_db: float | None
    energy_std_db: float | None
    words_per_s: float | None
    chars_per_s: float | None


def frame_rms_db(samples: np.ndarray, rate: int) -> np.ndarray:
    frame, hop = int(FRAME_S * rate), int(HOP_S * rate)
    if len(samples) < frame:
        return np.zeros(0)
    starts = np.arange(0, len(samples) - frame + 1, hop)
    power = np.array([np.mean(samples[s:s + frame] ** 2) for s in starts])
    return 10 * np.log10(power + 1e-12)


def yin(samples: np.ndarray, rate: int, config: VoiceConfig) -> tuple[np.ndarray, np.ndarray]:
    """(F0 in Hz, the dip of the cumulative mean normalised difference) per 40 ms frame every 10 ms:
    YIN's first dip under `aperiodicity` in the lag range of [fmin, fmax] (else the lowest point),
    refined by a parabola through its neighbours."""
    frame, hop = int(FRAME_S * rate), int(HOP_S * rate)
    lag_min, lag_max = int(rate / config.fmax_hz), min(int(rate / config.fmin_hz), frame - 1)
    if len(samples) < frame or lag_max <= lag_min + 1:
        return np.zeros(0), np.zeros(0)
    frames = np.lib.stride_tricks.sliding_window_view(samples.astype(np.float64), frame)[::hop]
    size = 1 << int(np.ceil(np.log2(2 * frame)))
    spectrum = np.fft.rfft(frames, size)
    correlation = np.fft.irfft(spectrum * np.conj(spectrum), size)[:, :frame]  # r(tau) inside the frame
    prefix = np.concatenate([np.zeros((len(frames), 1)), np.cumsum(frames ** 2, axis=1)], axis=1)  # E[k]
    tau = np.arange(frame)
    # d(tau) = sum_{j < W - tau} (x_j - x_{j + tau})^2 = E[W - tau] + E[W] - E[tau] - 2 r(tau)
    difference = np.maximum(prefix[:, frame - tau] + prefix[:, -1:] - prefix[:, tau] - 2 * correlation, 0.0)
    normalised = np.ones_like(difference)
    normalised[:, 1:] = difference[:, 1:] * tau[1:] / np.maximum(np.cumsum(difference[:, 1:], axis=1), 1e-12)
    window = normalised[:, lag_min:lag_max + 1]
    below = window < config.aperiodicity
    lags = np.where(below.any(axis=1), below.argmax(axis=1), window.argmin(axis=1))
    for k in range(len(lags)):  # down to the bottom of the dip
        while lags[k] + 1 < window.shape[1] and window[k, lags[k] + 1] < window[k, lags[k]]:
            lags[k] += 1
    rows = np.arange(len(lags))
    dips = window[rows, lags]
    left, right = window[rows, np.maximum(lags - 1, 0)], window[rows, np.minimum(lags + 1, window.shape[1] - 1)]
    bend = left - 2 * dips + right
    shift = np.divide(0.5 * (left - right), bend, out=np.zeros_like(bend), where=np.abs(bend) > 1e-12)
    return rate / (lags + lag_min + np.clip(shift, -1, 1)), dips


def voice_cues(samples: np.ndarray, rate: int, transcript: str | None, config: VoiceConfig) -> VoiceCues:
    seconds = len(samples) / rate
    words = re.findall(r"\w+", transcript or "")
    chars = len(re.sub(r"\s", "", transcript or ""))
    rate_words = round(len(words) / seconds, 2) if seconds > 0 and transcript else None
    rate_chars = round(chars / seconds, 2) if seconds > 0 and transcript else None
    db = frame_rms_db(samples, rate)
    if len(db) == 0:
        return VoiceCues(None, None, None, None, 0.0, None, None, rate_words, rate_chars)
    f0, dips = yin(samples, rate, config)
    n = min(len(f0), len(db))
    voiced = (db[:n] >= max(db.max() + config.voiced_db, SILENCE_DB)) & (dips[:n] < config.aperiodicity)
    pitched = f0[:n][voiced]
    energy = db[:n][voiced] if voiced.any() else db
    if len(pitched):
        p10, median, p90 = (float(v) for v in np.percentile(pitched, [10, 50, 90]))
        semitones = round(float(12 * np.log2(p90 / p10)), 2)
        pitch = (round(median, 1), round(p10, 1), round(p90, 1))
    else:
        pitch, semitones = (None, None, None), None
    return VoiceCues(*pitch, semitones, round(float(voiced.mean()), 3), round(float(energy.mean()), 2),
                     round(float(energy.std()), 2), rate_words, rate_chars)


@register
class VoiceStage(SegmentStage):
    """Prosodic signals of the WAV clip and the speaking rate of its transcript."""

    name = "voice"
    section = "voice"
    also_reads = ("audio",)  # the WAV clip is cut from the soundtrack
    needs = ("media", "transcription")
    schema = {"type": "object", "required": ["pitch_median_hz", "voiced_share", "energy_mean_db", "words_per_s"],
              "properties": {name: {"type": ["number", "null"]} for name in VoiceCues.__dataclass_fields__}}

    def run(self, item, options: VoiceConfig) -> VoiceCues | None:
        if not options.enabled:
            return None
        clip = read_span(item.file(item.results["media"].audio_clip))
        return voice_cues(clip.samples(), clip.rate, item.results["transcription"].text, options)

    def record_fields(self, result: VoiceCues | None, options) -> dict:
        return super().record_fields(result, options) if result is not None else {}
