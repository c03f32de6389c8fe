"""Step 4, speech segments: WebRTC VAD over the 16 kHz WAV, then the paper's segmenting rules.

Rules, in order, each shown by a case in tests/test_vad.py:
1. speech frames (`frame_ms`, default 30 ms) form runs;
2. a pause shorter than `min_silence_s` (0.3 s) does not end a segment: close runs are merged;
3. a segment longer than `max_segment_s` (15 s) is split at its longest inner pause, or into equal
   parts when it has none, until every part fits;
4. a segment shorter than `min_segment_s` (0.5 s) is dropped and counted as too short;
5. with `refine_edges` (default on), each kept segment's start and end are moved onto 10 ms frames of
   audio energy (`refine_spans`): 30 ms VAD frames, and webrtcvad's hangover, leave a segment starting up
   to 0.3 s early and ending early on soft word endings. Up to `EDGE_RADIUS_S` out and `EDGE_INWARD_S`
   in from each edge, never past half-way to the neighbouring segment, the edge goes to the first (last) run of
   `EDGE_RUN_FRAMES` loud frames, widened by `EDGE_PAD_S`; when no frame there is loud, the VAD's edge
   stays. "Loud" is `loud_threshold_db` of the segment and its surroundings. A segment that becomes
   shorter than `min_segment_s` is dropped as too short.
"""
from __future__ import annotations

import wave
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from modalink.config import VadConfig
from modalink.records import Span, Video
from modalink.wav import read_span
from tasks.audio import ExtractedAudio
from tasks.base import step

Run = tuple[float, float]

ENERGY_FRAME_S = 0.010  # frames of the edge refinement (and of the speakers step's pause search)
EDGE_RADIUS_S = 0.30  # an edge moves out (into what the VAD found quiet) at most this far
EDGE_INWARD_S = 0.60  # and in (over what the VAD took for speech) at most this far
EDGE_RUN_FRAMES = 3  # speech starts (ends) with this many loud 10 ms frames in a row
EDGE_PAD_S = 0.06  # kept before the first and after the last loud frame


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


def frame_energy_db(samples: np.ndarray, rate: int, frame_s: float = ENERGY_FRAME_S) -> np.ndarray:
    """Mean power of each `frame_s` frame in dB (float samples in [-1, 1]; a partial last frame is left out)."""
    hop = max(1, int(round(frame_s * rate)))
    n = len(samples) // hop
    x = np.asarray(samples[: n * hop], dtype=np.float64).reshape(n, hop)
    return 10 * np.log10(np.mean(x * x, axis=1) + 1e-10)


def loud_threshold_db(quiet_db: np.ndarray, speech_db: np.ndarray) -> float:
    """Frames above this are speech: 12 dB over the floor (the 25th percentile of the frames around the
    segment that the VAD found quiet, or the 10th percentile of the segment's own when there are fewer than
    10 of those), and never more than 35 dB under the speech's level (the segment's 95th percentile)."""
    floor = float(np.percentile(quiet_db, 25)) if len(quiet_db) >= 10 else float(np.percentile(speech_db, 10))
    return max(floor + 12.0, float(np.percentile(speech_db, 95)) - 35.0)


def _loud_runs(loud: np.ndarray, length: int) -> np.ndarray:
    """Indices i where loud[i:i + length] are all loud."""
    if len(loud) < length:
        return np.zeros(0, dtype=int)
    return np.flatnonzero(np.convolve(loud.astype(int), np.ones(length, dtype=int), mode="valid") == length)


def refine_span(wav_path: str, span: Span, lower: float, upper: float) -> Span:
    """Rule 5 for one segment: `span`'s edges on 10 ms frames of energy, never before `lower` or after
    `upper` (half-way to the neighbouring segments)."""
    a = max(lower, span.start - EDGE_RADIUS_S, 0.0)
    b = min(upper, span.end + EDGE_RADIUS_S)
    found = read_span(wav_path, a, b)
    db = frame_energy_db(found.samples(), found.rate)
    if len(db) < 2 * EDGE_RUN_FRAMES:
        return span
    t = a + np.arange(len(db)) * ENERGY_FRAME_S  # frame start times
    inside = (t >= span.start) & (t + ENERGY_FRAME_S <= span.end)
    if not inside.any():
        return span
    loud = db > loud_threshold_db(db[~inside], db[inside])
    runs = _loud_runs(loud, EDGE_RUN_FRAMES)
    # an onset follows a quiet frame and an offset precedes one: loudness that runs into the search's own
    # edge started (or goes on) outside it, in a neighbour's speech, and is no edge of this segment
    onsets = runs[(runs > 0) & ~loud[np.maximum(runs - 1, 0)]]
    after = runs + EDGE_RUN_FRAMES
    offsets = runs[(after < len(loud)) & ~loud[np.minimum(after, len(loud) - 1)]]
    head = onsets[t[onsets] <= span.start + EDGE_INWARD_S]
    tail = offsets[t[offsets] + EDGE_RUN_FRAMES * ENERGY_FRAME_S >= span.end - EDGE_INWARD_S]
    start = max(a, t[head[0]] - EDGE_PAD_S) if len(head) else span.start
    end = min(b, t[tail[-1]] + EDGE_RUN_FRAMES * ENERGY_FRAME_S + EDGE_PAD_S) if len(tail) else span.end
    if end <= start:
        return span
    return Span(round(float(start), 3), round(float(end), 3))


def refine_spans(wav_path: str, spans: tuple[Span, ...], config: VadConfig) -> tuple[tuple[Span, ...], int]:
    """Rule 5 for every segment: (the refined segments, how many became too short)."""
    refined, too_short = [], 0
    for i, span in enumerate(spans):
        lower = (spans[i - 1].end + span.start) / 2 if i else 0.0
        upper = (span.end + spans[i + 1].start) / 2 if i + 1 < len(spans) else span.end + EDGE_RADIUS_S
        new = refine_span(wav_path, span, lower, upper)
        if new.duration < config.min_segment_s - 1e-9:
            too_short += 1
        else:
            refined.append(new)
    return tuple(refined), too_short


def detect_speech(wav_path: str, config: VadConfig) -> SpeechSegments:
    found = segment_speech(speech_flags(wav_path, config), config)
    if not config.refine_edges:
        return found
    spans, too_short = refine_spans(wav_path, found.spans, config)
    return SpeechSegments(spans, found.too_short + too_short)


@step("detect-speech", timing="vad", run_name="vad {video.video_id}")
def detect_speech_task(video: Video, audio: ExtractedAudio, config: VadConfig) -> SpeechSegments:
    return detect_speech(audio.path, config)
