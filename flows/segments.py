"""The registered segment stages run over the segments of one video, with one policy for all.

Per-chunk stages run first, on chunks of consecutive segments (`chunk_size` of the first one); each
chunk moves to its next per-chunk stage as soon as it is done with one, whatever the other chunks are
at, and once through them each of its kept segments gets its per-segment stages, each submitted with
the futures of the stages it needs, so they run as soon as those are done. A stage's answer
`Drop(reason)` drops the segment under that reason; a stage that still fails after its retries
either gives a flagged result (`failed_result`) or drops the segment as `error`, and the error is
logged with where it happened; the stages that need a flagged result run again on it. Nothing else
drops a segment. A full disk is no stage's failure: it stops the video, and the run.
"""
from __future__ import annotations

import queue
import time
from dataclasses import replace
from typing import Any, Callable, Sequence

from prefect.futures import PrefectFuture
from prefect.utilities.annotations import quote

from modalink.config import Config
from modalink.progress import Progress
from modalink.records import DROP_ERROR, MediaInfo, Segment, SegmentRecord, Video
from modalink.shared_media import SharedMedia
from modalink.stages import Drop, SegmentInput, SegmentStage
from modalink.storage import no_space_left
from modalink.timing import usable_cores
from tasks.base import stage_task
from tasks.publish import ErrorLog


def outcome(future: PrefectFuture) -> tuple[Any, BaseException | None]:
    """(result, None) for a completed task, (None, its exception) for a failed one."""
    future.wait()
    try:
        return future.state.result(), None
    except BaseException as exc:  # noqa: BLE001 - the flow decides what a failure means
        return None, exc


