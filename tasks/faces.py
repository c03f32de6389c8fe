"""Step 6, faces: sample frames inside a segment, find faces with MTCNN, take the largest as the speaker.

Frames are taken at `fps` (1 per second) from the segment start; only the first `max_frames` (10)
are analysed. ffmpeg decodes just that stretch, downscales it by `scale` (x0.5) and hands the frames
over as RGB (the paper's BGR->RGB conversion happens in the decoder's pixel format). Boxes are
mapped back to pixels of the source video. A segment with no face is dropped by the flow.
"""
from __future__ import annotations

import threading
from typing import Iterable, Iterator

import numpy as np
from prefect import task

from modalink.timing import timed

from modalink.config import FaceConfig
from modalink.ffmpeg_tools import ffmpeg
from modalink.records import FaceBox, FaceResult, MediaInfo, Segment, Video
from tasks.base import CACHE_POLICY, retry_unless_permanent

_detector = None
_detector_lock = threading.Lock()


def frame_times(start: float, end: float, fps: float, max_frames: int) -> list[float]:
    """Times of the frames analysed in [start, end): start, start + 1/fps, ... (at most max_frames)."""
    count = min(max_frames, max(1, int(np.ceil((end - start) * fps - 1e-9))))
    return [round(start + k / fps, 3) for k in range(count)]


def scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """Even dimensions, as the decoder's scaler produces them."""
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def read_frames(path: str, times: list[float], size: tuple[int, int], fps: float) -> Iterator[tuple[float, np.ndarray]]:
    """Decode only [times[0], times[-1]] and yield (time, RGB frame of `size`)."""
    width, height = size
    raw = ffmpeg(
        "-ss", f"{times[0]:.3f}", "-t", f"{times[-1] - times[0] + 1 / fps:.3f}", "-i", path,
        "-map", "0:v:0", "-vf", f"fps={fps}:start_time=0,scale={width}:{height}",
        "-frames:v", str(len(times)), "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
        capture=True,
    )
    frame_bytes = width * height * 3
    for k, t in enumerate(times):
        chunk = raw[k * frame_bytes:(k + 1) * frame_bytes]
        if len(chunk) < frame_bytes:
            return
        yield t, np.frombuffer(chunk, dtype=np.uint8).reshape(height, width, 3)


def get_detector():
    """One MTCNN per worker process, loaded on first use (its weights ship inside the mtcnn package)."""
    global _detector
    with _detector_lock:
        if _detector is None:
            from mtcnn import MTCNN

            _detector = MTCNN(device="CPU:0")
    return _detector


def detect_in_frame(rgb: np.ndarray, config: FaceConfig) -> list[dict]:
    detector = get_detector()
    with _detector_lock:
        return detector.detect_faces(rgb, min_face_size=config.min_face_size)


def pick_active_face(found: Iterable[FaceBox], frames_analysed: int) -> FaceResult:
    """The largest face over all analysed frames is taken as the active speaker (ties: the earliest)."""
    faces = tuple(found)
    active = max(faces, key=lambda f: (f.area, -f.time), default=None)
    return FaceResult(active=active, faces=faces, frames_analysed=frames_analysed)


def to_source_box(detection: dict, time: float, scale_x: float, scale_y: float, frame_size: tuple[int, int]) -> FaceBox:
    """An MTCNN box in the downscaled frame, clipped to it and mapped to source-video pixels."""
    x, y, w, h = (float(v) for v in detection["box"])
    width, height = frame_size
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(width), x + w), min(float(height), y + h)
    return FaceBox(x=x0 * scale_x, y=y0 * scale_y, w=(x1 - x0) * scale_x, h=(y1 - y0) * scale_y,
                   confidence=float(detection["confidence"]), time=time)


def detect_faces(video: Video, media: MediaInfo, segment: Segment, config: FaceConfig) -> FaceResult:
    times = frame_times(segment.start, segment.end, config.fps, config.max_frames)
    size = scaled_size(media.width, media.height, config.scale)
    scale_x, scale_y = media.width / size[0], media.height / size[1]
    found: list[FaceBox] = []
    analysed = 0
    for t, rgb in read_frames(video.path, times, size, config.fps):
        analysed += 1
        for detection in detect_in_frame(rgb, config):
            box = to_source_box(detection, t, scale_x, scale_y, size)
            if detection["confidence"] >= config.min_confidence and box.w > 0 and box.h > 0:
                found.append(box)
    return pick_active_face(found, analysed)


@task(name="detect-faces", cache_policy=CACHE_POLICY, persist_result=True, retries=1,
      retry_condition_fn=retry_unless_permanent, task_run_name="faces {segment.video_id} {segment.name}")
def detect_faces_task(video: Video, media: MediaInfo, segment: Segment, config: FaceConfig) -> FaceResult:
    with timed("frames_faces"):
        return detect_faces(video, media, segment, config)
