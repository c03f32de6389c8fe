"""DIR/README.md: the dataset card, in the Hugging Face dataset-card layout, rendered from the records
with the data (a registered exporter): a YAML header (license, languages, task categories, size,
`configs` naming the Parquet files) and the sections a card should have (what the data is, how it was
made, its structure, its sources, its limits, personal information). It holds nothing that changes
from run to run (no times), so it is rewritten only when the data, the config or a version changes.
"""
from __future__ import annotations

import json
from collections import Counter
from importlib import resources
from typing import Any

import yaml

from modalink.exports import DatasetRecords, Exporter, register_exporter
from modalink.splits import SPLITS
from tasks.export_formats import HF, hf_files

CARD = "README.md"
LICENSES = {  # a licence as a video's metadata or media/README.md names it -> the Hub's identifier
    "cc by 4.0": "cc-by-4.0", "cc-by-4.0": "cc-by-4.0", "cc by 3.0": "cc-by-3.0", "cc-by-3.0": "cc-by-3.0",
    "creative commons attribution license (reuse allowed)": "cc-by-3.0",  # YouTube's CC licence is CC BY 3.0
    "cc0": "cc0-1.0", "cc0-1.0": "cc0-1.0", "public domain": "cc0-1.0", "mit": "mit", "unlicense": "unlicense",
}
STAGE_MODELS = {  # what each step uses, for "how it was made"
    "speakers": "speaker changes from CAM++ speaker embeddings (models/campplus.onnx, onnxruntime), or the "
                "paper's MFCC method (`speakers.method`); overlapped speech from pyannote segmentation-3.0 "
                "(models/segmentation-3.0.onnx)",
    "faces": "faces found by MTCNN (the mtcnn package on TensorFlow) or yuface (`faces.detector`) at "
             "`faces.fps` frames per second",
    "speaker_face": "the speaking face chosen by the speaker_face cue: each face track's mouth motion and "
                    "opening correlated with the speech level; voice-overs dropped",
    "media": "MP4 clips (H.264 + AAC), 16 kHz mono WAV clips and the midpoint frame (JPEG), cut with ffmpeg",
    "expressions": "facial-expression pre-labels from fer's 7-class mini-Xception (the quantized TFLite "
                   "model of the fer package): a model's guess, not a label",
    "transcription": "speech recognition by the `asr.backend`: Whisper (faster-whisper, offline) or Google's "
                     "Speech API",
    "voice": "voice cues: pitch (YIN), energy, speaking rate",
}
LIMITATIONS = [
    "Segments come from automatic steps only: speech found by WebRTC VAD, speakers split by CAM++ "
    "embeddings, the speaking face chosen by a mouth-motion cue. On the project's test inputs (QUALITY.md, "
    "QUALITY-faces.md) the speaker split found 6 of 6 turn changes with no false cut, and the speaking-face "
    "cue chose the right face in 3 of 3 side-by-side turns; those inputs are small and clean (GRID studio "
    "speech), the thresholds were chosen on them, and they are not validated on TV material or on "
    "Egyptian Arabic.",
    "Segments shorter than 3 s are never split by the speaker step; a quick exchange inside one stays one "
    "segment. Overlapped speech is flagged (`overlap_s`) unless `speakers.overlap = cut`.",
    "Transcripts are machine transcripts; `transcript_suspect` flags those that repeat themselves, are too "
    "long for the clip or that Whisper itself doubts, and the text is kept.",
    "Pre-labels (`custom.expressions`) are a facial-expression model's output on the face alone; they are "
    "not emotion labels. Labels (`label`) come only from human annotators (`modalink annotate`).",
    "Splits are drawn per channel (else per video) by a hash: with few channels or videos the proportions "
    "are far from the configured ones and a split may be empty.",
]
FIELD_NOTES = {"custom": "per-stage results: `speaker_face`, `expressions` (pre-labels), `voice`"}


def language_codes(records: DatasetRecords) -> list[str]:
    """ISO 639-1 codes (the BCP-47 tags' language subtags) of the segments, most frequent first."""
    found = Counter(str(r.get("language") or "").split("-")[0].lower() for r in records.segments)
    return [code for code, _ in found.most_common() if code]


def license_of(records: DatasetRecords) -> str:
    """The Hub licence id when every used video has the same known licence; `other` when they differ
    or one is not on the list; `unknown` when no video says."""
    used = {s["video_id"] for s in records.segments}
    named = {str(v.get("license") or "").strip() for v in records.videos if v["video_id"] in used}
    if not named or named == {""}:
        return "unknown"
    if "" in named:
        return "other"
    ids = {LICENSES.get(name.lower(), "other") for name in named}
    return ids.pop() if len(ids) == 1 else "other"


