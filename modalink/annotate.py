"""`modalink annotate`: the round trip through Label Studio.

Export (`--to label-studio`): a labeling config (the clip's video, muted and synced with its 16 kHz
WAV, the transcript, right to left for Arabic, one emotion choice, optional sentiment and
valence/arousal) and one task per segment, with the pre-labels of `custom.expressions` as
predictions, ordered for annotation (uncertain pre-labels first, videos interleaved).

Import (`--from EXPORT.json`): a Label Studio JSON export, joined on `segment_id`; every
annotator's label is kept in `DIR/labels.jsonl` (one line per segment), which the manifest exporter
merges into manifest.jsonl (`labels`, `label`, `label_agreement`), so later builds keep them. The
agreement (Krippendorff's alpha, Fleiss' kappa) goes to `DIR/annotation_summary.json` and to
run_summary.json's `annotation` key. A bad export changes nothing: one line per problem, exit 2.
"""
from __future__ import annotations

import json
import math
import sys
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote

from modalink.exports import LABELS
from modalink.records import parse_jsonl, to_json_line
from modalink.storage import DatasetStorage, LocalStorage, open_storage

MANIFEST = "manifest.jsonl"
SETTINGS = "annotation.json"
SUMMARY = "annotation_summary.json"
RUN_SUMMARY = "run_summary.json"

MELD_CLASSES = ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")
SENTIMENTS = ("positive", "neutral", "negative")
FER_TO_MELD = {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "joy", "sad": "sadness",
               "surprise": "surprise", "neutral": "neutral"}
SCALE = (1, 9)  # valence and arousal: the SAM scale, 1 (negative, calm) to 9 (positive, excited)
LABEL_FIELDS = ("labels", "label", "label_agreement")  # what the manifest exporter adds


