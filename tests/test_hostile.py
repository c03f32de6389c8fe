"""Issue 19's hostile inputs (tests/hostile_inputs.py) through two real builds: a folder of them, and
explicit arguments with downloads. Each input gives a clear per-video record (status failed, a
one-line error) or the right result, never a traceback, and nothing is written outside --out.

The right result: a copy of the GRID clip under a hostile name, and the rotated, variable-frame-rate,
two-audio-stream, truncated and bit-flipped GRID clips, give the clip's one face segment (the
rotated one upright, the two-audio one with the GRID words of its first, default stream); the 4K
clip its face segment at 3840x2160; the 2x2 clip its speech, dropped for no face; zero bytes, audio
only and video only a failed record; links, loops and folders in a folder no record."""
import json
import os
import re
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from modalink.config import AcquireConfig
from modalink.ffmpeg_tools import ffprobe_json
from modalink.records import read_jsonl
from tasks.acquire import download, local_path, local_video, safe_id

from conftest import ROOT, _QuietHandler, serve
from hostile_inputs import GRID_SENTENCE, LONG_STEM, Case, build
from wer import word_error_rate

WHISPER = ["--asr", "whisper", "--asr-model", "tiny.en", "--language", "en-US"]
SAFE_ID = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$")
URL_NAMES = {  # served file -> what it is
    "escape.html": "a page whose title climbs out of the folder: ../../etc/x",
    "absolute.html": "a page whose title is an absolute path: /abs/path",
    "-i; $(rm -rf x) | & > *.mpg": "a video whose file name (the generic extractor's id) is hostile",
    "L" * 236 + ".mpg": "a video whose file name is 240 characters",
}
PAGE = '<html><head><title>{}</title></head><body><video src="grid.mpg"></video></body></html>'


@dataclass
class Build:
    out: Path
    code: int
    stderr: str

    def videos(self) -> list[dict]:
        return read_jsonl(self.out / "videos.jsonl")

    def segments(self, video_id: str) -> list[dict]:
        return [r for r in read_jsonl(self.out / "manifest.jsonl") if r["video_id"] == video_id]


@dataclass
class Run:
    root: Path
    cases: dict[str, Case]
    folder: Build  # the source folder as one SOURCE
    arguments: Build  # every hostile name as an argument of its own, and the URLs
    before: set[bytes]  # every path under root before the builds
    after: set[bytes]


def modalink(args: list, cwd: Path, prefect_server: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "modalink.cli", *args], cwd=cwd, env=env, capture_output=True,
                          timeout=600)


def paths_under(root: Path) -> set[bytes]:
    """Every path under root (links not followed), as `find` lists it."""
    listing = subprocess.run(["find", os.fsencode(root), "-print0"], capture_output=True, check=True).stdout
    return {path for path in listing.split(b"\0") if path}


@pytest.fixture(scope="module")
def urls(media, tmp_path_factory):
    """URL_NAMES served over HTTP, for yt-dlp's generic extractor: served file -> its URL."""
    served = tmp_path_factory.mktemp("served")
    (served / "grid.mpg").write_bytes((media / "av_grid_bbaf2n.mpg").read_bytes())
    (served / "escape.html").write_text(PAGE.format("../../etc/x"))
    (served / "absolute.html").write_text(PAGE.format("/abs/path"))
    for name in list(URL_NAMES)[2:]:
        (served / name).write_bytes((media / "av_grid_bbaf2n.mpg").read_bytes())
    server, base = serve(_QuietHandler, served)
    yield {name: f"{base}/{urllib.parse.quote(name)}" for name in URL_NAMES}
    server.shutdown()