def progress_logger():
    """The run logger's info (the terminal and the run's logs), or nothing outside a run."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger().info
    except MissingContextError:
        return lambda line: None


def chunked(items: Sequence[Any], size: int) -> list[list[Any]]:
    """Consecutive items in groups of `size`: the unit of one per-chunk task."""
    return [list(items[i:i + size]) for i in range(0, len(items), max(1, size))]


class StageRun:
    """The stages of one video: their tasks, options and key sections, and the counts they leave."""

    def __init__(self, stages: list[SegmentStage], cfg: Config, errors: ErrorLog, dropped: dict[str, int]):
        self.stages, self.cfg, self.errors, self.dropped = stages, cfg, errors, dropped
        self.tasks = {stage.name: stage_task(stage, cfg) for stage in stages}
        self.options = {stage.name: stage.options(cfg) for stage in stages}
        self.key_sections = {stage.name: {name: cfg.section(name) for name in stage.key_sections(cfg)}
                             for stage in stages}
        for stage in stages:
            for reason in stage.drops:
                dropped.setdefault(reason, 0)

    def submit(self, stage: SegmentStage, work: Any, needed: dict[str, PrefectFuture] | None = None) -> PrefectFuture:
        """`work` holds no futures (only `needed` does): on the thread runner it is quoted, so Prefect neither
        walks nor rebuilds it (Dask's runner would pass the annotation on as a plain tuple)."""
        passed = quote(work) if self.cfg.run.runner == "threads" else work
        return self.tasks[stage.name].submit(stage.name, passed, self.options[stage.name],
                                             self.key_sections[stage.name], needed or {})

    def failed(self, stage: SegmentStage, where: str, error: BaseException, count: int = 1) -> Any | None:
        """Log a stage that still failed; its flagged result, or None after counting the drops. A full
        disk is raised again: it stops the run."""
        if no_space_left(error):
            raise error
        retries, _ = stage.retries(self.cfg)
        self.errors.add(f"{where}: {stage.name} failed after {retries} retries", error)
        flagged = stage.failed_result(error, self.options[stage.name])
        if flagged is None:
            self.drop(DROP_ERROR, count)
        return flagged

    def drop(self, reason: str, count: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + count

    def record_fields(self, stage: SegmentStage, result: Any, fields: dict[str, Any]) -> None:
        new = stage.record_fields(result, self.options[stage.name])
        custom = {**fields.get("custom", {}), **new.pop("custom", {})}
        fields.update(new)
        if custom:
            fields["custom"] = custom


def run_chunk_stages(run: StageRun, per_chunk: list[SegmentStage], video: Video, chunks: list[list[SegmentInput]],
                     through: Callable[[int, list[SegmentInput]], None]) -> None:
    """Each chunk through the per-chunk stages; `through(chunk number, items)` gets the items that every
    one kept, with their results, as soon as that chunk is done.

    The chunks move on independently: as soon as a chunk's task is done, its next stage is submitted,
    whatever the other chunks are at. The first stage is kept `usable_cores()` chunks ahead, so the task
    runner's queue never fills with first-stage tasks that the others would wait behind."""
    finished: queue.SimpleQueue = queue.SimpleQueue()
    at: dict[PrefectFuture, tuple[int, int, list[SegmentInput]]] = {}  # future -> (chunk, stage, its items)
    waiting = iter(range(len(chunks)))

    def submit(number: int, k: int, chunk: list[SegmentInput]) -> None:
        future = run.submit(per_chunk[k], chunk)
        at[future] = (number, k, chunk)
        future.add_done_callback(finished.put)

    def start_next_chunk() -> None:
        if (number := next(waiting, None)) is not None:
            submit(number, 0, chunks[number])

    if not per_chunk:
        for number, chunk in enumerate(chunks):
            through(number, chunk)
        return
    for _ in range(usable_cores()):
        start_next_chunk()
    while at:
        future = finished.get()
        number, k, chunk = at.pop(future)
        if k == 0:
            start_next_chunk()
        results, error = outcome(future)
        stage = per_chunk[k]
        if error is not None:
            where = f"video {video.video_id} segments {chunk[0].segment.name}..{chunk[-1].segment.name}"
            flagged = run.failed(stage, where, error, len(chunk))
            if flagged is None:
                continue
            results = [flagged] * len(chunk)
        survivors = []
        for item, result in zip(chunk, results):
            if isinstance(result, Drop):
                run.drop(result.reason)
            else:
                survivors.append(replace(item, results={**item.results, stage.name: result}))
        if survivors and k + 1 < len(per_chunk):
            submit(number, k + 1, survivors)
        elif survivors:
            through(number, survivors)


def run_stages(stages: list[SegmentStage], cfg: Config, errors: ErrorLog, dropped: dict[str, int], video: Video,
               media_info: MediaInfo, soundtrack: str, staging_dir: str, segments: list[Segment],
               shared: SharedMedia | None = None) -> list[SegmentRecord]:
    """The records of the segments that every stage kept, in order; drops are counted in `dropped`.
    With `shared`, the tasks take the video's inputs from the dataset's storage and put their files there."""
    started = time.monotonic()
    run = StageRun(stages, cfg, errors, dropped)
    per_chunk = [stage for stage in stages if stage.per_chunk]
    per_segment = [stage for stage in stages if not stage.per_chunk]
    items = [SegmentInput(video, segment, media_info, soundtrack, staging_dir, shared=shared) for segment in segments]
    chunks = chunked(items, per_chunk[0].chunk_size(cfg) if per_chunk else max(1, len(items)))
    by_chunk: list[list[tuple[SegmentInput, dict[str, PrefectFuture]]]] = [[] for _ in chunks]

    def submit_segment_stages(number: int, chunk: list[SegmentInput]) -> None:
        for item in chunk:
            futures: dict[str, Any] = {}
            for stage in per_segment:
                from_chunks = {name: item.results[name] for name in stage.needs if name not in futures}
                needed = {name: futures[name] for name in stage.needs if name in futures}
                futures[stage.name] = run.submit(stage, replace(item, results=from_chunks), needed)
            by_chunk[number].append((item, futures))

    run_chunk_stages(run, per_chunk, video, chunks, submit_segment_stages)
    submitted = [pair for pairs in by_chunk for pair in pairs]  # in the segments' order

    records = []
    progress = Progress(video.video_id, len(submitted), progress_logger(), started=started) if len(submitted) > 1 else None
    for item, futures in submitted:
        fields: dict[str, Any] = {}
        for stage in per_chunk:
            run.record_fields(stage, item.results[stage.name], fields)
        results, flagged = dict(item.results), set()
        for stage in per_segment:
            future = futures[stage.name]
            if flagged & set(stage.needs):  # what it waited for failed: it runs on the flagged results
                future = run.submit(stage, replace(item, results={n: results[n] for n in stage.needs}))
            result, error = outcome(future)
            if error is not None:
                result = run.failed(stage, f"video {video.video_id} segment {item.segment.name}", error)
                if result is None:
                    break
                flagged.add(stage.name)
            if isinstance(result, Drop):
                run.drop(result.reason)
                break
            results[stage.name] = result
            run.record_fields(stage, result, fields)
        else:
            records.append(SegmentRecord.build(video, item.segment, fields))
        if progress:  # once the segment's stages are done, kept or dropped
            progress.step()
    return records
