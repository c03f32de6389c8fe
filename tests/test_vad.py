"""The segmenting rules of tasks/vad.py, one case per rule, then the real VAD on a real GRID clip."""
import pytest

from modalink.config import AudioConfig, VadConfig
from modalink.records import Span
from tasks.audio import extract_audio
from tasks.vad import detect_speech, segment_speech

from conftest import grid_speech_span

FRAME = 0.03


def flags(*pattern: tuple[bool, float]) -> list[bool]:
    """(is_speech, seconds) pairs -> one flag per 30 ms frame."""
    out: list[bool] = []
    for is_speech, seconds in pattern:
        out += [is_speech] * round(seconds / FRAME)
    return out


S, Q = True, False  # speech, quiet


@pytest.mark.parametrize("rule, pattern, config, spans, too_short", [
    ("speech between silences is one segment",
     [(Q, 0.3), (S, 1.2), (Q, 0.6)], {}, [(0.3, 1.5)], 0),
    ("a pause shorter than 0.3 s is merged",
     [(Q, 0.3), (S, 0.6), (Q, 0.21), (S, 0.6), (Q, 0.6)], {}, [(0.3, 1.71)], 0),
    ("a silence of 0.3 s or more splits",
     [(Q, 0.3), (S, 0.6), (Q, 0.3), (S, 0.6), (Q, 0.6)], {}, [(0.3, 0.9), (1.2, 1.8)], 0),
    ("a segment under 0.5 s is dropped and counted",
     [(Q, 0.3), (S, 0.45), (Q, 0.6), (S, 0.9), (Q, 0.3)], {}, [(1.35, 2.25)], 1),
    ("exactly 0.5 s is kept",
     [(Q, 0.3), (S, 0.51), (Q, 0.6)], {}, [(0.3, 0.81)], 0),
    ("long speech is split at its longest pause",
     [(S, 6.0), (Q, 0.15), (S, 6.0), (Q, 0.24), (S, 6.0)], {}, [(0.0, 12.15), (12.39, 18.39)], 0),
    ("continuous speech over the cap is cut into equal parts",
     [(S, 33.0)], {}, [(0.0, 11.0), (11.0, 22.0), (22.0, 33.0)], 0),
    ("the cap is configurable",
     [(S, 6.0)], {"max_segment_s": 3.0}, [(0.0, 3.0), (3.0, 6.0)], 0),
    ("min silence is configurable",
     [(S, 0.6), (Q, 0.45), (S, 0.6)], {"min_silence_s": 0.5}, [(0.0, 1.65)], 0),
    ("speech running to the end of the audio is closed",
     [(Q, 0.3), (S, 0.9)], {}, [(0.3, 1.2)], 0),
    ("no speech, no segment", [(Q, 3.0)], {}, [], 0),
])
def test_segmenting_rules(rule, pattern, config, spans, too_short):
    result = segment_speech(flags(*pattern), VadConfig(**config))
    assert [(round(s.start, 2), round(s.end, 2)) for s in result.spans] == spans, rule
    assert result.too_short == too_short, rule
    assert all(s.duration <= VadConfig(**config).max_segment_s + 1e-6 for s in result.spans)


def test_real_grid_clip_matches_its_alignment(media, tmp_path):
    truth = Span(*grid_speech_span(media))
    audio = extract_audio(str(media / "av_grid_id2_swwp2s.mpg"), str(tmp_path / "a.wav"), AudioConfig())
    result = detect_speech(audio.path, VadConfig())
    assert len(result.spans) == 1
    assert abs(result.spans[0].start - truth.start) <= 0.3
    assert abs(result.spans[0].end - truth.end) <= 0.3


def test_refined_edges_are_within_a_tenth_of_a_second_of_the_words(media, tmp_path):
    truth = Span(*grid_speech_span(media))
    audio = extract_audio(str(media / "av_grid_id2_swwp2s.mpg"), str(tmp_path / "a.wav"), AudioConfig())
    span, = detect_speech(audio.path, VadConfig()).spans
    assert abs(span.start - truth.start) <= 0.1 and abs(span.end - truth.end) <= 0.1
    assert span.start <= truth.start + 0.02 and span.end >= truth.end - 0.02  # no word cut (20 ms tolerance)
    unrefined, = detect_speech(audio.path, VadConfig(refine_edges=False)).spans
    assert truth.start - unrefined.start > 0.2  # what the 30 ms VAD frames alone give
