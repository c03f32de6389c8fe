"""`modalink annotate`: the round trip through a real Label Studio (export, media served, two
annotators, JSON export, import back, agreement, a second round, bad exports), the labeling view in
headless Chromium, and the export's ordering and pre-labels on a dataset of the real clips."""
from __future__ import annotations

import copy
import json
import shutil
import time

import pytest

from modalink.annotate import MELD_CLASSES, Settings, labeling_config, priority_order, pre_label
from modalink.cli import main
from modalink.records import read_jsonl

from conftest import GRID_CLIPS

CLIPS = list(GRID_CLIPS)  # four videos, one segment each


@pytest.fixture(scope="session")
def grid_dataset(label_studio, prefect_server, media):
    """The four GRID clips built (whisper tiny.en) into Label Studio's document root, while it starts."""
    out = label_studio.document_root / "grid"
    code = main(["build", *(str(media / c) for c in CLIPS), "--out", str(out), "--asr", "whisper",
                 "--asr-model", "tiny.en", "--language", "en-US"])
    assert code == 0
    return out


def with_prelabels(dataset):
    """Pre-labels as the expressions stage writes them (custom.expressions: fer's classes, mean scores)."""
    scores = [{"happy": 0.40, "neutral": 0.38, "sad": 0.1, "angry": 0.05, "surprise": 0.03, "fear": 0.02, "disgust": 0.02},
              {"angry": 0.70, "neutral": 0.10, "sad": 0.1, "happy": 0.05, "surprise": 0.03, "fear": 0.01, "disgust": 0.01},
              None,
              {"neutral": 0.55, "sad": 0.35, "happy": 0.05, "angry": 0.02, "surprise": 0.01, "fear": 0.01, "disgust": 0.01}]
    from tasks.expressions import CLASSES, model_version

    lines = read_jsonl(dataset / "manifest.jsonl")
    for line, mean in zip(lines, scores):
        custom = line.setdefault("custom", {})
        if mean:
            ranked = sorted(mean.values(), reverse=True)
            top = max(mean, key=mean.get)
            custom["expressions"] = {"model": model_version(), "classes": list(CLASSES), "frames": [],
                                     "mean": [mean[c] for c in CLASSES], "top": top,
                                     "margin": round(ranked[0] - ranked[1], 4)}
        else:
            custom.pop("expressions", None)
    (dataset / "manifest.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return lines


def run(capsys, *args):
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.err


def test_tasks_are_ordered_by_uncertainty_and_interleaved_across_videos():
    records = [{"segment_id": f"{v}-{i}_0", "video_id": v, "start": float(i)} for v in ("a", "b") for i in range(3)]
    margins = {"a-0_0": 0.5, "a-1_0": 0.1, "a-2_0": 0.3, "b-0_0": 0.2, "b-1_0": 0.9}  # b-2_0 has no pre-label
    pre = {r["segment_id"]: ({"margin": margins[r["segment_id"]]} if r["segment_id"] in margins else None) for r in records}
    order = [r["segment_id"] for r in priority_order(records, pre)]
    # round 1: each video's most uncertain (b-2_0 without a pre-label counts as margin 0), then round 2, ...
    assert order == ["b-2_0", "a-1_0", "b-0_0", "a-2_0", "a-0_0", "b-1_0"]


def test_fer_classes_map_to_meld_and_the_margin_is_top_minus_second():
    found = pre_label({"custom": {"expressions": {"mean": {"happy": 0.5, "sad": 0.3, "angry": 0.2},
                                                  "model": "fer 25.10.3"}}}, list(MELD_CLASSES))
    assert found == {"scores": {"joy": 0.5, "sadness": 0.3, "anger": 0.2}, "top": "joy", "score": 0.5,
                     "margin": 0.2, "model_version": "fer 25.10.3"}
    assert pre_label({"custom": {}}, list(MELD_CLASSES)) is None


def test_the_expressions_stages_record_is_read_in_its_class_order(media, tmp_path):
    """The stage's own record (scores in the order of its `classes`) on a real face."""
    from modalink.config import FaceConfig
    from modalink.records import Segment
    from modalink.stages import plain
    from tasks.acquire import local_video
    from tasks.expressions import score_faces, speaker_boxes
    from tasks.faces import detect_faces_in_segments
    from tasks.probe import probe

    video = local_video(media / "face_nospeech_liveportrait_d18.mp4")
    info = probe(video.path)
    found, = detect_faces_in_segments(video, info, [Segment(video.video_id, 0, 0, 2.3, 3.0)], FaceConfig(fps=4))
    expressions, = score_faces(video.path, (info.width, info.height), [speaker_boxes(found.faces, found.active)])
    label = pre_label({"custom": {"expressions": plain(expressions)}}, list(MELD_CLASSES))
    assert label["top"] == "surprise" and label["model_version"] == expressions.model  # the "O" mouth
    assert label["scores"]["joy"] == expressions.mean[expressions.classes.index("happy")]


def test_arabic_transcripts_are_right_to_left_in_the_config():
    config = labeling_config(Settings(), "rtl")
    assert 'style="direction: rtl; text-align: right;"' in config
    assert "direction" not in labeling_config(Settings(), "ltr")
    assert "unicode-bidi: plaintext" in labeling_config(Settings(), "auto")


def annotate(ls, task, token, emotion, **extra):
    result = [{"from_name": "emotion", "to_name": "video", "type": "choices", "value": {"choices": [emotion]}}]
    if "sentiment" in extra:
        result.append({"from_name": "sentiment", "to_name": "video", "type": "choices",
                       "value": {"choices": [extra["sentiment"]]}})
    for name in ("valence", "arousal"):
        if name in extra:
            result.append({"from_name": name, "to_name": "video", "type": "rating", "value": {"rating": extra[name]}})
    body = {"result": result, **({"was_cancelled": True} if extra.get("cancelled") else {})}
    return ls.api("POST", f"/api/tasks/{task}/annotations", token=token, json=body).json()


def open_task(chromium, ls, project, task):
    for name, value in ls.login_cookies().items():
        chromium.send("Network.setCookie", name=name, value=value, url=ls.url)
    chromium.send("Page.navigate", url=f"{ls.url}/projects/{project}/data?task={task}")
    chromium.wait_for("[...document.querySelectorAll('video')].some(v => v.readyState >= 2)", 90)
    # the player shows its first frame once its loader is gone
    chromium.wait_for("![...document.querySelectorAll('[class*=loading], [class*=Loading], [class*=spinner], "
                      "[class*=loader]')].some(e => e.offsetParent !== null)", 60)
    time.sleep(0.5)


def test_round_trip_through_label_studio(label_studio, grid_dataset, media, capsys, tmp_path):
    ls, dataset = label_studio, grid_dataset
    prelabelled = with_prelabels(dataset)
    code, err = run(capsys, "annotate", str(dataset), "--to", "label-studio", "--sentiment", "--valence-arousal", "rating")
    assert code == 0, err
    config = (dataset / "label-studio" / "config.xml").read_text()
    tasks = json.loads((dataset / "label-studio" / "tasks.json").read_text())
    assert len(tasks) == 4 and [t["data"]["priority"] for t in tasks] == [1, 2, 3, 4]
    # the segment without a pre-label first (margin 0), then the uncertain joy/neutral (0.02), ...
    margins = [t["data"]["prelabel_margin"] for t in tasks]
    assert margins == [None, 0.02, 0.2, 0.6]
    from tasks.expressions import model_version

    assert tasks[1]["predictions"] == [{"model_version": model_version(), "score": 0.4, "result": [
        {"from_name": "emotion", "to_name": "video", "type": "choices", "value": {"choices": ["joy"]}}]}]
    by_id = {line["segment_id"]: line for line in prelabelled}
    assert tasks[0]["data"]["video"] == "/data/local-files/?d=grid/" + by_id[tasks[0]["data"]["segment_id"]]["video_clip"]

    ls.wait()
    project = ls.api("POST", "/api/projects", json={"title": "MODALINK grid", "label_config": config}).json()["id"]
    ls.api("POST", "/api/storages/localfiles", json={"project": project, "path": str(dataset), "title": "dataset",
                                                     "use_blob_urls": False})
    imported = ls.api("POST", f"/api/projects/{project}/import", json=tasks).json()
    assert imported["task_count"] == 4 and imported["prediction_count"] == 3
    ls_tasks = sorted(ls.api("GET", f"/api/tasks?project={project}").json()["tasks"], key=lambda t: t["id"])
    ids = {t["data"]["segment_id"]: t["id"] for t in ls_tasks}
    for kind in ("video", "audio", "frame"):  # Label Studio serves the dataset's own bytes
        data = ls_tasks[0]["data"]
        served = ls.api("GET", data[kind])
        field = "frame" if kind == "frame" else f"{kind}_clip"
        assert served.status_code == 200 and served.content == (dataset / by_id[data["segment_id"]][field]).read_bytes()

    s1, s2, s3, s4 = (t["data"]["segment_id"] for t in tasks)
    admin, other = None, ls.annotator_token
    annotate(ls, ids[s1], admin, "joy", sentiment="positive", valence=7, arousal=6)
    annotate(ls, ids[s2], admin, "surprise", cancelled=True)  # skipped: not a label
    annotate(ls, ids[s2], admin, "anger", sentiment="negative", valence=2, arousal=8)
    annotate(ls, ids[s3], admin, "neutral")
    removed = annotate(ls, ids[s4], admin, "fear")
    annotate(ls, ids[s1], other, "joy", sentiment="positive", valence=8, arousal=5)
    annotate(ls, ids[s2], other, "anger", sentiment="negative", valence=3, arousal=7)
    changed = annotate(ls, ids[s3], other, "sadness")
    annotate(ls, ids[s4], other, "fear")

    export = tmp_path / "export-1.json"
    export.write_text(json.dumps(ls.export(project)))
    code, err = run(capsys, "annotate", str(dataset), "--from", str(export))
    assert code == 0, err
    print(err)
    lines = {line["segment_id"]: line for line in read_jsonl(dataset / "manifest.jsonl")}
    assert [(e["annotator"], e["emotion"]) for e in lines[s1]["labels"]] == \
        [("admin@modalink.test", "joy"), ("annotator2@modalink.test", "joy")]
    assert lines[s1]["labels"][0]["sentiment"] == "positive" and lines[s1]["labels"][0]["valence"] == 7
    assert [e["emotion"] for e in lines[s2]["labels"]] == ["anger", "anger"]  # the cancelled one left out
    assert (lines[s1]["label"], lines[s1]["label_agreement"]) == ("joy", 1.0)
    assert (lines[s3]["label"], lines[s3]["label_agreement"]) == (None, 0.5)  # a tie
    summary = json.loads((dataset / "annotation_summary.json").read_text())
    # By hand: 8 pairable values; coincidences joy 2, anger 2, fear 2, neutral-sadness 1 each way.
    # alpha = 1 - (n - 1) * disagreeing / sum_{c != k} n_c n_k = 1 - 7 * 2 / (64 - (4 + 4 + 4 + 1 + 1)) = 0.72
    # Fleiss: P = 3/4, P_e = 3 (2/8)^2 + 2 (1/8)^2 = 14/64; kappa = (0.75 - 14/64) / (1 - 14/64) = 0.68
    assert summary["overall"]["krippendorff_alpha"] == pytest.approx(0.72, abs=1e-4)
    assert summary["overall"]["fleiss_kappa"] == pytest.approx(0.68, abs=1e-4)
    assert set(summary["per_class"]) == set(MELD_CLASSES) and len(summary["per_video"]) == 4
    assert json.loads((dataset / "run_summary.json").read_text())["annotation"] == summary
    assert "Krippendorff's alpha 0.720, Fleiss' kappa 0.680" in err and f"{s4}: admin@modalink.test added fear" in err

    # The labeling view, in headless Chromium with the admin's session.
    from cdp import Chromium, chromium_path

    assert chromium_path(), "no chromium (make test installs Debian's)"
    chromium = Chromium(tmp_path / "chromium-profile")
    try:
        open_task(chromium, ls, project, ids[s1])
        view = chromium.evaluate("""(() => { const v = document.querySelector('video');
            return {videos: document.querySelectorAll('video').length, muted: v.muted, duration: v.duration,
                    src: v.currentSrc, text: document.body.innerText}; })()""")
        assert view["videos"] == 1 and view["muted"] and view["duration"] > 1 and "/data/local-files/" in view["src"]
        assert all(name in view["text"] for name in MELD_CLASSES) and "Emotion of the speaker" in view["text"]
        assert by_id[s1]["transcript"] in view["text"]
        shot = chromium.screenshot(tmp_path / "labeling-view.png")
        print(f"labeling view: {shot}")
        assert shot.stat().st_size > 20_000

        # Arabic: the same clip with an Arabic transcript, in a project with the right-to-left config.
        rtl = ls.api("POST", "/api/projects", json={"title": "rtl", "label_config": labeling_config(Settings(), "rtl")}).json()["id"]
        ls.api("POST", "/api/storages/localfiles", json={"project": rtl, "path": str(dataset), "use_blob_urls": False})
        ls.api("POST", f"/api/projects/{rtl}/import", json=[{"data": {**tasks[0]["data"], "transcript": "مرحبا بكم",
                                                                       "language": "ar-EG"}}])
        arabic = ls.api("GET", f"/api/tasks?project={rtl}").json()["tasks"][0]["id"]
        open_task(chromium, ls, rtl, arabic)
        directions = chromium.wait_for("""(() => { const found = [...document.querySelectorAll('*')].filter(e =>
            e.children.length === 0 && e.textContent.trim() === 'مرحبا بكم'); return found.length >= 2 && found.map(e =>
            [getComputedStyle(e).direction, !!e.closest('.modalink-transcript'), e.closest('[class]').className]); })()""")
        print(directions)
        assert [d[0] for d in directions if d[1]] == ["rtl"], directions
        chromium.screenshot(tmp_path / "labeling-view-arabic.png")
    finally:
        chromium.close()

    # A second round: one label changed, one annotation deleted. The import says so.
    ls.api("PATCH", f"/api/annotations/{changed['id']}", token=other, json={"result": [
        {"from_name": "emotion", "to_name": "video", "type": "choices", "value": {"choices": ["neutral"]}}]})
    ls.api("DELETE", f"/api/annotations/{removed['id']}")
    export2 = tmp_path / "export-2.json"
    export2.write_text(json.dumps(ls.export(project)))
    code, err = run(capsys, "annotate", str(dataset), "--from", str(export2))
    assert code == 0, err
    assert f"{s3}: annotator2@modalink.test changed from sadness to neutral" in err
    assert f"{s4}: admin@modalink.test removed fear" in err
    assert "changes:         2:" in err
    summary = json.loads((dataset / "annotation_summary.json").read_text())
    assert summary["overall"]["krippendorff_alpha"] == 1.0  # s4 has one label left: not pairable
    assert summary["overall"]["fleiss_kappa"] is None  # 2, 2, 2 and 1 labels per segment
    lines = {line["segment_id"]: line for line in read_jsonl(dataset / "manifest.jsonl")}
    assert lines[s3]["label"] == "neutral" and [e["annotator"] for e in lines[s4]["labels"]] == ["annotator2@modalink.test"]
    code, err = run(capsys, "validate", str(dataset))
    assert code == 0, err

    bad_exports_change_nothing(dataset, json.loads(export2.read_text()), tmp_path, capsys)

    # The next build keeps the labels: manifest.jsonl is written again from the run's records and labels.jsonl.
    (dataset / "manifest.jsonl").unlink()
    assert main(["build", *(str(media / c) for c in CLIPS), "--out", str(dataset), "--asr", "whisper",
                 "--asr-model", "tiny.en", "--language", "en-US"]) == 0
    rebuilt = {line["segment_id"]: line for line in read_jsonl(dataset / "manifest.jsonl")}
    assert {s: line["labels"] for s, line in rebuilt.items()} == {s: line["labels"] for s, line in lines.items()}
    assert json.loads((dataset / "run_summary.json").read_text())["annotation"] == summary


def bad_exports_change_nothing(dataset, export, tmp_path, capsys):
    """Each bad export: one line per problem on stderr, exit code 2, no file changed."""
    files = ("labels.jsonl", "manifest.jsonl", "annotation_summary.json", "run_summary.json")
    before = {name: (dataset / name).read_bytes() for name in files}
    other_project = copy.deepcopy(export)
    for task in other_project:
        task["data"]["segment_id"] = "meld_dia1-" + task["data"]["segment_id"]
    unknown = copy.deepcopy(export)
    unknown[0]["data"]["segment_id"] = "no-such-video-0_0"
    outside = copy.deepcopy(export)
    next(a for a in outside[1]["annotations"] if not a["was_cancelled"])["result"][0]["value"]["choices"] = ["contempt"]
    other_dataset = copy.deepcopy(export)
    other_dataset[2]["data"]["dataset_id"] = "0" * 32
    cases = [(other_project, ["none of the export's 4 segment ids is in this dataset"]),
             (unknown, ["unknown segment id no-such-video-0_0"]),
             (outside, ["label 'contempt' by", "is not one of the configured classes"]),
             (other_dataset, ["was exported from another dataset"]),
             ([*unknown[:1], *outside[1:2]], ["unknown segment id no-such-video-0_0", "label 'contempt'"])]
    for number, (bad, messages) in enumerate(cases):
        path = tmp_path / f"bad-{number}.json"
        path.write_text(json.dumps(bad))
        code, err = run(capsys, "annotate", str(dataset), "--from", str(path))
        lines = err.strip().splitlines()
        assert code == 2 and "Traceback" not in err, err
        assert all(line.startswith("modalink: error: ") for line in lines), err
        assert len(lines) == (2 if number == 4 else 1), err
        assert all(any(m in line for line in lines) for m in messages), err
        assert {name: (dataset / name).read_bytes() for name in files} == before


def test_media_urls_for_a_bucket(tmp_path):
    from modalink.annotate import export_tasks

    dataset = tmp_path / "d"
    dataset.mkdir()
    record = {"segment_id": "v-0_0", "video_id": "v", "start": 0.0, "end": 1.0, "video_clip": "video_clips/v/segment_0_0.mp4",
              "audio_clip": "audio_clips/v/segment_0_0.wav", "frame": "video_frames/v/frame_0_0.jpg",
              "transcript": "hi", "language": "en-US"}
    (dataset / "manifest.jsonl").write_text(json.dumps(record) + "\n")
    _, tasks = export_tasks(str(dataset), Settings(), "s3", s3_url="s3://bucket/egy/")
    assert tasks[0]["data"]["audio"] == "s3://bucket/egy/audio_clips/v/segment_0_0.wav"
    _, tasks = export_tasks(str(dataset), Settings(), "local", document_root=str(tmp_path))
    assert tasks[0]["data"]["video"] == "/data/local-files/?d=d/video_clips/v/segment_0_0.mp4"
    shutil.rmtree(dataset)
