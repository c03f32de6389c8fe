"""A fanned-out video flow's sign of life, kept in the dataset's storage (the one medium machines share).

The video flow renews its lease (`.modalink/leases/KEY`, a counter) every `timeout / 6` seconds
from a thread of its own. The run that submitted it watches the counter: when it has not moved for
`timeout` seconds by the watcher's own clock (machines' clocks need not agree), the worker is taken
as lost and the video is run again.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

from modalink.storage import DatasetStorage

LEASES = ".modalink/leases"


@contextmanager
def held(storage: DatasetStorage, key: str, timeout_s: float) -> Iterator[None]:
    """Renew the lease `key` while the block runs."""
    stop = threading.Event()

    def renew() -> None:
        count = 0
        while not stop.is_set():
            count += 1
            try:
                storage.put_text_atomically(f"{LEASES}/{key}", str(count))
            except Exception:  # noqa: BLE001 - storage down for a while: the next renewal may get through
                pass
            stop.wait(timeout_s / 6)

    thread = threading.Thread(target=renew, name="modalink-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


class LeaseWatch:
    """When each watched lease last moved, by this machine's clock."""

    def __init__(self, storage: DatasetStorage, timeout_s: float):
        self.storage, self.timeout_s = storage, timeout_s
        self._seen: dict[str, tuple[str | None, float]] = {}

    def start(self, key: str) -> None:
        """Begin watching `key` now (its flow has started): it has `timeout_s` to show a first renewal."""
        self._seen.setdefault(key, (None, time.monotonic()))

    def lost(self, key: str) -> bool:
        """Whether the lease `key` has not moved for `timeout_s`."""
        try:
            value = self.storage.read_text(f"{LEASES}/{key}")
        except Exception:  # noqa: BLE001 - storage unreachable: no verdict from this look
            return False
        last_value, since = self._seen.get(key, (None, time.monotonic()))
        if value != last_value:
            self._seen[key] = (value, time.monotonic())
            return False
        return time.monotonic() - since > self.timeout_s

    def forget(self, key: str) -> None:
        self._seen.pop(key, None)
