"""The exports (tasks/export_formats.py, tasks/dataset_card.py), each read back by the library it is
for: WebDataset shards with webdataset, the Parquet files with Hugging Face datasets (load_dataset on
the dataset folder, through the card's `configs`), lhotse's manifests with lhotse (under a torch stub:
tests/torch_stub.py), meld.csv with csv and pandas, the card's YAML header with PyYAML. One real build
of three GRID clips, one of them labelled by two annotators; splits 0.4/0.3/0.3 with a seed that puts
the three videos in at least two splits."""
import csv
import io
import json
import shutil
import tarfile
import time

import pytest
import yaml

from flows.build import build_dataset
from modalink.exports import exporters
from modalink.splits import SPLITS, video_splits
from modalink.storage import open_storage
from tasks.publish import merged_records_as_published, rewrite_exports

WHISPER = {"asr": {"backend": "whisper", "language": "en-US", "model": "tiny.en"}}
CLIPS = ["av_grid_bbaf2n.mpg", "av_grid_lwbsza.mpg", "av_grid_swiz3n.mpg"]
PROPORTIONS = {"train": 0.4, "dev": 0.3, "test": 0.3}
OPTIONAL = ["webdataset", "hf", "lhotse", "meld.csv", "README.md"]


def spread_seed(video_ids):
    """The first seed under which the videos fall in at least two splits (the draw is fixed, so is this)."""
    videos = [{"video_id": v} for v in video_ids]
    return next(seed for seed in range(100) if len(set(video_splits(videos, [], seed, PROPORTIONS).values())) >= 2)


@pytest.fixture(scope="module")
def dataset(prefect_server, media, tmp_path_factory):
    root = tmp_path_factory.mktemp("exports") / "ds"
    build_dataset([str(media / clip) for clip in CLIPS], str(root), WHISPER)
    segments = [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()]
    labels = [{"annotator": "a@example.com", "annotator_id": 1, "emotion": "joy", "sentiment": "positive"},
              {"annotator": "b@example.com", "annotator_id": 2, "emotion": "joy", "sentiment": "positive"}]
    (root / "labels.jsonl").write_text(json.dumps({"segment_id": segments[0]["segment_id"], "labels": labels}) + "\n")
    seed = spread_seed([s["video_id"] for s in segments])
    config = {**WHISPER, "export": {"split_seed": seed, "split_train": 0.4, "split_dev": 0.3, "split_test": 0.3,
                                    "shard_max_mb": 0.001}}  # one segment per shard
    storage = open_storage(str(root))
    records = merged_records_as_published(storage, config)
    started = time.perf_counter()
    done = rewrite_exports(storage, records, force=True)
    elapsed = time.perf_counter() - started
    print("export seconds:", {name: round(s, 3) for name, _, s in done}, "all:", round(elapsed, 2))
    assert elapsed < 10
    return root, storage, records, segments


def test_every_export_is_written_and_then_current(dataset):
    root, storage, records, segments = dataset
    for exporter in exporters():
        assert exporter.is_current(storage, records), exporter.name
    assert [name for name, rewritten, _ in rewrite_exports(storage, records) if rewritten] == []
    assert len(set(records.splits().values())) >= 2


def test_webdataset_shards_read_back_with_webdataset(dataset):
    import webdataset as wds

    root, storage, records, segments = dataset
    shards = sorted((root / "webdataset").glob("modalink-*.tar"))
    assert [p.name for p in shards] == [f"modalink-{n:06d}.tar" for n in range(len(segments))]  # size limit
    splits = records.splits()
    for shard in shards:  # each sample's members next to each other, under a key with no dots
        names = tarfile.open(shard).getnames()
        keys = [name.split(".", 1)[0] for name in names]
        assert keys == sorted(keys, key=keys.index) and all("." not in key for key in keys)
        assert len(names) == 4 * len(set(keys))
    samples = list(wds.WebDataset([str(p) for p in shards], shardshuffle=False, empty_check=False).decode("pil"))
    assert len(samples) == len(segments)
    by_id = {s["segment_id"]: s for s in segments}
    for sample in samples:
        assert set(sample) >= {"__key__", "mp4", "wav", "jpg", "json"}
        record = sample["json"]
        original = by_id[record["segment_id"]]
        assert sample["__key__"] == record["key"] == record["segment_id"].replace(".", "_")
        assert record["split"] == splits[record["segment_id"]]
        assert record["transcript"] == original["transcript"] and record["active_face"] == original["active_face"]
        assert sample["mp4"] == (root / original["video_clip"]).read_bytes()
        assert sample["wav"] == (root / original["audio_clip"]).read_bytes()
        assert sample["jpg"].mode == "RGB" and sample["jpg"].size[0] > 0  # decoded by webdataset (PIL)
    labelled = next(s["json"] for s in samples if s["json"]["segment_id"] == segments[0]["segment_id"])
    assert labelled["label"] == "joy" and len(labelled["labels"]) == 2


