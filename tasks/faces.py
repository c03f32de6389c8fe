"""Step 6, faces: sample frames inside each segment, find faces with MTCNN, take the largest as the speaker.

Frames are taken at `fps` (1 per second) from each segment's start; only the first `max_frames` (10)
are analysed. A chunk of consecutive segments is handled by one decoder that walks through the
video once (seeking over long stretches with nothing to analyse, and leaving the B-frames that no
other frame refers to undecoded away from the times analysed), converts only the frames asked for,
downscaled by `scale` (x0.5) straight to RGB (the paper's BGR->RGB step happens in that
conversion), and hands them to MTCNN in batches while it decodes the next ones. Boxes are mapped
back to pixels of the source video. A segment with no face is dropped by the flow; for one with a
face, the frame at its midpoint, taken in the same pass, is written as its JPEG frame.
"""
from __future__ import annotations

import bisect
import queue
import threading
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Sequence, TypeVar

import numpy as np
from prefect import task

from modalink.config import FaceConfig
from modalink.records import FaceBox, FaceResult, MediaInfo, Segment, Video, media_paths
from modalink.memory import return_large_blocks
from modalink.storage import write_atomically
from modalink.timing import timed, usable_cores
from tasks.base import STAGED_CACHE_POLICY, MediaError, retry_unless_permanent

T = TypeVar("T")
SEEK_OVER_S = 8.0  # re-seek instead of decoding through a gap longer than this (about two keyframe intervals)
# TensorFlow threads per MTCNN call. Batches already run one per core (`_chunk_slots`), and MTCNN is
# many small ops: one thread each measured 10-15 % less time and CPU than TensorFlow's default of
# one per core (96 frames, two batches of 8 at a time: 3.15-3.51 s -> 2.77-3.10 s).
TF_THREADS_PER_CALL = 1

_detector = None
_detector_lock = threading.Lock()
# Chunks decoded and analysed at once in a process: one per core keeps the cores busy and memory flat.
_chunk_slots = threading.BoundedSemaphore(usable_cores())


def frame_times(start: float, end: float, fps: float, max_frames: int) -> list[float]:
    """Times of the frames analysed in [start, end): start, start + 1/fps, ... (at most max_frames)."""
    count = min(max_frames, max(1, int(np.ceil((end - start) * fps - 1e-9))))
    return [round(start + k / fps, 3) for k in range(count)]


def scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """Even dimensions, as video scalers produce them."""
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def just_after(at: float, times: Sequence[float], window: float) -> bool:
    """Whether `at` lies in [t, t + window) for one of the sorted `times`."""
    k = bisect.bisect_right(times, at) - 1
    return k >= 0 and at < times[k] + window


def decode_frames_at(path: str, times: Sequence[float], size: tuple[int, int],
                     skip_unused: bool = True) -> Iterator[tuple[int, np.ndarray]]:
    """`frames_at`, each frame as an RGB array of `size`."""
    return as_rgb(frames_at(path, times, skip_unused), size)


def as_rgb(frames: Iterable[tuple[T, "av.VideoFrame"]], size: tuple[int, int]) -> Iterator[tuple[T, np.ndarray]]:
    """(key, frame) pairs with each frame as an RGB array of `size`, converted once when consecutive
    keys share a frame."""
    shown, rgb = None, None
    for key, frame in frames:
        if frame is not shown:
            shown, rgb = frame, frame.reformat(width=size[0], height=size[1], format="rgb24").to_ndarray()
        yield key, rgb


