"""Progress over a video's segments (modalink/progress.py): the line, and when one is logged."""
from modalink.progress import Progress, duration, format_progress


def test_the_progress_line():
    assert format_progress("v", 0, 40, 0.0) == "v: 0/40 segments (0%)"
    assert format_progress("v", 12, 40, 8.0) == "v: 12/40 segments (30%), 1.50 segments/s, about 19 s left"
    assert format_progress("v", 40, 40, 100.0) == "v: 40/40 segments (100%), 0.40 segments/s, done in 1 min 40 s"
    assert format_progress("v", 300, 1000, 10.0) == "v: 300/1000 segments (30%), 30 segments/s, about 23 s left"
    assert duration(59.4) == "59 s" and duration(61) == "1 min 01 s" and duration(3725) == "1 h 02 min"


def test_a_line_every_n_segments_every_few_seconds_and_at_the_end():
    now = [0.0]
    lines = []
    progress = Progress("v", 25, lines.append, every=10, seconds=10.0, clock=lambda: now[0])
    for k in range(25):
        now[0] += 0.1 if k != 3 else 12.0  # the fourth segment takes 12 s
        progress.step()
    assert [line.split(" segments")[0] for line in lines] == ["v: 4/25", "v: 10/25", "v: 20/25", "v: 25/25"]
    assert "done in" in lines[-1]
