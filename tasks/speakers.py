"""Step 5, speaker changes: split each speech segment into turns, one speaker each.

`speakers.method` picks how a change of speaker is found:

- "embedding" (default): CAM++ speaker embeddings (models/campplus.onnx, onnxruntime, the numpy fbank of
  modalink/fbank.py) on `embedding_window_s` windows every `embedding_hop_s` over the segment. At each window
  boundary t, the window ending at t is compared with the window starting at t (cosine of the
  `embedding_linear` output); a local minimum of that similarity below `change_threshold` is a change of
  speaker, moved to the quietest 10 ms point within `pause_radius_s` (the pause between two turns, which
  the VAD merges when it is under 0.3 s). Two sentences of one speaker in a row look alike on both sides
  and are not cut. Segments shorter than two windows (3 s) are left whole.
- "mfcc": the paper's. MFCCs (librosa) on 10 ms hops; each `window_s` window (every `hop_s`) is summarised
  by its mean MFCC vector, without c0 by default: c0 is log energy, and left in it makes every pair of
  windows look alike (tests/test_speakers.py splices two speakers). Where the cosine similarity of two
  consecutive windows falls below `similarity_threshold`, a cut is placed at the centre of the later window.

Either way both sides of a cut keep at least `min_piece_s`. Pieces are named like the paper: 9_0, 9_1, ...

Overlapped speech (two voices at once; pyannote segmentation-3.0, tasks/overlap.py) is looked for first,
whatever `enabled` says, by `speakers.overlap`: "flag" keeps the segments and gives each piece its
overlapped seconds (`Segment.overlap_s`); "cut" removes the overlap spans, so a segment becomes its parts
before and after (parts shorter than vad.min_segment_s are dropped and counted), and the speaker change
split runs on each part; "off" does not look.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from modalink.config import SpeakerConfig
from modalink.onnx import onnx_session
from modalink.records import Segment, Span, Video
from modalink.timing import usable_cores
from modalink.wav import read_span
from tasks import overlap
from tasks.audio import ExtractedAudio
from tasks.base import release_free_heap, step

MFCC_HOP_S = 0.010
MFCC_WINDOW_S = 0.025
CAMPPLUS_PATH = Path(__file__).resolve().parents[1] / "models" / "campplus.onnx"
CAMPPLUS_HEAD_PATH = CAMPPLUS_PATH.with_name("campplus.head.npz")  # models/campplus_frames.py
EMBEDDING_RATE = 16000  # CAM++ and its fbank work at 16 kHz
EMBEDDING_BATCH = 8  # windows per onnxruntime call (64 needed about 400 MiB more at the peak: BENCHMARKS.md)
SMOOTH_FRAMES = 3  # the pause search looks at the energy of 30 ms (three 10 ms frames)



def load_mfcc() -> None:
    """Import librosa's MFCC code (slow: nearly all of it is scipy.signal's import)."""
    import librosa

    librosa.feature.mfcc  # noqa: B018 - librosa imports its submodules on first attribute access


def window_similarities(samples: np.ndarray, sample_rate: int, config: SpeakerConfig) -> tuple[np.ndarray, np.ndarray]:
    """(centre time of each window after the first, cosine similarity to the window before it)."""
    import librosa

    duration = len(samples) / sample_rate
    hop = int(MFCC_HOP_S * sample_rate)
    mfcc = librosa.feature.mfcc(y=samples.astype(np.float32), sr=sample_rate, n_mfcc=config.n_mfcc,
                                hop_length=hop, n_fft=512, win_length=int(MFCC_WINDOW_S * sample_rate))
    if not config.use_c0:
        mfcc = mfcc[1:]
    frames_per_s = sample_rate / hop
    starts = np.arange(0.0, duration - config.window_s + 1e-9, config.hop_s)
    means = np.stack([mfcc[:, int(a * frames_per_s):max(int((a + config.window_s) * frames_per_s), int(a * frames_per_s) + 1)].mean(axis=1)
                      for a in starts])
    a, b = means[:-1], means[1:]
    similarity = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-9)
    return starts[1:] + config.window_s / 2, similarity


def mfcc_cuts(samples: np.ndarray, sample_rate: int, config: SpeakerConfig) -> list[float]:
    """The paper's method: cut times, in seconds from the start of `samples`."""
    duration = len(samples) / sample_rate
    if not config.enabled or duration < 2 * config.window_s:
        return []
    times, similarity = window_similarities(samples, sample_rate, config)
    cuts: list[float] = []
    for t, s in zip(times, similarity):
        last = cuts[-1] if cuts else 0.0
        if s < config.similarity_threshold and t - last >= config.min_piece_s and duration - t >= config.min_piece_s:
            cuts.append(float(t))
    return cuts


