"""Issue 16, the face that speaks: the active speaker is the face whose mouth moves with the voice.

The faces stage finds faces in a few frames of each segment (1 per second by default) and takes the
largest one as the speaker. This stage, run on the same chunks right after it, decides again from
what the segment shows and sounds like:

1. `link_tracks`: the faces found are linked into tracks across the segment (a box joins the track
   whose last box overlaps it most, IoU >= `link_iou`, or whose centre is near enough).
2. `sample_times`: frames are decoded at `fps` (10 per second) inside the segment, with the chunk's
   one decoder (`tasks.faces_decoding.frames_at`), as grey images (the luma plane, area-resized to
   `scale` of the source size: `tasks.faces_decoding.grey`); the faces stage's pass takes them for it
   when it can (`tasks.speaker_frames`), and only the others are decoded here.
3. `mouth_crop`: in each frame, each track's box (interpolated between its detections) gives the
   mouth region (`mouth_*`: the lower middle of the box), resized to a fixed size; the track's
   mouth motion between consecutive frames is the mean absolute difference of those crops, in grey
   levels (`mouth_motion`).
4. `speech_envelope`: the RMS of the soundtrack between the same consecutive frame times.
5. `decide`: each track's score is the Pearson correlation of its mouth motion with the envelope,
   over the frame pairs it covers. A track whose mouth barely moves (mean motion < `min_motion`) is
   still and scores 0. The best track is the speaker when its score reaches `min_score`; the choice
   is flagged confident when it leads the second track by `min_margin`. When some mouth moves but
   none with the voice, the voice belongs to no face on screen (a voice-over): the segment is dropped
   as `speaker_off_screen` (`off_screen = "drop"`) or kept with the largest face (`"keep"`). When the
   cue cannot decide (too few frame pairs, a flat envelope, no mouth moving at all), the largest face
   stays the speaker, and the record says why.

The record's core `active_face` becomes the chosen track's detection nearest the segment midpoint,
and `custom.speaker_face` keeps the decision, the scores and the chosen face's track: its box at
every sampled frame of the segment (detected, interpolated between detections or held beyond them).
"""
from __future__ import annotations

import bisect
import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from modalink.config import Section, register_section
from modalink.records import FaceBox, FaceResult, MediaInfo, Segment, face_box
from modalink.stages import Drop, SegmentInput, SegmentStage, register
from modalink.wav import read_span
from tasks.speaker_frames import FrameRequest, Handover

DROP_OFF_SCREEN = "speaker_off_screen"
METHOD = "mouth motion and opening x speech level (correlation)"
CROP_SIZE = (32, 24)  # width, height of a mouth crop after resizing


@dataclass(frozen=True)
class SpeakerFaceConfig(Section):
    fps: float = 10.0  # frames sampled per second inside a segment for the mouth motion (QUALITY.md)
    max_frames: int = 150  # at most this many frames per segment (15 s at 10 fps)
    scale: float = 0.5  # frames are decoded at this fraction of the source size
    mouth_left: float = 0.1  # the mouth region, as fractions of the face box's width ...
    mouth_right: float = 0.9
    mouth_top: float = 0.5  # ... and of its height, from its top
    mouth_bottom: float = 1.0
    link_iou: float = 0.3  # a box joins a track whose last box overlaps it at least this much (IoU)
    min_motion: float = 0.5  # grey levels: a mouth that moves less on average is still (score 0)
    min_score: float = 0.0  # the best track needs a score above this; otherwise the voice is off screen
    min_margin: float = 0.2  # the choice is confident when it leads the second track by this much
    min_pairs: int = 4  # fewer consecutive frame pairs in a segment: the cue cannot decide
    off_screen: str = "keep"  # keep (flagged) | drop: a segment whose voice belongs to no face on screen (QUALITY.md)

    def problems(self) -> list[str]:
        return [message for ok, message in [
            (self.fps > 0 and self.max_frames >= 2, "speaker_face.fps must be > 0 and speaker_face.max_frames >= 2"),
            (0 < self.scale <= 1, "speaker_face.scale must be in (0, 1]"),
            (0 <= self.mouth_left < self.mouth_right <= 1 and 0 <= self.mouth_top < self.mouth_bottom <= 1,
             "speaker_face.mouth_* must satisfy 0 <= left < right <= 1 and 0 <= top < bottom <= 1"),
            (0 <= self.link_iou <= 1, "speaker_face.link_iou must be in [0, 1]"),
            (-1 <= self.min_score <= 1, "speaker_face.min_score must be in [-1, 1]"),
            (self.min_pairs >= 2, "speaker_face.min_pairs must be >= 2"),
            (self.off_screen in ("drop", "keep"), f"speaker_face.off_screen must be drop or keep, got {self.off_screen!r}"),
        ] if not ok]