def frames_at(path: str, times: Sequence[float], skip_unused: bool = True) -> Iterator[tuple[int, "av.VideoFrame"]]:
    """For each of the sorted `times` (seconds from the start of the file), the first frame shown at or
    after it, as ffmpeg's accurate `-ss` picks it: yields (index into times, frame). One decoder, one pass.

    With `skip_unused`, frames that no other frame refers to (most B-frames) are not decoded unless they
    lie just after one of the times: on H.264 that halves the decoding work, and the frames returned
    are the same (when a frame after a long gap leaves that in doubt, the time is decoded again in full).
    """
    import av

    try:
        container = av.open(path)
    except av.error.FFmpegError as exc:
        raise MediaError(f"cannot open the video: {exc}") from None
    with container:
        if not container.streams.video:
            raise MediaError("no video stream")
        stream = container.streams.video[0]
        # One thread: this decoder runs beside MTCNN, and frame threads cost 25 % more CPU in all.
        stream.thread_type = "NONE"
        origin = (container.start_time or 0) / 1_000_000  # what ffmpeg's -ss counts from
        wanted_at = [origin + t - 1e-3 for t in times]  # a frame at or after this serves that time
        rate = float(stream.average_rate or stream.guessed_rate or 30)
        window = max(0.1, 3 / rate)  # the first frame after a time comes within this, unless there is a gap
        decode_all_until = -1.0
        wanted = 0
        while wanted < len(times):
            target = wanted_at[wanted]
            container.seek(max(0, int((target + 1e-3) * 1_000_000)), backward=True)  # the keyframe at or before
            skipped: list[float] = []  # times of the frames left undecoded since then
            for packet in container.demux(stream):
                if skip_unused:
                    at = None if packet.pts is None else float(packet.pts * stream.time_base)
                    needed = at is None or at < decode_all_until or just_after(at, wanted_at, window)
                    stream.codec_context.skip_frame = "DEFAULT" if needed else "NONREF"
                    if not needed:
                        skipped.append(at)
                for frame in packet.decode():
                    if frame.time is None or frame.time < target:
                        continue
                    if any(target <= t < frame.time for t in skipped):  # a skipped frame may be the one
                        decode_all_until = frame.time
                        break
                    while wanted < len(times) and frame.time >= wanted_at[wanted]:
                        yield wanted, frame
                        wanted += 1
                    if wanted == len(times):
                        return
                    target = wanted_at[wanted]
                    skipped = [t for t in skipped if t >= target]
                    if target - frame.time > SEEK_OVER_S:
                        break  # seek over the gap
                else:
                    continue
                break  # seek again: over a gap, or back to decode a time in full
            else:
                return  # the video ended before the remaining times


def get_detector():
    """One MTCNN per worker process, loaded on first use (its weights ship inside the mtcnn package)."""
    global _detector
    with _detector_lock:
        if _detector is None:
            import tensorflow as tf
            from mtcnn import MTCNN

            return_large_blocks()
            try:
                tf.config.threading.set_intra_op_parallelism_threads(TF_THREADS_PER_CALL)
                tf.config.threading.set_inter_op_parallelism_threads(TF_THREADS_PER_CALL)
            except RuntimeError:  # TensorFlow already ran something in this process: keep its threads
                pass
            replace_in_mtcnn("mtcnn.stages.stage_pnet", "apply_scales", area_pyramid)
            replace_in_mtcnn("mtcnn.mtcnn", "standarize_batch", float32_batch)
            _detector = MTCNN(device="CPU:0")
            compile_stage_networks(_detector)
            pad_refinement_batches(_detector)
    return _detector


def compile_stage_networks(detector) -> None:
    """Run P-Net, R-Net and O-Net as TensorFlow graphs instead of eagerly, layer by Keras layer.

    The networks are small, so calling them eagerly is mostly Python and op dispatch: as graphs
    (traced once per input shape, shapes relaxed after a few) 96 frames took 2.9 s instead of 4.2 s
    on one thread, with identical boxes and confidences (`tests/test_faces.py` checks it)."""
    import tensorflow as tf

    for stage in getattr(detector, "stages", []):
        model = getattr(stage, "_model", None)
        if model is not None and not isinstance(model, (PaddedBatches, tf.types.experimental.PolymorphicFunction)):
            stage._model = tf.function(model, reduce_retracing=True)


