"""Progress over the segments of one video (done / total, rate, time left), logged every `every`
segments or every `seconds` seconds, and at the end: a few lines per video, not one per segment."""
from __future__ import annotations

import time
from typing import Callable


def format_progress(label: str, done: int, total: int, elapsed: float) -> str:
    """'LABEL: 12/40 segments (30%), 1.5 segments/s, about 19 s left' (no rate before the first one)."""
    share = f" ({100 * done / total:.0f}%)" if total else ""
    text = f"{label}: {done}/{total} segments{share}"
    if done and elapsed > 0:
        rate = done / elapsed
        text += f", {rate:.2f} segments/s" if rate < 10 else f", {rate:.0f} segments/s"
        if done < total:
            text += f", about {duration((total - done) / rate)} left"
        else:
            text += f", done in {duration(elapsed)}"
    return text


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Progress:
    """Counts finished segments and hands a line to `log` when one is due."""

    def __init__(self, label: str, total: int, log: Callable[[str], None], every: int = 10, seconds: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, started: float | None = None):
        self.label, self.total, self.log, self.every, self.seconds, self.clock = label, total, log, every, seconds, clock
        self.done = 0
        self.last = clock()
        self.started = self.last if started is None else started  # the clock's time when the work began

    def step(self) -> None:
        self.done += 1
        now = self.clock()
        if self.done == self.total or self.done % self.every == 0 or now - self.last >= self.seconds:
            self.last = now
            self.log(format_progress(self.label, self.done, self.total, now - self.started))
