"""Step 9, records: manifest.jsonl, videos.jsonl, the run summary and the error log of a dataset.

Media is written before the records that point at it, and each record file is replaced atomically
(written beside, then renamed), so a reader never sees a record whose files are missing. Records
of videos processed in this run replace that video's earlier records; other videos' records stay,
so re-running never duplicates a segment.
"""
from __future__ import annotations

import json
import os
import threading
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

from modalink.records import SegmentRecord, VideoRecord, read_jsonl, to_json_line, validate_segment

MANIFEST = "manifest.jsonl"
VIDEOS = "videos.jsonl"
SUMMARY = "run_summary.json"
ERRORS = "errors.log"


def write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def merged_lines(path: Path, key: str, replaced_videos: set[str], new: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Earlier records of videos not processed now, then the new records (one per `key`)."""
    kept = [r for r in read_jsonl(path) if r.get("video_id") not in replaced_videos]
    by_key = {r[key]: r for r in kept}
    for record in new:
        by_key[record[key]] = record
    return list(by_key.values())


def publish_records(dataset_dir: str | Path, segments: list[SegmentRecord], videos: list[VideoRecord]) -> tuple[int, int]:
    """Validate the new segment records, then replace manifest.jsonl and videos.jsonl. Returns their line counts."""
    root = Path(dataset_dir)
    new_segments = [asdict(r) for r in segments]
    for record in new_segments:
        validate_segment(record)
        for field in ("video_clip", "audio_clip", "frame"):
            if not (root / record[field]).is_file():
                raise FileNotFoundError(f"{record['segment_id']}: {field} {record[field]} was not written")
    processed = {v.video_id for v in videos}
    manifest = merged_lines(root / MANIFEST, "segment_id", processed, new_segments)
    manifest.sort(key=lambda r: (r["video_id"], r["start"]))
    video_lines = merged_lines(root / VIDEOS, "video_id", processed, (asdict(v) for v in videos))
    write_atomically(root / MANIFEST, "".join(to_json_line(r) + "\n" for r in manifest))
    write_atomically(root / VIDEOS, "".join(to_json_line(v) + "\n" for v in video_lines))
    return len(manifest), len(video_lines)


def write_summary(dataset_dir: str | Path, summary: dict[str, Any]) -> Path:
    root = Path(dataset_dir)
    runs = root / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    text = json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
    write_atomically(runs / f"{summary['run_started'].replace(':', '')}.json", text)
    write_atomically(root / SUMMARY, text)
    return root / SUMMARY


class ErrorLog:
    """errors.log: one block per error, with where it happened and its traceback. Thread-safe."""

    def __init__(self, dataset_dir: str | Path):
        self.path = Path(dataset_dir) / ERRORS
        self.count = 0
        self._lock = threading.Lock()

    def add(self, where: str, error: BaseException | str) -> None:
        if isinstance(error, BaseException):
            detail = "".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip()
        else:
            detail = str(error)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        with self._lock:
            self.count += 1
            with self.path.open("a", encoding="utf-8") as log:
                log.write(f"[{stamp}] {where}\n{detail}\n\n")
