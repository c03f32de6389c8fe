"""The dataset's object storage as the one medium that machines share.

When a video's work runs on machines that do not see each other's disks (segment tasks on a remote
Dask cluster, video flows on the workers of a Prefect pool), the flow that has a video's source and
soundtrack puts them in the dataset's storage under keys named by their content
(`.modalink/inputs/...`), and every machine reads them through a local cache keyed the same way,
fetched once per machine. A segment task writes into a workspace of its own and puts what it wrote
into the storage under the same relative path as in the records; a file an earlier stage wrote on
another machine is fetched from there when a stage reads it.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from modalink.config import RunConfig
from modalink.storage import DatasetStorage, LocalStorage, StorageError, open_storage

INPUTS = ".modalink/inputs"
READS = ".reads"  # a workspace's copies of files other stages wrote: fetched, never put back
_fetch_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def cache_root() -> Path:
    """This machine's cache of shared inputs (MODALINK_CACHE, else ~/.cache/modalink)."""
    return Path(os.environ.get("MODALINK_CACHE", Path.home() / ".cache" / "modalink")) / "shared"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _lock(key: str) -> threading.Lock:
    with _locks_guard:
        return _fetch_locks.setdefault(key, threading.Lock())


@dataclass(frozen=True)
class SharedMedia:
    """Where any machine finds one video's inputs: the dataset and the keys of its source and soundtrack."""

    dataset: str  # s3://bucket/prefix (or a folder every machine mounts at the same path)
    source_key: str
    soundtrack_key: str | None = None

    def storage(self) -> DatasetStorage:
        return open_storage(self.dataset)

    def source(self) -> str:
        return str(self.cached(self.source_key))

    def soundtrack(self) -> str:
        assert self.soundtrack_key is not None, "the soundtrack was not shared"
        return str(self.cached(self.soundtrack_key))

    def cached(self, key: str) -> Path:
        """The local copy of a content-keyed input, fetched on first use on this machine."""
        local = cache_root() / key
        if local.is_file():
            return local
        with _lock(key):
            if not local.is_file():
                local.parent.mkdir(parents=True, exist_ok=True)
                partial = local.with_name(f".{uuid.uuid4().hex}.partial")
                try:
                    self.storage().fetch_file(key, partial)
                    os.replace(partial, local)
                finally:
                    partial.unlink(missing_ok=True)
        return local


def share_file(storage: DatasetStorage, path: Path, name: str, content_key: str) -> str:
    """Put `path` in the storage under `.modalink/inputs/CONTENT_KEY/NAME` and in this machine's cache
    (so the machine that shares it never fetches it back); returns the key."""
    key = f"{INPUTS}/{content_key}/{name}"
    storage.put_file(path, key)
    local = cache_root() / key
    if not local.is_file():
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(f".{uuid.uuid4().hex}.partial")
        try:
            try:
                os.link(path, partial)
            except OSError:
                shutil.copyfile(path, partial)
            os.replace(partial, local)
        finally:
            partial.unlink(missing_ok=True)
    return key


def share_source(storage: DatasetStorage, dataset: str, path: str, fingerprint: str) -> SharedMedia:
    return SharedMedia(dataset, share_file(storage, Path(path), "source" + Path(path).suffix, fingerprint))


def share_soundtrack(storage: DatasetStorage, shared: SharedMedia, soundtrack: str) -> SharedMedia:
    path = Path(soundtrack)
    key = share_file(storage, path, "audio.wav", file_digest(path))
    return SharedMedia(shared.dataset, shared.source_key, key)


def check_shareable(storage: DatasetStorage, run: RunConfig) -> None:
    """Machines that share nothing but the dataset's storage need it to be object storage."""
    if (run.fan_out or run.segments_elsewhere()) and isinstance(storage, LocalStorage) and run.share_media != "yes":
        where = "run.fan_out" if run.fan_out else "a remote Dask cluster (run.dask_address)"
        raise StorageError(f"{where} runs work on other machines, which share only object storage: write the "
                           f"dataset to s3://BUCKET/PREFIX, or set run.share_media=yes if every machine "
                           f"mounts {storage.url} at that same path")


class Workspace:
    """A segment task's folder on this machine: what the task writes is put in the storage at the
    end; a file an earlier stage wrote elsewhere is fetched on first read."""

    def __init__(self, shared: SharedMedia):
        self.shared = shared
        self.root = cache_root() / "tasks" / uuid.uuid4().hex
        self.root.mkdir(parents=True)
        self._storage = shared.storage()

    def file(self, relative: str) -> Path:
        """A file another stage wrote (a clip, a WAV clip), readable here."""
        written_here = self.root / relative
        if written_here.is_file():
            return written_here
        local = self.root / READS / relative
        if not local.is_file():
            local.parent.mkdir(parents=True, exist_ok=True)
            self._storage.fetch_file(relative, local)
        return local

    def has_file(self, relative: str) -> bool:
        return (self.root / relative).is_file() or self._storage.exists(relative)

    def put_written(self) -> None:
        """Put every file the task wrote in the storage, at its path relative to the workspace."""
        for path in sorted(self.root.rglob("*")):
            relative = path.relative_to(self.root)
            if path.is_file() and relative.parts[0] != READS and ".partial" not in path.name:
                self._storage.put_file(path, relative.as_posix())

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def workspace(shared: SharedMedia) -> Iterator[Workspace]:
    """A workspace whose written files are put in the storage when the block succeeds; removed either way."""
    space = Workspace(shared)
    try:
        yield space
        space.put_written()
    finally:
        space.remove()
