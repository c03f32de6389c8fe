"""Leak-free splits (modalink/splits.py): every group (channel, else video) in exactly one split,
disjoint by video and by channel, the same for the same seed, in the configured proportions when
there are many groups."""
from collections import Counter

import pytest

from modalink.splits import SPLITS, check_proportions, segment_splits, split_of, video_splits

PROPORTIONS = {"train": 0.8, "dev": 0.1, "test": 0.1}


def synthetic(videos: int, per_channel: int | None = None, segments_per_video: int = 3):
    """Videos (grouped `per_channel` to a channel, or without channels) and their segments."""
    records = [{"video_id": f"v{n:05d}", "channel": f"ch{n // per_channel}" if per_channel else None}
               for n in range(videos)]
    segments = [{"segment_id": f"v{n:05d}-{k}_0", "video_id": f"v{n:05d}"}
                for n in range(videos) for k in range(segments_per_video)]
    return records, segments


def test_disjoint_by_video_and_by_channel():
    videos, segments = synthetic(600, per_channel=4)
    splits = segment_splits(videos, segments, 0, PROPORTIONS)
    assert set(splits) == {s["segment_id"] for s in segments}  # every segment in exactly one split
    by_video, by_channel = {}, {}
    channel = {v["video_id"]: v["channel"] for v in videos}
    for segment in segments:
        by_video.setdefault(segment["video_id"], set()).add(splits[segment["segment_id"]])
        by_channel.setdefault(channel[segment["video_id"]], set()).add(splits[segment["segment_id"]])
    assert all(len(found) == 1 for found in by_video.values())
    assert all(len(found) == 1 for found in by_channel.values())
    assert set(splits.values()) == set(SPLITS)


def test_deterministic_for_a_seed_and_stable_when_videos_are_added():
    videos, segments = synthetic(300)
    first = video_splits(videos, segments, 7, PROPORTIONS)
    assert video_splits(list(reversed(videos)), list(reversed(segments)), 7, PROPORTIONS) == first
    assert video_splits(videos, segments, 8, PROPORTIONS) != first  # another seed, another draw
    more, more_segments = synthetic(400)
    extended = video_splits(more, more_segments, 7, PROPORTIONS)
    assert {v: extended[v] for v in first} == first  # adding videos moves none of the others
    # a fixed value: the draw is SHA-256 of the group and the seed, not Python's hash() or random
    assert split_of("video:v00000", 7, PROPORTIONS) == first["v00000"]


@pytest.mark.parametrize("proportions", [PROPORTIONS, {"train": 0.5, "dev": 0.25, "test": 0.25},
                                         {"train": 1.0, "dev": 0.0, "test": 0.0}])
def test_proportions_on_many_groups(proportions):
    videos, segments = synthetic(20_000, segments_per_video=1)
    counts = Counter(video_splits(videos, segments, 0, proportions).values())
    for name in SPLITS:
        assert abs(counts.get(name, 0) / 20_000 - proportions[name]) < 0.015, (name, counts)


def test_few_groups_still_one_split_each():
    videos, segments = synthetic(3)
    splits = video_splits(videos, segments, 0, PROPORTIONS)
    assert len(splits) == 3 and set(splits.values()) <= set(SPLITS)


def test_a_segment_whose_video_has_no_record_goes_by_its_video():
    splits = segment_splits([], [{"segment_id": "x-0_0", "video_id": "x"}, {"segment_id": "x-1_0", "video_id": "x"}],
                            0, PROPORTIONS)
    assert splits["x-0_0"] == splits["x-1_0"]


def test_bad_proportions_are_named():
    assert check_proportions({"train": 0.5, "dev": 0.1, "test": 0.1})
    assert check_proportions({"train": 1.2, "dev": -0.2, "test": 0.0})
    assert not check_proportions(PROPORTIONS)
