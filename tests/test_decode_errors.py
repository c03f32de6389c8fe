"""A file that does not decode gets ffmpeg's own complaint as its reason, in one line: in the
video's record, the run summary and what the run prints; never ffmpeg's version banner."""
import json
import random

import pytest

from modalink.cli import main
from modalink.config import AudioConfig
from modalink.ffmpeg_tools import complaint
from tasks.audio import extract_audio
from tasks.base import MediaError
from tasks.probe import probe

MOOV = "moov atom not found"
INVALID = "Invalid data found when processing input"


@pytest.fixture(scope="module")
def undecodable(media, tmp_path_factory):
    """name -> path: a zero-byte file, random bytes and an MP4 cut before its moov atom (at its end)."""
    folder = tmp_path_factory.mktemp("undecodable")
    source = (media / "face_nospeech_liveportrait_d18.mp4").read_bytes()
    assert source.rfind(b"moov") > len(source) // 2  # the index sits after the media data
    contents = {"empty.mp4": b"", "noise.mp4": random.Random(19).randbytes(64_000),
                "truncated.mp4": source[:len(source) // 2]}
    for name, data in contents.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in contents}


@pytest.mark.parametrize("name", ["empty.mp4", "noise.mp4", "truncated.mp4"])
def test_probe_gives_ffmpegs_complaint_in_one_line(undecodable, name):
    with pytest.raises(MediaError) as raised:
        probe(str(undecodable[name]))
    assert str(raised.value) == f"does not decode: {MOOV}; {INVALID}"


def test_a_build_records_and_prints_the_complaint(prefect_server, google_server, undecodable, tmp_path, capsys,
                                                  monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", prefect_server)
    out = tmp_path / "dataset"
    code = main(["build", *map(str, undecodable.values()), "--out", str(out), "--asr", "google",
                 "--set", f"asr.google.endpoint={google_server.endpoint}"])
    printed = capsys.readouterr().err
    assert code == 3
    records = [json.loads(line) for line in (out / "videos.jsonl").read_text().splitlines()]
    summary = json.loads((out / "run_summary.json").read_text())
    errors = [r["error"] for r in records] + [v["error"] for v in summary["failed_videos"]]
    assert len(errors) == 6 and set(errors) == {f"does not decode: {MOOV}; {INVALID}"}
    failed_lines = [line for line in printed.splitlines() if line.strip().startswith("failed ")]
    assert len(failed_lines) == 3 and all(line.endswith(f"does not decode: {MOOV}; {INVALID}") for line in failed_lines)
    assert "libavcodec" not in printed + (out / "errors.log").read_text()


def test_audio_that_does_not_decode_says_why_in_one_line(media, tmp_path):
    """An MP4 cut in its media data (its index at the start): it probes, its strict audio decoding fails."""
    source = (media / "noface_speech_autoeditor_example.mp4").read_bytes()
    assert source.find(b"moov") < 100
    (tmp_path / "cut.mp4").write_bytes(source[:len(source) // 3])
    with pytest.raises(MediaError) as raised:
        extract_audio(str(tmp_path / "cut.mp4"), str(tmp_path / "a.wav"), AudioConfig(fallback=False))
    message = str(raised.value)
    assert message.startswith("audio does not decode: ") and message.endswith(INVALID)
    assert "\n" not in message and " @ 0x" not in message and "cut.mp4" not in message


def test_the_complaint_leaves_out_the_banner_the_context_and_the_file_name():
    stderr = (b"ffprobe version 6.0 Copyright (c) 2007-2023 the FFmpeg developers\n"
              b"  built with gcc 12\n  configuration: --enable-gpl --enable-libzvbi --enable-libzimg\n"
              b"  libavutil      58.  2.100 / 58.  2.100\n  libavcodec     60.  3.100 / 60.  3.100\n"
              b"[mov,mp4,m4a,3gp,3g2,mj2 @ 0xd6fe100] moov atom not found\n"
              b"/data/my video: part 2.mp4: Invalid data found when processing input\n")
    assert complaint(stderr, ["-i", "/data/my video: part 2.mp4"]) == f"{MOOV}; {INVALID}"
    assert complaint(b"") == "no error output"
    assert complaint(b"a\nb\nc\nb\n") == "c; b"