@pytest.fixture(scope="module")
def run(media, prefect_server, urls, tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("hostile")
    src = root / "src"
    cases = build(media, src)
    (src / "x").mkdir()  # what "; $(rm -rf x)" would delete, were a name ever run by a shell
    (src / "x" / "canary").write_text("still here\n")
    before = paths_under(root)
    folder = modalink(["build", str(src), "--out", str(root / "out-folder"), *WHISPER], src, prefect_server)
    named = [os.fsencode(cases[name].path.name) for name in ("dash", "dashdash", "shell", "backslash_dots",
                                                              "long", "not_utf8")]
    arguments = modalink(["build", "--out", str(root / "out-arguments"), *WHISPER, "--", *named,
                          "clip.mp4/../..mpg", "clip.mp4", *urls.values()], src, prefect_server)
    after = paths_under(root)
    return Run(root, cases, Build(root / "out-folder", folder.returncode, folder.stderr.decode("utf-8", "replace")),
               Build(root / "out-arguments", arguments.returncode, arguments.stderr.decode("utf-8", "replace")),
               before, after)


def by_case(run: Run, build: Build) -> dict[str, dict]:
    """The folder build's records by case name (a source names its file, as a path or a file:// URI)."""
    names = {os.fsencode(case.path.name): name for name, case in run.cases.items()}
    return {names[os.fsencode(local_path(v["source"]).name)]: v for v in build.videos()}


def assert_clear(record: dict, case: Case | None = None) -> None:
    """A failed record says why in one line, with no traceback; an ok record has no error."""
    if record["status"] == "ok":
        assert record["error"] is None
        return
    assert record["status"] == "failed" and isinstance(record["error"], str) and record["error"].strip()
    assert "\n" not in record["error"] and "Traceback" not in record["error"], record["error"]
    if case is not None and case.error:
        assert case.error in record["error"], record["error"]


def assert_one_face_segment(build: Build, record: dict) -> dict:
    assert record["status"] == "ok" and record["segments_kept"] == 1, record
    segment, = build.segments(record["video_id"])
    face = segment["active_face"]
    assert 0 <= face["x"] and face["x"] + face["w"] <= record["width"] + 0.5
    assert 0 <= face["y"] and face["y"] + face["h"] <= record["height"] + 0.5
    for field in ("video_clip", "audio_clip", "frame"):
        assert (build.out / segment[field]).is_file()
    return segment


def test_the_builds_finish_and_say_some_videos_failed_without_a_traceback(run):
    for build in (run.folder, run.arguments):
        assert build.code == 3, build.stderr[-3000:]  # finished; some inputs are unusable
        assert "Traceback" not in build.stderr, build.stderr[-5000:]
        assert "MODALINK dataset:" in build.stderr


def test_every_video_of_the_folder_has_one_clear_record(run):
    records = by_case(run, run.folder)
    expected = {name for name, case in run.cases.items() if case.expect != "skipped"}
    assert set(records) == expected and len(run.folder.videos()) == len(expected)  # links, folders: no record
    for name, record in records.items():
        assert_clear(record, run.cases[name])
        expect = run.cases[name].expect
        if expect != "either":
            assert record["status"] == ("failed" if expect == "failed" else "ok"), (name, record)


def test_hostile_names_and_good_odd_files_give_the_grid_clips_face_segment(run):
    records = by_case(run, run.folder)
    reference = assert_one_face_segment(run.folder, records["dash"])  # a bit-exact copy of the GRID clip
    assert word_error_rate(GRID_SENTENCE, reference["transcript"]) <= 0.5, reference["transcript"]
    for name, case in run.cases.items():
        if case.expect == "face" and name != "uhd_4k":  # the 4K file is another GRID clip, cut at 2 s
            segment = assert_one_face_segment(run.folder, records[name])
            assert abs(segment["start"] - reference["start"]) <= 0.1 and abs(segment["end"] - reference["end"]) <= 0.1
            assert (records[name]["width"], records[name]["height"]) == (360, 288), name


def test_a_rotated_video_is_seen_as_shown(run):
    """rotated.mp4 holds the GRID frames turned a quarter clockwise, with a display matrix that turns
    them back: the faces are found upright, and box, frame and clip share the upright picture."""
    record = by_case(run, run.folder)["rotated"]
    segment = assert_one_face_segment(run.folder, record)
    reference, = run.folder.segments(by_case(run, run.folder)["dash"]["video_id"])
    assert all(abs(segment["active_face"][k] - reference["active_face"][k]) <= 8 for k in ("x", "y", "w", "h"))
    assert Image.open(run.folder.out / segment["frame"]).size == (360, 288)
    clip = next(s for s in ffprobe_json(str(run.folder.out / segment["video_clip"]))["streams"]
                if s["codec_type"] == "video")
    assert (clip["width"], clip["height"]) == (360, 288)


def test_the_4k_video_keeps_its_size_and_its_face(run):
    record = by_case(run, run.folder)["uhd_4k"]
    segment = assert_one_face_segment(run.folder, record)
    assert (record["width"], record["height"]) == (3840, 2160) and segment["active_face"]["h"] > 500
    assert Image.open(run.folder.out / segment["frame"]).size == (3840, 2160)


def test_two_audio_streams_use_the_first_the_default_one(run):
    """two_audio.mp4: the GRID soundtrack (default) first, then JFK's speech: the GRID words come out."""
    segment, = run.folder.segments(by_case(run, run.folder)["two_audio"]["video_id"])
    assert word_error_rate(GRID_SENTENCE, segment["transcript"]) <= 0.5, segment["transcript"]
    assert not {"americans", "country", "fellow"} & set(segment["transcript"].lower().split())


def test_a_2x2_video_is_processed_and_finds_no_face(run):
    record = by_case(run, run.folder)["tiny_2x2"]
    assert (record["status"], record["width"], record["height"], record["segments_kept"]) == ("ok", 2, 2, 0)
    assert record["segments_found"] >= 1 and record["segments_dropped"]["no_face"] == record["segments_found"]


def test_damaged_files_are_read_as_far_as_they_go(run):
    """The truncated and bit-flipped MP4s still hold the GRID speech: decoded, the face is found."""
    records = by_case(run, run.folder)
    for name in ("truncated", "bit_flipped"):
        assert records[name]["status"] == "ok" and records[name]["segments_kept"] == 1, records[name]
    assert records["bit_flipped"]["audio_fallback"]


def test_the_arguments_build_has_one_record_per_argument(run, urls):
    videos = run.arguments.videos()
    assert len(videos) == 12  # six names, "clip.mp4/../..mpg", the folder clip.mp4 and four URLs
    by_source = {v["source"]: v for v in videos}
    for name in ("dash", "dashdash", "shell", "backslash_dots", "long", "not_utf8"):
        record, = [v for v in videos if local_path(v["source"]).name == run.cases[name].path.name]
        assert_one_face_segment(run.arguments, record)
    assert by_source["-i.mpg"]["title"] == "-i" and by_source["--out.mpg"]["title"] == "--out"
    assert_one_face_segment(run.arguments, by_source["clip.mp4/../..mpg"])
    folder = by_source["clip.mp4"]
    assert_clear(folder)
    assert folder["status"] == "failed" and "no video files" in folder["error"]
    not_utf8, = [v for v in videos if v["source"].startswith("file://")]
    assert local_path(not_utf8["source"]) == run.cases["not_utf8"].path  # the exact bytes, as a URI
    for url in urls.values():
        assert_one_face_segment(run.arguments, by_source[url])


def test_a_download_with_a_long_id_is_found_again(urls, tmp_path):
    """The 240-character name: its file name is trimmed under 255 bytes, and a second download (the
    archive skips it) finds the file the first one wrote."""
    first = download(urls["L" * 236 + ".mpg"], AcquireConfig(), str(tmp_path))
    assert len(os.fsencode(Path(first.path).name)) <= 255 and Path(first.path).parent == tmp_path
    assert download(urls["L" * 236 + ".mpg"], AcquireConfig(), str(tmp_path)) == first


def test_hostile_titles_stay_titles(run, urls):
    videos = {v["source"]: v for v in run.arguments.videos()}
    assert videos[urls["escape.html"]]["title"].startswith("../../etc/x")
    assert videos[urls["absolute.html"]]["title"].startswith("/abs/path")
    infos = [json.loads(p.read_text()) for p in (run.arguments.out / "downloads").glob("*.info.json")]
    assert {"../../etc/x", "/abs/path"} <= {info["title"].rsplit(" (", 1)[0] for info in infos}
    assert len(infos) == 4


def test_video_ids_are_safe_and_distinct(run):
    for build in (run.folder, run.arguments):
        ids = [v["video_id"] for v in build.videos()]
        assert len(set(ids)) == len(ids)
        for video_id in ids:
            assert SAFE_ID.match(video_id) and len(video_id) <= 89, video_id  # 80 and "-" and 8 of the content
    records = by_case(run, run.folder)
    for name in ("shell", "dash", "dashdash", "dots", "backslash_dots", "long"):  # the same bytes, distinct names
        assert local_video(run.cases[name].path).video_id == records[name]["video_id"]  # deterministic


HOSTILE_TEXTS = ["-i", "i", "--out", "out", "; $(rm -rf x) | & > *", "rm -rf x", "rm_-rf_x", "..", ".", "",
                 "../../etc/x", "etc/x", "etc_x", "/abs/path", "abs/path", "abs_path", LONG_STEM, LONG_STEM + "y",
                 "a" * 80, "a" * 81, os.fsdecode(b"caf\xe9"), os.fsdecode(b"caf\xff"), "caf", "café", "-", "_x_",
                 "x", "generic-dQw4w9WgXcQ", "video"]


def test_safe_id_is_safe_deterministic_and_distinct_for_distinct_names():
    ids = [safe_id(text) for text in HOSTILE_TEXTS]
    assert len(set(ids)) == len(HOSTILE_TEXTS)
    assert ids == [safe_id(text) for text in HOSTILE_TEXTS]
    for text, video_id in zip(HOSTILE_TEXTS, ids):
        assert SAFE_ID.match(video_id) and len(video_id) <= 80, (text, video_id)
    assert safe_id("av_grid_bbaf2n") == "av_grid_bbaf2n" and safe_id("generic-dQw4w9WgXcQ") == "generic-dQw4w9WgXcQ"


def test_modalink_validate_passes(run):
    for build in (run.folder, run.arguments):
        check = modalink(["validate", str(build.out)], ROOT, "")
        assert check.returncode == 0, check.stderr
        assert json.loads(check.stdout)["problems"] == 0


def test_nothing_is_written_outside_out_and_nothing_is_removed(run):
    assert run.before <= run.after  # the canary x/ of "; $(rm -rf x)" among them
    outs = [run.folder.out.resolve(), run.arguments.out.resolve()]
    for path in run.after - run.before:
        parent, name = os.path.split(os.fsdecode(path))
        where = Path(os.path.realpath(parent)) / name
        assert any(where.is_relative_to(out) for out in outs), where


def test_arguments_that_name_nothing_usable_stop_the_run_in_one_line(run, prefect_server, tmp_path):
    """A name that reads as an option (write ./-i.mpg or put it after --), a symlink loop: exit code 2,
    one line, no traceback."""
    src = run.cases["dash"].path.parent
    for args in (["-i.mpg"], ["loop.mp4"]):
        result = modalink(["build", *args, "--out", str(tmp_path / "d"), *WHISPER], src, prefect_server)
        stderr = result.stderr.decode()
        assert result.returncode == 2 and "Traceback" not in stderr, stderr
        assert len([line for line in stderr.splitlines() if "error:" in line]) == 1, stderr
    assert not (tmp_path / "d").exists()
