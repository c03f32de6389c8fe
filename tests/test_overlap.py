"""Overlapped speech (speakers.overlap, tasks/overlap.py: pyannote segmentation-3.0 on onnxruntime) on real
input: bench/make_av_inputs.py's overlap.wav (GRID talkers D, B, C, A; B starts 1.0 s before D ends, A 0.8 s
before C ends, reference spans in overlap.json) and the single-speaker clips. The step functions run on the
extracted soundtrack and the VAD's segments, not the flow."""
import json

import pytest

from modalink.config import SpeakerConfig
from tasks import overlap
from tasks.speakers import speaker_split, span_overlaps

from conftest import bench_module, speech

quality = bench_module("quality_overlap")


@pytest.fixture(scope="module")
def mixed(av_inputs, tmp_path_factory):
    wav, spans = speech(av_inputs / "overlap.wav", tmp_path_factory.mktemp("overlap"))
    reference = [(o["start"], o["end"]) for o in json.loads((av_inputs / "overlap.json").read_text())["overlaps"]]
    return wav, spans, reference


def found_in(wav, spans, config=SpeakerConfig()):
    return [o for span in spans for o in span_overlaps(wav, span, config)]


def test_both_overlaps_are_found_within_0_3_s(mixed):
    wav, spans, reference = mixed
    found = found_in(wav, spans)
    result = quality.scores(found, reference)
    assert len(reference) == 2 and all(s["hit"] for s in result["spans"]), (found, result)
    assert len(found) == 2, found  # nothing at the plain turn change B -> C
    assert result["false_s"] <= 0.2, result


@pytest.mark.parametrize("name", quality.SINGLE)
def test_one_speaker_shows_no_overlap(media, tmp_path, name):
    wav, spans = speech(media / name, tmp_path)
    assert spans and quality.total(found_in(wav, spans)) <= 0.1


def test_flag_records_the_overlap_and_keeps_the_segments(mixed):
    wav, spans, _ = mixed
    flagged = speaker_split("mix", wav, spans, SpeakerConfig(overlap="flag"))
    plain = speaker_split("mix", wav, spans, SpeakerConfig(overlap="off"))
    assert [(s.start, s.end) for s in flagged.segments] == [(s.start, s.end) for s in plain.segments]
    assert all(s.overlap_s == 0 for s in plain.segments) and plain.overlapped == 0
    found = found_in(wav, spans)
    assert sum(s.overlap_s for s in flagged.segments) == pytest.approx(quality.total(found), abs=0.01)
    assert flagged.overlapped == sum(s.overlap_s > 0 for s in flagged.segments) >= 2


def test_cut_removes_the_overlap(mixed):
    wav, spans, reference = mixed
    found = found_in(wav, spans)
    cut = speaker_split("mix", wav, spans, SpeakerConfig(overlap="cut"), min_segment_s=0.5)
    pieces = [(s.start, s.end) for s in cut.segments]
    assert quality.intersection(pieces, found) == 0, (pieces, found)
    assert quality.intersection(pieces, reference) <= 0.25, (pieces, reference)  # edges within the tolerance
    assert all(s.overlap_s == 0 for s in cut.segments) and cut.overlapped == 1 and cut.overlap_dropped == 0
    assert [s.name for s in cut.segments] == [f"0_{j}" for j in range(len(pieces))]
    # a larger minimum drops the parts left between the overlaps, and counts them
    strict = speaker_split("mix", wav, spans, SpeakerConfig(overlap="cut"), min_segment_s=3.5)
    assert strict.overlap_dropped == 3 and strict.segments == []


def test_cut_out_and_the_other_pure_functions():
    assert overlap.cut_out(0.0, 10.0, [], 0.5) == ([(0.0, 10.0)], 0)
    assert overlap.cut_out(0.0, 10.0, [(2.0, 3.0), (3.2, 4.0), (9.8, 11.0)], 0.5) == ([(0.0, 2.0), (4.0, 9.8)], 1)
    assert overlap.overlapped_seconds(1.0, 5.0, [(0.0, 1.5), (4.0, 6.0)]) == 1.5
    assert overlap.clip_to([(0.0, 1.05), (2.0, 3.0), (4.95, 6.0)], 1.0, 5.0, 0.1) == [(2.0, 3.0)]
    assert overlap.context_span(3.0, 5.0, 60.0) == (0.0, 10.0)
    assert overlap.context_span(30.0, 32.0, 60.0) == (26.0, 36.0)
    assert overlap.context_span(55.0, 58.0, 60.0) == (50.0, 60.0)
    assert overlap.context_span(20.0, 40.0, 60.0) == (17.5, 42.5)
    assert overlap.context_span(1.0, 2.0, 4.0) == (0.0, 4.0)
    assert overlap.window_starts(160000) == [0] and overlap.window_starts(1000) == [0]
    assert overlap.window_starts(16000 * 23) == [0, 80000, 160000, 16000 * 13]
    prob = overlap.overlap_probability(__import__("numpy").zeros(16000 * 12, dtype="float32"))
    assert prob.shape == (712,) and prob.max() < 0.01  # silence: no overlap; 12 s / 16.875 ms frames
