import os
import subprocess
import sys

import pytest

from modalink.config import AsrConfig, AudioConfig, ConfigError, GoogleOptions, WhisperOptions
from modalink.records import Span
from tasks.audio import extract_audio
from tasks.base import one_blas_thread
from tasks.clips import cut_wav
from tasks.suspect import Heard
from tasks.transcribe import (TranscriptionError, WhisperBackend, failed_transcript, resolve_whisper_model, transcribe,
                              whisper_input)
from wer import normalize, word_error_rate

from conftest import JFK_TEXT


@pytest.fixture(scope="module")
def jfk_wav(media, tmp_path_factory):
    folder = tmp_path_factory.mktemp("jfk")
    return extract_audio(str(media / "en_jfk.flac"), str(folder / "jfk.wav"), AudioConfig()).path


@pytest.mark.parametrize("reference, hypothesis, expected", [
    ("bin blue at f two now", "Bin blue at F2 now.", 0.0),
    ("set white in z three now", "Set weight in Z3, no.", 2 / 6),
    ("a b c", "", 1.0),
])
def test_word_error_rate(reference, hypothesis, expected):
    assert word_error_rate(reference, hypothesis) == pytest.approx(expected)
    assert normalize("F2!") == ["f", "two"]


def test_whisper_tiny_en_on_jfk(jfk_wav):
    result = transcribe(jfk_wav, AsrConfig(backend="whisper", language="en-US", model="tiny.en"))
    assert result.status == "ok" and result.backend == "whisper" and result.model == "tiny.en"
    assert word_error_rate(JFK_TEXT, result.text) <= 0.1


def test_whisper_input_is_what_faster_whispers_decoder_makes(jfk_wav, media, tmp_path):
    import numpy as np
    from faster_whisper.audio import decode_audio

    samples = whisper_input(jfk_wav)
    assert samples.dtype == np.float32 and np.array_equal(samples, decode_audio(jfk_wav))
    other_rate = extract_audio(str(media / "en_jfk.flac"), str(tmp_path / "8k.wav"), AudioConfig(sample_rate=8000)).path
    assert whisper_input(other_rate) == other_rate  # resampled by faster-whisper itself
    assert whisper_input(str(media / "en_jfk.flac")) == str(media / "en_jfk.flac")


def test_whisper_model_is_loaded_once(jfk_wav):
    backend = WhisperBackend(AsrConfig(backend="whisper", language="en-US"))
    assert backend.load() is backend.load() is WhisperBackend(AsrConfig(backend="whisper", language="en")).load()


def test_whisper_decodes_as_many_calls_at_once_as_configured(jfk_wav):
    """By default one call per usable core runs at once (CTranslate2 queues the others); each call on
    `asr.whisper.threads` threads."""
    from modalink.timing import usable_cores

    default = WhisperBackend(AsrConfig(backend="whisper", language="en-US")).load().model
    assert default.num_workers == usable_cores()
    three = AsrConfig(backend="whisper", language="en-US", whisper=WhisperOptions(workers=3))
    assert WhisperBackend(three).load().model.num_workers == 3


def dask_worker_environ() -> dict[str, str]:
    """What distributed's nanny sets before a worker starts (OMP_NUM_THREADS=1 and the like)."""
    import dask
    import distributed  # noqa: F401 - registers the distributed config

    return {name: str(value) for name, value in dask.config.get("distributed.nanny.pre-spawn-environ").items()}


TRANSCRIBE_IN_CHILD = """
import sys
from modalink.config import AsrConfig
from tasks.transcribe import WhisperBackend
print(WhisperBackend(AsrConfig(backend="whisper", language="en-US")).transcribe(sys.argv[1]))
"""


