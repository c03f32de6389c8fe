"""Step 6, faces: the decoding half. The frames the face step analyses, taken from the video in one pass.

`frames_at` walks a chunk of the video with one decoder, seeking over long stretches with nothing to
analyse and leaving the B-frames that no other frame refers to undecoded away from the times
analysed; `as_rgb` converts only the frames asked for, downscaled, straight to RGB (the paper's
BGR->RGB step happens in that conversion); `grey` takes a frame's luma plane, downscaled, as a grey
image; `batches_in_background` decodes on a thread of its own while MTCNN works on the batch before;
`encode_jpeg` writes a segment's midpoint frame. Frames are taken as shown: a display rotation (a
phone's portrait video) is applied, as ffmpeg applies it to the clips; a packet that does not decode
(damaged data) is skipped, as ffmpeg skips it.
"""
from __future__ import annotations

import bisect
import queue
import threading
from fractions import Fraction
from typing import Iterable, Iterator, Sequence, TypeVar

import numpy as np

from modalink.timing import timed
from tasks.base import MediaError

T = TypeVar("T")
SEEK_OVER_S = 8.0  # re-seek instead of decoding through a gap longer than this (about two keyframe intervals)
# 8-bit YUV formats whose first plane is the luma; `grey` reads it directly.
LUMA_FIRST = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "yuv440p", "yuvj440p",
              "yuv411p", "yuva420p", "nv12", "nv21"}
# Limited-range luma (16..235) to full-range grey levels (0..255), as swscale's gray conversion maps it.
LIMITED_TO_FULL = np.clip(np.round((np.arange(256) - 16) * 255 / 219), 0, 255).astype(np.uint8)


def scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """Even dimensions, as video scalers produce them."""
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def just_after(at: float, times: Sequence[float], window: float) -> bool:
    """Whether `at` lies in [t, t + window) for one of the sorted `times`."""
    k = bisect.bisect_right(times, at) - 1
    return k >= 0 and at < times[k] + window


def decode_frames_at(path: str, times: Sequence[float], size: tuple[int, int],
                     skip_unused: bool = True, deblock: bool = True) -> Iterator[tuple[int, np.ndarray]]:
    """`frames_at`, each frame as an RGB array of `size`."""
    return as_rgb(frames_at(path, times, skip_unused, deblock), size)


def as_rgb(frames: Iterable[tuple[T, "av.VideoFrame"]], size: tuple[int, int]) -> Iterator[tuple[T, np.ndarray]]:
    """(key, frame) pairs with each frame as an RGB array of `size`, converted once when consecutive
    keys share a frame."""
    shown, rgb = None, None
    for key, frame in frames:
        if frame is not shown:
            shown, rgb = frame, picture(frame, size, "rgb24")
        yield key, rgb


def quarter_turns(frame: "av.VideoFrame") -> int:
    """Counter-clockwise quarter turns that show the frame upright (its display matrix's rotation)."""
    return round((frame.rotation or 0) / 90) % 4


def shown_size(frame: "av.VideoFrame") -> tuple[int, int]:
    """(width, height) of the frame as shown."""
    return (frame.height, frame.width) if quarter_turns(frame) % 2 else (frame.width, frame.height)


def picture(frame: "av.VideoFrame", size: tuple[int, int], format: str) -> np.ndarray:
    """The frame as shown (its display rotation applied) at `size` (width, height as shown), as an
    array in pixel `format` ("rgb24", "gray")."""
    turns = quarter_turns(frame)
    width, height = size if turns % 2 == 0 else size[::-1]
    array = frame.reformat(width=width, height=height, format=format).to_ndarray()
    return np.ascontiguousarray(np.rot90(array, turns)) if turns else array