def speaker_model(threads: int = 1):
    """The CAM++ onnxruntime session, loaded once per process and thread count (thread-safe)."""
    return onnx_session(CAMPPLUS_PATH, threads, "speaker model")


def load_speaker_model(config: SpeakerConfig) -> None:
    """Load what the chosen method needs (for the flow's background preload)."""
    if config.overlap != "off":
        overlap.overlap_model(config.threads)
    if config.enabled and config.method == "embedding":
        speaker_model(config.threads)
    elif config.enabled and config.method == "mfcc":
        load_mfcc()


def to_model_rate(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    if sample_rate == EMBEDDING_RATE:
        return samples
    from scipy.signal import resample_poly

    g = np.gcd(sample_rate, EMBEDDING_RATE)
    return resample_poly(samples, EMBEDDING_RATE // g, sample_rate // g).astype(np.float32)


def window_starts(frames: int, config: SpeakerConfig) -> tuple[np.ndarray, int]:
    """(first fbank frame of each `embedding_window_s` window every `embedding_hop_s`, frames per window)."""
    from modalink.fbank import FRAME_LENGTH, FRAME_SHIFT

    width = 1 + (int(round(config.embedding_window_s * EMBEDDING_RATE)) - FRAME_LENGTH) // FRAME_SHIFT
    hop = max(1, int(round(config.embedding_hop_s * EMBEDDING_RATE)) // FRAME_SHIFT)
    return np.arange(0, frames - width + 1, hop), width


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / (np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-9)


def window_vectors(feats: np.ndarray, first: np.ndarray, width: int, config: SpeakerConfig) -> np.ndarray:
    """The unit-length CAM++ `embedding_linear` of each window starting at a frame of `first`, each window
    mean-normalised on its own: what the model gets for that window alone."""
    if len(first) == 0:
        return np.zeros((0, 192), dtype=np.float32)
    session = speaker_model(config.threads)
    out = []
    for i in range(0, len(first), EMBEDDING_BATCH):
        batch = np.stack([feats[f:f + width] for f in first[i:i + EMBEDDING_BATCH]])
        batch = batch - batch.mean(axis=1, keepdims=True)
        out.append(session.run(["embedding_linear"], {"feats": batch})[0])
    return unit(np.concatenate(out))


def pooled_vectors(feats: np.ndarray, first: np.ndarray, width: int, config: SpeakerConfig) -> np.ndarray:
    """The same windows' unit-length embeddings from one CAM++ pass over the whole segment: its frame
    features (the model's "frames" output) pooled per window (mean and standard deviation) and mapped by
    the model's own head (models/campplus_frames.py). The layers see the whole segment, so the vectors
    are close to, not equal to, `window_vectors`: they screen the boundaries, they do not decide them."""
    frames = speaker_model(config.threads).run(["frames"], {"feats": (feats - feats.mean(axis=0))[None]})[0][0]
    scale = frames.shape[1] / len(feats)
    a = np.floor(first * scale).astype(int)
    b = np.maximum(np.floor((first + width) * scale).astype(int), a + 2)
    sums = np.concatenate([np.zeros((frames.shape[0], 1)), np.cumsum(frames, axis=1, dtype=np.float64)], axis=1)
    squares = np.concatenate([np.zeros((frames.shape[0], 1)), np.cumsum(np.square(frames, dtype=np.float64), axis=1)], axis=1)
    n = (b - a).astype(np.float64)
    mean = (sums[:, b] - sums[:, a]) / n
    var = np.maximum((squares[:, b] - squares[:, a]) - n * mean ** 2, 0.0) / (n - 1)
    weight, bias = pooling_head()
    return unit((np.concatenate([mean, np.sqrt(var)]).T @ weight.T + bias).astype(np.float32))


@functools.cache
def pooling_head() -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) of CAM++'s dense layer and BatchNorm folded into one affine map of the pooled statistics."""
    with np.load(CAMPPLUS_HEAD_PATH) as head:
        return head["weight"].astype(np.float64), head["bias"].astype(np.float64)


def boundary_similarities(samples: np.ndarray, config: SpeakerConfig) -> tuple[np.ndarray, np.ndarray]:
    """(time t, cosine of the window ending at t with the window starting at t, each embedded on its own) at
    each window start of 16 kHz `samples`. With `screen_similarity` below 1, one CAM++ pass over the whole
    segment screens the boundaries first (`pooled_vectors`): a boundary whose pooled similarity is above it is
    no change (similarity 1), and only the windows of the other boundaries are embedded on their own."""
    from modalink.fbank import FRAME_SHIFT, fbank

    feats = fbank(samples, mean_normalise=False)
    first, width = window_starts(len(feats), config)
    k = max(1, int(round(config.embedding_window_s / config.embedding_hop_s)))
    if len(first) <= k:
        return np.zeros(0), np.zeros(0)
    checked = np.ones(len(first) - k, dtype=bool)
    if config.screen_similarity < 1:
        pooled = pooled_vectors(feats, first, width, config)
        checked = (pooled[:-k] * pooled[k:]).sum(axis=1) <= config.screen_similarity
    windows = np.union1d(np.flatnonzero(checked), np.flatnonzero(checked) + k)
    vectors = np.zeros((len(first), 192), dtype=np.float32)
    vectors[windows] = window_vectors(feats, first[windows], width, config)
    similarity = np.where(checked, (vectors[:-k] * vectors[k:]).sum(axis=1), 1.0)
    return first[k:] * FRAME_SHIFT / EMBEDDING_RATE, similarity


def quiet_point(db: np.ndarray, t: float, radius: float, low: float, high: float) -> float:
    """The quietest 30 ms of the 10 ms energy frames `db` within `radius` of `t`, kept in [low, high]."""
    from tasks.vad import ENERGY_FRAME_S

    a = max(low, t - radius)
    b = min(high, t + radius)
    i0, i1 = int(np.ceil(a / ENERGY_FRAME_S)), int(b / ENERGY_FRAME_S)
    power = np.convolve(10 ** (db / 10), np.ones(SMOOTH_FRAMES) / SMOOTH_FRAMES, mode="same")
    if i1 <= i0 or i1 > len(power):
        return t
    quietest = i0 + int(np.argmin(power[i0:i1]))
    return round(quietest * ENERGY_FRAME_S, 3)


def valley_centre(times: np.ndarray, similarity: np.ndarray, i: int, config: SpeakerConfig) -> float:
    """Where the change at minimum `i` most likely is: the middle of the run of boundaries around it whose
    similarity stays below `change_threshold` (a change between two long turns gives a valley about one
    window wide, centred on the change; the single lowest point of it is off by up to half a window), at
    most half a window from the minimum."""
    a = b = i
    while a > 0 and similarity[a - 1] < config.change_threshold:
        a -= 1
    while b + 1 < len(similarity) and similarity[b + 1] < config.change_threshold:
        b += 1
    half = config.embedding_window_s / 2
    return float(np.clip((times[a] + times[b]) / 2, times[i] - half, times[i] + half))


@dataclass(frozen=True)
class Turns:
    """The cut times in one segment (seconds from its start)."""
    cuts: tuple[float, ...]


def embedding_turns(samples: np.ndarray, sample_rate: int, config: SpeakerConfig) -> Turns:
    """The embedding method on one segment's samples."""
    from tasks.vad import frame_energy_db

    samples = to_model_rate(samples, sample_rate)
    duration = len(samples) / EMBEDDING_RATE
    if not config.enabled or duration < 2 * config.embedding_window_s:
        return Turns(())
    times, similarity = boundary_similarities(samples, config)
    low, high = config.min_piece_s, duration - config.min_piece_s
    minima = [i for i in range(len(similarity)) if similarity[i] < config.change_threshold
              and (i == 0 or similarity[i] <= similarity[i - 1])
              and (i + 1 == len(similarity) or similarity[i] <= similarity[i + 1])]
    db = frame_energy_db(samples, EMBEDDING_RATE)
    cuts: list[float] = []
    for i in sorted(minima, key=lambda j: similarity[j]):  # the clearest changes first
        cut = quiet_point(db, valley_centre(times, similarity, i, config), config.pause_radius_s, low, high)
        if low - 1e-9 <= cut <= high + 1e-9 and all(abs(cut - c) >= config.min_piece_s - 1e-9 for c in cuts):
            cuts.append(cut)
    return Turns(tuple(sorted(cuts)))


def speaker_turns(samples: np.ndarray, sample_rate: int, config: SpeakerConfig) -> Turns:
    if config.method == "embedding":
        return embedding_turns(samples, sample_rate, config)
    return Turns(tuple(mfcc_cuts(samples, sample_rate, config)))


def speaker_change_cuts(samples: np.ndarray, sample_rate: int, config: SpeakerConfig) -> list[float]:
    """Cut times, in seconds from the start of `samples`, by the configured method."""
    return list(speaker_turns(samples, sample_rate, config).cuts)


def read_samples(wav_path: str, span: Span) -> tuple[np.ndarray, int]:
    """The samples of one span as float32 in [-1, 1], and the sample rate."""
    found = read_span(wav_path, span.start, span.end)
    return found.samples(), found.rate


def span_overlaps(wav_path: str, span: Span, config: SpeakerConfig) -> list[tuple[float, float]]:
    """The overlap spans inside `span`, in seconds of the soundtrack. The model sees the span with the
    soundtrack around it (overlap.context_span): zero-padding a short segment instead gives false overlap."""
    if config.overlap == "off":
        return []
    a, b = overlap.context_span(span.start, span.end, wav_duration(wav_path))
    samples, rate = read_samples(wav_path, Span(a, b))
    found = overlap.find_overlaps(to_model_rate(samples, rate), config.overlap_threshold, config.overlap_min_s,
                                  offset=a, threads=config.threads)
    return overlap.clip_to(found, span.start, span.end, config.overlap_min_s)


def wav_duration(wav_path: str) -> float:
    params = read_span(wav_path, 0.0, 0.0).params
    return params.nframes / params.framerate


@dataclass(frozen=True)
class SpeakerSplit:
    """The speakers step's result: the pieces, and what overlapped speech did to them."""
    segments: list[Segment]
    overlapped: int = 0  # pieces holding overlapped speech (flag) or speech segments it was cut from (cut)
    overlap_dropped: int = 0  # cut: parts between overlap spans shorter than vad.min_segment_s, dropped


def split_span(video_id: str, wav_path: str, i: int, span: Span, config: SpeakerConfig,
               min_segment_s: float) -> SpeakerSplit:
    """The turns of speech segment `i`, its overlapped pieces and the short parts an overlap cut left."""
    segments: list[Segment] = []
    overlapped = dropped = 0
    found = span_overlaps(wav_path, span, config)
    parts = [(span.start, span.end)]
    if config.overlap == "cut" and found:
        parts, short = overlap.cut_out(span.start, span.end, found, min_segment_s)
        overlapped, dropped = overlapped + 1, dropped + short
    pieces = []
    for start, end in parts:
        samples, rate = read_samples(wav_path, Span(start, end))
        cuts = [round(start + c, 3) for c in speaker_change_cuts(samples, rate, config)]
        turns_of = (start, end) if cuts else None
        pieces.extend((a, b, turns_of) for a, b in zip([start, *cuts], [*cuts, end]))
    for j, (start, end, turns_of) in enumerate(pieces):
        piece = Segment(video_id, i, j, start, end, turns_of=turns_of)
        if config.overlap == "flag" and (seconds := overlap.overlapped_seconds(start, end, found)) > 0:
            piece, overlapped = replace(piece, overlap_s=seconds), overlapped + 1
        segments.append(piece)
    return SpeakerSplit(segments, overlapped, dropped)


def speaker_split(video_id: str, wav_path: str, spans: tuple[Span, ...], config: SpeakerConfig,
                  min_segment_s: float = 0.5) -> SpeakerSplit:
    """Every speech segment's turns, the segments split on a thread per usable core (the models run
    one thread each, so the result is the same whatever the number of cores); the memory the models
    worked in is given back to the system afterwards."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=usable_cores(), thread_name_prefix="modalink-speakers") as pool:
        found = list(pool.map(lambda k: split_span(video_id, wav_path, k, spans[k], config, min_segment_s),
                              range(len(spans))))
    release_free_heap()  # the models' working memory, freed by the split's threads, before the face step's
    return SpeakerSplit([s for split in found for s in split.segments], sum(s.overlapped for s in found),
                        sum(s.overlap_dropped for s in found))


def split_speakers(video_id: str, wav_path: str, spans: tuple[Span, ...], config: SpeakerConfig,
                   min_segment_s: float = 0.5) -> list[Segment]:
    return speaker_split(video_id, wav_path, spans, config, min_segment_s).segments


@step("split-speakers", timing="speaker_split", run_name="speakers {video.video_id}", code=(overlap.__file__,))
def split_speakers_task(video: Video, audio: ExtractedAudio, spans: tuple[Span, ...], config: SpeakerConfig,
                        min_segment_s: float = 0.5) -> SpeakerSplit:
    """`min_segment_s` is vad.min_segment_s: with speakers.overlap = cut, shorter parts are dropped."""
    return speaker_split(video.video_id, audio.path, spans, config, min_segment_s)
