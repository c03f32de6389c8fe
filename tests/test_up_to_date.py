"""`finished_run`: a run with nothing left to do is recognised without a flow, a missing or stale
export is rewritten without one, and anything that leaves work (or doubt) sends the run through
the flow. Each case is a row."""
import json
import shutil

import pytest

from flows.build import build_dataset
from flows.plan import finished_run

WHISPER = {"asr": {"backend": "whisper", "language": "en-US", "model": "tiny.en"}}
CLIP, OTHER_CLIP, NO_AUDIO = "av_grid_bbaf2n.mpg", "av_grid_lwbsza.mpg", "face_noaudiostream_liveportrait_d0.mp4"


@pytest.fixture(scope="module")
def built(prefect_server, media, tmp_path_factory):
    """A dataset of one GRID clip, and one that also holds a video that failed (no audio stream)."""
    root = tmp_path_factory.mktemp("up-to-date")
    build_dataset([str(media / CLIP)], str(root / "one"), WHISPER)
    build_dataset([str(media / CLIP), str(media / NO_AUDIO)], str(root / "with-failure"), WHISPER)
    return root


def edit_first_record(dataset):
    manifest = dataset / "manifest.jsonl"
    record = json.loads(manifest.read_text().splitlines()[0])
    manifest.write_text(json.dumps({**record, "transcript": "edited"}) + "\n")


def delete_clip(dataset):
    next((dataset / "video_clips").glob("*/*.mp4")).unlink()


REWRITES_MANIFEST = ["manifest.jsonl"]
CASES = [  # (case, dataset, sources, config changes, change to the dataset, nothing left to do, exports rewritten)
    ("the same run again", "one", [CLIP], {}, None, True, []),
    ("only the run section differs", "one", [CLIP], {"run": {"workers": 1}}, None, True, []),
    ("only a runtime option differs", "one", [CLIP], {"asr": {**WHISPER["asr"], "retries": 0}, "faces": {"batch_size": 1}}, None, True, []),
    ("another method parameter", "one", [CLIP], {"faces": {"fps": 2.0}}, None, False, None),
    ("another source too", "one", [CLIP, OTHER_CLIP], {}, None, False, None),
    ("a URL among the sources", "one", [CLIP, "http://127.0.0.1:9/video.mp4"], {}, None, False, None),
    ("manifest deleted", "one", [CLIP], {}, lambda d: (d / "manifest.jsonl").unlink(), True, REWRITES_MANIFEST),
    ("a published record edited", "one", [CLIP], {}, edit_first_record, True, REWRITES_MANIFEST),
    ("videos.jsonl unreadable", "one", [CLIP], {}, lambda d: (d / "videos.jsonl").write_text("{not json\n"), False, None),
    ("a clip deleted", "one", [CLIP], {}, delete_clip, False, None),
    ("the step cache deleted", "one", [CLIP], {}, lambda d: shutil.rmtree(d / ".modalink" / "cache"), False, None),
    ("a video that failed is tried again", "with-failure", [CLIP, NO_AUDIO], {}, None, False, None),
]


@pytest.mark.parametrize("case, name, sources, changes, change_dataset, nothing_to_do, rewritten", CASES,
                         ids=[c[0] for c in CASES])
def test_finished_run(case, name, sources, changes, change_dataset, nothing_to_do, rewritten, built, media, tmp_path):
    dataset = tmp_path / name
    shutil.copytree(built / name, dataset)
    if change_dataset:
        change_dataset(dataset)
    manifest_built = (built / name / "manifest.jsonl").read_text()
    config = {**WHISPER, **changes}
    summary = finished_run([s if "://" in s else str(media / s) for s in sources], str(dataset), config)
    assert (summary is not None) == nothing_to_do
    if nothing_to_do:
        published = json.loads((dataset / "run_summary.json").read_text())
        assert summary["up_to_date"] and published["up_to_date"]
        assert summary["videos"] == {"total": 1, "ok": 1, "failed": 0, "reused": 1}
        assert summary["segments"]["kept"] == summary["segments"]["manifest_total"] == 1
        assert summary["exports_rewritten"] == rewritten and published["exports_rewritten"] == rewritten
        assert (dataset / "manifest.jsonl").read_text() == manifest_built
