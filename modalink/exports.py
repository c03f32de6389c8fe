"""The exporter contract and its registry: what a dataset's published records are turned into.

An exporter renders files from the records of the whole dataset (`DatasetRecords`); it can write
them and say whether what is stored is still what it would write, so that a run with nothing else
to do still rewrites a missing or stale export. Exporters register themselves with
`@register_exporter` (discovered with the stages: `modalink.stages.discover`) and are written in
`order`: manifest.jsonl last, since a reader takes it as the sign that everything it names is there.

Text exporters implement `render`. Exporters of binary files (tar shards, Parquet) subclass
`BuiltExporter`: they build their files in a temporary folder (the next build removes one that a
killed run left) and keep a stamp beside them, the digest of everything they were built from
(records, labels, splits, options, the media files' sizes and times), which `is_current` compares.
Their options are the `[export]` config section.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

from modalink.config import Config, Section, register_section
from modalink.splits import SPLITS, check_proportions, segment_splits
from modalink.storage import DatasetStorage, LocalStorage

FORMATS = ("webdataset", "hf", "lhotse", "meld.csv", "README.md")  # the optional exports, by exporter name
LABELS = "labels.jsonl"


@dataclass(frozen=True)
class ExportConfig(Section):
    """The exports beside manifest.jsonl and videos.jsonl. No step reads these options: changing one
    rewrites the exports (without a flow when nothing else changed), it re-runs no step."""

    formats: tuple[str, ...] = FORMATS  # which of the optional exports are written
    split_seed: int = 0  # the splits' hash seed
    split_train: float = 0.8  # share of the groups (channels, else videos) in train
    split_dev: float = 0.1
    split_test: float = 0.1
    shard_max_mb: float = 1000.0  # WebDataset: a shard is closed before it would pass this size

    def proportions(self) -> dict[str, float]:
        return {"train": self.split_train, "dev": self.split_dev, "test": self.split_test}

    def problems(self) -> list[str]:
        unknown = [name for name in self.formats if name not in FORMATS]
        return [*(f"export.split_train, split_dev, split_test: {p}" for p in check_proportions(self.proportions())),
                *([f"export.formats: unknown {', '.join(unknown)} (known: {', '.join(FORMATS)})"] if unknown else []),
                *(["export.shard_max_mb must be > 0"] if self.shard_max_mb <= 0 else [])]


register_section("export", ExportConfig)


@dataclass(frozen=True)
class DatasetRecords:
    """Every published record of a dataset, after this run's were merged in."""

    segments: list[dict[str, Any]]  # manifest.jsonl's lines, in order
    videos: list[dict[str, Any]]  # videos.jsonl's lines, in order
    processed: frozenset[str] = field(default_factory=frozenset)  # video ids this run processed
    config: Mapping[str, Any] | None = None  # the run's config (Config.to_dict()); None: the defaults

    def full_config(self) -> Config:
        return self._full_config

    @functools.cached_property
    def _full_config(self) -> Config:  # built once: every exporter asks for the options (7 ms each time)
        return Config.from_dict(dict(self.config or {}))

    def options(self) -> ExportConfig:
        section = self.full_config().section("export")
        assert isinstance(section, ExportConfig)
        return section

    def splits(self) -> dict[str, str]:
        """{segment_id: split} (modalink.splits)."""
        options = self.options()
        return segment_splits(self.videos, self.segments, options.split_seed, options.proportions())


class Exporter:
    """Base of every exporter; a text exporter only implements `render`."""

    name: ClassVar[str]
    order: ClassVar[int] = 100

    def render(self, records: DatasetRecords) -> dict[str, str]:
        """The files this exporter writes, as {key relative to the dataset root: text}."""
        raise NotImplementedError

    def write(self, storage: DatasetStorage, records: DatasetRecords) -> None:
        for key, text in self.render(records).items():
            storage.put_text_atomically(key, text)

    def is_current(self, storage: DatasetStorage, records: DatasetRecords) -> bool:
        return all(storage.read_text(key) == text for key, text in self.render(records).items())

    def preload(self) -> None:
        """Import what `write` needs, for the flow's background preload: the run's last step then does
        not wait for it."""


def labelled(storage: DatasetStorage, records: DatasetRecords) -> list[dict[str, Any]]:
    """The segments with the annotators' labels of labels.jsonl merged in (as manifest.jsonl has them)."""
    from modalink.annotate import merge_labels

    return merge_labels(records.segments, storage.read_text(LABELS))


def media_file(storage: DatasetStorage, key: str) -> Path:
    """A local path of a published medium: the dataset folder, the staging folder, or a copy fetched
    into the staging folder (S3)."""
    staged = storage.staging_dir() / key
    if staged.is_file():
        return staged
    read = getattr(storage, "read_bytes", None)
    content = read(key) if read else None
    if content is None:
        raise FileNotFoundError(f"{key} is not in the dataset")
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_bytes(content)
    return staged


