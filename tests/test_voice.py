"""Voice cues: pitch, energy and speaking rate, on a pure tone and on real voices."""
import numpy as np
import pytest

from modalink.config import AudioConfig
from modalink.wav import read_span
from tasks.audio import extract_audio
from tasks.voice import VoiceConfig, voice_cues


def test_a_pure_tone_has_its_pitch_no_range_and_full_voicing():
    rate = 16000
    t = np.arange(2 * rate) / rate
    cues = voice_cues((0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32), rate, "one two three four", VoiceConfig())
    assert cues.pitch_median_hz == pytest.approx(180, abs=2) and cues.pitch_range_semitones < 0.2
    assert cues.voiced_share > 0.95 and cues.energy_mean_db == pytest.approx(20 * np.log10(0.3 / np.sqrt(2)), abs=0.5)
    assert (cues.words_per_s, cues.chars_per_s) == (2.0, 7.5)


def test_silence_and_no_transcript_give_no_pitch_and_no_rate():
    cues = voice_cues(np.zeros(16000, dtype=np.float32), 16000, None, VoiceConfig())
    assert cues.pitch_median_hz is None and cues.words_per_s is None


@pytest.mark.parametrize("name, low, high", [
    ("av_grid_bbaf2n.mpg", 70, 170),   # a man
    ("av_grid_lwbsza.mpg", 140, 320),  # a woman
    ("en_jfk.flac", 150, 300),         # a man speaking out (pyin: median 234 Hz)
])
def test_real_voices_have_pitch_in_their_range(media, tmp_path, name, low, high):
    wav = extract_audio(str(media / name), str(tmp_path / "a.wav"), AudioConfig()).path
    span = read_span(wav)
    cues = voice_cues(span.samples(), span.rate, "words", VoiceConfig())
    assert low <= cues.pitch_median_hz <= high, cues
    assert 0.1 < cues.voiced_share < 0.95 and cues.pitch_p10_hz < cues.pitch_median_hz < cues.pitch_p90_hz