def grey(frame: "av.VideoFrame", size: tuple[int, int]) -> np.ndarray:
    """A frame as shown, as a grey image of `size` (width, height as shown; uint8, full range): its
    luma plane, area-resized, its display rotation applied. A frame in any other format goes through
    swscale's gray conversion."""
    import cv2

    turns = quarter_turns(frame)
    width, height = size if turns % 2 == 0 else size[::-1]
    if frame.format.name not in LUMA_FIRST:
        image = frame.reformat(width=width, height=height, format="gray").to_ndarray()
    else:
        plane = frame.planes[0]
        luma = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:frame.height, :frame.width]
        resized = cv2.resize(luma, (width, height), interpolation=cv2.INTER_AREA)
        full_range = frame.format.name.startswith("yuvj") or frame.color_range == 2  # AVCOL_RANGE_JPEG
        image = resized if full_range else cv2.LUT(resized, LIMITED_TO_FULL)
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


def square_face(rgb: np.ndarray, box, margin: float, size: int) -> np.ndarray:
    """The face `box` (source pixels) made square and grown by `margin` px on each side (zeros past the
    frame's edges), grey by BT.601 weights (as OpenCV's), resized to `size` x `size` uint8."""
    import cv2

    side = max(box.w, box.h) + 2 * margin
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
    width = int(round(side))
    crop = np.zeros((width, width), dtype=np.float32)
    h, w = rgb.shape[:2]
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x0 + width), min(h, y0 + width)
    if sx1 > sx0 and sy1 > sy0:
        part = rgb[sy0:sy1, sx0:sx1]  # only the face's pixels are converted to grey
        crop[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = part[..., 0] * 0.299 + part[..., 1] * 0.587 + part[..., 2] * 0.114
    return cv2.resize(np.round(crop).astype(np.uint8), (size, size))


def frames_at(path: str, times: Sequence[float], skip_unused: bool = True,
              deblock: bool = True) -> Iterator[tuple[int, "av.VideoFrame"]]:
    """For each of the sorted `times` (seconds from the start of the file), the first frame shown at or
    after it, as ffmpeg's accurate `-ss` picks it: yields (index into times, frame). One decoder, one pass.

    With `skip_unused`, frames that no other frame refers to (most B-frames) are not decoded unless they
    lie just after one of the times: on H.264 that halves the decoding work, and the frames returned
    are the same (when a frame after a long gap leaves that in doubt, the time is decoded again in full).

    Without `deblock`, the decoder skips its in-loop deblocking filter (H.264, HEVC: ffmpeg's
    skip_loop_filter): about a quarter less decoding work for the face step's frames, frames within a
    few grey levels of the filtered ones (BENCHMARKS.md); decoders without such a filter ignore it.
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
        # One thread: this decoder runs beside MTCNN, and frame threads cost more CPU in all (BENCHMARKS.md).
        stream.thread_type = "NONE"
        if not deblock:
            stream.codec_context.options = {"skip_loop_filter": "all"}
        origin = (container.start_time or 0) / 1_000_000  # what ffmpeg's -ss counts from
        wanted_at = [origin + t - 1e-3 for t in times]  # a frame at or after this serves that time
        rate = float(stream.average_rate or stream.guessed_rate or 30)
        window = 1.5 / rate  # the first frame after a time comes within one frame interval, unless there is a gap
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
                for frame in decoded(packet):
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


def decoded(packet: "av.Packet") -> list["av.VideoFrame"]:
    """The frames a packet completes; none when its data does not decode."""
    import av

    try:
        return packet.decode()
    except av.error.InvalidDataError:
        return []


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


def encode_jpeg(frame, quality: int) -> bytes:
    """A frame as a JPEG from ffmpeg's MJPEG encoder at `quality` (ffmpeg's -q:v scale: 2 best .. 31)."""
    import av

    if quarter_turns(frame):  # encoded as shown
        frame = av.VideoFrame.from_ndarray(picture(frame, shown_size(frame), "rgb24"), format="rgb24")
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height, encoder.pix_fmt = frame.width, frame.height, "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    encoder.thread_count = 1  # with slice threads the encoder leaves out its optimal Huffman tables (larger files)
    encoder.options = {"qmin": str(quality), "qmax": str(quality)}
    packets = encoder.encode(frame.reformat(format="yuvj420p")) + encoder.encode(None)
    return b"".join(bytes(packet) for packet in packets)
