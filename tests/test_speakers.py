"""Speaker-change splitting: the paper's MFCC method on constructed signals, each rule shown by a case
(`MFCC` pins the method), then both methods on a real splice of two speakers."""
import dataclasses

import numpy as np
import pytest

from modalink.config import SpeakerConfig
from tasks.speakers import speaker_change_cuts

RATE = 16000
MFCC = SpeakerConfig(method="mfcc")


def voice(seconds: float, pitch: float, formants: tuple[float, ...], seed: int) -> np.ndarray:
    """A buzzy voiced sound: harmonics of `pitch` shaped by resonances at `formants`, plus a little noise."""
    t = np.arange(int(seconds * RATE)) / RATE
    signal = np.zeros_like(t)
    for k in range(1, int(4000 / pitch)):
        f = k * pitch
        gain = sum(1.0 / (1.0 + ((f - F) / 120.0) ** 2) for F in formants)
        signal += gain * np.sin(2 * np.pi * f * t)
    signal += 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * signal / np.abs(signal).max()).astype(np.float32)


SPEAKER_A = dict(pitch=110.0, formants=(700.0, 1200.0))
SPEAKER_B = dict(pitch=230.0, formants=(300.0, 2700.0))


def test_one_voice_is_not_split():
    assert speaker_change_cuts(voice(4.0, **SPEAKER_A, seed=1), RATE, MFCC) == []


def test_a_change_of_voice_is_cut_near_the_change():
    samples = np.concatenate([voice(3.0, **SPEAKER_A, seed=1), voice(3.0, **SPEAKER_B, seed=2)])
    cuts = speaker_change_cuts(samples, RATE, MFCC)
    assert len(cuts) == 1 and abs(cuts[0] - 3.0) <= 0.75


def test_a_lower_threshold_keeps_the_voices_together():
    samples = np.concatenate([voice(3.0, **SPEAKER_A, seed=1), voice(3.0, **SPEAKER_B, seed=2)])
    assert speaker_change_cuts(samples, RATE, dataclasses.replace(MFCC, similarity_threshold=-1.0)) == []


def test_no_piece_shorter_than_the_minimum():
    samples = np.concatenate([voice(0.7, **SPEAKER_B, seed=2), voice(3.0, **SPEAKER_A, seed=1)])
    config = dataclasses.replace(MFCC, min_piece_s=1.5)
    assert all(cut >= 1.5 for cut in speaker_change_cuts(samples, RATE, config))


@pytest.mark.parametrize("seconds", [0.5, 1.9])
def test_segments_shorter_than_two_windows_are_left_whole(seconds):
    samples = np.concatenate([voice(seconds / 2, **SPEAKER_A, seed=1), voice(seconds / 2, **SPEAKER_B, seed=2)])
    assert speaker_change_cuts(samples, RATE, MFCC) == []


def test_disabled_means_no_cuts():
    samples = np.concatenate([voice(3.0, **SPEAKER_A, seed=1), voice(3.0, **SPEAKER_B, seed=2)])
    assert speaker_change_cuts(samples, RATE, dataclasses.replace(MFCC, enabled=False)) == []


@pytest.mark.parametrize("method", ["mfcc", "embedding"])
def test_real_splice_of_two_speakers_is_cut_at_the_join(media, tmp_path, method):
    """4.5 s of the auto-editor narrator, then 4.5 s of JFK: one cut, at the join."""
    from modalink.config import AudioConfig
    from modalink.records import Span
    from tasks.audio import extract_audio
    from tasks.speakers import read_samples

    parts = []
    for name, start in (("noface_speech_autoeditor_example.mp4", 1.5), ("en_jfk.flac", 1.0)):
        audio = extract_audio(str(media / name), str(tmp_path / f"{name}.wav"), AudioConfig())
        parts.append(read_samples(audio.path, Span(start, start + 4.5))[0])
    cuts = speaker_change_cuts(np.concatenate(parts), RATE, SpeakerConfig(method=method))
    assert len(cuts) == 1 and abs(cuts[0] - 4.5) <= 0.5
