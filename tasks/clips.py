"""Step 7, media of a kept segment: the MP4 clip and the 16 kHz WAV clip.

The clip is H.264 + AAC, re-encoded by ffmpeg from an accurate seek, so it starts at the segment's
time and not at the nearest keyframe. The WAV clip is cut sample-exactly from the soundtrack
extracted in step 3. The JPEG frame at the segment midpoint comes from the face step's decoder;
when that step's result came from a cache without the file, ffmpeg takes it here.
"""
from __future__ import annotations

from pathlib import Path

from modalink.config import ClipConfig, Config
from modalink.ffmpeg_tools import ffmpeg
from modalink.records import Segment, SegmentFiles, Video, segment_files
from modalink.stages import SegmentStage, register
from modalink.storage import replaced_atomically
from modalink.wav import read_span, write_wav


def cut_wav(wav_path: str, start: float, end: float, out_path: Path) -> None:
    with replaced_atomically(out_path) as partial:
        write_wav(read_span(wav_path, start, end), str(partial))


def write_clip(source: str, start: float, end: float, clip_path: Path, config: ClipConfig) -> None:
    # One decoding thread: clips are written concurrently (BENCHMARKS.md).
    aac_coder = ["-aac_coder", config.aac_coder] if config.audio_codec == "aac" and config.aac_coder else []
    with replaced_atomically(clip_path) as partial:
        ffmpeg(
            "-threads", "1", "-ss", f"{start:.3f}", "-i", source,
            "-map", "0:v:0", "-map", "0:a:0", "-t", f"{end - start:.3f}", "-c:v", config.video_codec,
            "-preset", config.preset, "-crf", str(config.crf), "-pix_fmt", "yuv420p", "-c:a", config.audio_codec,
            *aac_coder, "-b:a", config.audio_bitrate, "-movflags", "+faststart", str(partial),
        )


def write_frame(source: str, at: float, frame_path: Path, jpeg_quality: int) -> None:
    """The frame shown at `at` as a JPEG, from an accurate seek."""
    with replaced_atomically(frame_path) as partial:
        ffmpeg("-threads", "1", "-ss", f"{at:.3f}", "-i", source, "-map", "0:v:0", "-frames:v", "1",
               "-q:v", str(jpeg_quality), str(partial))


def write_segment_media(video: Video, segment: Segment, soundtrack: str, staging_dir: str,
                        config: ClipConfig, jpeg_quality: int = 2, frame_written: bool | None = None) -> SegmentFiles:
    """`frame_written`: whether the face step left the midpoint frame (None: look in `staging_dir`)."""
    files = segment_files(segment)
    root = Path(staging_dir)
    write_clip(video.path, segment.start, segment.end, root / files.video_clip, config)
    cut_wav(soundtrack, segment.start, segment.end, root / files.audio_clip)
    if not (frame_written if frame_written is not None else (root / files.frame).is_file()):
        write_frame(video.path, segment.midpoint, root / files.frame, jpeg_quality)  # the face step's came from a cache
    return files


@register
class MediaStage(SegmentStage):
    """The clip, the WAV clip (cut from the soundtrack: `audio` is part of the key) and, when the
    face step left none, the midpoint frame."""

    name = "media"
    section = "clips"
    also_reads = ("audio",)
    timing = "clips"

    def options(self, config: Config) -> tuple[ClipConfig, int]:
        return config.clips, config.faces.jpeg_quality

    def run(self, item, options: tuple[ClipConfig, int]) -> SegmentFiles:
        clips, jpeg_quality = options
        return write_segment_media(item.video, item.segment, item.soundtrack, item.staging_dir, clips, jpeg_quality,
                                   item.has_file(segment_files(item.segment).frame))

    def record_fields(self, result: SegmentFiles, options) -> dict:
        return {"video_clip": result.video_clip, "audio_clip": result.audio_clip, "frame": result.frame}
