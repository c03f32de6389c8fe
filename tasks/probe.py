"""Step 2, probe: read a video's streams with ffprobe and refuse, with a clear reason, what cannot be used.

The width and height are those of the picture as shown: a display rotation of a quarter turn swaps them.
"""
from __future__ import annotations

from modalink.ffmpeg_tools import FFmpegError, ffprobe_json
from modalink.records import MediaInfo, Video
from tasks.base import MediaError, step


def probe(path: str) -> MediaInfo:
    try:
        data = ffprobe_json(path)
    except FFmpegError as exc:
        raise MediaError(f"does not decode: {exc.reason}") from None
    streams = data.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video" and not _is_cover_art(s)), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None:
        raise MediaError("has no video stream")
    if audio is None:
        raise MediaError("has no audio stream")
    duration = _number(data.get("format", {}).get("duration")) or _number(video.get("duration"))
    if not duration:
        raise MediaError("has no known duration")
    width, height = int(video.get("width") or 0), int(video.get("height") or 0)
    if _rotation(video) % 180 == 90:  # shown turned a quarter: the frames the steps see are too
        width, height = height, width
    return MediaInfo(
        duration=duration,
        width=width,
        height=height,
        fps=_rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate")),
        video_codec=str(video.get("codec_name")),
        audio_codec=str(audio.get("codec_name")),
        audio_sample_rate=int(audio.get("sample_rate") or 0),
        audio_channels=int(audio.get("channels") or 0),
    )


def _is_cover_art(stream: dict) -> bool:
    return bool(stream.get("disposition", {}).get("attached_pic"))


def _rotation(stream: dict) -> int:
    """Degrees the stream's display matrix turns its frames (0 without one)."""
    turned = (item.get("rotation") for item in stream.get("side_data_list", []) if "rotation" in item)
    return round(_number(next(turned, 0))) % 360


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def _rate(value) -> float:
    if not value or value == "0/0":
        return 0.0
    numerator, _, denominator = str(value).partition("/")
    return _number(numerator) / (_number(denominator) or 1.0)


@step("probe", timing="probe", run_name="probe {video.video_id}", retries=1)
def probe_task(video: Video) -> MediaInfo:
    return probe(video.path)