class PaddedBatches:
    """An MTCNN stage network called on batches padded with zeros to a power of two (at least 16).

    R-Net and O-Net see one patch per candidate box, a different count on nearly every call, and
    TensorFlow's oneDNN kernels keep a compiled primitive per input shape: over 400 new frames the
    process grew from 914 to 1166 MiB and kept growing. With padding only a handful of shapes exist
    and it stayed at 924-937 MiB after the first 80 frames, in the same time, with identical boxes
    and confidences (each patch is computed on its own; `tests/test_faces.py` checks it)."""

    def __init__(self, model, least: int = 16):
        self.model, self.least = model, least

    def __call__(self, patches):
        import tensorflow as tf

        count = int(patches.shape[0])
        size = max(self.least, 1 << max(0, count - 1).bit_length())
        if size != count:
            patches = tf.concat([patches, tf.zeros((size - count, *patches.shape[1:]), patches.dtype)], 0)
        return [output[:count] for output in self.model(patches)]


def pad_refinement_batches(detector) -> None:
    """Wrap every stage after P-Net (whose input shapes are fixed by the frame size) in `PaddedBatches`."""
    for stage in list(getattr(detector, "stages", []))[1:]:
        if hasattr(stage, "_model") and not isinstance(stage._model, PaddedBatches):
            stage._model = PaddedBatches(stage._model)


def area_pyramid(images_normalized, scales_groups):
    """mtcnn's `apply_scales` with OpenCV's area resampling instead of TensorFlow's: the same pyramid
    (same sizes, values within 1e-4) in a third of the time; the profile showed it was half of MTCNN."""
    import cv2

    largest = scales_groups[int(np.argmax([group.shape[0] for group in scales_groups]))]
    images = np.asarray(images_normalized, dtype=np.float32)
    height, width = images.shape[1:3]
    levels = []
    for scale in largest:
        size = (int(width * scale), int(height * scale))
        levels.append(np.stack([cv2.resize(image, size, interpolation=cv2.INTER_AREA) for image in images]))
    return levels, largest


def float32_batch(images_raw, normalize=True, justification="center"):
    """mtcnn's `standarize_batch` in float32 instead of float64: (x - 127.5) / 128 is exact in float32
    for 8-bit pixels, and R-Net and O-Net crop in float32 anyway, so the boxes are identical; the
    float64 batch cost a third of MTCNN's time in conversions to tensors."""
    from mtcnn.utils.images import pad_stack_np

    images, shapes, padding = pad_stack_np(images_raw, justification=justification)
    if normalize:
        images = (np.asarray(images, dtype=np.float32) - np.float32(127.5)) / np.float32(128)
    return images, shapes, padding


def replace_in_mtcnn(module: str, name: str, replacement) -> bool:
    """Set `name` in mtcnn 1.x's `module` to `replacement`; another mtcnn version is left untouched."""
    import importlib

    try:
        target = importlib.import_module(module)
    except ImportError:
        return False
    if not hasattr(target, name):
        return False
    setattr(target, name, replacement)
    return True


def detect_in_frames(frames: list[np.ndarray], config: FaceConfig) -> list[list[dict]]:
    """MTCNN on a batch of equally sized frames; one list of detections per frame."""
    detector = get_detector()
    with timed("faces"):  # safe from several threads at once, and two batches keep two cores busier than one
        found = detector.detect_faces(frames if len(frames) > 1 else frames[0], min_face_size=config.min_face_size)
    return found if len(frames) > 1 else [found]


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


