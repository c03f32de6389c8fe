"""The speakers step on real inputs: bench/make_av_inputs.py's conversation (four GRID talkers taking turns
with pauses of 0.06-0.28 s, which the VAD merges, and one talker with two sentences in a row) and the
single-speaker clips. The step function runs on the extracted soundtrack and the VAD's segments, not the flow."""
import json

import pytest

from modalink.config import SpeakerConfig
from tasks.speakers import split_speakers

from conftest import bench_module, speech

quality = bench_module("quality_speakers")


@pytest.fixture(scope="module")
def conversation(av_inputs, tmp_path_factory):
    wav, spans = speech(av_inputs / "conversation.mp4", tmp_path_factory.mktemp("conversation"))
    turns = json.loads((av_inputs / "conversation.turns.json").read_text())
    return split_speakers("conversation", wav, spans, SpeakerConfig()), turns


def test_turn_changes_are_found_within_half_a_second(conversation):
    segments, turns = conversation
    scores = quality.change_scores(segments, turns)
    assert scores["changes"] == 6 and scores["recall"] >= 0.9, (scores, segments)
    assert scores["false_cuts"] == 0, segments  # D's two sentences in a row stay together


def test_each_segment_is_one_speaker(conversation):
    segments, turns = conversation
    assert min(quality.purities(segments, turns)) >= 0.95, segments


def test_the_paper_method_misses_most_changes(conversation, av_inputs, tmp_path):
    """What the embedding method fixes: the MFCC split finds two of the six changes (both at VAD pauses)."""
    wav, spans = speech(av_inputs / "conversation.mp4", tmp_path)
    segments = split_speakers("conversation", wav, spans, SpeakerConfig(method="mfcc"))
    assert quality.change_scores(segments, conversation[1])["recall"] < 0.9


@pytest.mark.parametrize("name", quality.SINGLE)
def test_one_speaker_is_never_cut(media, tmp_path, name):
    wav, spans = speech(media / name, tmp_path)
    assert spans and len(split_speakers(name, wav, spans, SpeakerConfig())) == len(spans)
