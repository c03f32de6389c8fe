"""What the fault tests compare and look for in a dataset folder."""
from __future__ import annotations

import json
from pathlib import Path

MEDIA_FIELDS = ("video_clip", "audio_clip", "frame")
RUN_SPECIFIC = ("run_summary.json", "runs/", ".modalink/", "errors.log")  # times, cache keys and working files


def published_files(out: Path) -> dict[str, bytes]:
    """Every file of the dataset but the run's own (its summary, cache, working files), the
    downloads' info.json (yt-dlp writes the time of the download into it) and the exports' stamps
    (they hold the media files' times)."""
    files = {}
    for path in sorted(out.rglob("*")):
        key = path.relative_to(out).as_posix()
        if path.is_file() and not key.startswith(RUN_SPECIFIC) and not key.endswith((".info.json", ".modalink-stamp.json")):
            files[key] = path.read_bytes()
    return files


def differences(out: Path, expected: dict[str, bytes]) -> list[str]:
    """The published files that are missing, extra or not byte-equal to `expected`."""
    found = published_files(out)
    return sorted(key for key in set(found) | set(expected) if found.get(key) != expected.get(key))


def stray_files(out: Path) -> list[str]:
    """Half-written files and build folders that a failed or killed run left behind."""
    return sorted(path.relative_to(out).as_posix() for path in out.rglob("*")
                  if ".partial" in path.name or path.name.endswith((".part", ".ytdl", ".tmp"))
                  or path.parent.name == "exports")


def manifest_records(text: str | None) -> list[dict]:
    return [json.loads(line) for line in (text or "").splitlines()]


def missing_media(records: list[dict], present) -> list[str]:
    """The files named by `records` for which `present(key)` is false: a half-published dataset."""
    return [r[field] for r in records for field in MEDIA_FIELDS if not present(r[field])]