def test_parquet_read_back_with_datasets(dataset, monkeypatch):
    import soundfile
    from datasets import Audio, ClassLabel, load_dataset

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    root, storage, records, segments = dataset
    loaded = load_dataset(str(root), cache_dir=str(root.parent / "hf-cache"))  # finds the splits by the card
    splits = records.splits()
    assert set(loaded) == set(splits.values())
    assert sum(len(part) for part in loaded.values()) == len(segments)
    by_id = {s["segment_id"]: s for s in segments}
    for split, part in loaded.items():
        features = part.features
        assert isinstance(features["label"], ClassLabel) and features["label"].names[:2] == ["neutral", "joy"]
        assert isinstance(features["prelabel"], ClassLabel) and features["audio"].sampling_rate == 16000
        # datasets 5 decodes Audio through torchcodec (torch): the bytes are read with soundfile instead
        part = part.cast_column("audio", Audio(decode=False))
        for row in part:
            original = by_id[row["segment_id"]]
            assert row["split"] == split == splits[row["segment_id"]]
            samples, rate = soundfile.read(io.BytesIO(row["audio"]["bytes"]))
            assert rate == 16000 and abs(len(samples) / rate - original["duration"]) < 0.05
            assert row["image"].size[0] > 0 and row["image"].mode == "RGB"  # PIL, decoded by datasets
            assert (root / row["video"]).is_file() and row["video"] == original["video_clip"]
            assert row["transcript"] == original["transcript"]
            assert row["face"]["w"] == pytest.approx(original["active_face"]["w"])
            top = original["custom"]["expressions"]["top"]
            assert features["prelabel"].int2str(row["prelabel"]) == {"happy": "joy", "sad": "sadness",
                                                                     "angry": "anger"}.get(top, top)
            if row["segment_id"] == segments[0]["segment_id"]:
                assert features["label"].int2str(row["label"]) == "joy" and row["annotator_labels"] == ["joy", "joy"]
            else:
                assert row["label"] == -1 and row["annotator_labels"] == []


def test_lhotse_manifests_read_back_with_lhotse(dataset):
    import torch_stub

    torch_stub.install()  # lhotse imports torch; MODALINK installs none
    from lhotse import RecordingSet, SupervisionSet, validate_recordings_and_supervisions

    root, storage, records, segments = dataset
    recordings = RecordingSet.from_file(root / "lhotse" / "recordings.jsonl.gz").to_eager().with_path_prefix(root)
    supervisions = SupervisionSet.from_file(root / "lhotse" / "supervisions.jsonl.gz").to_eager()
    validate_recordings_and_supervisions(recordings, supervisions)
    assert sorted(recordings.ids) == sorted(s["segment_id"] for s in segments)
    splits = records.splits()
    for sup in supervisions:
        original = next(s for s in segments if s["segment_id"] == sup.id)
        assert sup.text == original["transcript"] and sup.language == "en-US" and sup.speaker == original["video_id"]
        assert sup.custom["split"] == splits[sup.id] and sup.custom["face"] == original["active_face"]
        assert sup.custom["prelabel"]["top"]
    assert supervisions[segments[0]["segment_id"]].custom["label"] == "joy"
    audio = recordings[segments[0]["segment_id"]].load_audio()
    assert audio.shape[0] == 1 and abs(audio.shape[1] / 16000 - segments[0]["duration"]) < 0.05


