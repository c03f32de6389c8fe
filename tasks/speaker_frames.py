"""The speaker_face stage's frames, taken in the faces stage's decoding pass and handed over on disk.

The speaker_face stage needs each segment's frames at its sample times (grey, `speaker_face.scale`) and
the `face_crop` of each detection at one of those times. The faces stage decodes the same stretch of
video just before it: with a `Handover`, its pass also takes those frames (a segment's `grey` file,
appended to as they are decoded, so a chunk's frames are never all in memory) and, once MTCNN has found
the faces, writes each segment with a face its `index` (the frames' times and size, and the face crops);
the grey frames of a segment without a face are deleted. The speaker_face stage takes both files and
deletes them; a segment without them, or whose index does not match its sample times (its faces result
came from the cache, its files were lost or are an earlier run's), has its frames decoded again. The
frames are the same either way: the same decoder, the same frames and the same conversions.

The files live in the staging folder's `.modalink/work/<video>/speaker-frames/` and the video flow clears
that folder when its stages are done; a task whose inputs come from the dataset's storage (`run.fan_out`,
a remote Dask cluster) hands nothing over.
"""
from __future__ import annotations

import dataclasses
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np

from modalink.records import FaceBox, FaceResult, MediaInfo, Segment, Video
from modalink.storage import replaced_atomically


@dataclass(frozen=True)
class FrameRequest:
    """Which frames the speaker_face stage reads: its sample times and the grey images' size."""

    fps: float
    max_frames: int
    scale: float

    def times(self, segment: Segment) -> list[float]:
        from tasks.speaker_face import sample_times

        return sample_times(segment.start, segment.end, self.fps, self.max_frames)

    def size(self, media_info: MediaInfo) -> tuple[int, int]:
        from tasks.faces_decoding import scaled_size

        return scaled_size(media_info.width, media_info.height, self.scale)


def folder(video: Video, staging_dir: str) -> Path:
    return Path(staging_dir) / ".modalink" / "work" / video.video_id / "speaker-frames"


def speaker_frame_request(config) -> FrameRequest | None:
    """The speaker_face stage's request in `config` (a Config), or None when that stage is not registered."""
    from modalink.stages import segment_stages

    if not any(stage.name == "speaker_face" for stage in segment_stages()):
        return None
    options = config.section("speaker_face")
    return FrameRequest(options.fps, options.max_frames, options.scale)


def box_row(box: FaceBox) -> tuple[float, ...]:
    return (box.x, box.y, box.w, box.h, box.confidence, box.time)


@dataclass(frozen=True)
class Handover:
    """The speaker-frames folder of one video in the staging folder, for one `FrameRequest`."""

    folder: Path
    request: FrameRequest
    fingerprint: str

    @classmethod
    def of(cls, video: Video, staging_dir: str, request: FrameRequest) -> "Handover":
        return cls(folder(video, staging_dir), request, video.fingerprint)

    @staticmethod
    def clear(video: Video, staging_dir: str) -> None:
        """Remove what is left of the video's handover (segments whose speaker_face result was cached)."""
        shutil.rmtree(folder(video, staging_dir), ignore_errors=True)

    def file(self, segment: Segment, kind: str) -> Path:
        """The segment's `grey` frames (raw bytes, one frame after the other) or its `index`."""
        return self.folder / f"{segment.name}.{kind}.{'npz' if kind == 'index' else 'raw'}"

    def check(self) -> np.ndarray:
        """What a file must say it holds: the video's fingerprint and the request."""
        return np.array([self.fingerprint, repr(dataclasses.astuple(self.request))])

    def writer(self) -> "GreyWriter":
        return GreyWriter(self)

    def put_index(self, segment: Segment, times: Sequence[float], size: tuple[int, int],
                  crops: Sequence[tuple[FaceBox, np.ndarray]]) -> None:
        """What makes the segment's grey frames readable (their times and size), and the `face_crop` of
        each of its detections at one of its sample times."""
        try:
            with replaced_atomically(self.file(segment, "index")) as partial:
                np.savez(partial, check=self.check(), times=np.array(times, dtype=np.float64), size=np.array(size),
                         boxes=np.array([box_row(box) for box, _ in crops], dtype=np.float64).reshape(-1, 6),
                         crops=np.stack([crop for _, crop in crops]) if crops else np.zeros((0, 0, 0), np.uint8))
        except OSError:  # a full disk, say: nothing is handed over, the speaker_face stage decodes
            self.discard(segment)

    def discard(self, segment: Segment) -> None:
        for kind in ("grey", "index"):
            try:
                self.file(segment, kind).unlink(missing_ok=True)
            except OSError:  # no folder to remove it from
                pass

    def take(self, segment: Segment, faces: FaceResult) -> tuple[dict[float, np.ndarray], dict[FaceBox, np.ndarray]] | None:
        """(grey frames by time, crops by detection) left for `segment`, or None; the files are deleted."""
        try:
            with np.load(self.file(segment, "index")) as index:
                if not np.array_equal(index["check"], self.check()):
                    return None
                times, (width, height) = index["times"].tolist(), index["size"].tolist()
                if times != self.request.times(segment)[:len(times)]:  # another segment of that name
                    return None
                by_row = dict(zip(map(tuple, index["boxes"].tolist()), index["crops"]))
            grey = np.fromfile(self.file(segment, "grey"), np.uint8)
            if grey.size != len(times) * width * height:
                return None
        except (OSError, ValueError, KeyError):
            return None
        finally:
            self.discard(segment)
        frames = dict(zip(times, grey.reshape(len(times), height, width)))
        return frames, {box: by_row[box_row(box)] for box in faces.faces if box_row(box) in by_row}


class GreyWriter:
    """One faces pass's grey frames, appended to their segment's file as they are decoded (a segment's
    frames are never all in memory). A file that cannot be written (a full disk) is given up: the handover
    is only a shortcut, the speaker_face stage decodes that segment's frames itself."""

    def __init__(self, handover: Handover) -> None:
        self.handover = handover
        self.files: dict[str, BinaryIO] = {}
        self.times: dict[str, list[float]] = {}
        self.failed: set[str] = set()

    def add(self, segment: Segment, time: float, image: np.ndarray) -> None:
        if segment.name in self.failed:
            return
        try:
            if segment.name not in self.files:
                path = self.handover.file(segment, "grey")
                path.parent.mkdir(parents=True, exist_ok=True)
                self.files[segment.name], self.times[segment.name] = open(path, "wb"), []
            self.files[segment.name].write(np.ascontiguousarray(image).data)
            self.times[segment.name].append(time)
        except OSError:
            self.give_up(segment)

    def give_up(self, segment: Segment) -> None:
        self.failed.add(segment.name)
        if (file := self.files.pop(segment.name, None)) is not None:
            try:
                file.close()
            except OSError:
                pass
        self.handover.discard(segment)

    def close(self, segments: Sequence[Segment]) -> None:
        for segment in segments:
            if (file := self.files.pop(segment.name, None)) is not None:
                try:
                    file.close()
                except OSError:
                    self.give_up(segment)

    def hand_over(self, segment: Segment, size: tuple[int, int], crops: Sequence[tuple[FaceBox, np.ndarray]]) -> None:
        """The segment's index, once its frames are all written; nothing when they could not be."""
        if segment.name in self.failed:
            self.handover.discard(segment)
        else:
            self.handover.put_index(segment, self.times.get(segment.name, []), size, crops)