def test_whisper_gives_a_dask_worker_s_transcript_after_one_blas_thread(media, tmp_path):
    """Whisper's mel features are a numpy product whose last bits depend on the BLAS's threads: on an
    AMD EPYC this 1.77 s piece of a GRID clip read "Bimbleu F2 now." with two and "Bimbloo F2 now." with
    one. After `one_blas_thread` (what each video flow does) the threads runner hears what a worker hears."""
    import numpy  # noqa: F401 - loads the BLAS that the controller below is to find
    from threadpoolctl import ThreadpoolController

    audio = extract_audio(str(media / "av_grid_bbaf2n.mpg"), str(tmp_path / "audio.wav"), AudioConfig()).path
    piece = str(tmp_path / "piece.wav")
    cut_wav(audio, 0.45, 2.22, tmp_path / "piece.wav")
    env = {**{k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}, **dask_worker_environ()}
    assert env["OPENBLAS_NUM_THREADS"] == "1"
    child = subprocess.run([sys.executable, "-c", TRANSCRIBE_IN_CHILD, piece], env=env, capture_output=True,
                           text=True, check=True).stdout.strip()
    controller = ThreadpoolController()
    with controller.limit(limits=2, user_api="blas"):  # as on a 2-core machine, whatever this one has
        one_blas_thread()
        assert {lib["num_threads"] for lib in controller.select(user_api="blas").info()} == {1}
        here = WhisperBackend(AsrConfig(backend="whisper", language="en-US")).transcribe(piece)
    assert here == child and here.lower().endswith("now.")


def test_english_only_model_refuses_arabic():
    with pytest.raises(ConfigError, match="English-only"):
        WhisperBackend(AsrConfig(backend="whisper", language="ar-EG", model="tiny.en")).prepare()


def test_unknown_whisper_model_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="cannot load whisper model 'no-such-model'"):
        WhisperBackend(AsrConfig(backend="whisper", language="en", model="no-such-model")).prepare()


def test_bundled_multilingual_base_transcribes_egyptian_arabic(media, tmp_path, monkeypatch):
    monkeypatch.setenv("MODALINK_CACHE", str(tmp_path / "cache"))
    assert resolve_whisper_model("base") == str(tmp_path / "cache" / "whisper-base")
    audio = extract_audio(str(media / "ar_egy_klaam_demo.wav"), str(tmp_path / "ar.wav"), AudioConfig())
    result = transcribe(audio.path, AsrConfig(backend="whisper", language="ar-EG", model="base"))
    arabic = sum("\u0600" <= ch <= "\u06ff" for ch in result.text)
    assert result.status == "ok" and arabic >= 10  # Arabic script, not a transliteration


def test_google_success_sends_flac_and_the_language(google, jfk_wav, tmp_path):
    clip = tmp_path / "clip.wav"
    cut_wav(jfk_wav, 0.0, 3.0, clip)
    result = transcribe(str(clip), AsrConfig(google=GoogleOptions(endpoint=google.endpoint)))
    assert (result.text, result.status, result.backend) == ("مرحبا بكم", "ok", "google")
    request, = google.requests
    assert request["flac"] and request["query"]["lang"] == ["ar-EG"] and "rate=16000" in request["content_type"]


def test_google_no_words_is_empty_not_failed(google, jfk_wav):
    google.reset(transcript="")
    assert transcribe(jfk_wav, AsrConfig(google=GoogleOptions(endpoint=google.endpoint))).status == "empty"


def test_google_server_error_raises_for_a_retry(google, jfk_wav):
    google.reset(always_fail=True)
    with pytest.raises(TranscriptionError, match="google speech API"):
        transcribe(jfk_wav, AsrConfig(google=GoogleOptions(endpoint=google.endpoint)))
    flagged = failed_transcript(TranscriptionError("boom"), AsrConfig())
    assert (flagged.text, flagged.status, flagged.error) == (None, "failed", "boom")


