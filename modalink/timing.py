"""Seconds spent per stage in this process, summed over threads (for the run summary and benchmarks)."""
from __future__ import annotations

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


def snapshot() -> dict[str, float]:
    with _lock:
        return {stage: round(seconds, 3) for stage, seconds in sorted(_totals.items())}


def reset() -> None:
    with _lock:
        _totals.clear()
