"""One typed configuration for the whole workflow, with the MODALINK paper's defaults.

Every step reads only its own section, so a step's cached output depends only on the
options that can change it (a new ASR backend does not re-detect faces).

Load order: defaults < config file (TOML or YAML) < command-line overrides.
"""
from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class AcquireConfig:
    format: str = "bestvideo*+bestaudio/best"  # yt-dlp: highest quality
    merge_output_format: str = "mp4"
    download_dir: str = "downloads"  # relative to the dataset root unless absolute
    use_archive: bool = True  # skip videos already downloaded
    media_extensions: tuple[str, ...] = (
        ".mp4", ".mkv", ".webm", ".mov", ".avi", ".mpg", ".mpeg", ".m4v", ".flv", ".ts",
    )


@dataclass(frozen=True)
class AudioConfig:
    sample_rate: int = 16000  # 16 kHz mono 16-bit PCM
    fallback: bool = True  # retry with error-tolerant decoding when strict decoding fails


@dataclass(frozen=True)
class VadConfig:
    aggressiveness: int = 2  # webrtcvad mode 0..3
    frame_ms: int = 30  # 10, 20 or 30
    min_silence_s: float = 0.3  # a silence this long ends a segment; shorter pauses are merged
    min_segment_s: float = 0.5  # shorter segments are dropped (counted as too_short)
    max_segment_s: float = 15.0  # longer speech is split, at its longest pause when it has one


@dataclass(frozen=True)
class SpeakerConfig:
    enabled: bool = True
    window_s: float = 1.0  # MFCC window
    hop_s: float = 0.5  # step between consecutive windows
    n_mfcc: int = 13
    use_c0: bool = False  # c0 is log energy: it dominates the cosine and hides changes of voice
    similarity_threshold: float = 0.9  # cosine similarity below this marks a speaker change
    min_piece_s: float = 0.5  # no piece shorter than this is cut off


@dataclass(frozen=True)
class FaceConfig:
    fps: float = 1.0  # frames sampled per second inside a segment
    max_frames: int = 10  # only the first N sampled frames are analysed
    scale: float = 0.5  # frames are downscaled by this factor before detection
    min_confidence: float = 0.0  # MTCNN confidence below this is ignored
    min_face_size: int = 20  # MTCNN minimum face size, in pixels of the downscaled frame
    batch_size: int = 4  # frames per MTCNN call (8: no faster here and 50-200 MiB more memory; 16: 0.4 GB more)
    chunk_segments: int = 8  # consecutive segments per face-detection task (one decoding pass each)


@dataclass(frozen=True)
class ClipConfig:
    video_codec: str = "libx264"
    preset: str = "ultrafast"  # the paper's
    crf: int = 23
    audio_codec: str = "aac"
    audio_bitrate: str = "128k"
    # ffmpeg's AAC coder: "fast" takes 60 % less CPU than ffmpeg 6's default "twoloop" and, by its
    # authors, sounds better at 128 kbit/s and above; "" leaves ffmpeg's default
    aac_coder: str = "fast"
    jpeg_quality: int = 2  # ffmpeg -q:v, 2 (best) .. 31


@dataclass(frozen=True)
class AsrConfig:
    backend: str = "google"  # see tasks.transcribe.BACKENDS
    language: str = "ar-EG"  # BCP-47
    model: str | None = None  # whisper: name or local path (default tiny.en is English-only)
    google_endpoint: str = "http://www.google.com/speech-api/v2/recognize"
    google_key: str | None = None  # None: the public key SpeechRecognition ships
    timeout_s: float = 30.0
    whisper_compute_type: str = "int8"
    whisper_beam_size: int = 5
    whisper_threads: int = 0  # 0: one per usable CPU core
    retries: int = 3  # transient failures are retried this many times
    retry_delay_s: float = 2.0  # first delay; doubles each retry


@dataclass(frozen=True)
class RunConfig:
    runner: str = "threads"  # threads | dask
    workers: int = 4  # segments processed concurrently (threads, or local Dask workers)
    dask_address: str | None = None  # tcp://scheduler:8786 of a Dask cluster; None: a local cluster
    retries: int = 2  # retries of media steps (download, decoding) on transient failure
    retry_delay_s: float = 1.0


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

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

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


def merge(config: Config, data: dict[str, Any]) -> Config:
    """A copy of `config` with the sections and options in `data` replaced (unknown names are errors)."""
    sections = {}
    for section_name, options in data.items():
        section = _pick(section_name, {f.name for f in dataclasses.fields(Config)}, "config section")
        if not isinstance(options, dict):
            raise ConfigError(f"config section [{section}] must hold options, got {options!r}")
        current = getattr(config, section)
        types = get_type_hints(type(current))
        changes = {}
        for name, value in options.items():
            option = _pick(name, set(types), f"option of [{section}]")
            changes[option] = _coerce(f"{section}.{option}", value, types[option])
        sections[section] = dataclasses.replace(current, **changes)
    return dataclasses.replace(config, **sections)


def parse_override(text: str) -> dict[str, Any]:
    """`faces.fps=2` -> {"faces": {"fps": "2"}} (values are coerced by `merge`)."""
    key, sep, value = text.partition("=")
    section, dot, option = key.strip().partition(".")
    if not sep or not dot or not option:
        raise ConfigError(f"--set takes SECTION.OPTION=VALUE, e.g. faces.fps=2; got {text!r}")
    return {section: {option: value.strip()}}


def deep_update(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for section, options in extra.items():
        base.setdefault(section, {}).update(options)
    return base


def validate(config: Config) -> None:
    from tasks.transcribe import BACKENDS

    checks = [
        (config.asr.backend in BACKENDS, f"asr.backend must be one of {sorted(BACKENDS)}, got {config.asr.backend!r}"),
        (config.vad.aggressiveness in (0, 1, 2, 3), "vad.aggressiveness must be 0, 1, 2 or 3"),
        (config.vad.frame_ms in (10, 20, 30), "vad.frame_ms must be 10, 20 or 30 (webrtcvad frame sizes)"),
        (config.audio.sample_rate in (8000, 16000, 32000, 48000), "audio.sample_rate must be 8000, 16000, 32000 or 48000 (webrtcvad rates)"),
        (0 < config.vad.min_segment_s <= config.vad.max_segment_s, "need 0 < vad.min_segment_s <= vad.max_segment_s"),
        (config.vad.min_silence_s >= 0, "vad.min_silence_s must be >= 0"),
        (config.faces.fps > 0 and config.faces.max_frames >= 1, "faces.fps must be > 0 and faces.max_frames >= 1"),
        (0 < config.faces.scale <= 1, "faces.scale must be in (0, 1]"),
        (config.faces.batch_size >= 1 and config.faces.chunk_segments >= 1,
         "faces.batch_size and faces.chunk_segments must be >= 1"),
        (-1 <= config.speakers.similarity_threshold <= 1, "speakers.similarity_threshold must be in [-1, 1]"),
        (config.speakers.window_s > 0 and config.speakers.hop_s > 0, "speakers.window_s and hop_s must be > 0"),
        (config.run.workers >= 1, "run.workers must be >= 1"),
        (config.run.runner in ("threads", "dask"), f"run.runner must be threads or dask, got {config.run.runner!r}"),
        (config.asr.retries >= 0 and config.run.retries >= 0, "retries must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


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
