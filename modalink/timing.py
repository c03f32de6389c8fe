"""Seconds spent per stage in this process, summed over threads (for the run summary and benchmarks)."""
from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator

_totals: dict[str, float] = defaultdict(float)
_lock = threading.Lock()


@contextmanager
def timed(stage: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        with _lock:
            _totals[stage] += time.perf_counter() - started


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def snapshot() -> dict[str, float]:
    with _lock:
        return {stage: round(seconds, 3) for stage, seconds in sorted(_totals.items())}


def reset() -> None:
    with _lock:
        _totals.clear()
