"""The run plan: for sources, a config and a dataset's storage, what a run has to do. The flow and
the up-to-date shortcut both use it, and both end with its summary.

A video is finished when an earlier run processed it to the end, without an error, with the same
content, the same options that change results (`Config.cache_view`) and the same code; its stored
outcome is then used as it is. `finished_run` is the shortcut: when every source is a local file
whose video is finished, it rewrites only the exports that are missing or stale, and no flow runs.
"""
from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

from modalink import timing
from modalink.config import Config
from modalink.records import SegmentRecord, Video, VideoRecord
from modalink.result_storage import FinishedVideos, holds_no_cached_steps, result_storage_for
from modalink.secrets import redact
from modalink.stages import segment_stages
from modalink.storage import DatasetStorage, LocalStorage, open_storage
from tasks.acquire import SourceError, expand_sources, is_url, local_video, safe_id
from tasks.publish import ErrorLog, merged_records, rewrite_exports, write_summary

PACKAGES = ("modalink", "prefect", "yt-dlp", "webrtcvad-wheels", "librosa", "boto3", "numpy")


@dataclass
class VideoOutcome:
    video: VideoRecord
    segments: list[SegmentRecord] = field(default_factory=list)
    errors_logged: int = 0
    error_blocks: list[str] = field(default_factory=list)  # the errors.log blocks of those errors


def failed_video(video_id: str, source: str, error: BaseException) -> VideoRecord:
    return VideoRecord(video_id=video_id, source=source, status="failed", error=redact(error) or type(error).__name__)


class RunPlan:
    """What a run over `sources` with `cfg` into `storage` has to do, and its summary at the end."""

    def __init__(self, sources: list[str], cfg: Config, storage: DatasetStorage, result_storage=None):
        self.sources, self.cfg, self.storage = sources, cfg, storage
        self.result_storage = result_storage if result_storage is not None else result_storage_for(storage)
        self.finished = FinishedVideos(self.result_storage, storage)
        self.started, self._clock = datetime.now(timezone.utc), time.perf_counter()

    def expand(self, expand: Callable[[list[str]], list[str]], errors: ErrorLog | None = None,
               logger=None) -> tuple[list[str], list[VideoRecord]]:
        """The single videos of every source, and a failed record for each source that cannot be expanded."""
        singles, failed = [], []
        for source in self.sources:
            try:
                singles.extend(expand([source]))
            except Exception as exc:  # noqa: BLE001 - one bad source never stops the others
                if errors is not None:
                    errors.add(f"source {source}", exc)
                if logger is not None:
                    logger.error("%s: %s", source, exc)
                failed.append(failed_video(safe_id(source), source, exc))
        return singles, failed

    def key(self, video: Video) -> str:
        """The export options change no video's outcome: they are left out."""
        settings = {name: view for name, view in self.cfg.cache_view().items() if name != "export"}
        return self.finished.key(video.fingerprint, video.video_id, settings)

    def finished_outcome(self, video: Video) -> VideoOutcome | None:
        """The stored outcome of a finished video (its media still there), or None: work to do."""
        return self.finished.get(self.key(video))

    def remember(self, video: Video, outcome: VideoOutcome) -> None:
        """Store the outcome of a video processed to the end without an error."""
        if outcome.video.status == "ok" and outcome.errors_logged == 0:
            self.finished.put(self.key(video), outcome)

    def summary(self, videos: list[VideoRecord], segments: list[SegmentRecord], manifest_lines: int,
                error_count: int) -> dict[str, Any]:
        return run_summary(self.cfg, self.sources, videos, segments, self.started,
                           time.perf_counter() - self._clock, manifest_lines, error_count, self.storage.url,
                           self.finished.reused)


def finished_run(sources: list[str], out: str, config: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The summary of a run with nothing left to do but stale exports, or None when there is work
    (or when that cannot be known without Prefect: a URL, a remote dataset, a new one). The CLI
    then prints this summary instead of starting a temporary Prefect server for a flow that would
    only read its caches; a run against a standing server (a deployment) always runs the flow."""
    cfg = Config.load(overrides=config)
    storage = open_storage(out)
    if (not isinstance(storage, LocalStorage) or any(is_url(source) for source in sources)
            or holds_no_cached_steps(storage)):
        return None
    plan = RunPlan(sources, cfg, storage)
    outcomes = []
    try:
        for single in expand_sources(sources, cfg.acquire):  # stops at the first video with work left
            if (found := plan.finished_outcome(local_video(Path(single).expanduser(), single))) is None:
                return None
            outcomes.append(found)
    except (SourceError, OSError):
        return None
    if not outcomes:
        return None
    segments = [segment for found in outcomes for segment in found.segments]
    videos = [found.video for found in outcomes]
    try:
        records = merged_records(storage, segments, videos, cfg.to_dict())
    except (ValueError, OSError):  # unreadable records: the flow writes them again
        return None
    rewritten = [name for name, was_rewritten, _ in rewrite_exports(storage, records) if was_rewritten]
    summary = plan.summary(videos, segments, len(records.segments), 0)
    summary["up_to_date"] = True  # no flow ran
    summary["exports_rewritten"] = rewritten
    write_summary(storage, summary)
    return summary


def run_summary(cfg: Config, sources: list[str], videos: list[VideoRecord], segments: list[SegmentRecord],
                started: datetime, wall_s: float, manifest_lines: int, error_count: int, dataset: str,
                reused: int = 0) -> dict[str, Any]:
    dropped: dict[str, int] = {}
    for v in videos:
        for reason, count in v.segments_dropped.items():
            dropped[reason] = dropped.get(reason, 0) + count
    return {
        "run_started": started.isoformat(timespec="seconds"),
        "wall_s": round(wall_s, 2),
        "dataset": dataset,
        "sources": sources,
        "videos": {"total": len(videos), "ok": sum(v.status == "ok" for v in videos),
                   "failed": sum(v.status == "failed" for v in videos), "reused": reused},
        "failed_videos": [{"video_id": v.video_id, "source": v.source, "error": v.error}
                          for v in videos if v.status == "failed"],
        "segments": {"kept": len(segments), "dropped": dropped,
                     "transcription_failed": sum(s.transcript_status == "failed" for s in segments),
                     "transcript_empty": sum(s.transcript_status == "empty" for s in segments),
                     "transcript_suspect": sum(bool(s.transcript_suspect) for s in segments),
                     "manifest_total": manifest_lines},
        "stages": [stage.name for stage in segment_stages()],
        "seconds_per_stage": timing.snapshot(),
        "errors": error_count,
        "config": cfg.to_dict(),
        "versions": {"python": platform.python_version(), **versions()},
    }


def versions() -> dict[str, str]:
    """The installed versions of the core packages and of every stage's."""
    found = {}
    for name in (*PACKAGES, *(p for stage in segment_stages() for p in stage.packages)):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found
