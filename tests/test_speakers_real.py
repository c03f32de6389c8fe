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


def test_the_screen_gives_the_cuts_of_checking_every_boundary(conversation, av_inputs, tmp_path):
    wav, spans = speech(av_inputs / "conversation.mp4", tmp_path)
    every_boundary = split_speakers("conversation", wav, spans, SpeakerConfig(screen_similarity=1.0))
    assert [(s.start, s.end) for s in conversation[0]] == [(s.start, s.end) for s in every_boundary]


def test_the_screen_embeds_no_window_of_one_speaker_on_its_own(media, tmp_path, monkeypatch):
    """en_jfk: one speaker, 11 s. Every boundary's pooled similarity is far above the screen, so no window
    is embedded on its own; checking every boundary embeds them all and cuts nothing either."""
    from tasks import speakers

    embedded = []
    window_vectors = speakers.window_vectors
    monkeypatch.setattr(speakers, "window_vectors", lambda feats, first, *rest: embedded.append(len(first)) or
                        window_vectors(feats, first, *rest))
    wav, spans = speech(media / "en_jfk.flac", tmp_path)
    screened = split_speakers("jfk", wav, spans, SpeakerConfig())
    assert sum(embedded) == 0 and len(screened) == len(spans)
    every_boundary = split_speakers("jfk", wav, spans, SpeakerConfig(screen_similarity=1.0))
    assert sum(embedded) > 20 and every_boundary == screened


def test_pooling_the_frames_output_gives_the_model_embedding(media, tmp_path):
    """On a segment exactly one window long the pooled pass sees what the windowed one sees: the model's
    `frames` output pooled through models/campplus.head.npz is its own `embedding_linear`."""
    from modalink.fbank import fbank
    from tasks import speakers

    wav, _ = speech(media / "en_jfk.flac", tmp_path)
    samples, _ = speakers.read_samples(wav, speakers.Span(2.0, 3.5))
    feats = fbank(samples, mean_normalise=False)
    first, width = speakers.window_starts(len(feats), SpeakerConfig())
    assert list(first) == [0] and width == len(feats)
    pooled = speakers.pooled_vectors(feats, first, width, SpeakerConfig())
    windowed = speakers.window_vectors(feats, first, width, SpeakerConfig())
    assert float((pooled * windowed).sum()) > 0.9999
