"""Step 1, acquire: turn what the user named (video URL, playlist URL, file, folder) into local videos.

URLs go through yt-dlp: playlists are expanded to their videos, each video is downloaded in the
highest quality (merged to MP4 where streams are merged) with its info.json beside it, and a
download archive makes a video already downloaded a no-op. Local files are read in place; a path
that is not UTF-8 travels as its file:// URI and is read through a link in the download folder.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes, urlparse

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
    """A URL for yt-dlp; a file:// URI names a local file (`local_path`)."""
    return bool(re.match(r"^[a-z][a-z0-9+.-]*://", source, re.IGNORECASE)) and not is_file_uri(source)


def is_file_uri(source: str) -> bool:
    return source[:7].lower() == "file://"


def is_utf8(text: str) -> bool:
    """False for a path with bytes that are not UTF-8 (Python holds them as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def portable_source(source: str) -> str:
    """A source as a string that JSON, Prefect's API and the records can carry: itself, or for a local
    path whose name is not UTF-8, its file:// URI (the bytes percent-encoded; `local_path` reads it back)."""
    return source if is_utf8(source) else Path(source).expanduser().absolute().as_uri()


def local_path(source: str) -> Path:
    """The local file or folder a source names (a path, or a file:// URI)."""
    if is_file_uri(source):
        return Path(os.fsdecode(unquote_to_bytes(urlparse(source).path)))
    return Path(source).expanduser()


def safe_id(text: str, limit: int = 80, mark_changed: bool = True) -> str:
    """`text` as an id safe in file names, URLs and shells: letters, digits, `_`, `.` and `-`, not
    starting or ending with `.`, `_` or `-`, at most `limit` characters. Text that had to be changed
    ends in 8 hex digits of its SHA-1, so distinct texts give distinct ids (unless `mark_changed` is
    False: for names whose id carries a content fingerprint anyway)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._-")
    if cleaned == text and 0 < len(text) <= limit:
        return text
    if not mark_changed:
        return (cleaned or "video")[:limit]
    digest = hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{(cleaned or 'video')[:limit - 9].rstrip('._-')}-{digest}"


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


def local_video(path: Path, source: str | None = None, link_dir: str | None = None) -> Video:
    """A local file as a Video. A file whose path is not UTF-8 is read through a link to it in
    `link_dir` (named by its video id): every path a step is handed is UTF-8."""
    fingerprint = file_fingerprint(path)
    video_id = f"{safe_id(path.stem, mark_changed=False)}-{fingerprint[:8]}"  # the ids earlier versions gave
    return Video(
        video_id=video_id,
        source=source or portable_source(str(path)),
        path=readable_path(path.resolve(), video_id, link_dir),
        fingerprint=fingerprint,
        info={"title": os.fsencode(path.stem).decode("utf-8", "replace")},
    )


def readable_path(path: Path, video_id: str, link_dir: str | None) -> str:
    """`path` itself when it is UTF-8, else a link to it in `link_dir` (kept when it already points there)."""
    if is_utf8(str(path)):
        return str(path)
    if link_dir is None:
        raise SourceError(f"the name of {portable_source(str(path))} is not UTF-8: rename it")
    link = Path(link_dir) / f"local-{video_id}{path.suffix if is_utf8(path.suffix) else ''}"
    if not (link.is_symlink() and os.readlink(link) == str(path)):
        link.parent.mkdir(parents=True, exist_ok=True)
        partial = link.with_name(f".{link.name}.partial")
        partial.unlink(missing_ok=True)
        partial.symlink_to(path)
        partial.replace(link)
    return str(link)


def expand_sources(sources: list[str], config: AcquireConfig) -> list[str]:
    """Every source as a single video: folders list their media files, playlists their entries."""
    expanded: list[str] = []
    for source in sources:
        if is_url(source):
            expanded.extend(expand_url(source))
            continue
        path = local_path(source)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in config.media_extensions)
            if not files:
                raise SourceError(f"no video files ({', '.join(config.media_extensions)}) in folder {source}")
            expanded.extend(portable_source(str(p)) for p in files)
        elif path.is_file():
            expanded.append(portable_source(str(path)))
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
        "outtmpl": str(folder / "%(extractor_key)s-%(id).200B.%(ext)s"),  # file names stay under 255 bytes
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
            named = Path(ydl.prepare_filename(info))  # as the template names it: sanitized, trimmed
    except yt_dlp.utils.DownloadError as exc:
        message = _ytdlp_message(exc)
        if os.strerror(errno.ENOSPC) in message:  # a full disk stops the run (modalink.storage.no_space_left)
            raise OSError(errno.ENOSPC, f"download of {url}: {message}", str(folder)) from None
        if "Unsupported URL" in message or "HTTP Error 404" in message:
            raise SourceError(f"cannot download {url}: {message}") from None
        raise RuntimeError(f"download of {url} failed: {message}") from None  # transient: retried
    for leftover in folder.glob(f"{glob_escape(named.with_suffix('').name)}.info.json.*.tmp"):
        leftover.unlink(missing_ok=True)  # yt-dlp's temporary info.json of a run killed while writing it
    path = _downloaded_file(named, info)
    fingerprint = file_fingerprint(path)
    return Video(
        video_id=safe_id(f"{info.get('extractor_key', 'url')}-{info.get('id')}".lower()),
        source=url,
        path=str(path),
        fingerprint=fingerprint,
        info=_info_summary(info, url),
    )


def _downloaded_file(named: Path, info: dict[str, Any]) -> Path:
    """The file yt-dlp wrote, or, for a video the archive skipped, the one it wrote earlier under the
    template's name (`named`, whatever its extension)."""
    for item in info.get("requested_downloads") or []:
        if item.get("filepath") and Path(item["filepath"]).exists():
            return Path(item["filepath"])
    for candidate in sorted(named.parent.glob(f"{glob_escape(named.with_suffix('').name)}.*")):
        if not candidate.name.endswith((".info.json", ".part", ".ytdl", ".tmp")):
            return candidate
    raise RuntimeError(f"yt-dlp reported {info.get('webpage_url')} as downloaded but no file is in {named.parent}")


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
    return local_video(local_path(source), source, download_dir)