def batches_in_background(frames: Iterator[tuple], size: int) -> Iterator[list[tuple]]:
    """Batches of `size` decoded frames, decoded by a thread that keeps at most two batches ahead."""
    ready: queue.Queue = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce() -> None:
        batch: list = []
        try:
            with timed("frames"):
                for item in frames:
                    batch.append(item)
                    if len(batch) == size:
                        while not stop.is_set():
                            try:
                                ready.put(batch, timeout=0.2)
                                break
                            except queue.Full:
                                continue
                        batch = []
            ready.put(batch)
            ready.put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            ready.put(exc)

    worker = threading.Thread(target=produce, name="frame-decoder", daemon=True)
    worker.start()
    try:
        while (item := ready.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            if item:
                yield item
    finally:
        stop.set()
        worker.join(timeout=5)


def detect_faces_in_segments(video: Video, media: MediaInfo, segments: Sequence[Segment], config: FaceConfig,
                             dataset_dir: str | None = None, jpeg_quality: int = 2) -> list[FaceResult]:
    """One FaceResult per segment, in order: one decoding pass over the chunk, MTCNN in batches.

    With `dataset_dir`, the same pass takes each segment's midpoint frame, and those of the segments
    with a face are written there as their JPEG frames (a second decode per clip, in ffmpeg, cost
    about 10 % of the clip's CPU)."""
    face_times = [(t, k) for k, s in enumerate(segments) for t in frame_times(s.start, s.end, config.fps, config.max_frames)]
    midpoints = [(s.midpoint, k) for k, s in enumerate(segments)] if dataset_dir is not None else []
    requests = sorted([(t, k, False) for t, k in face_times] + [(t, k, True) for t, k in midpoints])
    size = scaled_size(media.width, media.height, config.scale)
    scale_x, scale_y = media.width / size[0], media.height / size[1]
    found: list[list[FaceBox]] = [[] for _ in segments]
    analysed = [0] * len(segments)
    # Encoded as soon as decoded, also for segments that turn out to have no face (about 10 ms each):
    # a few JPEGs wait for MTCNN instead of full frames, whatever the resolution. Filled by the
    # decoding thread; read once it has finished.
    jpegs: dict[int, bytes] = {}

    def frames_for_mtcnn() -> Iterator[tuple[tuple[float, int], "av.VideoFrame"]]:
        for wanted, frame in frames_at(video.path, [t for t, _, _ in requests]):
            t, k, is_midpoint = requests[wanted]
            if is_midpoint:
                jpegs[k] = encode_jpeg(frame, jpeg_quality)
            else:
                yield (t, k), frame

    with _chunk_slots:
        for batch in batches_in_background(as_rgb(frames_for_mtcnn(), size), config.batch_size):
            detections = detect_in_frames([rgb for _, rgb in batch], config)
            for ((t, k), _), in_frame in zip(batch, detections):
                analysed[k] += 1
                for detection in in_frame:
                    box = to_source_box(detection, t, scale_x, scale_y, size)
                    if detection["confidence"] >= config.min_confidence and box.w > 0 and box.h > 0:
                        found[k].append(box)
    results = [pick_active_face(boxes, n) for boxes, n in zip(found, analysed)]
    if dataset_dir is not None:
        for k, (segment, result) in enumerate(zip(segments, results)):
            if result.active is None:
                continue
            frame_path = Path(dataset_dir) / media_paths(segment).frame
            if k in jpegs:
                write_atomically(frame_path, jpegs[k])
            else:  # the video ended before the midpoint: the media step says so
                frame_path.unlink(missing_ok=True)
    return results


def encode_jpeg(frame, quality: int) -> bytes:
    """A frame as a JPEG from ffmpeg's MJPEG encoder at `quality` (ffmpeg's -q:v scale: 2 best .. 31)."""
    import av

    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height, encoder.pix_fmt = frame.width, frame.height, "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    encoder.thread_count = 1  # with slice threads the encoder leaves out its optimal Huffman tables (+12 % bytes)
    encoder.options = {"qmin": str(quality), "qmax": str(quality)}
    packets = encoder.encode(frame.reformat(format="yuvj420p")) + encoder.encode(None)
    return b"".join(bytes(packet) for packet in packets)


def detect_faces(video: Video, media: MediaInfo, segment: Segment, config: FaceConfig) -> FaceResult:
    return detect_faces_in_segments(video, media, [segment], config)[0]


def chunked(segments: Sequence[Segment], size: int) -> list[list[Segment]]:
    """Consecutive segments in groups of `size`: the unit of one face-detection task."""
    return [list(segments[i:i + size]) for i in range(0, len(segments), max(1, size))]


@task(name="detect-faces", cache_policy=STAGED_CACHE_POLICY, persist_result=True, retries=1,
      retry_condition_fn=retry_unless_permanent,
      task_run_name="faces {video.video_id}")
def detect_faces_task(video: Video, media: MediaInfo, segments: list[Segment], config: FaceConfig, dataset_dir: str,
                      jpeg_quality: int) -> list[FaceResult]:
    """Also writes the midpoint frames of the segments with a face into `dataset_dir` (left out of the
    cache key: a result cached elsewhere leaves them to the media step)."""
    return detect_faces_in_segments(video, media, segments, config, dataset_dir, jpeg_quality)
