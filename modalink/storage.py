"""Where a dataset lands: a local folder (the default) or S3-compatible object storage (AWS S3, MinIO).

Steps write media into a local staging folder; publishing copies media first and the records that
point at them last, each record file replaced atomically, so a reader never sees a record whose
files are missing. For a local dataset the staging folder is the dataset itself.

S3 credentials come from the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or any source
boto3 reads); the endpoint from MODALINK_S3_ENDPOINT_URL or AWS_ENDPOINT_URL (unset: AWS). They are
never printed or logged: every StorageError message goes through `modalink.secrets.redact`.

A full disk stops the run: every later write would fail too. `no_space_left` finds that error
behind any other, and `no_space_message` says it in one line; `storage_unreachable` finds an S3
request that got no answer, which the steps' retries and the next run ride out.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sys
import uuid
from abc import ABC, abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

from modalink.secrets import redact


class StorageError(RuntimeError):
    """The dataset storage cannot be used: the message says why, without secrets (`redact`)."""

    def __init__(self, message: str):
        super().__init__(redact(message))


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full disk, a spent quota


def raised_from(error: BaseException | None, is_wanted) -> BaseException | None:
    """`error`, or the first exception it was raised from (its cause or context), for which
    `is_wanted` is true; None when there is none."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if is_wanted(error):
            return error
        error = error.__cause__ or error.__context__
    return None


def no_space_left(error: BaseException | None) -> OSError | None:
    """The "no space left on device" error that `error` is or was raised from, or None."""
    return raised_from(error, lambda e: isinstance(e, OSError) and e.errno in NO_SPACE)


def storage_unreachable(error: BaseException | None) -> BaseException | None:
    """The error of an S3 request that got no answer (the server down or out of reach) that `error`
    is or was raised from, or None."""
    if "botocore" not in sys.modules:
        return None
    from botocore.exceptions import ConnectionError as NoConnection, HTTPClientError

    return raised_from(error, lambda e: isinstance(e, (NoConnection, HTTPClientError)))


def no_space_message(error: OSError, staging: Path) -> str:
    """One line: the folder that is full (the staging folder, unless the file was elsewhere) and what to do."""
    folder = Path(staging).resolve()
    if error.filename and folder not in Path(error.filename).resolve().parents:
        folder = Path(error.filename).resolve().parent
    return (f"no space left on device in {folder}: free some space there (or use a larger folder) and run the same "
            "command again to finish the dataset; the finished steps are kept")


class DatasetStorage(ABC):
    url: str

    @abstractmethod
    def staging_dir(self) -> Path:
        """The local folder where steps write media before it is published."""

    @abstractmethod
    def check(self) -> None:
        """Raise StorageError when the dataset cannot be written."""

    @abstractmethod
    def put_file(self, local: Path, key: str) -> None:
        """Publish a staged file under `key` (relative to the dataset root)."""

    @abstractmethod
    def put_text_atomically(self, key: str, text: str) -> None:
        """Replace `key` with `text` so that readers see the old or the new content, never a part."""

    @abstractmethod
    def read_text(self, key: str) -> str | None:
        """The content of `key`, or None when it does not exist."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether `key` is already published."""

    @abstractmethod
    def fetch_file(self, key: str, local: Path) -> None:
        """Copy the published `key` to `local` (FileNotFoundError when it does not exist)."""


class LocalStorage(DatasetStorage):
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        self.url = str(self.root.resolve())

    def staging_dir(self) -> Path:
        return self.root

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-check-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StorageError(f"cannot write to {self.root}: {exc.strerror or exc}") from None

    def put_file(self, local: Path, key: str) -> None:
        target = self.root / key
        if local.resolve() != target.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, target)

    def put_text_atomically(self, key: str, text: str) -> None:
        write_atomically(self.root / key, text.encode("utf-8"))

    def read_text(self, key: str) -> str | None:
        path = self.root / key
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def fetch_file(self, key: str, local: Path) -> None:
        shutil.copyfile(self.root / key, local)


