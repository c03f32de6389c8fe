"""Step 6, faces: sample frames inside each segment, find faces with MTCNN (or yuface: `faces.detector`),
take the largest as the speaker (the speaker_face stage, `tasks.speaker_face`, may choose another).

Frames are taken at `fps` (1 per second) from each segment's start; only the first `max_frames` (10)
are analysed. A chunk of consecutive segments is handled by one decoder that walks through the
video once (seeking over long stretches with nothing to analyse, and leaving the B-frames that no
other frame refers to undecoded away from the times analysed), converts only the frames asked for,
downscaled by `scale` (x0.5) straight to RGB (the paper's BGR->RGB step happens in that
conversion), and hands them to MTCNN in batches while it decodes the next ones. Boxes are mapped
back to pixels of the source video. A segment with no face is dropped by the flow; for one with a
face, the frame at its midpoint, taken in the same pass, is written as its JPEG frame, and the frames
the speaker_face stage reads, also taken in that pass, are left for it (`tasks.speaker_frames`).

The decoding lives in `tasks.faces_decoding`, MTCNN and what makes it faster in `tasks.faces_mtcnn`;
this module puts them together for a chunk of segments and registers the step as the first stage.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from modalink.config import FaceConfig
from modalink.records import FaceBox, FaceResult, MediaInfo, Segment, Video, face_box, segment_files
from modalink.stages import Drop, SegmentStage, register
from modalink.storage import write_atomically
from modalink.timing import usable_cores
from tasks.faces_decoding import as_rgb, batches_in_background, encode_jpeg, frames_at, grey, picture, scaled_size
from tasks.speaker_frames import FrameRequest, Handover, speaker_frame_request
from tasks import faces_mtcnn, faces_yuface
from tasks.base import release_free_heap

DETECTORS = {"mtcnn": faces_mtcnn, "yuface": faces_yuface}  # faces.detector: the module of each

DROP_NO_FACE = "no_face"
FACE, MIDPOINT, SPEAKER = 0, 1, 2  # what a frame of the decoding pass is taken for

# Chunks decoded and analysed at once in a process: one per core keeps the cores busy and memory flat.
_chunk_slots = threading.BoundedSemaphore(usable_cores())


def frame_times(start: float, end: float, fps: float, max_frames: int) -> list[float]:
    """Times of the frames analysed in [start, end): start, start + 1/fps, ... (at most max_frames)."""
    count = min(max_frames, max(1, int(np.ceil((end - start) * fps - 1e-9))))
    return [round(start + k / fps, 3) for k in range(count)]


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


def detect_faces_in_segments(video: Video, media_info: MediaInfo, segments: Sequence[Segment], config: FaceConfig,
                             staging_dir: str | None = None, handover: Handover | None = None) -> list[FaceResult]:
    """One FaceResult per segment, in order: one decoding pass over the chunk, MTCNN in batches.

    With `staging_dir`, the same pass takes each segment's midpoint frame, and those of the segments
    with a face are written there as their JPEG frames (`config.jpeg_quality`). With `handover`, it
    also takes the frames the speaker_face stage will read, and leaves them with it (`tasks.speaker_frames`)."""
    face_times = [(t, k) for k, s in enumerate(segments) for t in frame_times(s.start, s.end, config.fps, config.max_frames)]
    midpoints = [(s.midpoint, k) for k, s in enumerate(segments)] if staging_dir is not None else []
    speaker_times = [set(handover.request.times(s)) if handover else set() for s in segments]
    requests = sorted([(t, k, FACE) for t, k in face_times] + [(t, k, MIDPOINT) for t, k in midpoints]
                      + [(t, k, SPEAKER) for k, times in enumerate(speaker_times) for t in times])
    size = scaled_size(media_info.width, media_info.height, config.scale)
    scale_x, scale_y = media_info.width / size[0], media_info.height / size[1]
    found: list[list[FaceBox]] = [[] for _ in segments]
    crops: list[list[tuple[FaceBox, np.ndarray]]] = [[] for _ in segments]
    analysed = [0] * len(segments)
    # Encoded as soon as decoded, also for segments that turn out to have no face (a few ms each):
    # a few JPEGs wait for MTCNN instead of full frames, whatever the resolution. Filled by the
    # decoding thread; read once it has finished.
    jpegs: dict[int, bytes] = {}

    greys = handover.writer() if handover else None

    def frames_for_mtcnn() -> Iterator[tuple[tuple[float, int, "av.VideoFrame"], "av.VideoFrame"]]:
        try:
            for wanted, frame in frames_at(video.path, [t for t, _, _ in requests], deblock=config.deblock):
                t, k, kind = requests[wanted]
                if kind == MIDPOINT:
                    jpegs[k] = encode_jpeg(frame, config.jpeg_quality)
                elif kind == SPEAKER:
                    greys.add(segments[k], t, grey(frame, handover.request.size(media_info)))
                else:
                    yield (t, k, frame), frame
        finally:
            if greys:
                greys.close(segments)

    with _chunk_slots:
        for batch in batches_in_background(as_rgb(frames_for_mtcnn(), size), config.batch_size):
            detections = DETECTORS[config.detector].detect_in_frames([rgb for _, rgb in batch], config)
            for ((t, k, frame), _), in_frame in zip(batch, detections):
                analysed[k] += 1
                kept = []
                for detection in in_frame:
                    box = to_source_box(detection, t, scale_x, scale_y, size)
                    if detection["confidence"] >= config.min_confidence and box.w > 0 and box.h > 0:
                        kept.append(box)
                found[k].extend(kept)
                if kept and t in speaker_times[k]:
                    crops[k].extend(speaker_crops(frame, kept, media_info))
    results = [pick_active_face(boxes, n) for boxes, n in zip(found, analysed)]
    if handover is not None:
        for segment, result, taken in zip(segments, results, crops):
            if result.active is None:
                handover.discard(segment)
            else:
                greys.hand_over(segment, handover.request.size(media_info), taken)
    if staging_dir is not None:
        for k, (segment, result) in enumerate(zip(segments, results)):
            if result.active is None:
                continue
            frame_path = Path(staging_dir) / segment_files(segment).frame
            if k in jpegs:
                write_atomically(frame_path, jpegs[k])
            else:  # the video ended before the midpoint: the media step says so
                frame_path.unlink(missing_ok=True)
    return results


def speaker_crops(frame: "av.VideoFrame", boxes: Sequence[FaceBox], media_info: MediaInfo) -> list[tuple[FaceBox, np.ndarray]]:
    """The expressions stage's `face_crop` of each box, from the frame at full size in RGB."""
    from tasks.expressions import face_crop

    rgb = picture(frame, (media_info.width, media_info.height), "rgb24")
    return [(box, face_crop(rgb, box)) for box in boxes]