def test_meld_csv_read_back_with_csv_and_pandas(dataset):
    import pandas

    root, storage, records, segments = dataset
    rows = list(csv.DictReader((root / "meld.csv").open(encoding="utf-8")))
    assert list(rows[0])[:11] == ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID",
                                  "Utterance_ID", "Season", "Episode", "StartTime", "EndTime"]
    assert [r["Segment_ID"] for r in rows] == [s["segment_id"] for s in segments]
    splits = records.splits()
    assert all(r["Split"] == splits[r["Segment_ID"]] for r in rows)
    assert (rows[0]["Emotion"], rows[0]["Sentiment"]) == ("joy", "positive") and rows[1]["Emotion"] == ""
    assert rows[0]["StartTime"].count(":") == 2 and "," in rows[0]["StartTime"]
    frame = pandas.read_csv(root / "meld.csv")
    assert len(frame) == len(segments) and set(frame["Split"]) <= set(SPLITS)
    assert all((root / path).is_file() for path in frame["Audio_Clip"])


def test_dataset_card(dataset):
    root, storage, records, segments = dataset
    text = (root / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head = yaml.safe_load(text.split("---\n")[1])
    for key in ("license", "language", "task_categories", "size_categories", "configs", "pretty_name"):
        assert key in head, key
    assert head["language"] == ["en"] and head["license"] == "unknown"  # local files name no licence
    paths = [f["path"] for f in head["configs"][0]["data_files"]]
    assert all((root / path).is_file() for path in paths)
    for video in (json.loads(line) for line in (root / "videos.jsonl").read_text().splitlines()):
        assert video["video_id"] in text
    for section in ("## How it was made", "## Dataset structure", "## Source videos", "## Known limitations",
                    "## Personal and sensitive information"):
        assert section in text
    assert "CAM++" in text and "segmentation-3.0" in text and "tiny.en" in text


def test_stale_exports_are_found_and_rewritten(dataset, tmp_path):
    root, _, records, segments = dataset
    copy = tmp_path / "ds"
    shutil.copytree(root, copy)
    storage = open_storage(str(copy))
    stale = lambda recs: [e.name for e in exporters() if not e.is_current(storage, recs)]  # noqa: E731
    assert stale(records) == []
    (copy / "webdataset" / "modalink-000001.tar").unlink()
    (copy / "labels.jsonl").write_text("")  # the labels withdrawn
    assert stale(records) == ["webdataset", "hf", "lhotse", "meld.csv", "report.html", "manifest.jsonl"]
    rewrite_exports(storage, records)
    assert stale(records) == []
    other = merged_records_as_published(storage, {**WHISPER, "export": {"split_seed": 12345}})
    assert {"webdataset", "hf", "lhotse", "README.md"} <= set(stale(other)) <= set(OPTIONAL)  # another seed
    only_csv = merged_records_as_published(storage, {**WHISPER, "export": {"formats": ["meld.csv"]}})
    assert set(stale(only_csv)) <= {"meld.csv"}  # the others are not wanted: nothing to write


def test_export_command(dataset, tmp_path, capsys):
    from modalink.cli import main

    root = dataset[0]
    copy = tmp_path / "ds"
    shutil.copytree(root, copy)
    shutil.rmtree(copy / "hf")
    (copy / "README.md").unlink()
    assert main(["export", str(copy), "--only", "hf", "README.md"]) == 0
    err = capsys.readouterr().err
    assert "hf               written" in err and "README.md        written" in err and "webdataset" not in err
    assert (copy / "hf" / "data").is_dir() and (copy / "README.md").is_file()
    assert main(["export", str(copy), "--only", "nothing"]) == 2


def test_the_run_preloads_what_the_configured_exports_import():
    """The flow's background preload ends with the exporters' imports, for the formats configured only;
    the Parquet export's preload imports Hugging Face datasets (in a fresh interpreter, where nothing had)."""
    import subprocess
    import sys
    from pathlib import Path

    from flows.build import step_preloaders
    from modalink.config import Config

    def preloaded(formats):
        loaders = step_preloaders(Config.load(overrides={"export": {"formats": formats}}))
        return [loader.__self__.name for loader in loaders if hasattr(loader, "__self__")]  # bound: exporters

    assert preloaded(["hf", "lhotse"]) == ["hf", "lhotse"]  # in the exports' order
    assert preloaded(["meld.csv"]) == ["meld.csv"]
    assert preloaded([]) == []
    check = ("import sys; from tasks.export_formats import HuggingFaceExport; assert 'datasets' not in sys.modules; "
             "HuggingFaceExport().preload(); assert 'datasets' in sys.modules and 'pyarrow.parquet' in sys.modules")
    subprocess.run([sys.executable, "-c", check], cwd=Path(__file__).resolve().parents[1], check=True)