class S3Storage(DatasetStorage):
    def __init__(self, url: str, staging_root: str | Path | None = None):
        parsed = urlparse(url)
        self.url = url.rstrip("/")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        if not self.bucket:
            raise StorageError(f"an S3 dataset needs a bucket: s3://BUCKET/PREFIX, got {url}")
        default_root = Path(os.environ.get("MODALINK_CACHE", Path.home() / ".cache" / "modalink")) / "staging"
        name = hashlib.sha1(self.url.encode()).hexdigest()[:12]
        self._staging = Path(staging_root or default_root) / f"{self.bucket}-{name}"
        self._client = None

    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config as BotoConfig

            endpoint = os.environ.get("MODALINK_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL") or None
            session = boto3.session.Session()  # reads the environment now, not at first import
            self._client = session.client("s3", endpoint_url=endpoint, config=BotoConfig(
                retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30))
        return self._client

    def key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def staging_dir(self) -> Path:
        return self._staging

    def check(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except NoCredentialsError:
            raise StorageError("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from None
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if code in ("404", "NoSuchBucket"):
                raise StorageError(f"S3 bucket {self.bucket!r} does not exist") from None
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise StorageError(f"S3 refused access to bucket {self.bucket!r}: check the credentials") from None
            raise StorageError(f"S3 error on bucket {self.bucket!r}: {code}") from None
        except BotoCoreError as exc:
            raise StorageError(f"cannot reach S3 storage for {self.url}: {exc}") from None
        self._staging.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _is_missing(exc: Exception) -> bool:
        return str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound")

    def _size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.key(key))["ContentLength"]
        except ClientError as exc:
            if self._is_missing(exc):
                return None
            raise

    def exists(self, key: str) -> bool:
        return self._size(key) is not None

    def fetch_file(self, key: str, local: Path) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.download_file(self.bucket, self.key(key), str(local))
        except ClientError as exc:
            if self._is_missing(exc) or str(exc.response.get("Error", {}).get("Code")) == "404":
                raise FileNotFoundError(f"{self.url}/{key}") from None
            raise

    def put_file(self, local: Path, key: str) -> None:
        if self._size(key) == local.stat().st_size:
            return  # already published by an earlier run
        self.client.upload_file(str(local), self.bucket, self.key(key))

    def put_text_atomically(self, key: str, text: str) -> None:
        temporary = self.key(f".partial/{uuid.uuid4().hex}-{Path(key).name}")
        self.client.put_object(Bucket=self.bucket, Key=temporary, Body=text.encode("utf-8"))
        self.client.copy_object(Bucket=self.bucket, Key=self.key(key), CopySource={"Bucket": self.bucket, "Key": temporary})
        self.client.delete_object(Bucket=self.bucket, Key=temporary)

    def read_text(self, key: str) -> str | None:
        content = self.read_bytes(key)
        return None if content is None else content.decode("utf-8")

    def read_bytes(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.key(key))["Body"].read()
        except ClientError as exc:
            if self._is_missing(exc):
                return None
            raise

    def put_bytes(self, key: str, content: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key(key), Body=content)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_client": None}  # a boto3 client does not travel to Dask workers


@contextmanager
def replaced_atomically(target: Path) -> Iterator[Path]:
    """A temporary path beside `target`, with the same extension (so that a tool writing it picks the
    same format), moved onto `target` when the block succeeds and removed when it fails: a reader
    never sees half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.stem}.partial{target.suffix}")
    try:
        yield partial
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def write_atomically(target: Path, data: bytes) -> None:
    with replaced_atomically(target) as partial:
        partial.write_bytes(data)


def open_storage(out: str) -> DatasetStorage:
    if out.startswith("s3://"):
        return S3Storage(out, os.environ.get("MODALINK_STAGING_DIR"))
    if "://" in out:
        raise StorageError(f"--out must be a local folder or s3://bucket/prefix, got {out}")
    return LocalStorage(out)
