"""Exports of the dataset in the formats that training code reads: WebDataset shards, Hugging Face
Parquet, lhotse manifests and a MELD-style CSV. Each is a registered exporter (modalink/exports.py),
rewritten by every build and, without a flow, whenever it is missing or stale; `modalink export DIR`
writes them on demand. Every export carries each segment's split (modalink/splits.py).

The writers need only the standard library, except the Hugging Face export (pyarrow and datasets'
feature types, the `exports` extra): webdataset and lhotse themselves are needed only to read the
files back. Paths inside the exports are relative to the dataset folder.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import tarfile
import wave
from pathlib import Path
from typing import Any

from modalink.annotate import FER_TO_MELD, MELD_CLASSES, SENTIMENTS, Settings
from modalink.exports import BuiltExporter, DatasetRecords, LabelledExporter, labelled, media_file, register_exporter
from modalink.splits import SPLITS
from modalink.storage import DatasetStorage

WEBDATASET, HF, LHOTSE, MELD = "webdataset", "hf", "lhotse", "meld.csv"
MEDIA = (("mp4", "video_clip"), ("wav", "audio_clip"), ("jpg", "frame"))


def sample_key(segment_id: str) -> str:
    """A WebDataset key: the segment id with no dots (the first dot starts a member's extension)."""
    return segment_id.replace(".", "_")


def speaker_of(record: dict[str, Any]) -> str:
    """A label-free speaker id: the video's id (segments are not clustered by voice across a video)."""
    return record["video_id"]


def pre_label(record: dict[str, Any]) -> dict[str, Any] | None:
    """The top class of `custom.expressions` on MELD's names (fer's angry -> anger, happy -> joy,
    sad -> sadness), its mean score and its margin; None without pre-labels."""
    expressions = (record.get("custom") or {}).get("expressions")
    if not isinstance(expressions, dict) or not expressions.get("top"):
        return None
    top, mean, classes = expressions["top"], expressions.get("mean"), expressions.get("classes") or []
    if isinstance(mean, dict):
        score = mean.get(top)
    elif isinstance(mean, list) and top in classes and len(mean) == len(classes):
        score = mean[classes.index(top)]
    else:
        score = None
    return {"top": FER_TO_MELD.get(top, top), "score": score, "margin": expressions.get("margin"),
            "model": expressions.get("model")}


def majority_sentiment(record: dict[str, Any]) -> str | None:
    from collections import Counter

    found = Counter(label.get("sentiment") for label in record.get("labels") or [] if label.get("sentiment"))
    ranked = found.most_common()
    return ranked[0][0] if ranked and (len(ranked) == 1 or ranked[1][1] < ranked[0][1]) else None


def grouped_by_split(records: DatasetRecords, segments: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    splits = records.splits()
    return {name: [s for s in segments if splits[s["segment_id"]] == name] for name in SPLITS}


def hf_files(records: DatasetRecords) -> dict[str, str]:
    """{split: Parquet file relative to the dataset root}, for the splits that hold segments."""
    held = set(records.splits().values())
    return {name: f"{HF}/data/{name}-00000-of-00001.parquet" for name in SPLITS if name in held}


# ---------------------------------------------------------------- WebDataset

@register_exporter
class WebDatasetExport(BuiltExporter):
    """Tar shards webdataset/modalink-000000.tar...: each segment's mp4, wav, jpg and json next to each
    other under one key; the json is the manifest record (labels merged) with `split` and `key`. A shard
    is closed before it would grow past export.shard_max_mb (a segment larger than that gets a shard
    of its own)."""

    name = folder = WEBDATASET
    order = 200

    def build(self, storage: DatasetStorage, records: DatasetRecords, out: Path) -> None:
        limit = records.options().shard_max_mb * 1_000_000
        splits = records.splits()
        shard, size, count, tar = 0, 0, 0, None
        try:
            for record in labelled(storage, records):
                key = sample_key(record["segment_id"])
                document = json.dumps({**record, "split": splits[record["segment_id"]], "key": key},
                                      ensure_ascii=False, sort_keys=True).encode("utf-8")
                members = [(f"{key}.{ext}", media_file(storage, record[field])) for ext, field in MEDIA]
                sample_size = sum(1024 + path.stat().st_size for _, path in members) + 1024 + len(document)
                if tar is not None and count and size + sample_size > limit:
                    tar.close()
                    tar, shard, size, count = None, shard + 1, 0, 0
                if tar is None:
                    tar = tarfile.open(out / f"modalink-{shard:06d}.tar", "w", format=tarfile.USTAR_FORMAT)
                for name, path in members:
                    info = tarfile.TarInfo(name)
                    info.size, info.mode = path.stat().st_size, 0o644
                    with path.open("rb") as handle:
                        tar.addfile(info, handle)
                info = tarfile.TarInfo(f"{key}.json")
                info.size, info.mode = len(document), 0o644
                tar.addfile(info, io.BytesIO(document))
                size, count = size + sample_size, count + 1
        finally:
            if tar is not None:
                tar.close()


# ---------------------------------------------------------------- Hugging Face datasets

def hf_features(classes: list[str]):
    from datasets import Audio, ClassLabel, Features, Image, Value

    try:
        from datasets import List as Sequence  # datasets >= 4
    except ImportError:  # pragma: no cover - older datasets
        from datasets import Sequence
    box = {name: Value("float32") for name in ("x", "y", "w", "h", "confidence", "time")}
    return Features({
        "segment_id": Value("string"), "video_id": Value("string"), "split": Value("string"),
        "start": Value("float64"), "end": Value("float64"), "duration": Value("float64"),
        "audio": Audio(sampling_rate=16000), "image": Image(), "video": Value("string"),
        "transcript": Value("string"), "transcript_status": Value("string"), "language": Value("string"),
        "speaker": Value("string"), "face": box,
        "prelabel": ClassLabel(names=list(MELD_CLASSES)), "prelabel_score": Value("float32"),
        "label": ClassLabel(names=list(classes)), "label_agreement": Value("float32"),
        "annotator_labels": Sequence(Value("string")),
    })


def label_classes(storage: DatasetStorage) -> list[str]:
    """The emotion classes of the last annotation export (annotation.json), else MELD's seven."""
    settings = Settings.load(storage)
    return list(settings.classes) if settings else list(MELD_CLASSES)


@register_exporter
class HuggingFaceExport(BuiltExporter):
    """Parquet shards hf/data/{split}-00000-of-00001.parquet with explicit features (in the Parquet
    schema's `huggingface` metadata): Audio (the 16 kHz WAV's bytes), Image (the midpoint frame's
    bytes), the clip's path, the transcript, the face box, the labels as ClassLabel (-1: none) and the
    pre-label's top class. The dataset card (README.md) names the files in its `configs`."""

    name = folder = HF
    order = 210

    def available(self) -> str | None:
        from importlib.util import find_spec  # not imported here: an up-to-date run need not load them

        if find_spec("datasets") is None or find_spec("pyarrow") is None:
            return "needs pyarrow and datasets (pip install 'modalink[exports]')"
        return None

    def preload(self) -> None:
        if self.available() is None:  # datasets' import alone takes most of a second
            import pyarrow.parquet  # noqa: F401

            hf_features(list(MELD_CLASSES))

    def inputs(self, storage: DatasetStorage, records: DatasetRecords) -> Any:
        return {**super().inputs(storage, records), "classes": label_classes(storage)}

    def build(self, storage: DatasetStorage, records: DatasetRecords, out: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        classes = label_classes(storage)
        features = hf_features(classes)
        splits = records.splits()
        for split, rows in grouped_by_split(records, labelled(storage, records)).items():
            if not rows:
                continue
            table = pa.Table.from_pylist([self.row(storage, r, splits[r["segment_id"]], classes) for r in rows],
                                         schema=features.arrow_schema)
            target = out / "data" / f"{split}-00000-of-00001.parquet"
            target.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, target)

    @staticmethod
    def row(storage: DatasetStorage, record: dict[str, Any], split: str, classes: list[str]) -> dict[str, Any]:
        face = record.get("active_face") or {}
        pre = pre_label(record)
        label = record.get("label")
        return {
            "segment_id": record["segment_id"], "video_id": record["video_id"], "split": split,
            "start": record["start"], "end": record["end"], "duration": record["duration"],
            "audio": {"bytes": media_file(storage, record["audio_clip"]).read_bytes(), "path": record["audio_clip"]},
            "image": {"bytes": media_file(storage, record["frame"]).read_bytes(), "path": record["frame"]},
            "video": record["video_clip"],
            "transcript": record.get("transcript"), "transcript_status": record.get("transcript_status"),
            "language": record.get("language"), "speaker": speaker_of(record),
            "face": {k: face.get(k) for k in ("x", "y", "w", "h", "confidence", "time")},
            "prelabel": MELD_CLASSES.index(pre["top"]) if pre and pre["top"] in MELD_CLASSES else -1,
            "prelabel_score": pre["score"] if pre else None,
            "label": classes.index(label) if label in classes else -1,
            "label_agreement": record.get("label_agreement"),
            "annotator_labels": [entry.get("emotion") for entry in record.get("labels") or []],
        }


# ---------------------------------------------------------------- lhotse

def gzip_jsonl(path: Path, lines: list[dict[str, Any]]) -> None:
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as packed:
        for line in lines:
            packed.write((json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8"))


@register_exporter
class LhotseExport(BuiltExporter):
    """lhotse/recordings.jsonl.gz (one Recording per segment: its WAV clip, path relative to the
    dataset) and lhotse/supervisions.jsonl.gz (one SupervisionSegment over the whole recording: text,
    language, speaker, and in `custom` the split, the source times, the face box, the pre-label and
    the labels), written as lhotse's own JSON (lhotse itself imports torch, so it is not used to write)."""

    name = folder = LHOTSE
    order = 220

    def build(self, storage: DatasetStorage, records: DatasetRecords, out: Path) -> None:
        splits = records.splits()
        recordings, supervisions = [], []
        for record in labelled(storage, records):
            with wave.open(str(media_file(storage, record["audio_clip"])), "rb") as clip:
                rate, samples, channels = clip.getframerate(), clip.getnframes(), clip.getnchannels()
            duration = samples / rate
            segment_id = record["segment_id"]
            recordings.append({"id": segment_id, "sources": [{"type": "file", "channels": list(range(channels)),
                                                              "source": record["audio_clip"]}],
                               "sampling_rate": rate, "num_samples": samples, "duration": duration,
                               "channel_ids": list(range(channels))})
            custom = {"split": splits[segment_id], "video_id": record["video_id"], "source_start": record["start"],
                      "source_end": record["end"], "video_clip": record["video_clip"], "frame": record["frame"],
                      "face": record.get("active_face"), "prelabel": pre_label(record),
                      "transcript_status": record.get("transcript_status")}
            for name in ("labels", "label", "label_agreement"):
                if name in record:
                    custom[name] = record[name]
            supervisions.append({"id": segment_id, "recording_id": segment_id, "start": 0.0, "duration": duration,
                                 "channel": 0, "text": record.get("transcript"), "language": record.get("language"),
                                 "speaker": speaker_of(record), "custom": custom})
        gzip_jsonl(out / "recordings.jsonl.gz", recordings)
        gzip_jsonl(out / "supervisions.jsonl.gz", supervisions)


# ---------------------------------------------------------------- MELD-style CSV

MELD_COLUMNS = ("Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
                "Season", "Episode", "StartTime", "EndTime")
EXTRA_COLUMNS = ("Split", "Segment_ID", "Video_ID", "Video_Clip", "Audio_Clip", "Frame", "Prelabel",
                 "Prelabel_Score", "Label_Agreement", "Language")


def meld_time(seconds: float) -> str:
    """MELD's time format, hh:mm:ss,mmm."""
    millis = int(round(seconds * 1000))
    return f"{millis // 3_600_000:02d}:{millis // 60_000 % 60:02d}:{millis // 1000 % 60:02d},{millis % 1000:03d}"


@register_exporter
class MeldExport(LabelledExporter):
    """meld.csv: one row per segment in MELD's columns (Dialogue_ID: the video, numbered in the
    manifest's order; Utterance_ID: the segment inside it; Season and Episode empty; Emotion and
    Sentiment the annotators' majority, empty without labels), then its split and files."""

    name, order = MELD, 230

    def render(self, records: DatasetRecords, labels: str | None = None) -> dict[str, str]:
        from modalink.annotate import merge_labels

        if self.name not in records.options().formats:
            return {}
        splits = records.splits()
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow((*MELD_COLUMNS, *EXTRA_COLUMNS))
        dialogues: dict[str, int] = {}
        utterances: dict[str, int] = {}
        for number, record in enumerate(merge_labels(records.segments, labels), start=1):
            dialogue = dialogues.setdefault(record["video_id"], len(dialogues))
            utterance = utterances[record["video_id"]] = utterances.get(record["video_id"], -1) + 1
            pre = pre_label(record)
            sentiment = majority_sentiment(record)
            writer.writerow((number, record.get("transcript") or "", speaker_of(record), record.get("label") or "",
                             sentiment if sentiment in SENTIMENTS else "", dialogue, utterance, "", "",
                             meld_time(record["start"]), meld_time(record["end"]),
                             splits[record["segment_id"]], record["segment_id"], record["video_id"],
                             record["video_clip"], record["audio_clip"], record["frame"],
                             pre["top"] if pre else "", "" if not pre or pre["score"] is None else pre["score"],
                             "" if record.get("label_agreement") is None else record["label_agreement"],
                             record.get("language") or ""))
        return {MELD: buffer.getvalue()}
