"""The stage contract: the registry's order and checks, and a stage added from one file that lands
in the manifest, is validated by its schema, is cached, and re-runs only when its own option changes."""
import json
import os
import subprocess
import sys

import pytest

import modalink.config as config_module
import modalink.stages as stages_module
from modalink.config import Config, ConfigError
from modalink.records import read_jsonl, schema_errors
from modalink.stages import SegmentStage, register, segment_stages

from conftest import ROOT

LOUDNESS = ROOT / "tests" / "stages" / "loudness.py"
WHISPER = {"asr": {"backend": "whisper", "language": "en-US", "model": "tiny.en"}}


@pytest.fixture()
def registry(monkeypatch):
    """The registry as it was before the test, whatever the test registers."""
    monkeypatch.setattr(stages_module, "_registered", dict(stages_module._registered))
    monkeypatch.setattr(stages_module, "_loaded_sources", set(stages_module._loaded_sources))
    monkeypatch.setattr(config_module, "_registered_sections", dict(config_module._registered_sections))
    yield


def test_the_core_stages_in_order():
    assert [(s.name, s.section, s.needs, s.per_chunk) for s in segment_stages()] == [
        ("faces", "faces", (), True), ("speaker_face", "speaker_face", ("faces",), True),
        ("expressions", "expressions", ("faces", "speaker_face"), True), ("media", "clips", (), False),
        ("transcription", "asr", ("media",), False), ("voice", "voice", ("media", "transcription"), False)]


def test_a_stage_runs_after_what_it_needs_and_unknown_needs_are_named(registry):
    @register
    class Late(SegmentStage):
        name, needs = "late", ("early",)

    with pytest.raises(ConfigError, match=r"stage late needs \['early'\]"):
        segment_stages()

    @register
    class Early(SegmentStage):
        name, needs = "early", ("transcription",)

    names = [s.name for s in segment_stages()]
    assert names.index("transcription") < names.index("early") < names.index("late")


def test_a_per_chunk_stage_cannot_need_a_per_segment_one(registry):
    @register
    class Chunky(SegmentStage):
        name, needs, per_chunk = "chunky", ("media",), True

    with pytest.raises(ConfigError, match="per-chunk stage chunky"):
        segment_stages()


def test_installed_stage_entry_points_are_read_once_per_process(monkeypatch):
    """`discover` runs for every record validated: the installed packages' metadata is read only the
    first time (reading it again cost about 10 ms a record)."""
    import importlib.metadata

    stages_module.discover()

    def read_again(**kwargs):
        raise AssertionError("the entry points were read again")

    monkeypatch.setattr(importlib.metadata, "entry_points", read_again)
    stages_module.discover()
    assert [stage.name for stage in segment_stages()][:2] == ["faces", "speaker_face"]


def test_the_stages_command_lists_them_in_order_with_sections_and_needs():
    env = {**os.environ, "MODALINK_STAGES": str(LOUDNESS)}
    listed = subprocess.run([sys.executable, "-m", "modalink.cli", "stages", "--json"], capture_output=True, text=True,
                            cwd=ROOT, env=env, timeout=120, check=True).stdout
    rows = [json.loads(line) for line in listed.splitlines()]
    assert [(r["name"], r["section"], r["needs"]) for r in rows] == [
        ("faces", "faces", []), ("speaker_face", "speaker_face", ["faces"]),
        ("expressions", "expressions", ["faces", "speaker_face"]), ("media", "clips", []),
        ("transcription", "asr", ["media"]), ("voice", "voice", ["media", "transcription"]),
        ("loudness", "loudness", ["media"])]
    table = subprocess.run([sys.executable, "-m", "modalink.cli", "stages"], capture_output=True, text=True, cwd=ROOT,
                           env=env, timeout=120, check=True).stdout.splitlines()
    assert table[0].split()[:4] == ["#", "stage", "runs", "on"] and table[7].split()[:4] == ["7", "loudness", "segment", "loudness"]


def ran(summary) -> set[str]:
    return set(summary["seconds_per_stage"])


def test_a_stage_added_from_one_file(registry, prefect_server, media, tmp_path, monkeypatch):
    from flows.build import build_dataset

    monkeypatch.setenv("MODALINK_STAGES", str(LOUDNESS))
    stages_module.discover()
    assert "loudness" in Config().sections()
    with pytest.raises(ConfigError, match="loudness.floor_db must be below 0"):
        Config.load(overrides={"loudness": {"floor_db": 3}})
    clip, out = [str(media / "av_grid_bbaf2n.mpg")], str(tmp_path)

    first = build_dataset(clip, out, WHISPER)
    record, = read_jsonl(tmp_path / "manifest.jsonl")
    loudness = record["custom"]["loudness"]
    assert -40 < loudness["rms_db"] < loudness["peak_db"] <= 0 and schema_errors([record]) == []
    assert schema_errors([{**record, "custom": {"loudness": {"rms_db": "loud"}}}])  # the stage's own sub-schema
    assert {"loudness", "transcription", "faces"} <= ran(first)

    quieter_floor = build_dataset(clip, out, {**WHISPER, "loudness": {"floor_db": -60}})
    assert "loudness" in ran(quieter_floor) and not ran(quieter_floor) & {"faces", "frames", "clips", "transcription"}
    assert read_jsonl(tmp_path / "manifest.jsonl")[0]["custom"]["loudness"] == loudness  # a loud clip: same figures

    other_beam = build_dataset(clip, out, {**WHISPER, "asr": {**WHISPER["asr"], "whisper": {"beam_size": 1}},
                                           "loudness": {"floor_db": -60}})
    assert "transcription" in ran(other_beam) and "loudness" not in ran(other_beam)
    again = build_dataset(clip, out, {**WHISPER, "asr": {**WHISPER["asr"], "whisper": {"beam_size": 1}},
                                      "loudness": {"floor_db": -60}})
    assert again["videos"]["reused"] == 1 and not ran(again) & {"loudness", "transcription"}
