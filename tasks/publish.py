"""Step 9, records: manifest.jsonl, videos.jsonl, the run summary and the error log of a dataset.

Media is published before the records that point at it, and every export is replaced atomically
(written beside, then moved), manifest.jsonl last, so a reader never sees a record whose files
are missing. Records of videos processed in this run replace that video's earlier records; other
videos' records stay, so re-running never duplicates a segment.
"""
from __future__ import annotations

import json
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Iterable

from prefect import task
from prefect.cache_policies import NO_CACHE

from modalink.exports import LABELS, DatasetRecords, Exporter, LabelledExporter, exporters, register_exporter
from modalink.records import MEDIA_FIELDS, SegmentRecord, VideoRecord, parse_jsonl, to_json_line, validate_segment
from modalink.secrets import redact
from modalink.storage import DatasetStorage
from modalink.timing import timed

MANIFEST = "manifest.jsonl"
VIDEOS = "videos.jsonl"
SUMMARY = "run_summary.json"
ERRORS = "errors.log"
ANNOTATION_SUMMARY = "annotation_summary.json"


def merged_lines(existing: list[dict[str, Any]], key: str, replaced_videos: set[str],
                 new: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Earlier records of videos not processed now, then the new records (one per `key`)."""
    by_key = {r[key]: r for r in existing if r.get("video_id") not in replaced_videos}
    for record in new:
        by_key[record[key]] = record
    return list(by_key.values())


def merged_records(storage: DatasetStorage, segments: list[SegmentRecord], videos: list[VideoRecord],
                   config: dict[str, Any] | None = None) -> DatasetRecords:
    """The dataset's published records with this run's in place of its videos' earlier ones (and the
    run's config, for the exports' options). Raises ValueError when a published record file does not parse."""
    processed = {v.video_id for v in videos}
    manifest = merged_lines(parse_jsonl(storage.read_text(MANIFEST)), "segment_id", processed,
                            (r.to_dict() for r in segments))
    manifest.sort(key=lambda r: (r["video_id"], r["start"]))
    video_lines = merged_lines(parse_jsonl(storage.read_text(VIDEOS)), "video_id", processed,
                               (v.to_dict() for v in videos))
    return DatasetRecords(manifest, video_lines, frozenset(processed), config)


def publish_media(storage: DatasetStorage, segments: list[SegmentRecord]) -> None:
    """Validate the new segment records, then publish the files they point at."""
    staging = storage.staging_dir()
    records = [r.to_dict() for r in segments]
    for record in records:
        validate_segment(record)
    for record in records:
        for field in MEDIA_FIELDS:
            staged = staging / record[field]
            if staged.is_file():
                storage.put_file(staged, record[field])
            elif not storage.exists(record[field]):  # staged elsewhere: a cached step from another machine
                raise FileNotFoundError(f"{record['segment_id']}: {field} {record[field]} was not written")


def publish_records(storage: DatasetStorage, segments: list[SegmentRecord], videos: list[VideoRecord],
                    config: dict[str, Any] | None = None) -> tuple[int, int]:
    """Media first, then every export in order (manifest.jsonl last). Returns the line counts of
    manifest.jsonl and videos.jsonl."""
    publish_media(storage, segments)
    records = merged_records(storage, segments, videos, config)
    for exporter in exporters():
        exporter.write(storage, records)
    return len(records.segments), len(records.videos)


def rewrite_exports(storage: DatasetStorage, records: DatasetRecords, only: Iterable[str] | None = None,
                    force: bool = False) -> list[tuple[str, bool, float]]:
    """Write the exports (those named in `only`, else all) that are missing or stale, or all of them
    with `force`, in order. Returns (name, rewritten, seconds) for each."""
    done = []
    for exporter in exporters():
        if only is not None and exporter.name not in only:
            continue
        started = time.perf_counter()
        rewritten = force or not exporter.is_current(storage, records)
        if rewritten:
            exporter.write(storage, records)
        done.append((exporter.name, rewritten, time.perf_counter() - started))
    return done


def jsonl(lines: list[dict[str, Any]]) -> str:
    return "".join(to_json_line(line) + "\n" for line in lines)


@register_exporter
class VideosExport(Exporter):
    name, order = "videos.jsonl", 10

    def render(self, records: DatasetRecords) -> dict[str, str]:
        return {VIDEOS: jsonl(records.videos)}


def merged_records_as_published(storage: DatasetStorage, config: dict[str, Any] | None = None) -> DatasetRecords:
    """The dataset's published records as they are (no run's records merged in), with `config`, or
    else the last run's config (run_summary.json), for the exports' options."""
    if config is None:
        config = published_config(storage)
    return DatasetRecords(parse_jsonl(storage.read_text(MANIFEST)), parse_jsonl(storage.read_text(VIDEOS)),
                          config=config)


def published_config(storage: DatasetStorage) -> dict[str, Any] | None:
    """The config of the dataset's last run (run_summary.json), None when there is none."""
    try:
        return json.loads(storage.read_text(SUMMARY) or "null").get("config")
    except (ValueError, AttributeError):
        return None


