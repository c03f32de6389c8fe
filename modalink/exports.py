"""The exporter contract and its registry: what a dataset's published records are turned into.

An exporter renders files from the records of the whole dataset (`DatasetRecords`); it can write
them and say whether what is stored is still what it would write, so that a run with nothing else
to do still rewrites a missing or stale export. Exporters register themselves with
`@register_exporter` (discovered with the stages: `modalink.stages.discover`) and are written in
`order`: manifest.jsonl last, since a reader takes it as the sign that everything it names is there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from modalink.storage import DatasetStorage


@dataclass(frozen=True)
class DatasetRecords:
    """Every published record of a dataset, after this run's were merged in."""

    segments: list[dict[str, Any]]  # manifest.jsonl's lines, in order
    videos: list[dict[str, Any]]  # videos.jsonl's lines, in order
    processed: frozenset[str] = field(default_factory=frozenset)  # video ids this run processed


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


_exporters: dict[str, Exporter] = {}


def register_exporter(cls: type[Exporter]) -> type[Exporter]:
    _exporters[cls.name] = cls()
    return cls


def exporters() -> list[Exporter]:
    """Every registered exporter, in the order they are written."""
    from modalink.stages import discover

    discover()
    return sorted(_exporters.values(), key=lambda exporter: exporter.order)
