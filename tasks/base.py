"""What every step's Prefect task shares: the step wrapper and its cache policy, the retry rule, the
task of a registered stage, and the error of a bad source."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import inspect
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from prefect import Task, task
from prefect.cache_policies import CachePolicy
from prefect.utilities.hashing import hash_objects

from modalink.config import Config, Section, cache_view
from modalink.timing import timed


class MediaError(Exception):
    """A source that cannot be used (no audio stream, does not decode, ...). Permanent: never retried."""


def retry_unless_permanent(task, task_run, state) -> bool:  # noqa: ARG001 - Prefect's signature
    """Prefect retry condition: transient failures are retried; a bad source, a bad config or a full
    disk is not."""
    from modalink.config import ConfigError
    from modalink.storage import no_space_left

    try:
        state.result()
    except (MediaError, ConfigError):
        return False
    except Exception as exc:  # noqa: BLE001 - anything else may be transient
        return no_space_left(exc) is None
    return True


@functools.cache
def source_digest(*files: Path) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def cache_form(value: Any) -> Any:
    """An input as its cache key sees it: a config section by the options that change results."""
    if isinstance(value, Section):
        return cache_view(value)
    if local := getattr(value, "LOCAL_FIELDS", ()):  # where a file is on this machine: the same key on every machine
        return dataclasses.replace(value, **{name: "" for name in local})
    if isinstance(value, (list, tuple)):
        return [cache_form(item) for item in value]
    return value


@dataclass
class StepInputs(CachePolicy):
    """Cache key: the inputs (config sections by `cache_view`; names in `exclude`, such as a local
    folder, left out) and the source of the modules in `code`. Every input that changes the result
    carries a file's fingerprint or a config section, so the key is the same on every machine."""

    code: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str:
        keyed = {name: cache_form(value) for name, value in sorted(inputs.items()) if name not in self.exclude}
        return hash_objects(keyed, source_digest(*map(Path, self.code)), raise_on_failure=True)


def step(name: str, timing: str, run_name: str, exclude: tuple[str, ...] = (), retries: int = 0,
         code: tuple[str, ...] = ()) -> Callable:
    """Make a step's pure function its Prefect task: timed under `timing` in the run summary, cached
    by `StepInputs` over the function's own module (and the further files in `code`), results persisted,
    transient failures retried (`retries` here; the flow sets the count from the config where it has one)."""
    extra = code

    def wrap(function: Callable) -> Task:
        code = (inspect.getfile(function), *extra)

        @functools.wraps(function)
        def timed_step(*args, **kwargs):
            with timed(timing):
                return function(*args, **kwargs)

        return task(timed_step, name=name, task_run_name=run_name, persist_result=True, retries=retries,
                    cache_policy=StepInputs(code=code, exclude=exclude), retry_condition_fn=retry_unless_permanent)
    return wrap


def configured_retries(count: int, first_delay: float) -> dict[str, Any]:
    """Task options: `count` retries, the delays doubling from `first_delay`."""
    from modalink.stages import doubling

    return {"retries": count, "retry_delay_seconds": doubling(first_delay, count)}


def run_stage(stage_name: str, work: Any, options: Any, key_sections: dict[str, Any],  # noqa: ARG001
              needed: dict[str, Any] | None = None) -> Any:
    """One stage on one SegmentInput, or on a chunk of them (`per_chunk`). `needed` holds the results
    of the stages it needs that ran as tasks of their own (futures when submitted: a top-level
    argument, so that every task runner resolves them); `key_sections` (every section the result
    depends on) is here only for the cache key."""
    from modalink.stages import Drop, get_stage

    stage = get_stage(stage_name)
    label = stage.name if stage.timing is None else stage.timing
    shared = (work[0] if isinstance(work, list) else work).shared
    with timed(label) if label else contextlib.nullcontext(), \
            on_this_machine(work, shared) if shared else contextlib.nullcontext(work) as work:
        if stage.per_chunk:
            return stage.run_chunk(work, options)
        work = dataclasses.replace(work, results={**work.results, **(needed or {})})
        dropped = next((r for r in work.results.values() if isinstance(r, Drop)), None)
        return dropped if dropped is not None else stage.run(work, options)


@contextlib.contextmanager
def on_this_machine(work: Any, shared):
    """`work` (one SegmentInput or a chunk) with the video's source and soundtrack from this machine's
    cache of shared inputs and a workspace of its own, whose written files are put in the dataset's
    storage when the stage succeeds."""
    from modalink.shared_media import workspace

    with workspace(shared) as space:
        def here(item):
            video = dataclasses.replace(item.video, path=shared.source())
            return dataclasses.replace(item, video=video, soundtrack=shared.soundtrack(), staging_dir=str(space.root),
                                       workspace=space)
        yield [here(item) for item in work] if isinstance(work, list) else here(work)


def stage_task(stage, config: Config) -> Task:
    """The Prefect task of a registered stage, with its cache key and its retries from `config`."""
    from modalink.stages import source_files

    count, delays = stage.retries(config)
    files = tuple(str(path) for path in (*source_files(stage), Path(__file__)))
    run_name = f"{stage.name} {{work[0].video.video_id}}" if stage.per_chunk else \
        f"{stage.name} {{work.segment.video_id}} {{work.segment.name}}"
    return task(run_stage, name=stage.name, task_run_name=run_name, persist_result=True,
                cache_policy=StageInputs(code=files), retries=count, retry_delay_seconds=delays,
                retry_condition_fn=retry_unless_permanent)


@dataclass
class StageInputs(StepInputs):
    """A stage's cache key: the segment (or chunk) as `SegmentInput.cache_key` sees it, the sections
    it reads by `cache_view`, its name and its code."""

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str:
        work = inputs["work"]
        items = [item.cache_key() for item in work] if isinstance(work, list) else work.cache_key()
        keyed = {"stage": inputs["stage_name"], "work": items, "needed": dict(inputs.get("needed") or {}),
                 "sections": {name: cache_form(section) for name, section in inputs["key_sections"].items()}}
        return hash_objects(keyed, source_digest(*map(Path, self.code)), raise_on_failure=True)


def one_blas_thread() -> None:
    """numpy's BLAS on one thread in this process, as in Dask's workers (which run with OMP_NUM_THREADS=1).

    A BLAS splits a product differently for different thread counts, and the last bits of the result
    with it; Whisper's mel features are such a product, so with one thread everywhere a clip gets the
    same transcript (and the same MFCCs for the speaker split) with either runner and on any number of
    cores. The products are small; TensorFlow and CTranslate2 keep their own threads."""
    import numpy  # noqa: F401 - its BLAS is limited only once it is loaded
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def release_free_heap() -> None:
    """Give the heap memory that this process has freed back to the system (glibc's `malloc_trim`; each
    thread that allocated keeps its own heap otherwise). A no-op without glibc."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def load_in_background(*loaders: Callable[[], object]) -> threading.Thread:
    """Call `loaders` one after the other on a thread of its own: libraries and models that the first
    segments would otherwise wait for load while the soundtrack is extracted. A loader that fails is
    left alone; the step that needs it raises the error again where it is used."""
    def load() -> None:
        for loader in loaders:
            try:
                loader()
            except Exception:  # noqa: BLE001 - raised again by the step that needs it
                pass

    thread = threading.Thread(target=load, name="modalink-preload", daemon=True)
    thread.start()
    return thread
