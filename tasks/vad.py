"""Step 4, speech segments: WebRTC VAD over the 16 kHz WAV, then the paper's segmenting rules.

Rules, in order, each shown by a case in tests/test_vad.py:
1. speech frames (`frame_ms`, default 30 ms) form runs;
2. a pause shorter than `min_silence_s` (0.3 s) does not end a segment: close runs are merged;
3. a segment longer than `max_segment_s` (15 s) is split at its longest inner pause, or into equal
   parts when it has none, until every part fits;
4. a segment shorter than `min_segment_s` (0.5 s) is dropped and counted as too short.
"""
from __future__ import annotations

import wave
from dataclasses import dataclass
from typing import Iterable, Iterator

from modalink.config import VadConfig
from modalink.records import Span, Video
from tasks.audio import ExtractedAudio
from tasks.base import step

Run = tuple[float, float]


@dataclass(frozen=True)
class SpeechSegments:
    spans: tuple[Span, ...]
    too_short: int  # segments dropped by rule 4


def speech_flags(wav_path: str, config: VadConfig) -> Iterator[bool]:
    """One VAD decision per frame, reading the WAV a frame at a time (never the whole file at once)."""
    import webrtcvad

    vad = webrtcvad.Vad(config.aggressiveness)
    with wave.open(wav_path) as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
            raise ValueError(f"{wav_path}: VAD needs mono 16-bit PCM")
        rate = wav.getframerate()
        samples = rate * config.frame_ms // 1000
        while True:
            frame = wav.readframes(samples)
            if len(frame) < samples * 2:
                return
            yield vad.is_speech(frame, rate)


def speech_runs(flags: Iterable[bool], frame_s: float) -> Iterator[Run]:
    """Rule 1: consecutive speech frames as (start, end) in seconds."""
    start = None
    index = -1
    for index, is_speech in enumerate(flags):
        if is_speech and start is None:
            start = index
        elif not is_speech and start is not None:
            yield (start * frame_s, index * frame_s)
            start = None
    if start is not None:
        yield (start * frame_s, (index + 1) * frame_s)


def merge_close_runs(runs: Iterable[Run], min_silence_s: float) -> Iterator[list[Run]]:
    """Rule 2: runs separated by less than `min_silence_s` belong to one segment (a list of its runs)."""
    group: list[Run] = []
    for run in runs:
        if group and run[0] - group[-1][1] >= min_silence_s - 1e-9:
            yield group
            group = []
        group.append(run)
    if group:
        yield group


def cap_length(runs: list[Run], max_s: float, min_s: float) -> list[Run]:
    """Rule 3: split a segment longer than `max_s` at its longest inner pause, else into equal parts."""
    start, end = runs[0][0], runs[-1][1]
    if end - start <= max_s + 1e-9:
        return [(start, end)]
    if len(runs) > 1:
        pauses = range(1, len(runs))
        balanced = [k for k in pauses if runs[k - 1][1] - start >= min_s and end - runs[k][0] >= min_s]
        k = max(balanced or pauses, key=lambda i: runs[i][0] - runs[i - 1][1])
        return cap_length(runs[:k], max_s, min_s) + cap_length(runs[k:], max_s, min_s)
    parts = int(-(-(end - start) // max_s))  # ceil
    step = (end - start) / parts
    return [(start + i * step, start + (i + 1) * step) for i in range(parts)]


def segment_speech(flags: Iterable[bool], config: VadConfig) -> SpeechSegments:
    frame_s = config.frame_ms / 1000
    spans: list[Span] = []
    too_short = 0
    for group in merge_close_runs(speech_runs(flags, frame_s), config.min_silence_s):
        for start, end in cap_length(group, config.max_segment_s, config.min_segment_s):
            if end - start < config.min_segment_s - 1e-9:
                too_short += 1  # rule 4
            else:
                spans.append(Span(round(start, 3), round(end, 3)))
    return SpeechSegments(tuple(spans), too_short)


def detect_speech(wav_path: str, config: VadConfig) -> SpeechSegments:
    return segment_speech(speech_flags(wav_path, config), config)


@step("detect-speech", timing="vad", run_name="vad {video.video_id}")
def detect_speech_task(video: Video, audio: ExtractedAudio, config: VadConfig) -> SpeechSegments:
    return detect_speech(audio.path, config)