def size_category(count: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if count < limit:
            return label
    return "n>10M"


def schema_fields() -> list[tuple[str, str]]:
    schema = json.loads(resources.files("modalink").joinpath("segment.schema.json").read_text(encoding="utf-8"))
    return [(name, (spec.get("description") or FIELD_NOTES.get(name, "")).strip())
            for name, spec in schema["properties"].items()]


def header(records: DatasetRecords) -> dict[str, Any]:
    files = hf_files(records)
    head: dict[str, Any] = {
        "pretty_name": "MODALINK multimodal emotion-recognition segments",
        "license": license_of(records),
        "language": language_codes(records) or ["und"],
        "task_categories": ["audio-classification", "video-classification", "automatic-speech-recognition"],
        "tags": ["emotion-recognition", "multimodal", "audio-visual", "modalink"],
        "size_categories": [size_category(len(records.segments))],
    }
    if files and HF in records.options().formats:
        head["configs"] = [{"config_name": "default", "default": True,
                            "data_files": [{"split": split, "path": path} for split, path in files.items()]}]
    return head


def table(rows: list[tuple[str, ...]]) -> list[str]:
    def cell(text: Any) -> str:
        return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")
    return [f"| {' | '.join(cell(c) for c in rows[0])} |", f"|{'---|' * len(rows[0])}",
            *(f"| {' | '.join(cell(c) for c in row)} |" for row in rows[1:])]


def render_card(records: DatasetRecords) -> str:
    from flows.plan import versions

    config = records.full_config()
    view = {name: section for name, section in config.cache_view().items() if name != "run"}
    splits = records.splits()
    per_split = Counter(splits.values())
    used = Counter(s["video_id"] for s in records.segments)
    formats = records.options().formats
    minutes = sum(s["duration"] for s in records.segments) / 60
    lines = ["---", yaml.safe_dump(header(records), sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             "# MODALINK dataset", "",
             "## Dataset description", "",
             f"{len(records.segments)} synchronized speech segments ({minutes:.1f} minutes) from {len(used)} videos, "
             "made by MODALINK from in-the-wild video for multimodal emotion recognition. Each segment is one "
             "speaker's turn with a face on screen: its start and end in the source video, an MP4 clip, a 16 kHz "
             "mono WAV clip, the frame at its midpoint, the box of the speaking face, a machine transcript, "
             "facial-expression pre-labels and voice cues, and, once annotated, the annotators' emotion labels "
             "(MELD's seven classes unless configured otherwise).", "",
             f"Languages: {', '.join(language_codes(records)) or 'none recorded'}. "
             f"Splits (segments): {', '.join(f'{name} {per_split.get(name, 0)}' for name in SPLITS)}.", "",
             "## How it was made", "",
             "The MODALINK pipeline (a Prefect 3 workflow) ran these steps, in order: the soundtrack at 16 kHz "
             "mono; speech found by WebRTC VAD; then:", "",
             *(f"- {STAGE_MODELS[name]}" for name in ("speakers", *config_stages()) if name in STAGE_MODELS),
             "",
             "The options that shape the data (the run's config without its runtime options):", "",
             "```json", json.dumps(view, indent=1, ensure_ascii=False, sort_keys=True), "```", "",
             "Package versions:", "",
             *table([("package", "version"), *sorted(versions().items())]), "",
             "## Dataset structure", "",
             "Files, relative to the dataset folder: `manifest.jsonl` (one record per segment), `videos.jsonl` "
             "(one per source video), `video_clips/`, `audio_clips/`, `video_frames/`, and the exports: "
             + ", ".join(f"`{name}`" for name in (
                 *(["webdataset/modalink-*.tar"] if "webdataset" in formats else []),
                 *(["hf/data/{split}-*.parquet"] if "hf" in formats else []),
                 *(["lhotse/recordings.jsonl.gz", "lhotse/supervisions.jsonl.gz"] if "lhotse" in formats else []),
                 *(["meld.csv"] if "meld.csv" in formats else []))) + ". Every export carries the split.", "",
             "Splits: train, dev and test are drawn per channel (all the videos of a channel in one split), "
             "else per video, from a SHA-256 hash of the channel or video id with "
             f"`export.split_seed` = {records.options().split_seed}, in the proportions "
             + ", ".join(f"{name} {share:g}" for name, share in records.options().proportions().items())
             + " of the groups: no video, and no channel's speakers, are in two splits.", "",
             "Fields of a segment record (`modalink/segment.schema.json`):", "",
             *table([("field", "description"), *schema_fields()]), "",
             "## Source videos", "",
             *table([("video", "title", "channel", "licence", "source", "segments"),
                     *((v["video_id"], v.get("title"), v.get("channel"), v.get("license") or "unknown",
                        v.get("url") or v.get("source"), used.get(v["video_id"], 0))
                       for v in records.videos)]), "",
             "The videos keep their own licences; a segment is a part of its video and is under its video's licence.",
             "",
             "## Known limitations", "",
             *(f"- {line}" for line in LIMITATIONS), "",
             "## Personal and sensitive information", "",
             "Every segment holds the face and the voice of an identifiable person, and the transcript holds "
             "what they said; faces and voices are biometric data under the GDPR and similar laws. The people "
             "recorded did not consent to this dataset: the source videos were published by others, and "
             "emotion labels attach inferences about a person to their face and voice. Use it for research on "
             "emotion recognition only; do not identify, profile or track the people in it, and do not "
             "redistribute it beyond its videos' licences. Takedown: anyone who appears in a segment, or holds "
             "the rights to a source video, can ask for its removal from the dataset's maintainers; removing "
             "the video from the sources and building the dataset again drops its segments from every export.",
             ""]
    return "\n".join(lines)


def config_stages() -> list[str]:
    from modalink.stages import segment_stages

    return [stage.name for stage in segment_stages()]


@register_exporter
class DatasetCardExport(Exporter):
    name, order = CARD, 900

    def render(self, records: DatasetRecords) -> dict[str, str]:
        return {CARD: render_card(records)} if CARD in records.options().formats else {}
