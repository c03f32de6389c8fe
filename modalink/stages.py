"""The per-segment stage contract and its ordered registry.

A stage is one step run on every segment still kept (or, with `per_chunk`, on a chunk of
consecutive segments, in one task). It says its `name` (the key of its result), its config
`section` (the options it gets; with `also_reads`, every option its cache key depends on), what it
`needs` (earlier stages, by name), which drop reasons it may give (`drops`), how it `prepare`s (load
and check its model once per process, raising ConfigError before any work) and how it `run`s. It
returns a result, or `Drop(reason)`; `record_fields` turns a result into manifest fields: the core
fields of the dataset contract for the core stages, one entry under `custom` for any other.

Stages register themselves with `@register` when their module is imported. `segment_stages()`
imports every module of the `tasks` package, the `modalink.stages` entry points and the modules
or files named in MODALINK_STAGES (separated by os.pathsep), then orders them: per-chunk stages
first, then each stage after the stages it needs, otherwise in registration order.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import inspect
import os
import pkgutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

from modalink.config import Config, ConfigError, Section
from modalink.records import MediaInfo, Segment, Video

if TYPE_CHECKING:
    from modalink.shared_media import SharedMedia, Workspace

ENTRY_POINTS = "modalink.stages"
ENVIRONMENT = "MODALINK_STAGES"


@dataclass(frozen=True)
class Drop:
    """A stage's answer for a segment that leaves the dataset; `reason` is one of its `drops`."""

    reason: str


@dataclass(frozen=True)
class SegmentInput:
    """What a stage sees of one segment."""

    video: Video
    segment: Segment
    media_info: MediaInfo
    soundtrack: str  # the video's 16 kHz mono WAV, in the staging folder
    staging_dir: str  # where stages write files, relative paths as in the records
    results: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the needed stages' results
    shared: SharedMedia | None = None  # set when the task may run on a machine that sees none of the flow's folders
    workspace: Workspace | None = None  # that task's folder on its machine (set where it runs)

    def file(self, relative: str) -> str:
        """A file an earlier stage wrote (its path relative to the dataset, as in the records), readable here."""
        if self.workspace is not None:
            return str(self.workspace.file(relative))
        return str(Path(self.staging_dir) / relative)

    def has_file(self, relative: str) -> bool:
        """Whether an earlier stage (or an earlier run) already wrote `relative`."""
        if self.workspace is not None:
            return self.workspace.has_file(relative)
        return (Path(self.staging_dir) / relative).is_file()

    def cache_key(self) -> tuple:
        """What the result may depend on, besides the options: nothing tied to one machine's folders."""
        # overlap_s is only reported (speakers.overlap = flag): it changes no stage's result, so it is left out
        segment = dataclasses.replace(self.segment, overlap_s=0.0)
        results = {name: result.cache_form() if hasattr(result, "cache_form") else result
                   for name, result in self.results.items()}
        return (self.video.video_id, self.video.fingerprint, segment, self.media_info, results)


class SegmentStage:
    """Base of every stage; subclasses set the class attributes and `run` (or `run_chunk`)."""

    name: ClassVar[str]
    section: ClassVar[str | None] = None  # the config section handed to `run`
    also_reads: ClassVar[tuple[str, ...]] = ()  # further sections the result depends on
    needs: ClassVar[tuple[str, ...]] = ()
    drops: ClassVar[tuple[str, ...]] = ()
    per_chunk: ClassVar[bool] = False
    packages: ClassVar[tuple[str, ...]] = ()  # distributions whose versions the run summary records
    code: ClassVar[tuple[str, ...]] = ()  # further modules whose source is part of the cache key
    schema: ClassVar[dict[str, Any] | None] = None  # JSON Schema of this stage's entry under `custom`
    timing: ClassVar[str | None] = None  # its label in the summary's seconds per stage (None: the name; "": untimed)

    def options(self, config: Config) -> Section | None:
        return config.section(self.section) if self.section else None

    def key_sections(self, config: Config) -> list[str]:
        return [name for name in (self.section, *self.also_reads) if name]

    def prepare(self, config: Config) -> None:
        """Check the options and load what `run` needs, once per process; ConfigError if unusable."""

    def preload(self, config: Config) -> None:
        """Load libraries or models ahead of time (may run on a thread while other work goes on)."""

    def run(self, item: SegmentInput, options: Any) -> Any:
        raise NotImplementedError(f"stage {self.name} has no run()")

    def run_chunk(self, items: Sequence[SegmentInput], options: Any) -> list[Any]:
        """One result (or Drop) per item, in order; by default `run` on each."""
        return [self.run(item, options) for item in items]

    def chunk_size(self, config: Config) -> int:
        """Segments per task of a per-chunk stage (the first per-chunk stage sets the chunks)."""
        return 1

    def retries(self, config: Config) -> tuple[int, list[float]]:
        """How often a failed run is retried, and the delays: media steps' by default (`run.*`)."""
        return config.run.retries, doubling(config.run.retry_delay_s, config.run.retries)

    def failed_result(self, error: BaseException, options: Any) -> Any | None:
        """What a segment keeps when `run` still fails after its retries; None drops it (`error`)."""
        return None

    def record_fields(self, result: Any, options: Any) -> dict[str, Any]:
        return {"custom": {self.name: plain(result)}}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "section": self.section, "also_reads": list(self.also_reads),
                "needs": list(self.needs), "drops": list(self.drops), "per_chunk": self.per_chunk,
                "module": type(self).__module__}