def test_cut_wav_is_sample_exact(jfk_wav, tmp_path):
    import wave

    cut_wav(jfk_wav, 1.25, 2.5, tmp_path / "c.wav")
    with wave.open(str(tmp_path / "c.wav")) as clip:
        assert (clip.getnframes(), clip.getframerate(), clip.getnchannels()) == (20000, 16000, 1)
    assert Span(1.25, 2.5).duration == 1.25


@pytest.mark.parametrize("heard, seconds, reasons", [
    (Heard("Bin blue at F2 now."), 1.8, ()),
    (Heard("yes " * 20), 6.0, ("repeats",)),
    (Heard("and so and so and so my fellow"), 3.0, ("repeats",)),
    (Heard("a long sentence that no one could say in one short second"), 1.0, ("too_long",)),
    (Heard("set white", avg_logprob=-1.4), 1.0, ("unlikely",)),
    (Heard("thank you", no_speech_prob=0.9), 1.0, ("no_speech",)),
    (Heard(""), 1.0, ()),
])
def test_suspect_transcripts_say_why(heard, seconds, reasons):
    from modalink.config import SuspectRules
    from tasks.suspect import suspect_reasons

    assert suspect_reasons(heard, seconds, SuspectRules()) == reasons


def test_a_looping_whisper_transcript_is_flagged_and_kept(jfk_wav, tmp_path):
    """Whisper's own scores reach the record: a one-second piece of JFK read by the English-only
    model is ok; the same transcript with a strict rule is flagged, and the text is kept."""
    from modalink.config import SuspectRules

    clip = tmp_path / "clip.wav"
    cut_wav(jfk_wav, 0.0, 3.0, clip)
    fine = transcribe(str(clip), AsrConfig(backend="whisper", language="en-US", model="tiny.en"))
    assert fine.status == "ok" and fine.suspect == ()
    strict = AsrConfig(backend="whisper", language="en-US", model="tiny.en", suspect=SuspectRules(max_chars_per_s=1.0))
    flagged = transcribe(str(clip), strict)
    assert flagged.text == fine.text and flagged.suspect == ("too_long",)


def test_words_go_to_the_piece_that_holds_their_middle():
    from tasks.transcribe import HeardSegment, words_in

    heard = (HeardSegment(-0.2, 1.1, 0.01, ((0.0, 0.4, " Bin"), (0.4, 0.9, " blue"), (0.9, 1.5, " now."))),
             HeardSegment(-0.9, 1.6, 0.2, ((1.6, 2.0, " Set"), (2.0, 2.6, " white."))))
    assert words_in(heard, 0.0, 1.0, first=True) == Heard("Bin blue", avg_logprob=-0.2, compression_ratio=1.1,
                                                         no_speech_prob=0.01)
    assert words_in(heard, 1.0, 3.0, last=True) == Heard("now. Set white.", avg_logprob=-0.9, compression_ratio=1.6,
                                                        no_speech_prob=0.01)
    assert words_in(heard, 1.3, 1.7) == Heard("")
    assert words_in(heard, 1.7, 2.0, last=True).text == "Set white."  # the last piece keeps what runs past its end


@pytest.fixture(scope="module")
def conversation_pieces(av_inputs, tmp_path_factory):
    """The conversation's soundtrack, its pieces as the speakers step cuts them, and each piece's WAV clip."""
    import json

    from conftest import speech
    from modalink.config import SpeakerConfig
    from tasks.speakers import split_speakers

    folder = tmp_path_factory.mktemp("conversation-asr")
    wav, spans = speech(av_inputs / "conversation.mp4", folder)
    pieces = split_speakers("conversation", wav, spans, SpeakerConfig())
    clips = []
    for piece in pieces:
        clips.append(str(folder / f"{piece.name}.wav"))
        cut_wav(wav, piece.start, piece.end, folder / f"{piece.name}.wav")
    turns = json.loads((av_inputs / "conversation.turns.json").read_text())
    sentences = {"av_grid_bbaf2n.mpg": "bin blue at f two now", "av_grid_lwbsza.mpg": "lay white by s zero again",
                 "av_grid_swiz3n.mpg": "set white in z three now", "av_grid_id2_swwp2s.mpg": "set white with p two soon"}
    reference = " ".join(turn["words"] or sentences[turn["source_clip"]] for turn in turns)
    return wav, pieces, clips, reference


