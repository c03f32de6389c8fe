"""Leak-free train / dev / test splits: pure functions.

A split is drawn per *group*, never per segment: a video's segments all go to one split, and so do
all the videos of one channel (where the video record names one), so that no video and no speaker of
a channel is in two splits. The draw is a hash of the group id with the seed (SHA-256, not Python's
random order or `hash()`), so the same seed gives the same splits on every machine and run, and
adding a video never moves another one. Each group lands in exactly one split; the proportions are
those of the expected number of groups, so with few groups (a handful of videos) they are only
approximate, and a split may be empty.
"""
from __future__ import annotations

import hashlib
from typing import Any, Iterable, Mapping

SPLITS = ("train", "dev", "test")


def group_of(video_id: str, channel: str | None = None) -> str:
    """The unit that is never split: the channel when there is one, else the video."""
    return f"channel:{channel}" if channel else f"video:{video_id}"


def unit_draw(group: str, seed: int) -> float:
    """A number in [0, 1) fixed by the group and the seed."""
    digest = hashlib.sha256(f"modalink-split\0{seed}\0{group}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def check_proportions(proportions: Mapping[str, float]) -> list[str]:
    problems = []
    if set(proportions) != set(SPLITS):
        problems.append(f"the proportions must name {', '.join(SPLITS)}")
    elif any(value < 0 for value in proportions.values()):
        problems.append("split proportions must be >= 0")
    elif abs(sum(proportions.values()) - 1.0) > 1e-6:
        problems.append(f"split proportions must add up to 1, got {sum(proportions.values()):g}")
    return problems


def split_of(group: str, seed: int, proportions: Mapping[str, float]) -> str:
    """The split of one group: where its draw falls among the cumulative proportions."""
    draw, cumulative = unit_draw(group, seed), 0.0
    chosen = [name for name in SPLITS if proportions[name] > 0]
    for name in chosen:
        cumulative += proportions[name]
        if draw < cumulative:
            return name
    return chosen[-1]  # rounding: the draw sits at the very top


def video_splits(videos: Iterable[Mapping[str, Any]], segments: Iterable[Mapping[str, Any]], seed: int,
                 proportions: Mapping[str, float]) -> dict[str, str]:
    """{video_id: split} for every video of `videos` and every video a segment names (a segment whose
    video has no record is grouped by its video id)."""
    channel = {v["video_id"]: v.get("channel") for v in videos}
    ids = list(dict.fromkeys([*channel, *(s["video_id"] for s in segments)]))
    return {video_id: split_of(group_of(video_id, channel.get(video_id)), seed, proportions) for video_id in ids}


def segment_splits(videos: Iterable[Mapping[str, Any]], segments: list[Mapping[str, Any]], seed: int,
                   proportions: Mapping[str, float]) -> dict[str, str]:
    """{segment_id: split}: each segment in its video's split."""
    by_video = video_splits(videos, segments, seed, proportions)
    return {s["segment_id"]: by_video[s["video_id"]] for s in segments}