register_section("speaker_face", SpeakerFaceConfig)


# ---------------------------------------------------------------------------------------------- tracks

def iou(a: FaceBox, b: FaceBox) -> float:
    x0, y0 = max(a.x, b.x), max(a.y, b.y)
    x1, y1 = min(a.x + a.w, b.x + b.w), min(a.y + a.h, b.y + b.h)
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def centre_distance(a: FaceBox, b: FaceBox) -> float:
    """Distance of the centres, in units of the larger box's size."""
    dx, dy = (a.x + a.w / 2) - (b.x + b.w / 2), (a.y + a.h / 2) - (b.y + b.h / 2)
    return float(np.hypot(dx, dy)) / max(a.w, a.h, b.w, b.h, 1e-9)


def link_tracks(faces: Iterable[FaceBox], min_iou: float = 0.3, max_centre: float = 0.5) -> list[list[FaceBox]]:
    """The faces grouped into tracks, each in time order: frame by frame, each box (largest first) joins
    the free track whose last box overlaps it most (IoU >= min_iou, or centres within max_centre of
    the box size when nothing overlaps enough); otherwise it starts a track. Tracks largest first."""
    by_time: dict[float, list[FaceBox]] = {}
    for face in faces:
        by_time.setdefault(face.time, []).append(face)
    tracks: list[list[FaceBox]] = []
    for time in sorted(by_time):
        taken: set[int] = set()
        for face in sorted(by_time[time], key=lambda f: -f.area):
            best, best_fit = None, None
            for k, track in enumerate(tracks):
                if k in taken or track[-1].time >= time:
                    continue
                overlap, distance = iou(track[-1], face), centre_distance(track[-1], face)
                fit = (overlap, -distance) if overlap >= min_iou else (0.0, -distance) if distance <= max_centre else None
                if fit is not None and (best_fit is None or fit > best_fit):
                    best, best_fit = k, fit
            if best is None:
                tracks.append([face])
                taken.add(len(tracks) - 1)
            else:
                tracks[best].append(face)
                taken.add(best)
    return sorted(tracks, key=lambda t: (-max(f.area for f in t), t[0].time))


def box_at(track: Sequence[FaceBox], time: float) -> tuple[tuple[float, float, float, float], str]:
    """The track's box at `time`: a detection, linear between two, or the nearest one held beyond them."""
    times = [f.time for f in track]
    k = bisect.bisect_left(times, time - 1e-6)
    if k < len(track) and abs(times[k] - time) <= 1e-6:
        f = track[k]
        return (f.x, f.y, f.w, f.h), "detected"
    if k == 0 or k == len(track):
        f = track[0] if k == 0 else track[-1]
        return (f.x, f.y, f.w, f.h), "held"
    a, b = track[k - 1], track[k]
    u = (time - a.time) / (b.time - a.time)
    return tuple(float(p + u * (q - p)) for p, q in zip((a.x, a.y, a.w, a.h), (b.x, b.y, b.w, b.h))), "interpolated"


def coverage(track: Sequence[FaceBox], fallback_gap: float = 1.0) -> tuple[float, float]:
    """The times a track speaks for: from its first to its last detection, widened by one detection
    interval (the median gap between its detections; `fallback_gap` for a single one) on each side."""
    times = [f.time for f in track]
    gap = float(np.median(np.diff(times))) if len(times) > 1 else fallback_gap
    return times[0] - gap, times[-1] + gap


# --------------------------------------------------------------------------------------------- signals

def sample_times(start: float, end: float, fps: float, max_frames: int) -> list[float]:
    """start, start + 1/fps, ... inside [start, end), at most max_frames of them."""
    count = min(max_frames, max(1, int(np.ceil((end - start) * fps - 1e-9))))
    return [round(start + k / fps, 3) for k in range(count)]


