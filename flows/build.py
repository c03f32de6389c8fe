"""The MODALINK workflow: the flows that run the steps in tasks/ and the registered stages.

`build_dataset` (flow "modalink") expands and acquires the sources, runs `process_video` (flow
"modalink-video") for each video, and publishes the records. A video flow finds the segments
(probe, soundtrack, speech, speaker changes), then runs the registered segment stages over them
(`flows.segments`, `modalink.stages`). A failing segment or video is logged and counted; the run
goes on.
"""
from __future__ import annotations

import contextvars
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

from prefect import flow, get_run_logger, unmapped
from prefect.futures import PrefectFuture
from prefect.task_runners import ThreadPoolTaskRunner

from modalink import lease, timing
from modalink.config import Config
from modalink.exports import exporters
from modalink.records import DROP_OVERLAP, DROP_TOO_SHORT, Video, VideoRecord
from modalink.result_storage import FinishedVideos, result_storage_for
from modalink.shared_media import SharedMedia, check_shareable, share_soundtrack, share_source
from modalink.stages import discover, segment_stages
from modalink.storage import DatasetStorage, StorageError, no_space_left, open_storage
from flows.fan_out import fan_out
from flows.plan import RunPlan, VideoOutcome, failed_video
from flows.segments import outcome, run_stages
from tasks.acquire import acquire_task, expand_sources_task, safe_id
from tasks.audio import extract_audio_task
from tasks.base import MediaError, configured_retries, load_in_background, one_blas_thread
from tasks.probe import probe_task
from tasks.publish import ErrorLog, publish_media, publish_records_task, write_summary_task
from tasks.speaker_frames import Handover
from tasks.speakers import load_speaker_model, split_speakers_task
from tasks.vad import detect_speech_task


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


def media_retries(cfg: Config) -> dict[str, Any]:
    """Task options for downloads and decoding: `run.retries`, delays doubling from `run.retry_delay_s`."""
    return configured_retries(cfg.run.retries, cfg.run.retry_delay_s)


def step_preloaders(cfg: Config) -> list[Callable[[], object]]:
    """What the run will need, in the order it needs it: the speakers step's model (CAM++, or librosa's
    MFCC code), what each stage preloads (TensorFlow and MTCNN), then what the configured exports import."""
    formats = cfg.section("export").formats
    return [partial(load_speaker_model, cfg.speakers), *(partial(stage.preload, cfg) for stage in segment_stages()),
            *(exporter.preload for exporter in exporters() if exporter.name in formats)]


def preload_step_libraries(cfg: Config) -> None:
    """`step_preloaders` on a thread of their own (each a no-op once loaded)."""
    load_in_background(*step_preloaders(cfg))


def prepare_stages(cfg: Config) -> None:
    """Every stage checks its options and loads its model: a bad one fails here, before any work."""
    for stage in segment_stages():
        stage.prepare(cfg)


