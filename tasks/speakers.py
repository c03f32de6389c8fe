"""Step 5, speaker changes: split a speech segment where consecutive MFCC windows stop looking alike.

MFCCs (librosa) are computed once per segment on 10 ms hops; each `window_s` window (every
`hop_s`) is summarised by its mean MFCC vector, without c0 by default: c0 is log energy, and
left in it makes every pair of windows look alike (tests/test_speakers.py splices two speakers).
Where the cosine similarity of two consecutive windows falls below `similarity_threshold`, a cut is placed at the centre of the later window,
provided both sides keep at least `min_piece_s`. Pieces are named like the paper: 9_0, 9_1, ...
"""
from __future__ import annotations

import numpy as np

from modalink.config import SpeakerConfig
from modalink.records import Segment, Span, Video
from modalink.wav import read_span
from tasks.audio import ExtractedAudio
from tasks.base import step

MFCC_HOP_S = 0.010
MFCC_WINDOW_S = 0.025


def load_mfcc() -> None:
    """Import librosa's MFCC code (slow: nearly all of it is scipy.signal's import)."""
    import librosa

    librosa.feature.mfcc  # noqa: B018 - librosa imports its submodules on first attribute access


def window_similarities(samples: np.ndarray, sample_rate: int, config: SpeakerConfig) -> tuple[np.ndarray, np.ndarray]:
    """(centre time of each window after the first, cosine similarity to the window before it)."""
    import librosa

    duration = len(samples) / sample_rate
    hop = int(MFCC_HOP_S * sample_rate)
    mfcc = librosa.feature.mfcc(y=samples.astype(np.float32), sr=sample_rate, n_mfcc=config.n_mfcc,
                                hop_length=hop, n_fft=512, win_length=int(MFCC_WINDOW_S * sample_rate))
    if not config.use_c0:
        mfcc = mfcc[1:]
    frames_per_s = sample_rate / hop
    starts = np.arange(0.0, duration - config.window_s + 1e-9, config.hop_s)
    means = np.stack([mfcc[:, int(a * frames_per_s):max(int((a + config.window_s) * frames_per_s), int(a * frames_per_s) + 1)].mean(axis=1)
                      for a in starts])
    a, b = means[:-1], means[1:]
    similarity = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-9)
    return starts[1:] + config.window_s / 2, similarity


def speaker_change_cuts(samples: np.ndarray, sample_rate: int, config: SpeakerConfig) -> list[float]:
    """Cut times, in seconds from the start of `samples`."""
    duration = len(samples) / sample_rate
    if not config.enabled or duration < 2 * config.window_s:
        return []
    times, similarity = window_similarities(samples, sample_rate, config)
    cuts: list[float] = []
    for t, s in zip(times, similarity):
        last = cuts[-1] if cuts else 0.0
        if s < config.similarity_threshold and t - last >= config.min_piece_s and duration - t >= config.min_piece_s:
            cuts.append(float(t))
    return cuts


def read_samples(wav_path: str, span: Span) -> tuple[np.ndarray, int]:
    """The samples of one span as float32 in [-1, 1], and the sample rate."""
    found = read_span(wav_path, span.start, span.end)
    return found.samples(), found.rate


def split_speakers(video_id: str, wav_path: str, spans: tuple[Span, ...], config: SpeakerConfig) -> list[Segment]:
    segments = []
    for i, span in enumerate(spans):
        samples, rate = read_samples(wav_path, span)
        bounds = [span.start, *(round(span.start + c, 3) for c in speaker_change_cuts(samples, rate, config)), span.end]
        segments.extend(Segment(video_id, i, j, start, end) for j, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])))
    return segments


@step("split-speakers", timing="speaker_split", run_name="speakers {video.video_id}")
def split_speakers_task(video: Video, audio: ExtractedAudio, spans: tuple[Span, ...], config: SpeakerConfig) -> list[Segment]:
    return split_speakers(video.video_id, audio.path, spans, config)
