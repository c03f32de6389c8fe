"""One typed configuration for the whole workflow, with the MODALINK paper's defaults.

A section holds what one step computes; options marked `runtime` say how it runs (retries,
timeouts, threads, batch sizes, keys) and are left out of that step's cache key, so a step's cached
output depends only on the options that can change it (`cache_view`). Options marked `secret` (API
keys) never hold their value: it lives in an environment variable of the run's process, and the
config, as recorded and as passed to flows, says only whether one is set (`SET`). Backend options sit in
sub-sections (`asr.whisper.*`, `asr.google.*`). Each section checks its own values (`problems`).
Stages added from outside register their own section (`register_section`).

Load order: defaults < config file (TOML or YAML) < command-line overrides.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping, get_type_hints

from modalink.timing import usable_cores


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says what to fix."""


def runtime(default: Any) -> Any:
    """An option that changes how a step runs, never what it computes: not part of any cache key."""
    return field(default=default, metadata={"runtime": True})


SET = "<set>"  # a secret option's value in a config: a key is set (its value is in the environment)


def secret(variable: str) -> Any:
    """A runtime option whose value is a secret (an API key), read from the environment variable
    `variable`. A value given in a config file or an override goes into that variable of this process
    (the steps read it there, `secret_value`) and the option holds `SET` instead; a config read back
    from a record holds `SET` and changes nothing."""
    return field(default=None, metadata={"runtime": True, "secret": variable})


class Section:
    """Base of every config section (and sub-section): a frozen dataclass that checks itself.
    `chosen_by` names an option that picks one of the sub-sections named in `choices`; the others
    change nothing."""

    chosen_by: ClassVar[str | None] = None
    choices: ClassVar[tuple[str, ...]] = ()

    def problems(self) -> list[str]:
        """What is wrong with these values, one message each (none: usable)."""
        return []


def sub_sections(section: Section) -> dict[str, Section]:
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section)
            if isinstance(getattr(section, f.name), Section)}


def cache_view(section: Section) -> dict[str, Any]:
    """The options of `section` that change what its step computes: the part of its cache key."""
    view = {}
    chosen = getattr(section, section.chosen_by) if section.chosen_by else None
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if f.metadata.get("runtime") or (chosen is not None and f.name in section.choices and f.name != chosen):
            continue
        view[f.name] = cache_view(value) if isinstance(value, Section) else value
    return view


def secret_value(section: Section, name: str) -> str | None:
    """The value of secret option `name` of `section`: its environment variable (None: not set)."""
    return os.environ.get(section.__dataclass_fields__[name].metadata["secret"]) or None


def secret_variables() -> tuple[str, ...]:
    """The environment variables of every secret option of the config (its registered sections too)."""
    return _secret_variables(tuple(_registered_sections.items()))


@functools.cache
def _secret_variables(registered: tuple) -> tuple[str, ...]:
    def variables(section: Section) -> list[str]:
        found = []
        for f in dataclasses.fields(section):
            if f.metadata.get("secret"):
                found.append(f.metadata["secret"])
            elif isinstance(getattr(section, f.name), Section):
                found.extend(variables(getattr(section, f.name)))
        return found

    return tuple(name for section in Config().sections().values() for name in variables(section))


def recorded(section: Section) -> dict[str, Any]:
    """`section` as a dict, a secret option as `SET` when a value is set for it (given, or in its
    environment variable) and None otherwise."""
    view = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if isinstance(value, Section):
            value = recorded(value)
        elif f.metadata.get("secret"):
            value = SET if value is not None or os.environ.get(f.metadata["secret"]) else None
        view[f.name] = value
    return view


@dataclass(frozen=True)
class AcquireConfig(Section):
    format: str = "bestvideo*+bestaudio/best"  # yt-dlp: highest quality
    merge_output_format: str = "mp4"
    download_dir: str = "downloads"  # relative to the dataset root unless absolute
    use_archive: bool = True  # skip videos already downloaded
    media_extensions: tuple[str, ...] = (
        ".mp4", ".mkv", ".webm", ".mov", ".avi", ".mpg", ".mpeg", ".m4v", ".flv", ".ts",
    )


@dataclass(frozen=True)
class AudioConfig(Section):
    sample_rate: int = 16000  # 16 kHz mono 16-bit PCM
    fallback: bool = True  # retry with error-tolerant decoding when strict decoding fails

    def problems(self) -> list[str]:
        return [] if self.sample_rate in (8000, 16000, 32000, 48000) else [
            "audio.sample_rate must be 8000, 16000, 32000 or 48000 (webrtcvad rates)"]


