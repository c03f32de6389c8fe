"""Plain dataclasses for everything that flows between steps, and the JSONL records of a dataset.

`SegmentRecord` is one line of manifest.jsonl and follows segment.schema.json: the public dataset
contract (dataset.schema.json, kept verbatim beside it) extended only by added fields, among them
`custom`, where each added stage keeps its entry. `VideoRecord` is one line of videos.jsonl.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Iterable

SCHEMA_PATH = Path(__file__).with_name("segment.schema.json")
CONTRACT_PATH = Path(__file__).with_name("dataset.schema.json")

# Why a segment found in the audio is not in the manifest: each drop is counted under one reason.
# Speech too short is the VAD's reason and a failed step's is DROP_ERROR; every other reason is
# declared by the stage that gives it (`SegmentStage.drops`).
DROP_TOO_SHORT = "too_short"
DROP_ERROR = "error"  # a stage still failed after its retries (counted only when it happens)
DROP_OVERLAP = "overlap"  # speakers.overlap = cut: a part left between overlap spans is too short


@dataclass(frozen=True)
class Video:
    """A source video on local disk, ready to process."""

    video_id: str
    source: str  # URL or path as the user gave it
    path: str  # local media file
    fingerprint: str  # changes when the file changes; part of every cache key
    info: dict[str, Any] = field(default_factory=dict)  # title, channel, upload_date, url, duration, license

    LOCAL_FIELDS: ClassVar[tuple[str, ...]] = ("path",)  # left out of cache keys: the fingerprint stands for it


@dataclass(frozen=True)
class MediaInfo:
    duration: float
    width: int
    height: int
    fps: float
    video_codec: str
    audio_codec: str
    audio_sample_rate: int
    audio_channels: int


@dataclass(frozen=True)
class Span:
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Segment:
    """A piece of speech: speech segment `speech_index`, speaker piece `piece_index` (the paper's `9_0`)."""

    video_id: str
    speech_index: int
    piece_index: int
    start: float
    end: float
    overlap_s: float = 0.0  # seconds of overlapped speech inside (speakers.overlap = flag)
    turns_of: tuple[float, float] | None = None  # the speech (start, end) cut at speaker turns into this and
    # its sibling pieces; None when the piece is all of it (the transcription stage hears the whole of it once)

    @property
    def name(self) -> str:
        return f"{self.speech_index}_{self.piece_index}"

    @property
    def segment_id(self) -> str:
        return f"{self.video_id}-{self.name}"

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def midpoint(self) -> float:
        """The time of the segment's representative frame (to the millisecond)."""
        return round(self.start + self.duration / 2, 3)


@dataclass(frozen=True)
class FaceBox:
    x: float
    y: float
    w: float
    h: float
    confidence: float
    time: float

    @property
    def area(self) -> float:
        return self.w * self.h


@dataclass(frozen=True)
class FaceResult:
    active: FaceBox | None  # the largest face: the active speaker
    faces: tuple[FaceBox, ...]  # every face found in the analysed frames
    frames_analysed: int


@dataclass(frozen=True)
class SegmentFiles:
    """A segment's clip, WAV clip and midpoint frame: paths relative to the dataset root."""

    video_clip: str
    audio_clip: str
    frame: str


def segment_files(segment: Segment) -> SegmentFiles:
    """Where a segment's files live, relative to the dataset root (the paper's file names)."""
    return SegmentFiles(
        video_clip=f"video_clips/{segment.video_id}/segment_{segment.name}.mp4",
        audio_clip=f"audio_clips/{segment.video_id}/segment_{segment.name}.wav",
        frame=f"video_frames/{segment.video_id}/frame_{segment.name}.jpg",
    )


@dataclass(frozen=True)
class Transcript:
    text: str | None
    status: str  # ok | empty | failed
    error: str | None
    backend: str
    model: str | None
    suspect: tuple[str, ...] = ()  # why the text is not to be trusted (tasks.suspect); empty: nothing found


@dataclass
class SegmentRecord:
    segment_id: str
    video_id: str
    source: str
    start: float
    end: float
    duration: float
    video_clip: str
    audio_clip: str
    frame: str
    active_face: dict[str, float]
    faces: list[dict[str, float]]
    transcript: str | None
    transcript_status: str
    transcript_error: str | None
    language: str
    asr: dict[str, str | None]
    segment: str  # the paper's id inside the video, e.g. "9_0"
    frames_analysed: int
    transcript_suspect: list[str] = field(default_factory=list)  # reasons; empty: nothing suspect
    overlap_s: float = 0.0  # seconds of overlapped speech (two voices at once) inside; 0 when none or not looked for
    custom: dict[str, Any] = field(default_factory=dict)  # one entry per added stage, by its name

    @classmethod
    def build(cls, video: Video, segment: Segment, stage_fields: dict[str, Any]) -> "SegmentRecord":
        """The record of a kept segment from the fields its stages gave (`SegmentStage.record_fields`)."""
        return cls(segment_id=segment.segment_id, video_id=video.video_id, source=video.source,
                   start=round(segment.start, 3), end=round(segment.end, 3), duration=round(segment.duration, 3),
                   segment=segment.name, overlap_s=round(segment.overlap_s, 3), **stage_fields)

    def to_dict(self) -> dict[str, Any]:
        """The manifest line; `custom` only when a stage wrote into it."""
        data = asdict(self)
        if not data["custom"]:
            del data["custom"]
        return data


@dataclass
class VideoRecord:
    video_id: str
    source: str
    status: str  # ok | failed
    error: str | None = None
    title: str | None = None
    channel: str | None = None
    upload_date: str | None = None
    url: str | None = None
    license: str | None = None
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    audio_fallback: bool = False  # audio was decoded with the error-tolerant fallback
    speech_segments: int = 0  # from VAD, before speaker splitting
    segments_found: int = 0  # pieces after speaker splitting
    segments_overlapped: int = 0  # pieces with overlapped speech (flag), or speech segments it was cut from (cut)
    segments_kept: int = 0
    segments_dropped: dict[str, int] = field(default_factory=lambda: zero_drops())  # by reason
    transcription_failed: int = 0
    transcript_suspect: int = 0  # kept segments whose transcript is flagged suspect

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def zero_drops() -> dict[str, int]:
    """A count of 0 for each drop reason a run may give: too_short, overlap, then each stage's in stage order."""
    from modalink.stages import declared_drops

    return {DROP_TOO_SHORT: 0, DROP_OVERLAP: 0, **{reason: 0 for reason in declared_drops()}}


def face_box(face: FaceBox) -> dict[str, float]:
    return {"x": round(face.x, 1), "y": round(face.y, 1), "w": round(face.w, 1), "h": round(face.h, 1),
            "confidence": round(face.confidence, 4), "time": round(face.time, 3)}


def to_json_line(record: Any) -> str:
    data = record if isinstance(record, dict) else record.to_dict() if hasattr(record, "to_dict") else asdict(record)
    return json.dumps(data, ensure_ascii=False, sort_keys=False)


MEDIA_FIELDS = ("video_clip", "audio_clip", "frame")


def parse_jsonl(text: str | None) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (text or "").splitlines() if line.strip()]


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    return parse_jsonl(path.read_text(encoding="utf-8")) if path.exists() else []


def segment_schema(stage_schemas: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """segment.schema.json, with the `custom` sub-schemas of stages that declare theirs in code."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    custom = schema["properties"]["custom"].setdefault("properties", {})
    for name, sub_schema in (stage_schemas or {}).items():
        custom.setdefault(name, sub_schema)
    return schema


@lru_cache(maxsize=8)
def _validator(schemas_json: str):
    import jsonschema

    return jsonschema.Draft202012Validator(segment_schema(json.loads(schemas_json)))


def segment_validator():
    from modalink.stages import stage_schemas

    return _validator(json.dumps(stage_schemas(), sort_keys=True))


def validate_segment(record: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when the record breaks the dataset contract."""
    segment_validator().validate(record)


def contract_errors(records: Iterable[dict[str, Any]]) -> list[str]:
    """Where records break the public dataset contract itself (dataset.schema.json)."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(json.loads(CONTRACT_PATH.read_text(encoding="utf-8")))
    return [f"{r.get('segment_id')}: {e.message}" for r in records for e in validator.iter_errors(r)]


def schema_errors(records: Iterable[dict[str, Any]]) -> list[str]:
    validator = segment_validator()
    return [f"{r.get('segment_id')}: {e.message}" for r in records for e in validator.iter_errors(r)]
