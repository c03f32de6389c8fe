"""The MODALINK workflow, wired from the steps in tasks/.

`build_dataset` (flow "modalink") expands and acquires the sources, runs `process_video` (flow
"modalink-video") for each video, and publishes the records. Inside a video flow the segment steps
run concurrently: faces are found per chunk of consecutive segments (one decoding pass each), then
media and transcription are mapped over the segments that show a face, as soon as their chunk is
done. A failing segment or video is logged and counted; the run goes on.
"""
from __future__ import annotations

import platform
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from prefect import flow, get_run_logger, unmapped
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner

from modalink import timing
from modalink.config import Config
from modalink.result_storage import FinishedVideos, holds_no_cached_steps, result_storage_for
from modalink.storage import LocalStorage, StorageError, open_storage
from modalink.records import (DROP_NO_FACE, DROP_TOO_SHORT, FaceResult, Segment, SegmentRecord, Video, VideoRecord,
                              parse_jsonl, to_json_line)
from tasks.acquire import (SourceError, acquire_task, expand_sources, expand_sources_task, is_url, local_video,
                           safe_id)
from tasks.audio import extract_audio_task
from tasks.base import MediaError, load_in_background, one_blas_thread
from tasks.clips import write_segment_media_task
from tasks.faces import chunked, detect_faces_task
from tasks.faces_mtcnn import get_detector
from tasks.probe import probe_task
from tasks.publish import MANIFEST, VIDEOS, ErrorLog, publish_records_task, write_summary, write_summary_task
from tasks.speakers import load_mfcc, split_speakers_task
from tasks.transcribe import failed_transcript, get_backend, transcribe_task
from tasks.vad import detect_speech_task

PACKAGES = ("modalink", "prefect", "yt-dlp", "webrtcvad-wheels", "librosa", "mtcnn", "tensorflow-cpu",
            "faster-whisper", "SpeechRecognition", "boto3", "numpy")


@dataclass
class VideoOutcome:
    video: VideoRecord
    segments: list[SegmentRecord] = field(default_factory=list)
    errors_logged: int = 0


def outcome(future: PrefectFuture) -> tuple[Any, BaseException | None]:
    """(result, None) for a completed task, (None, its exception) for a failed one."""
    future.wait()
    try:
        return future.state.result(), None
    except BaseException as exc:  # noqa: BLE001 - the flow decides what a failure means
        return None, exc


def task_runner(cfg: Config, dask_address: str | None = None):
    """The default thread pool, or Dask (a cluster at `run.dask_address`, or the run's local cluster)."""
    if cfg.run.runner == "dask":
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=dask_address or cfg.run.dask_address)
    return ThreadPoolTaskRunner(max_workers=cfg.run.workers)