def mouth_crop(grey: np.ndarray, box: tuple[float, float, float, float], frame_scale: tuple[float, float],
               options: SpeakerFaceConfig) -> np.ndarray | None:
    """The mouth region of a face box (source pixels) in a grey frame decoded at `frame_scale` of the
    source, resized to CROP_SIZE, as float32; None when it falls outside the frame."""
    import cv2

    x, y, w, h = box
    sx, sy = frame_scale
    height, width = grey.shape[:2]
    x0 = int(np.floor((x + options.mouth_left * w) * sx))
    x1 = int(np.ceil((x + options.mouth_right * w) * sx))
    y0 = int(np.floor((y + options.mouth_top * h) * sy))
    y1 = int(np.ceil((y + options.mouth_bottom * h) * sy))
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return cv2.resize(grey[y0:y1, x0:x1], CROP_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32)


def mouth_motion(crops: Sequence[np.ndarray | None]) -> np.ndarray:
    """Mean absolute difference of consecutive crops (grey levels); NaN where either is missing."""
    return np.array([float(np.mean(np.abs(b - a))) if a is not None and b is not None else np.nan
                     for a, b in zip(crops, crops[1:])], dtype=np.float64)


def mouth_opening(crops: Sequence[np.ndarray | None]) -> np.ndarray:
    """How dark the inner part of each crop is (minus its mean grey level: an open mouth is dark); NaN
    where a crop is missing."""
    w, h = CROP_SIZE
    return np.array([-float(np.mean(c[h // 3:h * 5 // 6, w // 4:w * 3 // 4])) if c is not None else np.nan
                     for c in crops], dtype=np.float64)


def level_db(samples: np.ndarray, rate: int, offset: float, a: float, b: float) -> float:
    """RMS level in dB of `samples` (which start at `offset` s) between a and b seconds."""
    i, j = max(0, int(round((a - offset) * rate))), max(0, int(round((b - offset) * rate)))
    piece = samples[i:j].astype(np.float64)
    rms = float(np.sqrt(np.mean(piece ** 2))) if len(piece) else 0.0
    return 20 * float(np.log10(rms + 1e-4))


def speech_envelope(samples: np.ndarray, rate: int, offset: float, times: Sequence[float]) -> np.ndarray:
    """The level (dB) between consecutive `times`: what the mouth motion between two frames is compared with."""
    return np.array([level_db(samples, rate, offset, a, b) for a, b in zip(times, times[1:])], dtype=np.float64)


def frame_envelope(samples: np.ndarray, rate: int, offset: float, times: Sequence[float], fps: float) -> np.ndarray:
    """The level (dB) around each frame time (half a frame interval either side): what the mouth opening is
    compared with."""
    half = 0.5 / fps
    return np.array([level_db(samples, rate, offset, t - half, t + half) for t in times], dtype=np.float64)


def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Correlation of two equally long series; None when either is flat or too short."""
    if len(a) < 3:
        return None
    da, db = a - a.mean(), b - b.mean()
    norm = float(np.sqrt(np.sum(da * da) * np.sum(db * db)))
    return float(np.sum(da * db) / norm) if norm > 1e-12 else None


# -------------------------------------------------------------------------------------------- decision

@dataclass(frozen=True)
class TrackScore:
    track: int  # index into the tracks (largest face first)
    score: float  # the mean of the two correlations below (0: still or unmeasured)
    motion_r: float | None  # correlation of mouth motion with the level between frames
    opening_r: float | None  # correlation of mouth opening with the level around each frame
    motion: float  # mean mouth motion, grey levels
    pairs: int  # frame pairs measured


@dataclass(frozen=True)
class TrackPoint:
    time: float
    x: float
    y: float
    w: float
    h: float
    kind: str  # detected | interpolated | held


@dataclass(frozen=True)
class SpeakerFace:
    """The stage's result for one segment (`custom.speaker_face` in the record)."""

    decision: str  # motion (the cue chose) | largest (the cue could not decide) | off_screen (kept, "keep")
    method: str
    reason: str | None  # why the cue could not decide, or why the voice is off screen
    track: int | None  # the chosen track (index, largest face first)
    score: float | None  # its score
    margin: float | None  # its lead over the second track (None with one track)
    confident: bool
    scores: tuple[TrackScore, ...]
    frames: int  # frames sampled in the segment
    active: FaceBox  # the chosen face's detection nearest the midpoint (the record's active_face)
    face_track: tuple[TrackPoint, ...]  # the chosen face over the whole segment
    # the speaker's face at the face step's frame times (`tasks.expressions.face_crop`), for that stage; not in the record
    face_crops: tuple[tuple[float, np.ndarray], ...] = ()

    def cache_form(self) -> SpeakerFace:
        """As the cache keys of the stages that need it see it: the face crops by a digest of their times
        and pixels (an array's pickle is not the same made here and loaded from the cache)."""
        digest = hashlib.sha256()
        for time, crop in self.face_crops:
            digest.update(f"{time}:{crop.shape}:{crop.dtype}".encode())
            digest.update(np.ascontiguousarray(crop).tobytes())
        return dataclasses.replace(self, face_crops=((0.0, digest.hexdigest()),))


def score_track(track: int, motion: np.ndarray, opening: np.ndarray, pair_level: np.ndarray,
                frame_level: np.ndarray, pairs_covered: np.ndarray, frames_covered: np.ndarray,
                options: SpeakerFaceConfig) -> TrackScore:
    """One track's score: the mean of the correlations of its mouth motion and of its mouth opening with
    the speech level, over the frames it covers; 0 when its mouth is still or too few pairs are measured."""
    use = pairs_covered & ~np.isnan(motion)
    seen = frames_covered & ~np.isnan(opening)
    pairs = int(use.sum())
    mean_motion = float(np.mean(motion[use])) if pairs else 0.0
    if pairs < options.min_pairs or mean_motion < options.min_motion:
        return TrackScore(track, 0.0, None, None, round(mean_motion, 3), pairs)
    motion_r = pearson(motion[use], pair_level[use])
    opening_r = pearson(opening[seen], frame_level[seen])
    found = [r for r in (motion_r, opening_r) if r is not None]
    score = float(np.mean(found)) if found else 0.0
    rounded = (lambda r: None if r is None else round(r, 4))
    return TrackScore(track, round(score, 4), rounded(motion_r), rounded(opening_r), round(mean_motion, 3), pairs)


def decide(scores: Sequence[TrackScore], pair_level: np.ndarray,
           options: SpeakerFaceConfig) -> tuple[str, str | None, int, float | None, bool]:
    """(decision, reason, chosen track, margin, confident); track 0 is the largest face."""
    measured = [s for s in scores if s.pairs >= options.min_pairs]
    if len(pair_level) < options.min_pairs or not measured:
        return "largest", "too few frames", 0, None, False
    if float(np.std(pair_level)) < 0.5:  # dB
        return "largest", "flat speech level", 0, None, False
    if all(s.motion < options.min_motion for s in measured):
        return "largest", "no mouth moves", 0, None, False
    ranked = sorted(scores, key=lambda s: (-s.score, s.track))
    best = ranked[0]
    margin = round(best.score - ranked[1].score, 4) if len(ranked) > 1 else None
    if best.score <= options.min_score:
        return "off_screen", f"no mouth moves with the voice (best score {best.score:.2f})", 0, margin, False
    confident = margin is None or margin >= options.min_margin
    return "motion", None, best.track, margin, confident


def nearest_detection(track: Sequence[FaceBox], time: float) -> FaceBox:
    return min(track, key=lambda f: (abs(f.time - time), -f.area))


def speaker_in_segment(segment: Segment, faces: FaceResult, grey_frames: dict[float, np.ndarray],
                       frame_scale: tuple[float, float], samples: np.ndarray, rate: int, offset: float,
                       options: SpeakerFaceConfig, detection_crops: dict[FaceBox, np.ndarray] | None = None) -> SpeakerFace | Drop:
    """The decision for one segment from its faces, its grey frames (by sample time) and its soundtrack;
    `detection_crops` (each detection's `face_crop`) give the chosen face's `face_crops`."""
    tracks = link_tracks(faces.faces, options.link_iou)
    times = [t for t in sample_times(segment.start, segment.end, options.fps, options.max_frames) if t in grey_frames]
    pair_level = speech_envelope(samples, rate, offset, times)
    frame_level = frame_envelope(samples, rate, offset, times, options.fps)
    scores = []
    for k, track in enumerate(tracks):
        crops = [mouth_crop(grey_frames[t], box_at(track, t)[0], frame_scale, options) for t in times]
        low, high = coverage(track)
        pairs_covered = np.array([low <= a and b <= high for a, b in zip(times, times[1:])], dtype=bool)
        frames_covered = np.array([low <= t <= high for t in times], dtype=bool)
        scores.append(score_track(k, mouth_motion(crops), mouth_opening(crops), pair_level, frame_level,
                                  pairs_covered, frames_covered, options))
    decision, reason, chosen, margin, confident = decide(scores, pair_level, options)
    if decision == "off_screen" and options.off_screen == "drop":
        return Drop(DROP_OFF_SCREEN)
    track = tracks[chosen]
    all_times = sample_times(segment.start, segment.end, options.fps, options.max_frames)
    points = []
    for t in all_times:
        (x, y, w, h), kind = box_at(track, t)
        points.append(TrackPoint(time=t, x=round(x, 1), y=round(y, 1), w=round(w, 1), h=round(h, 1), kind=kind))
    chose = decision == "motion"
    speaker = speaker_detections(faces, track if chose else None)
    return SpeakerFace(decision=decision, method=METHOD, reason=reason, track=chosen,
                       score=scores[chosen].score if chose else None, margin=margin, confident=confident,
                       scores=tuple(scores), frames=len(times),
                       active=nearest_detection(track, segment.midpoint) if chose else faces.active,
                       face_track=tuple(points),
                       face_crops=tuple((box.time, detection_crops[box]) for box in speaker if box in (detection_crops or {})))


def speaker_boxes(faces: Iterable[FaceBox], active: FaceBox) -> list[FaceBox]:
    """Per analysed frame time, the face box nearest to the active face's centre."""
    by_time: dict[float, FaceBox] = {}
    ax, ay = active.x + active.w / 2, active.y + active.h / 2
    for box in faces:
        distance = abs(box.x + box.w / 2 - ax) + abs(box.y + box.h / 2 - ay)
        best = by_time.get(box.time)
        if best is None or distance < abs(best.x + best.w / 2 - ax) + abs(best.y + best.h / 2 - ay):
            by_time[box.time] = box
    return [by_time[t] for t in sorted(by_time)]


def speaker_detections(faces: FaceResult, track: Sequence[FaceBox] | None) -> list[FaceBox]:
    """The speaker's face in each frame the face step analysed: the chosen track's detections, or, when
    the cue chose none, the face nearest to the largest face in each frame."""
    if track:
        return sorted(track, key=lambda box: box.time)
    return speaker_boxes(faces.faces, faces.active) if faces.active is not None else []



# ----------------------------------------------------------------------------------------------- stage

def grey_frames_for(path: str, media_info: MediaInfo, segments: Sequence[Segment], faces: Sequence[FaceResult],
                    options: SpeakerFaceConfig, handover: Handover | None = None
                    ) -> tuple[list[dict[float, np.ndarray]], tuple[float, float], dict[FaceBox, np.ndarray]]:
    """Each segment's grey frames at its sample times and the `face_crop` of every detection whose frame
    time is one of them (from the frame at full size, in RGB: the crop the expressions stage would take
    from the frame it decodes): those the faces stage left in `handover`, the others from one decoding
    pass over their segments."""
    from tasks.expressions import face_crop
    from tasks.faces_decoding import frames_at, grey, picture, scaled_size

    width, height = scaled_size(media_info.width, media_info.height, options.scale)
    frame_scale = (width / media_info.width, height / media_info.height)
    frames: list[dict[float, np.ndarray]] = [{} for _ in segments]
    crops: dict[FaceBox, np.ndarray] = {}
    to_decode = []
    for k, (segment, found) in enumerate(zip(segments, faces)):
        if handover is not None and (taken := handover.take(segment, found)) is not None:
            frames[k], from_faces_stage = taken
            crops.update(from_faces_stage)
        else:
            to_decode.append(k)
    requests = sorted((t, k) for k in to_decode
                      for t in sample_times(segments[k].start, segments[k].end, options.fps, options.max_frames))
    detected: dict[tuple[float, int], list[FaceBox]] = {}
    for k in to_decode:
        for box in faces[k].faces:
            detected.setdefault((box.time, k), []).append(box)
    shown, image = None, None
    for wanted, frame in frames_at(path, [t for t, _ in requests]) if requests else ():
        t, k = requests[wanted]
        if frame is not shown:
            shown, image = frame, grey(frame, (width, height))
        frames[k][t] = image
        if boxes := detected.get((t, k)):
            rgb = picture(frame, (media_info.width, media_info.height), "rgb24")  # as the expressions stage decodes it
            crops.update((box, face_crop(rgb, box)) for box in boxes)
    return frames, frame_scale, crops


def speakers_in_chunk(items: Sequence[SegmentInput], options: SpeakerFaceConfig) -> list[SpeakerFace | Drop]:
    first = items[0]
    segments = [item.segment for item in items]
    faces = [item.results["faces"] for item in items]
    request = FrameRequest(options.fps, options.max_frames, options.scale)
    handover = Handover.of(first.video, first.staging_dir, request) if first.shared is None else None
    frames, frame_scale, crops = grey_frames_for(first.video.path, first.media_info, segments, faces, options, handover)
    results = []
    for item, found, grey in zip(items, faces, frames):
        audio = read_span(item.soundtrack, item.segment.start, item.segment.end)
        results.append(speaker_in_segment(item.segment, found, grey, frame_scale, audio.samples(),
                                          audio.rate, item.segment.start, options, crops))
    return results


SCORE_SCHEMA = {"type": "object", "required": ["track", "score", "motion_r", "opening_r", "motion", "pairs"],
                "additionalProperties": False,
                "properties": {"track": {"type": "integer", "minimum": 0}, "score": {"type": "number"},
                               "motion_r": {"type": ["number", "null"]}, "opening_r": {"type": ["number", "null"]},
                               "motion": {"type": "number", "minimum": 0}, "pairs": {"type": "integer", "minimum": 0}}}
POINT_SCHEMA = {"type": "object", "required": ["time", "x", "y", "w", "h", "kind"], "additionalProperties": False,
                "properties": {"time": {"type": "number", "minimum": 0}, "x": {"type": "number"},
                               "y": {"type": "number"}, "w": {"type": "number", "exclusiveMinimum": 0},
                               "h": {"type": "number", "exclusiveMinimum": 0},
                               "kind": {"enum": ["detected", "interpolated", "held"]}}}


@register
class SpeakerFaceStage(SegmentStage):
    """The active speaker's face by mouth motion against the voice, per chunk of segments, right after
    the faces stage; drops a segment whose voice belongs to no face on screen (`off_screen`)."""

    name = "speaker_face"
    section = "speaker_face"
    also_reads = ("audio",)  # the soundtrack it reads is the audio step's
    needs = ("faces",)
    drops = (DROP_OFF_SCREEN,)
    per_chunk = True
    code = ("tasks.faces_decoding", "tasks.expressions", "tasks.speaker_frames")  # its frames and face crops
    schema = {
        "type": "object", "additionalProperties": False,
        "required": ["decision", "method", "reason", "track", "score", "margin", "confident", "scores", "frames",
                     "face_track"],
        "properties": {
            "decision": {"enum": ["motion", "largest", "off_screen"],
                         "description": "motion: chosen by mouth motion against the voice; largest: the cue could "
                                        "not decide, the largest face kept; off_screen: the voice belongs to no face "
                                        "on screen (kept with off_screen = keep)"},
            "method": {"type": "string"},
            "reason": {"type": ["string", "null"]},
            "track": {"type": ["integer", "null"], "minimum": 0},
            "score": {"type": ["number", "null"]},
            "margin": {"type": ["number", "null"]},
            "confident": {"type": "boolean"},
            "scores": {"type": "array", "items": SCORE_SCHEMA},
            "frames": {"type": "integer", "minimum": 0},
            "face_track": {"type": "array", "items": POINT_SCHEMA,
                           "description": "the chosen face's box (source pixels) at every sampled frame"},
        },
    }

    def run_chunk(self, items, options: SpeakerFaceConfig) -> list[SpeakerFace | Drop]:
        from tasks.base import release_free_heap

        try:
            return speakers_in_chunk(items, options)
        finally:
            release_free_heap()  # the chunk's frames, freed: given back before the next chunk's

    def record_fields(self, result: SpeakerFace, options) -> dict:
        from modalink.stages import plain

        entry = plain(dataclasses.replace(result, face_crops=()))
        del entry["active"], entry["face_crops"]
        return {"active_face": face_box(result.active), "custom": {self.name: entry}}
