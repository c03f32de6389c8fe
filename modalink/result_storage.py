"""Where Prefect keeps the cached results of the steps: beside the dataset, in the same storage.

A local dataset keeps them in DATASET/.modalink/cache; an S3 dataset in s3://BUCKET/PREFIX/.modalink/cache,
through `S3ResultStorage`, a Prefect file-system block over boto3. So a cached step survives a crash,
a restart, and a run on another machine that writes to the same dataset. Credentials and endpoint
come from the environment, as for the dataset itself; the block holds none.
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
import json
from pathlib import Path

from prefect.filesystems import WritableFileSystem

from modalink.records import MEDIA_FIELDS
from modalink.storage import DatasetStorage, LocalStorage, S3Storage

CACHE_PREFIX = ".modalink/cache"


class S3ResultStorage(WritableFileSystem):
    """Prefect result storage in an S3 bucket (AWS, MinIO, SeaweedFS) at `url`."""

    _block_type_name = "MODALINK S3 result storage"
    url: str

    def _storage(self) -> S3Storage:
        storage = getattr(self, "_s3", None)
        if storage is None:
            storage = S3Storage(self.url)
            object.__setattr__(self, "_s3", storage)
        return storage

    def _resolve_path(self, path: str) -> None:  # noqa: ARG002 - Prefect's hook: keys are used as they are
        return None

    def read_path(self, path: str, _sync: bool | None = None) -> bytes:  # noqa: ARG002 - Prefect passes _sync
        content = self._storage().read_bytes(path)
        if content is None:
            raise FileNotFoundError(f"{self.url}/{path}")
        return content

    def write_path(self, path: str, content: bytes, _sync: bool | None = None) -> str:  # noqa: ARG002
        self._storage().put_bytes(path, content)
        return path

    async def aread_path(self, path: str) -> bytes:
        return await asyncio.to_thread(self.read_path, path)

    async def awrite_path(self, path: str, content: bytes) -> str:
        return await asyncio.to_thread(self.write_path, path, content)


@functools.cache
def _digest(files: tuple[Path, ...]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def result_storage_for(storage: DatasetStorage) -> Path | S3ResultStorage:
    """A folder for a local dataset; for S3, the block, saved on the Prefect server (flows and tasks
    take only saved blocks) under a name derived from the dataset's URL."""
    if isinstance(storage, S3Storage):
        block = S3ResultStorage(url=f"{storage.url}/{CACHE_PREFIX}")
        block.save(f"modalink-cache-{hashlib.sha1(block.url.encode()).hexdigest()[:12]}", overwrite=True)
        return block
    assert isinstance(storage, LocalStorage)
    return storage.root.resolve() / CACHE_PREFIX


def holds_no_cached_steps(storage: DatasetStorage) -> bool:
    """True for a local dataset with no cached step yet (a new one: every step will run). A remote
    dataset may hold cached steps from another machine: False."""
    if not isinstance(storage, LocalStorage):
        return False
    cache = storage.root / CACHE_PREFIX
    return not cache.is_dir() or next(cache.iterdir(), None) is None


class FinishedVideos:
    """The outcome of each video processed without an error, keyed by the video's content, the
    options that change results (the caller's `Config.cache_view`), the code of the steps and of
    every registered stage. A re-run finds a finished video with one read instead of one cache
    lookup per step and segment."""

    CODE = ("flows", "tasks", "modalink/config.py", "modalink/records.py", "modalink/stages.py", "modalink/wav.py")

    def __init__(self, result_storage: Path | WritableFileSystem, storage: DatasetStorage):
        from prefect.filesystems import LocalFileSystem
        from prefect.results import ResultStore

        if isinstance(result_storage, Path):
            result_storage = LocalFileSystem(basepath=str(result_storage))
        self.store = ResultStore(result_storage=result_storage)
        self.storage = storage
        self.reused = 0

    @staticmethod
    def code_version() -> str:
        from modalink.stages import segment_stages, source_files

        root = Path(__file__).resolve().parents[1]
        files = [path for name in FinishedVideos.CODE
                 for path in (sorted((root / name).rglob("*.py")) if (root / name).is_dir() else [root / name])]
        files += [path for stage in segment_stages() for path in source_files(stage)]
        return _digest(tuple(dict.fromkeys(path.resolve() for path in files)))

    def key(self, video_fingerprint: str, video_id: str, settings: dict) -> str:
        text = json.dumps([video_fingerprint, video_id, settings, self.code_version()], sort_keys=True)
        return "finished-video-" + hashlib.sha256(text.encode()).hexdigest()[:32]

    def get(self, key: str):
        """The stored outcome, or None (also when a medium it points at is gone)."""
        try:
            if not self.store.exists(key):
                return None
            found = self.store.read(key).result
        except Exception:  # noqa: BLE001 - an unreadable entry is a miss
            return None
        staging = self.storage.staging_dir()
        for segment in found.segments:
            for path in (getattr(segment, field) for field in MEDIA_FIELDS):
                if not (staging / path).is_file() and not self.storage.exists(path):
                    return None
        self.reused += 1
        return found

    def put(self, key: str, outcome) -> bool:
        try:
            self.store.write(obj=outcome, key=key)
            return True
        except Exception:  # noqa: BLE001 - the steps' own caches still hold the work
            return False
