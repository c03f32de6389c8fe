"""Plain dataclasses for everything that flows between steps, and the JSONL records of a dataset.

`SegmentRecord` is one line of manifest.jsonl and follows segment.schema.json (a copy of the
public dataset contract); `VideoRecord` is one line of videos.jsonl.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

SCHEMA_PATH = Path(__file__).with_name("segment.schema.json")

# Why a segment found in the audio is not in the manifest: each drop is counted under one reason.
DROP_TOO_SHORT = "too_short"
DROP_NO_FACE = "no_face"
DROP_REASONS = (DROP_TOO_SHORT, DROP_NO_FACE)


@dataclass(frozen=True)
class Video:
    """A source video on local disk, ready to process."""

    video_id: str
    source: str  # URL or path as the user gave it
    path: str  # local media file
    fingerprint: str  # changes when the file changes; part of every cache key
    info: dict[str, Any] = field(default_factory=dict)  # title, channel, upload_date, url, duration, license


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
class SegmentMedia:
    """Paths relative to the dataset root."""

    video_clip: str
    audio_clip: str
    frame: str


def media_paths(segment: Segment) -> SegmentMedia:
    """Where a segment's files live, relative to the dataset root (the paper's file names)."""
    return SegmentMedia(
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

    @classmethod
    def build(cls, video: Video, segment: Segment, faces: FaceResult, media: SegmentMedia,
              transcript: Transcript, language: str) -> "SegmentRecord":
        assert faces.active is not None, "a segment without a face is dropped, never recorded"
        return cls(
            segment_id=segment.segment_id,
            video_id=video.video_id,
            source=video.source,
            start=round(segment.start, 3),
            end=round(segment.end, 3),
            duration=round(segment.duration, 3),
            video_clip=media.video_clip,
            audio_clip=media.audio_clip,
            frame=media.frame,
            active_face=_box(faces.active),
            faces=[_box(face) for face in faces.faces],
            transcript=transcript.text,
            transcript_status=transcript.status,
            transcript_error=transcript.error,
            language=language,
            asr={"backend": transcript.backend, "model": transcript.model},
            segment=segment.name,
            frames_analysed=faces.frames_analysed,
        )


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
    segments_kept: int = 0
    segments_dropped: dict[str, int] = field(default_factory=lambda: {reason: 0 for reason in DROP_REASONS})
    transcription_failed: int = 0


def _box(face: FaceBox) -> dict[str, float]:
    return {"x": round(face.x, 1), "y": round(face.y, 1), "w": round(face.w, 1), "h": round(face.h, 1),
            "confidence": round(face.confidence, 4), "time": round(face.time, 3)}


def to_json_line(record: Any) -> str:
    data = asdict(record) if not isinstance(record, dict) else record
    return json.dumps(data, ensure_ascii=False, sort_keys=False)


MEDIA_FIELDS = ("video_clip", "audio_clip", "frame")


def parse_jsonl(text: str | None) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (text or "").splitlines() if line.strip()]


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    return parse_jsonl(path.read_text(encoding="utf-8")) if path.exists() else []


@lru_cache(maxsize=1)
def segment_validator():
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def validate_segment(record: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when the record breaks the dataset contract."""
    segment_validator().validate(record)


def schema_errors(records: Iterable[dict[str, Any]]) -> list[str]:
    validator = segment_validator()
    return [f"{r.get('segment_id')}: {e.message}" for r in records for e in validator.iter_errors(r)]