def test_pieces_cut_at_turns_are_heard_in_one_decoding(conversation_pieces, monkeypatch):
    wav, pieces, clips, reference = conversation_pieces
    stretches = {piece.turns_of for piece in pieces if piece.turns_of}
    assert stretches, "the speakers step cut the conversation at its turns"
    decoded = []
    real_decode = WhisperBackend.decode
    monkeypatch.setattr(WhisperBackend, "decode", lambda self, audio, word_timestamps=False: decoded.append(
        word_timestamps) or real_decode(self, audio, word_timestamps))
    config = AsrConfig(backend="whisper", language="en-US", model="tiny.en")
    texts = [transcribe(clip, config, piece, wav).text for piece, clip in zip(pieces, clips)]
    alone = sum(piece.turns_of is None for piece in pieces)
    assert decoded.count(True) == len(stretches) and decoded.count(False) == alone  # one decoding per stretch
    assert all(texts) and word_error_rate(reference, " ".join(texts)) <= 0.35, texts
    monkeypatch.setattr(WhisperBackend, "decode", real_decode)
    apart = AsrConfig(backend="whisper", language="en-US", model="tiny.en", whisper=WhisperOptions(turns_together=False))
    assert [transcribe(clip, apart, piece, wav).text for piece, clip in zip(pieces, clips)] == \
        [transcribe(clip, config).text for clip in clips]


def test_a_piece_after_whisper_stopped_is_heard_again_from_the_last_word(monkeypatch, tmp_path):
    """Whisper may end a stretch early after a pause: a piece that starts after its last word and got no
    word is heard again with the rest of the stretch, from that word's end."""
    import numpy as np

    from modalink.records import Segment
    from modalink.wav import WavSpan, write_wav

    soundtrack = tmp_path / "soundtrack.wav"
    with __import__("wave").open(str(soundtrack), "wb") as out:
        out.setnchannels(1), out.setsampwidth(2), out.setframerate(16000)
        out.writeframes(np.zeros(16000 * 6, np.int16).tobytes())
    word = lambda a, b, w: type("Word", (), {"start": a, "end": b, "word": w})  # noqa: E731
    segment = lambda *words: type("Segment", (), {"avg_logprob": -0.3, "compression_ratio": 1.2,  # noqa: E731
                                                  "no_speech_prob": 0.01, "words": list(words), "text": ""})
    heard_from = []

    def decode(self, audio, word_timestamps=False):
        heard_from.append(round(len(audio) / 16000, 2))
        if len(audio) == 16000 * 6:  # the whole stretch: only the first sentence
            return [segment(word(0.0, 0.5, " One"), word(0.5, 1.5, " two."))]
        return [segment(word(0.6, 1.2, " Three"), word(1.8, 2.5, " four."))]  # the rest, from 1.5 s

    monkeypatch.setattr(WhisperBackend, "decode", decode)
    config = AsrConfig(backend="whisper", language="en-US", model="tiny.en")
    backend = WhisperBackend(config)
    first, middle, last = (Segment("v", 0, j, a, b, turns_of=(0.0, 6.0)) for j, (a, b) in enumerate([(0, 2), (2, 2.9), (2.9, 6)]))
    assert backend.hear_piece(first, "unused.wav", str(soundtrack)).text == "One two."
    assert backend.hear_piece(last, "unused.wav", str(soundtrack)).text == "four."
    assert backend.hear_piece(middle, "unused.wav", str(soundtrack)).text == "Three"
    assert heard_from == [6.0, 4.5]  # the stretch once, then its rest from 1.5 s once