class AnnotationError(Exception):
    """A bad export or bad options: each problem is one line on stderr; nothing is changed."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass
class Settings:
    """How a dataset is annotated; written by the export into DIR/annotation.json, read by the import."""

    classes: list[str] = field(default_factory=lambda: list(MELD_CLASSES))
    sentiment: bool = False
    valence_arousal: str | None = None  # None, "rating" or "number"
    dataset_id: str = ""  # tasks carry it: an export of another dataset is refused

    @classmethod
    def load(cls, storage: DatasetStorage) -> "Settings | None":
        text = storage.read_text(SETTINGS)
        return cls(**json.loads(text)) if text else None

    def save(self, storage: DatasetStorage) -> None:
        storage.put_text_atomically(SETTINGS, json.dumps(asdict(self), indent=2) + "\n")


# ---------------------------------------------------------------- export

def labeling_config(settings: Settings, direction: str = "ltr") -> str:
    """The Label Studio labeling config. `direction`: "rtl" (every segment Arabic), "auto" (mixed:
    each transcript takes the direction of its first strong character) or "ltr"."""
    style = {"rtl": "direction: rtl; text-align: right;",
             "auto": "unicode-bidi: plaintext; text-align: start;"}.get(direction, "")
    choices = "\n".join(f'    <Choice value="{c}"/>' for c in settings.classes)
    lines = [
        "<View>",
        '  <Header value="Segment $segment_id" size="5"/>',
        # The MP4's own AAC track is muted: the sound is the dataset's 16 kHz WAV, played by <Audio>,
        # which Label Studio keeps in sync with the video (play, pause, seek, speed) both ways.
        '  <Video name="video" value="$video" sync="audio" muted="true" height="320"/>',
        '  <Audio name="audio" value="$audio" sync="video" height="64"/>',
        '  <Header value="Transcript" size="6"/>',
        f'  <View style="{style}" className="modalink-transcript">' if style else "  <View className=\"modalink-transcript\">",
        '    <Text name="transcript" value="$transcript"/>',
        "  </View>",
        '  <Header value="Emotion of the speaker" size="6"/>',
        '  <Choices name="emotion" toName="video" choice="single-radio" showInline="true" required="true">',
        choices,
        "  </Choices>",
    ]
    if settings.sentiment:
        lines += ['  <Header value="Sentiment" size="6"/>',
                  '  <Choices name="sentiment" toName="video" choice="single-radio" showInline="true">',
                  *(f'    <Choice value="{s}"/>' for s in SENTIMENTS), "  </Choices>"]
    if settings.valence_arousal == "rating":
        for name in ("valence", "arousal"):
            lines += [f'  <Header value="{name.capitalize()} (1 to {SCALE[1]})" size="6"/>',
                      f'  <Rating name="{name}" toName="video" maxRating="{SCALE[1]}"/>']
    elif settings.valence_arousal == "number":
        for name in ("valence", "arousal"):
            lines += [f'  <Header value="{name.capitalize()} ({SCALE[0]} to {SCALE[1]})" size="6"/>',
                      f'  <Number name="{name}" toName="video" min="{SCALE[0]}" max="{SCALE[1]}" step="0.5"/>']
    lines.append("</View>")
    return "\n".join(lines) + "\n"


def pre_label(record: dict[str, Any], classes: list[str]) -> dict[str, Any] | None:
    """The pre-label of `custom.expressions` on the configured classes: scores (fer's classes mapped
    to MELD's), the top class, its margin over the second, the model's version; None without one."""
    expressions = (record.get("custom") or {}).get("expressions")
    if not isinstance(expressions, dict):
        return None
    mean = expressions.get("mean")
    if isinstance(mean, list):  # the expressions stage's record: scores in the order of its `classes`
        mean = dict(zip(expressions.get("classes") or [], mean))
    if not isinstance(mean, dict):
        return None
    scores: dict[str, float] = {}
    for name, score in mean.items():
        mapped = FER_TO_MELD.get(name, name)
        if mapped in classes and isinstance(score, (int, float)):
            scores[mapped] = scores.get(mapped, 0.0) + float(score)
    if not scores:
        return None
    ranked = sorted(scores.items(), key=lambda item: -item[1])
    model = expressions.get("model")
    if isinstance(model, dict):
        version = " ".join(str(model[k]) for k in ("name", "version") if model.get(k) is not None) or "unknown"
    else:
        version = str(model) if model else "unknown"
    return {"scores": scores, "top": ranked[0][0], "score": round(ranked[0][1], 4),
            "margin": round(ranked[0][1] - (ranked[1][1] if len(ranked) > 1 else 0.0), 4),
            "model_version": version}


def priority_order(records: list[dict[str, Any]], pre_labels: dict[str, dict | None]) -> list[dict[str, Any]]:
    """Uncertain pre-labels first, videos interleaved: each video's segments sorted by the margin of
    their top class (a segment without a pre-label counts as the most uncertain, margin 0), then
    round r takes every video's r-th, most uncertain first."""
    def margin(record):
        found = pre_labels.get(record["segment_id"])
        return found["margin"] if found else 0.0

    by_video: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_video[record["video_id"]].append(record)
    queues = [sorted(group, key=lambda r: (margin(r), r["start"], r["segment_id"])) for _, group in sorted(by_video.items())]
    ordered = []
    for rank in range(max((len(q) for q in queues), default=0)):
        ordered += sorted((q[rank] for q in queues if rank < len(q)), key=lambda r: (margin(r), r["video_id"]))
    return ordered


def media_url(dataset: str, key: str, media: str, document_root: Path | None, s3_url: str | None) -> str:
    if media == "s3":
        return f"{s3_url.rstrip('/')}/{key}"
    path = (Path(dataset) / key).resolve()
    return "/data/local-files/?d=" + quote(path.relative_to(document_root).as_posix(), safe="/")


def text_direction(records: list[dict[str, Any]]) -> str:
    arabic = [str(r.get("language", "")).lower().split("-")[0] == "ar" for r in records]
    return "rtl" if arabic and all(arabic) else "auto" if any(arabic) else "ltr"


def export_tasks(dataset: str, settings: Settings, media: str = "local", document_root: str | None = None,
                 s3_url: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The labeling config and the tasks of a dataset (one per segment, in priority order)."""
    storage = open_storage(dataset)
    records = parse_jsonl(storage.read_text(MANIFEST))
    if not records:
        raise AnnotationError([f"no segments in {dataset}/{MANIFEST}"])
    root = None
    if media == "local":
        if not isinstance(storage, LocalStorage):
            raise AnnotationError(["--media local needs a local dataset folder; use --media s3 for a bucket"])
        root = Path(document_root).expanduser().resolve() if document_root else Path(dataset).resolve().parent
        if not Path(dataset).resolve().is_relative_to(root):
            raise AnnotationError([f"--document-root {root} does not contain the dataset {Path(dataset).resolve()}"])
    elif media == "s3":
        s3_url = s3_url or (dataset if dataset.startswith("s3://") else None)
        if not s3_url:
            raise AnnotationError(["--media s3 needs a dataset in a bucket (DIR = s3://bucket/prefix) or --s3-url"])
    pre_labels = {r["segment_id"]: pre_label(r, settings.classes) for r in records}
    tasks = []
    for priority, record in enumerate(priority_order(records, pre_labels), start=1):
        found = pre_labels[record["segment_id"]]
        task: dict[str, Any] = {"data": {
            "segment_id": record["segment_id"], "video_id": record["video_id"],
            "video": media_url(dataset, record["video_clip"], media, root, s3_url),
            "audio": media_url(dataset, record["audio_clip"], media, root, s3_url),
            "frame": media_url(dataset, record["frame"], media, root, s3_url),
            "transcript": record.get("transcript") or "", "language": record.get("language"),
            "start": record["start"], "end": record["end"],
            "priority": priority, "prelabel_margin": found["margin"] if found else None,
            "dataset_id": settings.dataset_id}}
        if found:
            task["predictions"] = [{"model_version": found["model_version"], "score": found["score"], "result": [
                {"from_name": "emotion", "to_name": "video", "type": "choices", "value": {"choices": [found["top"]]}}]}]
        tasks.append(task)
    return labeling_config(settings, text_direction(records)), tasks


def run_export(dataset: str, out: str | None, settings_in: Settings, media: str | None, document_root: str | None,
               s3_url: str | None) -> dict[str, Any]:
    storage = open_storage(dataset)
    stored = Settings.load(storage)
    settings_in.dataset_id = stored.dataset_id if stored else uuid.uuid4().hex
    media = media or ("s3" if dataset.startswith("s3://") else "local")
    config, tasks = export_tasks(dataset, settings_in, media, document_root, s3_url)
    folder = Path(out).expanduser() if out else (Path(dataset) / "label-studio" if "://" not in dataset else None)
    if folder is None:
        raise AnnotationError(["--out FOLDER is needed for a dataset in a bucket"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.xml").write_text(config, encoding="utf-8")
    (folder / "tasks.json").write_text(json.dumps(tasks, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    settings_in.save(storage)
    return {"config": str(folder / "config.xml"), "tasks": str(folder / "tasks.json"), "count": len(tasks),
            "predictions": sum("predictions" in t for t in tasks), "media": media}


# ---------------------------------------------------------------- import

def annotator_of(annotation: dict[str, Any]) -> tuple[str, Any]:
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        return str(who.get("email") or f"user {who.get('id')}"), who.get("id")
    return f"user {who}", who


def label_of(annotation: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """One annotator's label from one Label Studio annotation's result."""
    label: dict[str, Any] = {}
    for item in annotation.get("result") or []:
        name, value = item.get("from_name"), item.get("value") or {}
        if name in ("emotion", "sentiment") and value.get("choices"):
            label[name] = value["choices"][0]
        elif name in ("valence", "arousal"):
            for kind in ("rating", "number"):
                if isinstance(value.get(kind), (int, float)):
                    label[name] = value[kind]
    return label


def parse_export(tasks: Any, known: dict[str, dict[str, Any]], settings: Settings, users: dict | None = None
                 ) -> dict[str, list[dict[str, Any]]]:
    """{segment_id: [label per annotator]} of an export; AnnotationError lists every problem."""
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise AnnotationError(["not a Label Studio JSON export (a list of tasks)"])
    problems, labels = [], {}
    ids = [(t.get("data") or {}).get("segment_id") for t in tasks]
    if tasks and not any(i in known for i in ids):
        raise AnnotationError([f"none of the export's {len(tasks)} segment ids is in this dataset: "
                               "an export of another project?"])
    for task, segment_id in zip(tasks, ids):
        data = task.get("data") or {}
        if segment_id is None:
            problems.append(f"task {task.get('id')}: no data.segment_id (not a MODALINK task)")
            continue
        if segment_id not in known:
            problems.append(f"task {task.get('id')}: unknown segment id {segment_id}")
            continue
        if data.get("dataset_id") and settings.dataset_id and data["dataset_id"] != settings.dataset_id:
            problems.append(f"task {task.get('id')}: {segment_id} was exported from another dataset "
                            f"(dataset_id {data['dataset_id']}, this one is {settings.dataset_id})")
            continue
        latest: dict[str, dict[str, Any]] = {}
        for annotation in task.get("annotations") or []:
            if annotation.get("was_cancelled"):
                continue
            name, user_id = annotator_of(annotation)
            if users and user_id in users:
                name = users[user_id]
            label = label_of(annotation, settings)
            if "emotion" not in label:
                problems.append(f"task {task.get('id')}: {segment_id}: annotation {annotation.get('id')} by {name} "
                                "has no emotion")
                continue
            if label["emotion"] not in settings.classes:
                problems.append(f"task {task.get('id')}: {segment_id}: label {label['emotion']!r} by {name} is not "
                                f"one of the configured classes ({', '.join(settings.classes)})")
                continue
            if "sentiment" in label and label["sentiment"] not in SENTIMENTS:
                problems.append(f"task {task.get('id')}: {segment_id}: sentiment {label['sentiment']!r} by {name} "
                                f"is not one of {', '.join(SENTIMENTS)}")
                continue
            entry = {"annotator": name, "annotator_id": user_id, **label,
                     "time": annotation.get("updated_at") or annotation.get("created_at"),
                     "annotation_id": annotation.get("id")}
            if name not in latest or str(entry["time"]) >= str(latest[name]["time"]):
                latest[name] = entry  # one label per annotator: the latest
        labels[segment_id] = sorted(latest.values(), key=lambda e: e["annotator"])
    if problems:
        raise AnnotationError(problems)
    return labels


def majority(labels: list[dict[str, Any]]) -> tuple[str | None, float | None]:
    """The majority emotion (None on a tie) and the share of annotators who gave the top label."""
    if not labels:
        return None, None
    counts = Counter(label["emotion"] for label in labels).most_common()
    top = counts[0][1]
    winner = counts[0][0] if len(counts) == 1 or counts[1][1] < top else None
    return winner, round(top / len(labels), 4)


def merge_labels(segments: list[dict[str, Any]], labels_text: str | None) -> list[dict[str, Any]]:
    """Manifest lines with the labels of labels.jsonl as added fields (and none left from before)."""
    by_id = {line["segment_id"]: line["labels"] for line in parse_jsonl(labels_text)}
    merged = []
    for record in segments:
        record = {k: v for k, v in record.items() if k not in LABEL_FIELDS}
        if by_id.get(record["segment_id"]):
            labels = by_id[record["segment_id"]]
            record["labels"] = labels
            record["label"], record["label_agreement"] = majority(labels)
        merged.append(record)
    return merged


def changes(old: dict[str, list[dict]], new: dict[str, list[dict]]) -> list[str]:
    """What a new round changes, per segment and annotator."""
    lines = []
    for segment_id in sorted(new):
        before = {e["annotator"]: e for e in old.get(segment_id, [])}
        after = {e["annotator"]: e for e in new[segment_id]}
        for name in sorted(set(before) | set(after)):
            b, a = before.get(name), after.get(name)
            if b is None:
                lines.append(f"{segment_id}: {name} added {describe(a)}")
            elif a is None:
                lines.append(f"{segment_id}: {name} removed {describe(b)}")
            elif describe(a) != describe(b):
                lines.append(f"{segment_id}: {name} changed from {describe(b)} to {describe(a)}")
    return lines


def describe(label: dict[str, Any]) -> str:
    extra = [f"{k} {label[k]}" for k in ("sentiment", "valence", "arousal") if k in label]
    return label["emotion"] + (f" ({', '.join(extra)})" if extra else "")


# ---------------------------------------------------------------- agreement

def _alpha(matrix, level: str, domain=None) -> float | None:
    import krippendorff
    import numpy as np

    data = np.asarray(matrix, dtype=float)
    pairable = (~np.isnan(data)).sum(axis=0)
    values = data[:, pairable >= 2]
    if values.size == 0 or len(set(values[~np.isnan(values)].tolist())) < 2:
        return None  # nothing pairable, or one value only: no expected disagreement, alpha is undefined
    kwargs = {"value_domain": domain} if domain is not None and level == "nominal" else {}
    result = krippendorff.alpha(reliability_data=values, level_of_measurement=level, **kwargs)
    return None if result is None or math.isnan(result) else round(float(result), 4)


def _fleiss(rows: list[list[str]], classes: list[str]) -> float | None:
    """Fleiss' kappa over segments that all have the same number (>= 2) of labels, else None."""
    if not rows or len({len(r) for r in rows}) != 1 or len(rows[0]) < 2:
        return None
    import numpy as np
    from statsmodels.stats.inter_rater import fleiss_kappa

    table = np.array([[row.count(c) for c in classes] for row in rows])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return None  # one category only: undefined, as alpha
    value = fleiss_kappa(table, method="fleiss")
    return None if math.isnan(value) else round(float(value), 4)


def agreement(labels: dict[str, list[dict[str, Any]]], video_of: dict[str, str], settings: Settings) -> dict[str, Any]:
    """Krippendorff's alpha (nominal; annotators may have labelled different segments) and Fleiss'
    kappa (only where every segment has the same number of labels): overall, per class (that class
    against the rest) and per video; alpha also for sentiment (nominal) and valence/arousal (interval)."""
    segments = sorted(s for s, found in labels.items() if found)
    annotators = sorted({e["annotator"] for s in segments for e in labels[s]})
    classes = settings.classes

    def matrix(ids, value):
        return [[value(next((e for e in labels[s] if e["annotator"] == a), None)) for s in ids] for a in annotators]

    def code(entry):
        return classes.index(entry["emotion"]) if entry else float("nan")

    def block(ids) -> dict[str, Any]:
        rows = [[e["emotion"] for e in labels[s]] for s in ids]
        return {"segments": len(ids), "labels": sum(len(r) for r in rows),
                "krippendorff_alpha": _alpha(matrix(ids, code), "nominal", list(range(len(classes)))),
                "fleiss_kappa": _fleiss(rows, classes),
                "unanimous": sum(len(r) >= 2 and len(set(r)) == 1 for r in rows)}

    summary: dict[str, Any] = {"annotators": annotators, "classes": classes, "overall": block(segments),
                               "per_class": {}, "per_video": {}}
    summary["overall"]["labels_per_segment"] = dict(sorted(Counter(len(labels[s]) for s in segments).items()))
    for index, name in enumerate(classes):
        binary = matrix(segments, lambda e, i=index: float(code(e) == i) if e else float("nan"))
        rows = [["yes" if e["emotion"] == name else "no" for e in labels[s]] for s in segments]
        summary["per_class"][name] = {"labels": sum(e["emotion"] == name for s in segments for e in labels[s]),
                                      "krippendorff_alpha": _alpha(binary, "nominal", [0.0, 1.0]),
                                      "fleiss_kappa": _fleiss(rows, ["yes", "no"])}
    for video in sorted({video_of[s] for s in segments}):
        summary["per_video"][video] = block([s for s in segments if video_of[s] == video])
    if any("sentiment" in e for s in segments for e in labels[s]):
        summary["sentiment_alpha"] = _alpha(matrix(segments, lambda e: SENTIMENTS.index(e["sentiment"])
                                                   if e and "sentiment" in e else float("nan")), "nominal")
    for dim in ("valence", "arousal"):
        if any(dim in e for s in segments for e in labels[s]):
            summary[f"{dim}_alpha"] = _alpha(matrix(segments, lambda e, d=dim: float(e[d]) if e and d in e
                                                    else float("nan")), "interval")
    return summary


def format_agreement(summary: dict[str, Any]) -> list[str]:
    def fmt(value):
        return "n/a" if value is None else f"{value:.3f}"

    overall = summary["overall"]
    lines = [f"  annotators:      {len(summary['annotators'])} ({', '.join(summary['annotators'])})",
             f"  segments:        {overall['segments']} labelled, {overall['labels']} labels "
             f"(labels per segment: {', '.join(f'{k}: {v}' for k, v in overall['labels_per_segment'].items())})",
             f"  agreement:       Krippendorff's alpha {fmt(overall['krippendorff_alpha'])}, "
             f"Fleiss' kappa {fmt(overall['fleiss_kappa'])}"
             + ("" if overall["fleiss_kappa"] is not None else " (segments have different numbers of labels)"),
             "  per class:       " + ", ".join(f"{name} {fmt(c['krippendorff_alpha'])} ({c['labels']})"
                                               for name, c in summary["per_class"].items()),
             "  per video:"]
    lines += [f"    {video}: alpha {fmt(v['krippendorff_alpha'])}, kappa {fmt(v['fleiss_kappa'])}, "
              f"{v['segments']} segments" for video, v in summary["per_video"].items()]
    for key in ("sentiment_alpha", "valence_alpha", "arousal_alpha"):
        if key in summary:
            lines.append(f"  {key.replace('_', ' ')}: {fmt(summary[key])}")
    return lines


def run_import(dataset: str, export_path: str, settings_override: Settings | None = None) -> dict[str, Any]:
    """Read an export, check it, store its labels, re-render manifest.jsonl, write the agreement."""
    from tasks.publish import merged_records_as_published, rewrite_exports

    storage = open_storage(dataset)
    settings = settings_override or Settings.load(storage) or Settings()
    try:
        tasks = json.loads(Path(export_path).expanduser().read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AnnotationError([f"no such file: {export_path}"]) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnnotationError([f"{export_path} is not JSON: {exc}"]) from None
    records = parse_jsonl(storage.read_text(MANIFEST))
    if not records:
        raise AnnotationError([f"no segments in {dataset}/{MANIFEST}"])
    known = {r["segment_id"]: r for r in records}
    new = parse_export(tasks, known, settings)
    old = {line["segment_id"]: line["labels"] for line in parse_jsonl(storage.read_text(LABELS))}
    changed = changes(old, new)
    kept = {s: found for s, found in old.items() if s not in new}
    stored = {**kept, **{s: found for s, found in new.items() if found}}
    text = "".join(to_json_line({"segment_id": s, "labels": stored[s]}) + "\n" for s in known if s in stored)
    storage.put_text_atomically(LABELS, text)
    # manifest.jsonl with the labels now, and every export that carries them (the card, Parquet, ...)
    rewrite_exports(storage, merged_records_as_published(storage))
    summary = agreement(stored, {s: r["video_id"] for s, r in known.items()}, settings)
    summary["export"] = str(Path(export_path).resolve())
    summary_text = json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
    storage.put_text_atomically(SUMMARY, summary_text)
    run_summary = json.loads(storage.read_text(RUN_SUMMARY) or "{}")
    run_summary["annotation"] = summary
    storage.put_text_atomically(RUN_SUMMARY, json.dumps(run_summary, indent=2, ensure_ascii=False) + "\n")
    return {"changes": changed, "summary": summary, "segments_in_export": len(new),
            "segments_kept_from_before": len([s for s in kept if kept[s]]),
            "labelled": len(stored), "tasks": len(tasks)}


def print_import(result: dict[str, Any], dataset: str, out=None) -> None:
    lines = [f"MODALINK labels: {dataset}",
             f"  export:          {result['tasks']} tasks; {result['labelled']} segments labelled in all"
             + (f" ({result['segments_kept_from_before']} not in this export kept their labels)"
                if result["segments_kept_from_before"] else ""),
             f"  changes:         {len(result['changes'])}" + (":" if result["changes"] else "")]
    lines += [f"    {line}" for line in result["changes"]]
    lines += format_agreement(result["summary"])
    lines.append(f"  written:         {dataset}/{LABELS}, {dataset}/{MANIFEST}, {dataset}/{SUMMARY}")
    print("\n".join(lines), file=out or sys.stderr)


def parse_classes(text: str | None) -> list[str]:
    if not text:
        return list(MELD_CLASSES)
    classes = [c.strip() for c in text.split(",") if c.strip()]
    if len(set(classes)) != len(classes) or not classes:
        raise AnnotationError([f"--classes must name distinct classes, got {text!r}"])
    return classes


def labelled_ids(lines: Iterable[dict[str, Any]]) -> set[str]:
    return {line["segment_id"] for line in lines if line.get("labels")}