def detect_faces(video: Video, media_info: MediaInfo, segment: Segment, config: FaceConfig) -> FaceResult:
    return detect_faces_in_segments(video, media_info, [segment], config)[0]


@register
class FacesStage(SegmentStage):
    """Faces per chunk of segments (`faces.chunk_segments`); a segment with none is dropped. Also writes
    the midpoint frames of the segments with a face into the staging folder (a result cached
    elsewhere leaves them to the media stage)."""

    name = "faces"
    section = "faces"
    drops = (DROP_NO_FACE,)
    per_chunk = True
    timing = ""  # timed inside, as "frames" (decoding) and "faces" (MTCNN)
    packages = ("mtcnn", "tensorflow-cpu", "yuface")
    code = ("tasks.faces_decoding", "tasks.faces_mtcnn", "tasks.faces_yuface")

    def chunk_size(self, config) -> int:
        return config.faces.chunk_segments

    def preload(self, config) -> None:
        DETECTORS[config.faces.detector].get_detector()

    def options(self, config) -> tuple[FaceConfig, FrameRequest | None]:
        """Its section, and the frames to take for the speaker_face stage (decoded with the deblocking
        filter, as that stage decodes them) in the same pass."""
        return config.faces, speaker_frame_request(config) if config.faces.deblock else None

    def run_chunk(self, items, options: tuple[FaceConfig, FrameRequest | None]) -> list[FaceResult | Drop]:
        config, request = options
        first = items[0]
        handover = Handover.of(first.video, first.staging_dir, request) if request and first.shared is None else None
        try:
            found = detect_faces_in_segments(first.video, first.media_info, [item.segment for item in items], config,
                                             first.staging_dir, handover)
        finally:
            release_free_heap()  # the chunk's decoded frames, freed: given back before the next chunk's
        return [result if result.active is not None else Drop(DROP_NO_FACE) for result in found]

    def record_fields(self, result: FaceResult, options) -> dict:
        return {"active_face": face_box(result.active), "faces": [face_box(face) for face in result.faces],
                "frames_analysed": result.frames_analysed}