def media_stamp(storage: DatasetStorage, key: str) -> list[int] | None:
    """Size and modification time of a medium as stored locally (None when there is no local copy):
    part of a built export's digest, so a rewritten clip makes it stale."""
    path = storage.staging_dir() / key
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


class BuiltExporter(Exporter):
    """An exporter of binary files under `folder`, built whole, with a stamp beside them."""

    folder: ClassVar[str]
    version: ClassVar[int] = 1  # raise it when the files it builds change for the same inputs

    def inputs(self, storage: DatasetStorage, records: DatasetRecords) -> Any:
        """Everything the files depend on, as JSON-able data (the default: labelled records, splits,
        options and the media stamps)."""
        segments = labelled(storage, records)
        media = {r["segment_id"]: [media_stamp(storage, r[k]) for k in ("video_clip", "audio_clip", "frame")]
                 for r in segments}
        return {"segments": segments, "videos": records.videos, "splits": records.splits(), "media": media,
                "export": {k: v for k, v in records.full_config().to_dict()["export"].items() if k != "formats"}}

    def build(self, storage: DatasetStorage, records: DatasetRecords, out: Path) -> None:
        """Write the export's files into `out` (which stands for `folder`)."""
        raise NotImplementedError

    def available(self) -> str | None:
        """None, or why this export cannot be written here (a missing optional package)."""
        return None

    @property
    def stamp_key(self) -> str:
        return f"{self.folder}/.modalink-stamp.json"

    def enabled(self, records: DatasetRecords) -> bool:
        return self.name in records.options().formats and self.available() is None

    def digest(self, storage: DatasetStorage, records: DatasetRecords) -> str:
        text = json.dumps([self.name, self.version, self.inputs(storage, records)], sort_keys=True,
                          ensure_ascii=False, default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def is_current(self, storage: DatasetStorage, records: DatasetRecords) -> bool:
        if not self.enabled(records):
            return True
        try:
            stamp = json.loads(storage.read_text(self.stamp_key) or "null")
        except ValueError:
            return False
        return (isinstance(stamp, dict) and stamp.get("digest") == self.digest(storage, records)
                and all(storage.exists(f"{self.folder}/{name}") for name in stamp.get("files", [])))

    def write(self, storage: DatasetStorage, records: DatasetRecords) -> None:
        if not self.enabled(records):
            return
        builds = storage.staging_dir() / ".modalink" / "exports"
        name = self.folder.replace("/", "_")
        for left in builds.glob(f"{name}-*"):  # the build folder of a run that was killed
            shutil.rmtree(left, ignore_errors=True)
        work = builds / f"{name}-{uuid.uuid4().hex[:8]}"
        work.mkdir(parents=True)
        try:
            self.build(storage, records, work)
            files = sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file())
            for name in files:
                if isinstance(storage, LocalStorage):
                    target = storage.root / self.folder / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(work / name, target)
                else:
                    storage.put_file(work / name, f"{self.folder}/{name}")
            if isinstance(storage, LocalStorage):  # files of an earlier build that this one no longer has
                for old in (storage.root / self.folder).rglob("*"):
                    relative = old.relative_to(storage.root / self.folder).as_posix()
                    if old.is_file() and relative not in files and old.name != ".modalink-stamp.json":
                        old.unlink()
            stamp = {"digest": self.digest(storage, records), "files": files}
            storage.put_text_atomically(self.stamp_key, json.dumps(stamp, indent=1) + "\n")
        finally:
            shutil.rmtree(work, ignore_errors=True)


class LabelledExporter(Exporter):
    """An exporter whose files also show the annotators' labels: `render` gets labels.jsonl's text."""

    def render(self, records: DatasetRecords, labels: str | None = None) -> dict[str, str]:
        raise NotImplementedError

    def write(self, storage: DatasetStorage, records: DatasetRecords) -> None:
        for key, text in self.render(records, storage.read_text(LABELS)).items():
            storage.put_text_atomically(key, text)

    def is_current(self, storage: DatasetStorage, records: DatasetRecords) -> bool:
        return all(storage.read_text(key) == text
                   for key, text in self.render(records, storage.read_text(LABELS)).items())


_exporters: dict[str, Exporter] = {}


def register_exporter(cls: type[Exporter]) -> type[Exporter]:
    _exporters[cls.name] = cls()
    return cls


def exporters() -> list[Exporter]:
    """Every registered exporter, in the order they are written."""
    from modalink.stages import discover

    discover()
    return sorted(_exporters.values(), key=lambda exporter: exporter.order)