@dataclass(frozen=True)
class VadConfig(Section):
    aggressiveness: int = 2  # webrtcvad mode 0..3
    frame_ms: int = 30  # 10, 20 or 30
    min_silence_s: float = 0.3  # a silence this long ends a segment; shorter pauses are merged
    min_segment_s: float = 0.5  # shorter segments are dropped (counted as too_short)
    max_segment_s: float = 15.0  # longer speech is split, at its longest pause when it has one
    refine_edges: bool = True  # move each segment's start and end onto 10 ms frames of audio energy

    def problems(self) -> list[str]:
        return [message for ok, message in [
            (self.aggressiveness in (0, 1, 2, 3), "vad.aggressiveness must be 0, 1, 2 or 3"),
            (self.frame_ms in (10, 20, 30), "vad.frame_ms must be 10, 20 or 30 (webrtcvad frame sizes)"),
            (0 < self.min_segment_s <= self.max_segment_s, "need 0 < vad.min_segment_s <= vad.max_segment_s"),
            (self.min_silence_s >= 0, "vad.min_silence_s must be >= 0"),
        ] if not ok]


SPEAKER_METHODS = ("embedding", "mfcc")
OVERLAP_MODES = ("flag", "cut", "off")


@dataclass(frozen=True)
class SpeakerConfig(Section):
    enabled: bool = True
    method: str = "embedding"  # embedding (CAM++, models/campplus.onnx) | mfcc (the paper's)
    embedding_window_s: float = 1.5  # embedding: window compared on each side of a candidate change
    embedding_hop_s: float = 0.25  # embedding: step between windows (and between candidate changes)
    change_threshold: float = 0.15  # embedding: cosine of the two sides below this (at a local minimum) is a change
    screen_similarity: float = 0.45  # embedding: above this in one pass over the segment, a boundary is no change (1: check all)
    pause_radius_s: float = 0.4  # embedding: a change moves to the quietest point this close
    threads: int = runtime(1)  # onnxruntime threads for CAM++ and the overlap model (1: the same bits on every machine)
    overlap: str = "flag"  # overlapped speech (segmentation-3.0): flag (count its seconds) | cut (remove it) | off
    overlap_threshold: float = 0.4  # a frame is overlapped where the model's overlap probability is above this
    overlap_min_s: float = 0.1  # shorter overlap spans are ignored
    window_s: float = 1.0  # MFCC window
    hop_s: float = 0.5  # step between consecutive windows
    n_mfcc: int = 13
    use_c0: bool = False  # c0 is log energy: it dominates the cosine and hides changes of voice
    similarity_threshold: float = 0.9  # cosine similarity below this marks a speaker change
    min_piece_s: float = 0.5  # no piece shorter than this is cut off

    def problems(self) -> list[str]:
        return [message for ok, message in [
            (-1 <= self.similarity_threshold <= 1, "speakers.similarity_threshold must be in [-1, 1]"),
            (self.window_s > 0 and self.hop_s > 0, "speakers.window_s and hop_s must be > 0"),
            (self.method in SPEAKER_METHODS, f"speakers.method must be one of {list(SPEAKER_METHODS)}, got {self.method!r}"),
            (self.embedding_window_s >= 0.1 and 0 < self.embedding_hop_s <= self.embedding_window_s,
             "need speakers.embedding_window_s >= 0.1 and 0 < speakers.embedding_hop_s <= embedding_window_s"),
            (-1 <= self.change_threshold <= 1, "speakers.change_threshold must be in [-1, 1]"),
            (self.pause_radius_s >= 0 and self.min_piece_s >= 0, "speakers.pause_radius_s and min_piece_s must be >= 0"),
            (self.threads >= 1, "speakers.threads must be >= 1"),
            (self.overlap in OVERLAP_MODES, f"speakers.overlap must be one of {list(OVERLAP_MODES)}, got {self.overlap!r}"),
            (0 < self.overlap_threshold < 1, "speakers.overlap_threshold must be in (0, 1)"),
            (self.overlap_min_s >= 0, "speakers.overlap_min_s must be >= 0"),
        ] if not ok]


