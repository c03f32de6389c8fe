"""Step 7, media of a kept segment: the MP4 clip and the 16 kHz WAV clip.

The clip is H.264 + AAC, re-encoded by ffmpeg from an accurate seek, so it starts at the segment's
time and not at the nearest keyframe. The WAV clip is cut sample-exactly from the soundtrack
extracted in step 3. The JPEG frame at the segment midpoint comes from the face step's decoder;
when that step's result came from a cache without the file, ffmpeg takes it here.
"""
from __future__ import annotations

import os
import wave
from pathlib import Path

from prefect import task

from modalink.timing import timed

from modalink.config import AudioConfig, ClipConfig
from modalink.ffmpeg_tools import ffmpeg
from modalink.records import Segment, SegmentMedia, Video, media_paths
from tasks.base import STAGED_CACHE_POLICY, retry_unless_permanent


def cut_wav(wav_path: str, start: float, end: float, out_path: Path) -> None:
    with wave.open(wav_path) as source:
        rate = source.getframerate()
        first, last = int(round(start * rate)), int(round(end * rate))
        source.setpos(min(first, source.getnframes()))
        data = source.readframes(last - first)
        params = source.getparams()
    partial = out_path.with_name(out_path.name + ".partial")
    with wave.open(str(partial), "wb") as clip:
        clip.setparams(params)
        clip.writeframes(data)
    os.replace(partial, out_path)


def write_clip(source: str, start: float, end: float, clip_path: Path, config: ClipConfig) -> None:
    partial = clip_path.with_name(clip_path.stem + ".partial.mp4")
    # One decoding thread: clips are written concurrently, and frame threads cost 6 % more CPU.
    aac_coder = ["-aac_coder", config.aac_coder] if config.audio_codec == "aac" and config.aac_coder else []
    ffmpeg(
        "-threads", "1", "-ss", f"{start:.3f}", "-i", source,
        "-map", "0:v:0", "-map", "0:a:0", "-t", f"{end - start:.3f}", "-c:v", config.video_codec, "-preset", config.preset,
        "-crf", str(config.crf), "-pix_fmt", "yuv420p", "-c:a", config.audio_codec, *aac_coder, "-b:a", config.audio_bitrate,
        "-movflags", "+faststart", str(partial),
    )
    os.replace(partial, clip_path)


def write_frame(source: str, at: float, frame_path: Path, config: ClipConfig) -> None:
    """The frame shown at `at` as a JPEG, from an accurate seek."""
    partial = frame_path.with_name(frame_path.stem + ".partial.jpg")
    ffmpeg("-threads", "1", "-ss", f"{at:.3f}", "-i", source, "-map", "0:v:0", "-frames:v", "1",
           "-q:v", str(config.jpeg_quality), str(partial))
    os.replace(partial, frame_path)


def write_segment_media(video: Video, segment: Segment, wav_path: str, dataset_dir: str,
                        config: ClipConfig) -> SegmentMedia:
    media = media_paths(segment)
    root = Path(dataset_dir)
    for relative in (media.video_clip, media.audio_clip, media.frame):
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
    write_clip(video.path, segment.start, segment.end, root / media.video_clip, config)
    cut_wav(wav_path, segment.start, segment.end, root / media.audio_clip)
    if not (root / media.frame).is_file():  # the face step writes it, unless its result came from a cache
        write_frame(video.path, segment.midpoint, root / media.frame, config)
    return media


@task(name="write-media", cache_policy=STAGED_CACHE_POLICY, persist_result=True, retries=2, retry_delay_seconds=[1, 4],
      retry_condition_fn=retry_unless_permanent, task_run_name="media {segment.video_id} {segment.name}")
def write_segment_media_task(video: Video, segment: Segment, wav_path: str, dataset_dir: str,
                             config: ClipConfig, audio_config: AudioConfig) -> SegmentMedia:
    """Called only for a segment that shows a face, once the flow has the soundtrack at `wav_path`.
    `audio_config` made that soundtrack: it is part of the cache key, which leaves out the path."""
    with timed("clips"):
        return write_segment_media(video, segment, wav_path, dataset_dir, config)