@flow(name="modalink-video", flow_run_name="video {video.video_id}", persist_result=True)
def process_video(video: Video, out: str, config: dict[str, Any]) -> VideoOutcome:
    """One video of the dataset at `out`: its segments' records, its media in the staging folder."""
    cfg = Config.from_dict(config)
    storage = open_storage(out)
    logger = get_run_logger()
    staging_dir = str(storage.staging_dir())
    errors = ErrorLog(staging_dir)
    info = video.info
    record = VideoRecord(video_id=video.video_id, source=video.source, status="ok", title=info.get("title"),
                         channel=info.get("channel"), upload_date=info.get("upload_date"), url=info.get("url"),
                         license=info.get("license"))

    if cfg.run.runner == "threads":  # the steps run in this process: their libraries load during extraction
        one_blas_thread()
        preload_step_libraries(cfg)
    try:
        media_info = probe_task(video)
        record.duration, record.width, record.height = round(media_info.duration, 3), media_info.width, media_info.height
        audio_path = Path(staging_dir) / ".modalink" / "work" / video.video_id / "audio.wav"
        extract = extract_audio_task.with_options(**media_retries(cfg))
        audio = extract(video, str(audio_path), cfg.audio)
        if not Path(audio.path).is_file():  # a cached result from another machine, or a cleaned staging folder
            audio = extract.with_options(refresh_cache=True)(video, str(audio_path), cfg.audio)
    except MediaError as exc:  # a source that cannot be used: a clear per-video error, the run goes on
        errors.add(f"video {video.video_id} ({video.source})", exc)
        logger.warning("%s: %s", video.video_id, exc)
        record.status, record.error = "failed", str(exc)
        return VideoOutcome(record, errors_logged=errors.count, error_blocks=errors.blocks)
    record.audio_fallback = audio.fallback
    speech = detect_speech_task(video, audio, cfg.vad)
    split = split_speakers_task(video, audio, speech.spans, cfg.speakers, cfg.vad.min_segment_s)
    segments = split.segments
    record.speech_segments, record.segments_found = len(speech.spans), len(segments)
    record.segments_dropped[DROP_TOO_SHORT] = speech.too_short
    record.segments_dropped[DROP_OVERLAP] = split.overlap_dropped
    record.segments_overlapped = split.overlapped
    logger.info("%s: %d speech segments, %d pieces after speaker split", video.video_id, len(speech.spans), len(segments))

    inputs = None
    if cfg.run.segments_elsewhere():  # segment tasks read the source and soundtrack from the dataset's storage
        inputs = share_soundtrack(storage, share_source(storage, out, video.path, video.fingerprint), audio.path)
    kept = run_stages(segment_stages(), cfg, errors, record.segments_dropped, video, media_info, audio.path,
                      staging_dir, segments, inputs)
    Handover.clear(video, staging_dir)
    record.segments_kept = len(kept)
    record.transcription_failed = sum(segment.transcript_status == "failed" for segment in kept)
    record.transcript_suspect = sum(bool(segment.transcript_suspect) for segment in kept)
    logger.info("%s: kept %d of %d segments (dropped: %s)", video.video_id, record.segments_kept,
                record.segments_found + speech.too_short + split.overlap_dropped, record.segments_dropped)
    return VideoOutcome(record, kept, errors.count, errors.blocks)


@flow(name="modalink-video-worker", flow_run_name="video {video.video_id}", persist_result=False)
def process_video_on_worker(video: Video, out: str, config: dict[str, Any], inputs: SharedMedia,
                            outcome_key: str) -> None:
    """`process_video` on a work pool's worker (`run.fan_out`): the source from the dataset's storage,
    the kept media put there, the outcome stored under `outcome_key`, a lease renewed meanwhile."""
    discover()
    cfg = Config.from_dict(config)
    storage = open_storage(out)
    storage.check()
    result_storage = result_storage_for(storage)
    with lease.held(storage, outcome_key, cfg.run.lease_timeout_s), local_dask_cluster(cfg) as dask_address:
        video_flow = process_video.with_options(task_runner=task_runner(cfg, dask_address), result_storage=result_storage)
        result = video_flow(replace(video, path=inputs.source()), out, config)
        publish_media(storage, result.segments)
        FinishedVideos(result_storage, storage).store.write(obj=result, key=outcome_key)


def run_video(video_flow, acquired: PrefectFuture, out: str, plan: RunPlan):
    """(video, outcome, None) or (video or None, None, the error) for one acquired source."""
    video, error = outcome(acquired)
    if error is not None:
        return None, None, error
    if (done := plan.finished_outcome(video)) is not None:
        return video, done, None
    state = video_flow(video, out, plan.cfg.to_dict(), return_state=True)
    try:
        result = state.result()
    except Exception as exc:  # noqa: BLE001 - one failing video never stops the others
        return video, None, exc
    plan.remember(video, result)
    return video, result, None