@dataclass(frozen=True)
class FaceConfig(Section):
    detector: str = "mtcnn"  # mtcnn | yuface (libfacedetection; QUALITY.md compares them)
    fps: float = 1.0  # frames sampled per second inside a segment
    max_frames: int = 10  # only the first N sampled frames are analysed
    scale: float = 0.5  # frames are downscaled by this factor before detection
    min_confidence: float = 0.0  # MTCNN confidence below this is ignored
    min_face_size: int = 20  # MTCNN minimum face size, in pixels of the downscaled frame
    deblock: bool = True  # decode the analysed frames with the codec's deblocking filter (false: about a quarter less decoding, slightly different faces; BENCHMARKS.md)
    jpeg_quality: int = 2  # the midpoint frame's JPEG (written by this step), ffmpeg -q:v, 2 (best) .. 31
    batch_size: int = runtime(4)  # frames per MTCNN call; the faces found do not depend on it
    chunk_segments: int = runtime(8)  # consecutive segments per face-detection task (one decoding pass each)

    def problems(self) -> list[str]:
        return [message for ok, message in [
            (self.detector in ("mtcnn", "yuface"), f"faces.detector must be mtcnn or yuface, got {self.detector!r}"),
            (self.fps > 0 and self.max_frames >= 1, "faces.fps must be > 0 and faces.max_frames >= 1"),
            (0 < self.scale <= 1, "faces.scale must be in (0, 1]"),
            (1 <= self.jpeg_quality <= 31, "faces.jpeg_quality must be 1 .. 31 (ffmpeg -q:v)"),
            (self.batch_size >= 1 and self.chunk_segments >= 1, "faces.batch_size and faces.chunk_segments must be >= 1"),
        ] if not ok]


@dataclass(frozen=True)
class ClipConfig(Section):
    video_codec: str = "libx264"
    preset: str = "ultrafast"  # the paper's
    crf: int = 23
    audio_codec: str = "aac"
    audio_bitrate: str = "128k"
    aac_coder: str = "fast"  # ffmpeg's AAC coder; "" leaves ffmpeg's default


@dataclass(frozen=True)
class WhisperOptions(Section):
    compute_type: str = "int8"
    beam_size: int = 5
    turns_together: bool = True  # pieces cut at speaker turns: heard in one decoding of their speech (False: each clip alone)
    threads: int = runtime(1)  # CTranslate2 threads per call (0: one per usable CPU core)
    workers: int = runtime(0)  # calls decoded at once by one loaded model (0: one per usable CPU core)

    def problems(self) -> list[str]:
        return [message for ok, message in [
            (self.beam_size >= 1, "asr.whisper.beam_size must be >= 1"),
            (self.threads >= 0, "asr.whisper.threads must be >= 0"),
            (self.workers >= 0, "asr.whisper.workers must be >= 0"),
        ] if not ok]


@dataclass(frozen=True)
class GoogleOptions(Section):
    endpoint: str = "http://www.google.com/speech-api/v2/recognize"
    key: str | None = secret("MODALINK_GOOGLE_KEY")  # None: the public key SpeechRecognition ships
    key_secret: str | None = runtime(None)  # name of a Prefect Secret block holding the key (wins over key)
    timeout_s: float = runtime(30.0)

    def problems(self) -> list[str]:
        return [] if self.timeout_s > 0 else ["asr.google.timeout_s must be > 0"]


@dataclass(frozen=True)
class SuspectRules(Section):
    """When a transcript is flagged suspect (its text is kept)."""

    max_repeats: int = 3  # the same word n-gram (n <= 4) this many times back to back
    max_compression_ratio: float = 2.4  # Whisper's own hallucination threshold, on the text
    max_chars_per_s: float = 25.0  # characters (no spaces) per second of the clip
    min_avg_logprob: float = -1.0  # Whisper's log-probability threshold
    max_no_speech_prob: float = 0.6  # Whisper's no-speech threshold

    def problems(self) -> list[str]:
        return [message for ok, message in [
            (self.max_repeats >= 2, "asr.suspect.max_repeats must be >= 2"),
            (self.max_chars_per_s > 0 and self.max_compression_ratio > 0,
             "asr.suspect.max_chars_per_s and max_compression_ratio must be > 0"),
        ] if not ok]


@dataclass(frozen=True)
class AsrConfig(Section):
    """Transcription; `backend` names one of the backend sub-sections (`choices`), which hold that
    backend's options; `suspect` says when a transcript is flagged."""

    chosen_by: ClassVar[str | None] = "backend"
    choices: ClassVar[tuple[str, ...]] = ("google", "whisper")

    backend: str = "google"
    language: str = "ar-EG"  # BCP-47
    model: str | None = None  # whisper: name or local path (default tiny.en is English-only)
    whisper: WhisperOptions = field(default_factory=WhisperOptions)
    google: GoogleOptions = field(default_factory=GoogleOptions)
    suspect: SuspectRules = field(default_factory=SuspectRules)
    retries: int = runtime(3)  # transient failures are retried this many times
    retry_delay_s: float = runtime(2.0)  # first delay; doubles each retry

    @classmethod
    def backends(cls) -> tuple[str, ...]:
        return cls.choices

    @property
    def options(self) -> Section:
        """The chosen backend's own sub-section."""
        return getattr(self, self.backend)

    def problems(self) -> list[str]:
        return [message for ok, message in [
            (self.backend in self.backends(),
             f"asr.backend must be one of {list(self.backends())}, got {self.backend!r}"),
            (self.retries >= 0, "asr.retries must be >= 0"),
        ] if not ok]


