"""Step 3, audio: the whole soundtrack as 16 kHz mono 16-bit PCM WAV, with a fallback for damaged audio.

The first pass decodes strictly (`-xerror`: any decoding error fails it). When it fails, a second
pass decodes error-tolerantly (corrupt packets discarded, timestamps regenerated, gaps filled with
silence so that audio time stays video time). Which pass produced the file is reported.
"""
from __future__ import annotations

import logging
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from modalink.config import AudioConfig
from modalink.ffmpeg_tools import FFmpegError, FFmpegKilled, ffmpeg
from modalink.records import Video
from modalink.storage import replaced_atomically
from tasks.base import MediaError, step

log = logging.getLogger("modalink.audio")


@dataclass(frozen=True)
class ExtractedAudio:
    path: str
    sample_rate: int
    duration: float
    fallback: bool  # True when strict decoding failed and the tolerant pass was used

    LOCAL_FIELDS: ClassVar[tuple[str, ...]] = ("path",)  # left out of cache keys (the video's fingerprint is in them)


def extract_audio(source: str, out_path: str, config: AudioConfig) -> ExtractedAudio:
    common = ["-map", "0:a:0", "-vn", "-ac", "1", "-ar", str(config.sample_rate), "-c:a", "pcm_s16le", "-f", "wav"]
    fallback = False
    with replaced_atomically(Path(out_path)) as partial:
        try:
            ffmpeg("-xerror", "-i", source, *common, str(partial))
        except FFmpegKilled:
            raise  # not damaged audio: the task's retries run the strict pass again
        except FFmpegError as strict_error:
            if not config.fallback:
                raise MediaError(f"audio does not decode: {strict_error.reason}") from None
            log.warning("strict audio decoding failed for %s, using the error-tolerant fallback: %s", source, strict_error.reason)
            fallback = True
            try:
                ffmpeg("-err_detect", "ignore_err", "-fflags", "+discardcorrupt+genpts", "-i", source,
                       *common[:-2], "-af", "aresample=async=1:first_pts=0", "-f", "wav", str(partial))
            except FFmpegError as tolerant_error:
                raise MediaError(f"audio does not decode, even error-tolerantly: {tolerant_error.reason}") from None
        with wave.open(str(partial)) as wav:
            frames, rate = wav.getnframes(), wav.getframerate()
        if frames == 0:
            raise MediaError("audio stream decodes to no samples")
    return ExtractedAudio(path=str(Path(out_path)), sample_rate=rate, duration=frames / rate, fallback=fallback)


@step("extract-audio", timing="audio", run_name="audio {video.video_id}", retries=2, exclude=("out_path",))
def extract_audio_task(video: Video, out_path: str, config: AudioConfig) -> ExtractedAudio:
    """Retried by the flow (`run.retries`) when ffmpeg was killed; damaged audio is a MediaError."""
    return extract_audio(video.path, out_path, config)