def videos_in_parallel(video_flow, singles: list[str], acquired: list[PrefectFuture], out: str,
                       plan: RunPlan) -> Iterator[tuple]:
    """(source, video, outcome, error) for each source, `run.parallel_videos` at once (subflows on
    threads), in order. One at a time, they run on this thread, where a Ctrl-C reaches the video
    under way and Prefect records it as crashed; in parallel, a Ctrl-C cancels the videos not
    started and leaves those under way to the next run."""
    if plan.cfg.run.videos_at_once() == 1:
        for source, future in zip(singles, acquired):
            yield source, *run_video(video_flow, future, out, plan)
        return
    pool = ThreadPoolExecutor(plan.cfg.run.videos_at_once(), thread_name_prefix="modalink-video")
    try:
        runs = [pool.submit(contextvars.copy_context().run, run_video, video_flow, future, out, plan)
                for future in acquired]
        for source, run in zip(singles, runs):
            yield source, *run.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def videos_fanned_out(singles: list[str], acquired: list[PrefectFuture], out: str, storage: DatasetStorage,
                      plan: RunPlan, logger) -> Iterator[tuple]:
    """(source, video, outcome, error): the finished videos from the plan, the others through
    `run.fan_out`'s deployment, as they end."""
    to_run, sources = [], {}
    for source, future in zip(singles, acquired):
        video, error = outcome(future)
        if error is not None:
            yield source, None, None, error
        elif (done := plan.finished_outcome(video)) is not None:
            yield source, video, done, None
        else:
            to_run.append(video)
            sources[video.video_id] = source
    store = FinishedVideos(plan.result_storage, storage).store
    for video, result, error in fan_out(to_run, out, storage, plan.cfg, lambda key: store.read(key).result, logger):
        if result is not None:
            plan.remember(video, result)
        yield sources[video.video_id], video, result, error


@flow(name="modalink", persist_result=False)
def build_dataset(sources: list[str], out: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build (or extend) the dataset at `out` from videos, playlists, files or folders."""
    timing.reset()
    discover()  # the sections of registered stages (speaker_face, added ones) are config sections too
    cfg = Config.load(overrides=config)
    logger = get_run_logger()
    storage = open_storage(out)
    storage.check()
    staging_dir = storage.staging_dir()  # media and cache are staged here, then published to `out`
    errors = ErrorLog(staging_dir)
    plan = RunPlan(list(sources), cfg, storage)
    prepare_stages(cfg)

    singles, videos = plan.expand(partial(expand_sources_task, config=cfg.acquire), errors, logger)
    segments = []
    error_count = 0  # logged inside video flows; errors.count holds this flow's own
    download_dir = str(staging_dir / cfg.acquire.download_dir)
    acquired = acquire_task.with_options(**media_retries(cfg)).map(singles, cfg.acquire, unmapped(download_dir))
    check_shareable(storage, cfg.run)
    with local_dask_cluster(cfg) as dask_address:
        if cfg.run.fan_out:
            done = videos_fanned_out(singles, acquired, out, storage, plan, logger)
        else:
            video_flow = process_video.with_options(task_runner=task_runner(cfg, dask_address),
                                                    result_storage=plan.result_storage)
            done = videos_in_parallel(video_flow, singles, acquired, out, plan)
        for number, (source, video, result, error) in enumerate(done, start=1):
            if no_space_left(error):
                raise error  # every later write would fail too; the same command resumes the run
            if error is not None:
                video_id = video.video_id if video else safe_id(source)
                errors.add(f"video {video_id} ({source})", error)
                videos.append(failed_video(video_id, source, error))
                logger.error("[%d/%d] %s failed: %s", number, len(singles), source, error)
                continue
            videos.append(result.video)
            segments.extend(result.segments)
            if cfg.run.fan_out:  # logged on another machine
                errors.add_blocks(result.error_blocks)
            else:
                error_count += result.errors_logged
            logger.info("[%d/%d] %s: %d segments kept", number, len(singles), video.video_id, len(result.segments))
    position = {source: number for number, source in enumerate(singles)}
    videos.sort(key=lambda record: position.get(record.source, -1))  # fanned-out videos end in any order

    try:
        manifest_lines, _ = publish_records_task.with_options(**media_retries(cfg))(
            storage, segments, videos, cfg.to_dict())
    except Exception as exc:  # noqa: BLE001 - said in one line; the cached steps stay for the next run
        raise StorageError(f"could not publish the dataset to {storage.url} after {cfg.run.retries} retries "
                           f"({exc}); nothing is lost: run the same command again to finish it") from exc
    summary = plan.summary(videos, segments, manifest_lines, errors.count + error_count)
    write_summary_task.with_options(**media_retries(cfg))(storage, summary)
    return summary