@register_exporter
class ManifestExport(LabelledExporter):
    """manifest.jsonl: the segments, with the annotators' labels of labels.jsonl (`modalink annotate
    --from`) merged in as added fields, so that a build keeps them."""

    name, order = "manifest.jsonl", 1_000_000  # last: readers take it as the sign that all is there

    def render(self, records: DatasetRecords, labels: str | None = None) -> dict[str, str]:
        from modalink.annotate import merge_labels

        return {MANIFEST: jsonl(merge_labels(records.segments, labels))}


def write_summary(storage: DatasetStorage, summary: dict[str, Any]) -> None:
    """The run's summary; the agreement of the last label import stays under `annotation`."""
    if "annotation" not in summary and (annotation := storage.read_text(ANNOTATION_SUMMARY)):
        summary = {**summary, "annotation": json.loads(annotation)}
    text = json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
    storage.put_text_atomically(f"runs/{summary['run_started'].replace(':', '')}.json", text)
    storage.put_text_atomically(SUMMARY, text)
    errors = storage.staging_dir() / ERRORS
    if errors.is_file():
        storage.put_file(errors, ERRORS)


@task(name="publish-records", cache_policy=NO_CACHE)
def publish_records_task(storage: DatasetStorage, segments: list[SegmentRecord], videos: list[VideoRecord],
                         config: dict[str, Any] | None = None) -> tuple[int, int]:
    """Retried (run.retries) by the flow when the storage does not answer; publishing again is harmless."""
    with timed("records"):
        return publish_records(storage, segments, videos, config)


@task(name="write-summary", cache_policy=NO_CACHE)
def write_summary_task(storage: DatasetStorage, summary: dict[str, Any]) -> None:
    write_summary(storage, summary)


class ErrorLog:
    """errors.log in the staging folder (published with the summary): one block per error, with where
    it happened and its traceback, secrets redacted (`modalink.secrets`). Thread-safe."""

    def __init__(self, staging_dir: str | Path):
        self.path = Path(staging_dir) / ERRORS
        self.count = 0
        self.blocks: list[str] = []  # this log's blocks, for a flow on another machine to hand back
        self._lock = threading.Lock()

    def add(self, where: str, error: BaseException | str) -> None:
        if isinstance(error, BaseException):
            detail = "".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip()
        else:
            detail = str(error)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.add_blocks([redact(f"[{stamp}] {where}\n{detail}\n\n")])

    def add_blocks(self, blocks: list[str]) -> None:
        """Append blocks as they are (those a video flow on another machine logged)."""
        with self._lock:
            self.count += len(blocks)
            self.blocks.extend(blocks)
            with self.path.open("a", encoding="utf-8") as log:
                log.writelines(blocks)