@dataclass(frozen=True)
class RunConfig(Section):
    """How a run is carried out; nothing here changes a result."""

    runner: str = runtime("threads")  # threads | dask
    workers: int = runtime(4)  # segments processed concurrently (threads, or local Dask workers)
    dask_address: str | None = runtime(None)  # tcp://scheduler:8786 of a Dask cluster; None: a local cluster
    retries: int = runtime(2)  # retries of media steps (download, decoding) on transient failure
    retry_delay_s: float = runtime(1.0)
    parallel_videos: int = runtime(0)  # videos processed at once in this run; 0: one per 2 usable cores (at least 1)
    fan_out: str | None = runtime(None)  # FLOW/DEPLOYMENT that runs each video's flow on a work pool's workers
    share_media: str = runtime("auto")  # auto | yes | no: inputs and outputs through the dataset's storage
    lease_timeout_s: float = runtime(120.0)  # a fanned-out video whose worker is silent this long is run again

    def problems(self) -> list[str]:
        return [message for ok, message in [
            (self.workers >= 1, "run.workers must be >= 1"),
            (self.runner in ("threads", "dask"), f"run.runner must be threads or dask, got {self.runner!r}"),
            (self.retries >= 0, "run.retries must be >= 0"),
            (self.parallel_videos >= 0, "run.parallel_videos must be >= 0 (0: from the cores)"),
            (self.share_media in ("auto", "yes", "no"), f"run.share_media must be auto, yes or no, got {self.share_media!r}"),
            (self.fan_out is None or "/" in self.fan_out, f"run.fan_out must be FLOW/DEPLOYMENT, got {self.fan_out!r}"),
            (self.lease_timeout_s > 0, "run.lease_timeout_s must be > 0"),
        ] if not ok]

    def videos_at_once(self) -> int:
        """`parallel_videos`, or one video per 2 usable cores: one video flow keeps 1.5-2 cores busy
        (BENCHMARKS.md, Throughput)."""
        return self.parallel_videos or max(1, usable_cores() // 2)

    def segments_elsewhere(self) -> bool:
        """Whether segment tasks may run where the video flow's folders are not: on a remote Dask
        cluster (`share_media` auto), or as `share_media` says."""
        if self.share_media != "auto":
            return self.share_media == "yes"
        return self.runner == "dask" and bool(self.dask_address)


# Sections of stages added from outside the core (name -> section class), see `register_section`.
_registered_sections: dict[str, type[Section]] = {}


@dataclass(frozen=True)
class Config:
    acquire: AcquireConfig = field(default_factory=AcquireConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    speakers: SpeakerConfig = field(default_factory=SpeakerConfig)
    faces: FaceConfig = field(default_factory=FaceConfig)
    clips: ClipConfig = field(default_factory=ClipConfig)
    asr: AsrConfig = field(default_factory=AsrConfig)
    run: RunConfig = field(default_factory=RunConfig)
    added: Mapping[str, Section] = field(default_factory=dict)  # registered sections, by name

    CORE: ClassVar[tuple[str, ...]] = ("acquire", "audio", "vad", "speakers", "faces", "clips", "asr", "run")

    def __post_init__(self) -> None:
        missing = {name: cls() for name, cls in _registered_sections.items() if name not in self.added}
        if missing:
            object.__setattr__(self, "added", {**self.added, **missing})

    def section(self, name: str) -> Section:
        return getattr(self, name) if name in self.CORE else self.added[name]

    def sections(self) -> dict[str, Section]:
        return {name: self.section(name) for name in (*self.CORE, *sorted(self.added))}

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Every option by section, secret ones as `SET` or None (`recorded`): what runs record and pass on."""
        return {name: recorded(section) for name, section in self.sections().items()}

    def cache_view(self) -> dict[str, dict[str, Any]]:
        """Every option that changes a result, by section."""
        return {name: cache_view(section) for name, section in self.sections().items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Config":
        return merge(cls(), data or {})

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> "Config":
        config = cls()
        if path is not None:
            config = merge(config, read_config_file(Path(path)))
        if overrides:
            config = merge(config, overrides)
        validate(config)
        return config


def register_section(name: str, section: type[Section]) -> None:
    """Make `[name]` a config section of its own (for a stage added from outside the core)."""
    if name in Config.CORE or name == "added":
        raise ValueError(f"{name!r} is a core config section")
    _registered_sections[name] = section


def read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file must be .toml, .yaml or .yml: {path}")
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"cannot parse {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold sections such as [vad] or [asr]")
    return data


# Options that moved, with where they are now: named in the error, so old config files are easy to fix.
MOVED = {"asr.google_endpoint": "asr.google.endpoint", "asr.google_key": "asr.google.key",
         "asr.timeout_s": "asr.google.timeout_s", "asr.whisper_compute_type": "asr.whisper.compute_type",
         "asr.whisper_beam_size": "asr.whisper.beam_size", "asr.whisper_threads": "asr.whisper.threads",
         "clips.jpeg_quality": "faces.jpeg_quality"}


def merge(config: Config, data: dict[str, Any]) -> Config:
    """A copy of `config` with the sections and options in `data` replaced (unknown names are errors)."""
    core, added = {}, dict(config.added)
    for section_name, options in data.items():
        name = _pick(section_name, set(config.sections()), "config section")
        merged = _merge_section(name, config.section(name), options)
        if name in Config.CORE:
            core[name] = merged
        else:
            added[name] = merged
    return dataclasses.replace(config, **core, added=added)


def _merge_section(path: str, current: Section, options: Any) -> Section:
    if not isinstance(options, dict):
        raise ConfigError(f"config section [{path}] must hold options, got {options!r}")
    types = get_type_hints(type(current))
    fields = {f.name: f for f in dataclasses.fields(current)}
    changes = {}
    for name, value in options.items():
        if f"{path}.{name}" in MOVED:
            raise ConfigError(f"{path}.{name} is now {MOVED[path + '.' + name]}")
        option = _pick(name, set(fields), f"option of [{path}]")
        inner = getattr(current, option)
        variable = fields[option].metadata.get("secret")
        if isinstance(inner, Section):
            changes[option] = _merge_section(f"{path}.{option}", inner, value)
        elif variable:
            changes[option] = _take_secret(variable, value)
        else:
            changes[option] = _coerce(f"{path}.{option}", value, types[option])
    return dataclasses.replace(current, **changes)


def _take_secret(variable: str, value: Any) -> str | None:
    """A secret option's value moved into its environment variable; what the option then holds."""
    if value is None or value == "" or (isinstance(value, str) and value.lower() in ("none", "null")):
        return None
    if value == SET:  # a recorded config: the value, if any, is already in the environment
        return SET
    os.environ[variable] = str(value)
    return SET


def parse_override(text: str) -> dict[str, Any]:
    """`faces.fps=2` -> {"faces": {"fps": "2"}}; `asr.whisper.beam_size=1` nests one level more
    (values are coerced by `merge`)."""
    key, sep, value = text.partition("=")
    names = [name.strip() for name in key.split(".")]
    if not sep or len(names) < 2 or not all(names):
        raise ConfigError(f"--set takes SECTION.OPTION=VALUE, e.g. faces.fps=2; got {text!r}")
    nested: Any = value.strip()
    for name in reversed(names):
        nested = {name: nested}
    return nested


def deep_update(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for name, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(name), dict):
            deep_update(base[name], value)
        else:
            base[name] = value
    return base


def validate(config: Config) -> None:
    """Raise ConfigError with the first problem that any section (or sub-section) reports."""
    def problems(section: Section) -> list[str]:
        return [*section.problems(), *(p for inner in sub_sections(section).values() for p in problems(inner))]

    for section in config.sections().values():
        if found := problems(section):
            raise ConfigError(found[0])


def _pick(name: str, known: set[str], what: str) -> str:
    if name in known:
        return name
    close = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(known))})"
    raise ConfigError(f"unknown {what} {name!r}{hint}")


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    kinds = str(annotation)
    try:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and "None" in kinds):
            if "None" not in kinds:
                raise ValueError("may not be empty")
            return None
        if annotation is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError("expected true or false")
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if annotation is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("expected a whole number")
            return int(value)
        if annotation is float:
            return float(value)
        if kinds.startswith("tuple"):
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(item).strip() for item in items if str(item).strip())
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad value for {key}: {value!r} ({exc})") from None
