"""Step 1, acquire: turn what the user named (video URL, playlist URL, file, folder) into local videos.

URLs go through yt-dlp: playlists are expanded to their videos, each video is downloaded in the
highest quality (merged to MP4 where streams are merged) with its info.json beside it, and a
download archive makes a video already downloaded a no-op. Local files are read in place.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any

from prefect import task

from modalink.config import AcquireConfig
from modalink.ffmpeg_tools import find_binary
from modalink.records import Video
from tasks.base import MediaError, retry_unless_permanent

log = logging.getLogger("modalink.acquire")

INFO_FIELDS = ("title", "channel", "uploader", "upload_date", "webpage_url", "duration", "license", "extractor_key", "id")


class SourceError(MediaError):
    """A source that names nothing usable: a missing file, an empty folder, a URL yt-dlp cannot handle."""


def is_url(source: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*://", source, re.IGNORECASE))


def safe_id(text: str, limit: int = 80) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._-")
    return (cleaned or "video")[:limit]


def file_fingerprint(path: str | Path, sample: int = 1 << 20) -> str:
    """A cheap content fingerprint: size plus the first and last MiB (changes when the file changes)."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha1(str(size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(sample))
        if size > sample:
            handle.seek(max(sample, size - sample))
            digest.update(handle.read(sample))
    return digest.hexdigest()


def local_video(path: Path, source: str | None = None) -> Video:
    fingerprint = file_fingerprint(path)
    return Video(
        video_id=f"{safe_id(path.stem)}-{fingerprint[:8]}",
        source=source or str(path),
        path=str(path.resolve()),
        fingerprint=fingerprint,
        info={"title": path.stem},
    )


def expand_sources(sources: list[str], config: AcquireConfig) -> list[str]:
    """Every source as a single video: folders list their media files, playlists their entries."""
    expanded: list[str] = []
    for source in sources:
        if is_url(source):
            expanded.extend(expand_url(source))
            continue
        path = Path(source).expanduser()
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in config.media_extensions)
            if not files:
                raise SourceError(f"no video files ({', '.join(config.media_extensions)}) in folder {source}")
            expanded.extend(str(p) for p in files)
        elif path.is_file():
            expanded.append(str(path))
        else:
            raise SourceError(f"no such file or folder: {source}")
    return list(dict.fromkeys(expanded))  # keep order, drop repeats


def expand_url(url: str) -> list[str]:
    import yt_dlp

    options = {"extract_flat": "in_playlist", "quiet": True, "no_warnings": True, "logger": _YtdlpLogger()}
    try:
        with yt_dlp.YoutubeDL(options) as ydl:
            info = ydl.extract_info(url, download=False)
    except yt_dlp.utils.DownloadError as exc:
        raise SourceError(f"cannot read {url}: {_ytdlp_message(exc)}") from None
    if info.get("_type") in ("playlist", "multi_video"):
        entries = [e.get("url") or e.get("webpage_url") for e in info.get("entries") or []]
        entries = [e for e in entries if e]
        if not entries:
            raise SourceError(f"playlist {url} has no videos")
        return entries
    return [url]


def download(url: str, config: AcquireConfig, download_dir: str) -> Video:
    import yt_dlp

    folder = Path(download_dir)
    folder.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {
        "format": config.format,
        "format_sort": ["res", "ext:mp4:m4a"],
        "merge_output_format": config.merge_output_format,
        "outtmpl": str(folder / "%(extractor_key)s-%(id)s.%(ext)s"),
        "writeinfojson": True,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "logger": _YtdlpLogger(),
        "ffmpeg_location": find_binary("ffmpeg"),
        "retries": 3,
    }
    if config.use_archive:
        options["download_archive"] = str(folder / "archive.txt")
    try:
        with yt_dlp.YoutubeDL(options) as ydl:
            info = ydl.extract_info(url, download=True)
            info = ydl.sanitize_info(info)
    except yt_dlp.utils.DownloadError as exc:
        message = _ytdlp_message(exc)
        if os.strerror(errno.ENOSPC) in message:  # a full disk stops the run (modalink.storage.no_space_left)
            raise OSError(errno.ENOSPC, f"download of {url}: {message}", str(folder)) from None
        if "Unsupported URL" in message or "HTTP Error 404" in message:
            raise SourceError(f"cannot download {url}: {message}") from None
        raise RuntimeError(f"download of {url} failed: {message}") from None  # transient: retried
    path = _downloaded_file(folder, info)
    fingerprint = file_fingerprint(path)
    return Video(
        video_id=safe_id(f"{info.get('extractor_key', 'url')}-{info.get('id')}".lower()),
        source=url,
        path=str(path),
        fingerprint=fingerprint,
        info=_info_summary(info, url),
    )


def _downloaded_file(folder: Path, info: dict[str, Any]) -> Path:
    for item in info.get("requested_downloads") or []:
        if item.get("filepath") and Path(item["filepath"]).exists():
            return Path(item["filepath"])
    stem = f"{info.get('extractor_key')}-{info.get('id')}"
    for candidate in sorted(folder.glob(f"{glob_escape(stem)}.*")):
        if not candidate.name.endswith((".info.json", ".part", ".ytdl")):
            return candidate
    raise RuntimeError(f"yt-dlp reported {info.get('webpage_url')} as downloaded but no file is in {folder}")


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]])", r"[\1]", text)


def _info_summary(info: dict[str, Any], url: str) -> dict[str, Any]:
    summary = {key: info.get(key) for key in INFO_FIELDS if info.get(key) is not None}
    summary["url"] = info.get("webpage_url") or url
    summary.setdefault("channel", info.get("uploader"))
    return summary


def _ytdlp_message(exc: Exception) -> str:
    return re.sub(r"^ERROR:\s*", "", str(exc)).strip()


class _YtdlpLogger:
    """yt-dlp's messages go to logging, not straight to the terminal."""

    def debug(self, message: str) -> None:
        log.debug(message)

    def info(self, message: str) -> None:
        log.debug(message)

    def warning(self, message: str) -> None:
        log.debug(message)

    def error(self, message: str) -> None:
        log.debug(message)


@task(name="expand-sources", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_permanent)
def expand_sources_task(sources: list[str], config: AcquireConfig) -> list[str]:
    return expand_sources(sources, config)


@task(name="acquire", retries=3, retry_delay_seconds=[2, 8, 30], retry_condition_fn=retry_unless_permanent,
      task_run_name="acquire {source}")
def acquire_task(source: str, config: AcquireConfig, download_dir: str) -> Video:
    if is_url(source):
        return download(source, config, download_dir)
    return local_video(Path(source).expanduser(), source)