@contextmanager
def local_dask_cluster(cfg: Config) -> Iterator[str | None]:
    """One local Dask cluster for the whole run (models load once per worker), when Dask is asked
    for without an address."""
    if cfg.run.runner != "dask" or cfg.run.dask_address:
        yield None
        return
    from distributed import LocalCluster

    with LocalCluster(n_workers=cfg.run.workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def _retry_delays(first: float, retries: int) -> list[float]:
    return [first * 2**k for k in range(retries)]


def media_retries(cfg: Config) -> dict[str, Any]:
    """Task options for downloads and decoding: `run.retries`, delays doubling from `run.retry_delay_s`."""
    return {"retries": cfg.run.retries, "retry_delay_seconds": _retry_delays(cfg.run.retry_delay_s, cfg.run.retries)}


def preload_step_libraries() -> None:
    """librosa's MFCC code, TensorFlow and MTCNN, loaded on a thread of their own (a no-op once loaded)."""
    load_in_background(load_mfcc, get_detector)


@flow(name="modalink-video", flow_run_name="video {video.video_id}", persist_result=True)
def process_video(video: Video, dataset_dir: str, config: dict[str, Any]) -> VideoOutcome:
    cfg = Config.from_dict(config)
    logger = get_run_logger()
    errors = ErrorLog(dataset_dir)
    info = video.info
    record = VideoRecord(video_id=video.video_id, source=video.source, status="ok", title=info.get("title"),
                         channel=info.get("channel"), upload_date=info.get("upload_date"), url=info.get("url"),
                         license=info.get("license"))

    if cfg.run.runner == "threads":  # the steps run in this process: their libraries load during extraction
        one_blas_thread()
        preload_step_libraries()
    try:
        media_info = probe_task(video)
        record.duration, record.width, record.height = round(media_info.duration, 3), media_info.width, media_info.height
        audio_path = Path(dataset_dir) / ".modalink" / "work" / video.video_id / "audio.wav"
        extract = extract_audio_task.with_options(**media_retries(cfg))
        audio = extract(video, str(audio_path), cfg.audio)
        if not Path(audio.path).is_file():  # a cached result from another machine, or a cleaned staging folder
            audio = extract.with_options(refresh_cache=True)(video, str(audio_path), cfg.audio)
    except MediaError as exc:  # a source that cannot be used: a clear per-video error, the run goes on
        errors.add(f"video {video.video_id} ({video.source})", exc)
        logger.warning("%s: %s", video.video_id, exc)
        record.status, record.error = "failed", str(exc)
        return VideoOutcome(record, errors_logged=errors.count)
    record.audio_fallback = audio.fallback
    speech = detect_speech_task(video, audio, cfg.vad)
    segments = split_speakers_task(video, audio, speech.spans, cfg.speakers)
    record.speech_segments, record.segments_found = len(speech.spans), len(segments)
    record.segments_dropped[DROP_TOO_SHORT] = speech.too_short
    logger.info("%s: %d speech segments, %d pieces after speaker split", video.video_id, len(speech.spans), len(segments))

    # Faces first, one task per chunk of segments (it also writes the midpoint frames of the segments
    # with a face); media and transcription only for those, submitted as soon as their chunk is done.
    chunks = chunked(segments, cfg.faces.chunk_segments)
    face_futures = detect_faces_task.map(video, media_info, chunks, cfg.faces, dataset_dir, cfg.clips.jpeg_quality)
    transcriber = transcribe_task.with_options(retries=cfg.asr.retries,
                                               retry_delay_seconds=_retry_delays(cfg.asr.retry_delay_s, cfg.asr.retries))
    kept: list[tuple[Segment, FaceResult, PrefectFuture, PrefectFuture]] = []
    for chunk, face_future in zip(chunks, face_futures):
        found, error = outcome(face_future)
        if error is not None:
            errors.add(f"video {video.video_id} segments {chunk[0].name}..{chunk[-1].name}: faces", error)
            record.segments_dropped["error"] = record.segments_dropped.get("error", 0) + len(chunk)
            continue
        for segment, faces in zip(chunk, found):
            if faces.active is None:
                record.segments_dropped[DROP_NO_FACE] += 1
                continue
            media = write_segment_media_task.submit(video, segment, str(audio.path), dataset_dir, cfg.clips, cfg.audio)
            transcript = transcriber.submit(segment, video.fingerprint, media, dataset_dir, cfg.asr)
            kept.append((segment, faces, media, transcript))

    result = VideoOutcome(record)
    for segment, faces, media_future, transcript_future in kept:
        where = f"video {video.video_id} segment {segment.name}"
        written, error = outcome(media_future)
        if error is not None:
            errors.add(f"{where}: media", error)
            record.segments_dropped["error"] = record.segments_dropped.get("error", 0) + 1
            continue
        transcript, error = outcome(transcript_future)
        if error is not None:
            errors.add(f"{where}: transcription failed after {cfg.asr.retries} retries", error)
            transcript = failed_transcript(error, cfg.asr)
            record.transcription_failed += 1
        result.segments.append(SegmentRecord.build(video, segment, faces, written, transcript, cfg.asr.language))
    record.segments_kept = len(result.segments)
    result.errors_logged = errors.count
    logger.info("%s: kept %d of %d segments (dropped: %s)", video.video_id, record.segments_kept,
                record.segments_found + speech.too_short, record.segments_dropped)
    return result


def run_video(video_flow, acquired: PrefectFuture, dataset: Path, cfg: Config, finished: FinishedVideos):
    """(video, outcome, None) or (video or None, None, the error) for one acquired source."""
    video, error = outcome(acquired)
    if error is not None:
        return None, None, error
    config = cfg.to_dict()
    key = finished.key(video.fingerprint, video.video_id, config)
    if (done := finished.get(key)) is not None:
        return video, done, None
    state = video_flow(video, str(dataset), config, return_state=True)
    try:
        result = state.result()
    except Exception as exc:  # noqa: BLE001 - one failing video never stops the others
        return video, None, exc
    if result.video.status == "ok" and result.errors_logged == 0:
        finished.put(key, result)
    return video, result, None


def failed_video(video_id: str, source: str, error: BaseException) -> VideoRecord:
    return VideoRecord(video_id=video_id, source=source, status="failed", error=str(error) or type(error).__name__)


def finished_run(sources: list[str], out: str, config: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The summary of a run with nothing left to do, or None when there is work (or when that cannot
    be known without Prefect). Nothing is left when every source is a local file that an earlier run
    processed to the end, without an error, with this config and this code, and when the published
    records of those videos are exactly that run's. The CLI then prints this summary instead of
    starting its temporary Prefect server for a flow that would only read its caches; a run against a
    standing server (a deployment) always runs the flow."""
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    cfg = Config.load(overrides=config)
    storage = open_storage(out)
    if (not isinstance(storage, LocalStorage) or any(is_url(source) for source in sources)
            or holds_no_cached_steps(storage)):
        return None
    finished = FinishedVideos(result_storage_for(storage), storage)
    settings = cfg.to_dict()
    outcomes = []
    try:
        for single in expand_sources(sources, cfg.acquire):  # stops at the first video with work left
            video = local_video(Path(single).expanduser(), single)
            if (found := finished.get(finished.key(video.fingerprint, video.video_id, settings))) is None:
                return None
            outcomes.append(found)
    except (SourceError, OSError):
        return None
    if not outcomes:
        return None
    segments = [segment for found in outcomes for segment in found.segments]
    records = [found.video for found in outcomes]
    try:
        manifest, published_videos = parse_jsonl(storage.read_text(MANIFEST)), parse_jsonl(storage.read_text(VIDEOS))
    except (ValueError, OSError):  # unreadable records: the flow writes them again
        return None
    processed = {record.video_id for record in records}
    published_segments = [line for line in manifest if line.get("video_id") in processed]
    published_videos = [line for line in published_videos if line.get("video_id") in processed]
    if (sorted(map(to_json_line, published_segments)) != sorted(map(to_json_line, segments))
            or sorted(map(to_json_line, published_videos)) != sorted(map(to_json_line, records))):
        return None  # not published, or published differently: the flow publishes again
    summary = run_summary(cfg, sources, records, segments, started, time.perf_counter() - clock, len(manifest),
                          0, storage.url, finished.reused)
    summary["up_to_date"] = True  # no flow ran
    write_summary(storage, summary)
    return summary


@flow(name="modalink", persist_result=False)
def build_dataset(sources: list[str], out: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build (or extend) the dataset at `out` from videos, playlists, files or folders."""
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    timing.reset()
    cfg = Config.load(overrides=config)
    logger = get_run_logger()
    storage = open_storage(out)
    storage.check()
    dataset = storage.staging_dir()  # media and cache are staged here, then published to `out`
    errors = ErrorLog(dataset)
    get_backend(cfg.asr).prepare()  # a bad backend or model fails here, before any work

    videos: list[VideoRecord] = []
    segments: list[SegmentRecord] = []
    error_count = 0  # logged inside video flows; errors.count holds this flow's own
    singles: list[str] = []
    for source in sources:
        try:
            singles.extend(expand_sources_task([source], cfg.acquire))
        except Exception as exc:  # noqa: BLE001 - one bad source never stops the others
            errors.add(f"source {source}", exc)
            videos.append(failed_video(safe_id(source), source, exc))
            logger.error("%s: %s", source, exc)

    download_dir = str(dataset / cfg.acquire.download_dir)
    acquired = acquire_task.with_options(**media_retries(cfg)).map(singles, cfg.acquire, unmapped(download_dir))
    with local_dask_cluster(cfg) as dask_address:
        results = result_storage_for(storage)
        video_flow = process_video.with_options(task_runner=task_runner(cfg, dask_address), result_storage=results)
        finished = FinishedVideos(results, storage)
        for number, (source, future) in enumerate(zip(singles, acquired), start=1):
            video, result, error = run_video(video_flow, future, dataset, cfg, finished)
            if error is not None:
                video_id = video.video_id if video else safe_id(source)
                errors.add(f"video {video_id} ({source})", error)
                videos.append(failed_video(video_id, source, error))
                logger.error("[%d/%d] %s failed: %s", number, len(singles), source, error)
                continue
            videos.append(result.video)
            segments.extend(result.segments)
            error_count += result.errors_logged
            logger.info("[%d/%d] %s: %d segments kept", number, len(singles), video.video_id, len(result.segments))

    try:
        manifest_lines, _ = publish_records_task.with_options(**media_retries(cfg))(storage, segments, videos)
    except Exception as exc:  # noqa: BLE001 - said in one line; the cached steps stay for the next run
        raise StorageError(f"could not publish the dataset to {storage.url} after {cfg.run.retries} retries "
                           f"({exc}); nothing is lost: run the same command again to finish it") from exc
    summary = run_summary(cfg, sources, videos, segments, started, time.perf_counter() - clock,
                          manifest_lines, errors.count + error_count, storage.url, finished.reused)
    write_summary_task.with_options(**media_retries(cfg))(storage, summary)
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
                     "manifest_total": manifest_lines},
        "seconds_per_stage": timing.snapshot(),
        "errors": error_count,
        "config": cfg.to_dict(),
        "versions": {"python": platform.python_version(), **_versions()},
    }


def _versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found