def doubling(first: float, retries: int) -> list[float]:
    return [first * 2**k for k in range(retries)]


def plain(value: Any) -> Any:
    """A result as JSON data: dataclasses as dicts, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


_registered: dict[str, SegmentStage] = {}
_loaded_sources: set[str] = set()


def register(cls: type[SegmentStage]) -> type[SegmentStage]:
    """Class decorator: add this stage to the registry (again after an edit: the newest class wins)."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__}: a stage needs a name")
    _registered[cls.name] = cls()
    return cls


def _load_source(item: str) -> None:
    if item in _loaded_sources:
        return
    if item.endswith(".py"):
        path = Path(item).expanduser().resolve()
        name = f"modalink_stage_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or not path.is_file():
            raise ConfigError(f"{ENVIRONMENT}: no such stage file {item}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # so that its stage's results pickle by reference
        spec.loader.exec_module(module)
    else:
        importlib.import_module(item)
    _loaded_sources.add(item)


@functools.cache
def plugin_entry_points() -> tuple:
    """The installed packages' stage entry points (ENTRY_POINTS), read once per process: reading them
    opens every installed package's metadata (about 10 ms here), and records are validated one by one."""
    from importlib.metadata import entry_points

    return tuple(entry_points(group=ENTRY_POINTS))


def discover() -> None:
    """Import every module that may register a stage (idempotent)."""
    import tasks

    for module in pkgutil.iter_modules(tasks.__path__):
        _load_source(f"tasks.{module.name}")
    for entry in plugin_entry_points():
        if entry.value not in _loaded_sources:
            entry.load()
            _loaded_sources.add(entry.value)
    for item in filter(None, os.environ.get(ENVIRONMENT, "").split(os.pathsep)):
        _load_source(item)


def segment_stages() -> list[SegmentStage]:
    """Every registered stage, in the order they run."""
    discover()
    stages = dict(_registered)
    for stage in stages.values():
        unknown = [need for need in stage.needs if need not in stages]
        if unknown:
            raise ConfigError(f"stage {stage.name} needs {unknown}, which no registered stage provides")
        if stage.per_chunk and any(not stages[need].per_chunk for need in stage.needs):
            raise ConfigError(f"per-chunk stage {stage.name} cannot need a per-segment stage")
    ordered: list[SegmentStage] = []
    pending = sorted(stages.values(), key=lambda s: not s.per_chunk)  # stable: registration order otherwise
    while pending:
        ready = next((s for s in pending if all(n in {o.name for o in ordered} for n in s.needs)), None)
        if ready is None:
            raise ConfigError(f"stages {[s.name for s in pending]} need each other")
        ordered.append(ready)
        pending.remove(ready)
    return ordered


def get_stage(name: str) -> SegmentStage:
    if name not in _registered:
        discover()
    return _registered[name]


def declared_drops() -> tuple[str, ...]:
    """Every drop reason a registered stage may give, in stage order."""
    return tuple(reason for stage in segment_stages() for reason in stage.drops)


def stage_schemas() -> dict[str, dict[str, Any]]:
    """The `custom` sub-schema of each registered stage that declares one."""
    return {stage.name: stage.schema for stage in segment_stages() if stage.schema}


def source_files(stage: SegmentStage) -> list[Path]:
    """The files whose source is part of the stage's cache key: its module and its `code`."""
    files = [Path(inspect.getfile(type(stage)))]
    for module in stage.code:
        files.append(Path(importlib.import_module(module).__file__))
    return files
