import dataclasses

import pytest

from modalink.config import Config, ConfigError, parse_override


def test_defaults_are_the_papers():
    c = Config()
    assert (c.vad.frame_ms, c.vad.min_silence_s, c.vad.min_segment_s, c.vad.max_segment_s) == (30, 0.3, 0.5, 15.0)
    assert (c.faces.fps, c.faces.max_frames, c.faces.scale) == (1.0, 10, 0.5)
    assert (c.audio.sample_rate, c.asr.backend, c.asr.language) == (16000, "google", "ar-EG")
    assert c.acquire.merge_output_format == "mp4"


def test_toml_and_yaml_files_and_overrides(tmp_path):
    (tmp_path / "c.toml").write_text('[faces]\nfps = 2\n[asr]\nbackend = "whisper"\nlanguage = "en-US"\n')
    (tmp_path / "c.yaml").write_text("faces:\n  fps: 2\nasr:\n  backend: whisper\n  language: en-US\n")
    for name in ("c.toml", "c.yaml"):
        c = Config.load(tmp_path / name, {"faces": {"max_frames": "5"}, **parse_override("vad.aggressiveness=3")})
        assert (c.faces.fps, c.faces.max_frames, c.vad.aggressiveness, c.asr.backend) == (2.0, 5, 3, "whisper")


def test_round_trip_through_a_dict():
    c = Config.load(overrides={"acquire": {"media_extensions": ".mp4,.mkv"}, "asr": {"model": "none"}})
    assert c.acquire.media_extensions == (".mp4", ".mkv") and c.asr.model is None
    assert Config.from_dict(c.to_dict()) == c


@pytest.mark.parametrize("overrides, message", [
    ({"faces": {"fsp": 2}}, "did you mean 'fps'"),
    ({"facez": {"fps": 2}}, "did you mean 'faces'"),
    ({"faces": {"fps": "fast"}}, "bad value for faces.fps"),
    ({"faces": {"max_frames": 2.5}}, "whole number"),
    ({"asr": {"backend": "nope"}}, "asr.backend must be one of"),
    ({"vad": {"frame_ms": 25}}, "vad.frame_ms"),
    ({"vad": {"aggressiveness": 4}}, "vad.aggressiveness"),
    ({"speakers": {"enabled": "maybe"}}, "expected true or false"),
])
def test_bad_options_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        Config.load(overrides=overrides)


def test_bad_files_and_override_syntax(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        Config.load(tmp_path / "missing.toml")
    (tmp_path / "c.ini").write_text("x")
    with pytest.raises(ConfigError, match=".toml, .yaml"):
        Config.load(tmp_path / "c.ini")
    (tmp_path / "broken.toml").write_text("[faces\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        Config.load(tmp_path / "broken.toml")
    with pytest.raises(ConfigError, match="SECTION.OPTION=VALUE"):
        parse_override("fps=2")


def test_every_section_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().faces.fps = 3  # type: ignore[misc]


def flat_options(options: dict, prefix: str):
    for name, value in options.items():
        if isinstance(value, dict):
            yield from flat_options(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value


def test_readme_documents_every_option_with_its_default():
    from pathlib import Path

    from modalink.stages import discover

    discover()  # the registered sections too ([voice], [export], ...), also when this file runs alone

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for section, options in Config().to_dict().items():
        for option, default in flat_options(options, f"{section}."):
            row = next((line for line in readme.splitlines() if line.startswith(f"| `{option}` |")), None)
            assert row is not None, f"{option} missing from the README"
            shown = row.split("|")[2].strip().strip("`")
            if default is None or isinstance(default, bool):
                expected = {None: "none", True: "true", False: "false"}[default]
            else:
                expected = ",".join(default) if isinstance(default, (list, tuple)) else default
            assert shown == str(expected), f"{option}: README says {shown}, code says {expected}"


def test_nested_backend_options_from_files_and_overrides(tmp_path):
    (tmp_path / "c.toml").write_text('[asr]\nbackend = "whisper"\n[asr.whisper]\nbeam_size = 2\n')
    c = Config.load(tmp_path / "c.toml", parse_override("asr.google.timeout_s=5"))
    assert (c.asr.whisper.beam_size, c.asr.google.timeout_s, c.asr.options) == (2, 5.0, c.asr.whisper)
    with pytest.raises(ConfigError, match="did you mean 'beam_size'"):
        Config.load(overrides=parse_override("asr.whisper.beam=2"))


@pytest.mark.parametrize("old, new", [("asr.google_key", "asr.google.key"), ("clips.jpeg_quality", "faces.jpeg_quality"),
                                      ("asr.whisper_threads", "asr.whisper.threads")])
def test_a_moved_option_says_where_it_is_now(old, new):
    with pytest.raises(ConfigError, match=f"{old} is now {new}"):
        Config.load(overrides=parse_override(f"{old}=1"))


@pytest.mark.parametrize("overrides, message", [
    ({"asr": {"whisper": {"beam_size": 0}}}, "asr.whisper.beam_size must be >= 1"),
    ({"asr": {"whisper": {"workers": -1}}}, "asr.whisper.workers must be >= 0"),
    ({"asr": {"google": {"timeout_s": 0}}}, "asr.google.timeout_s must be > 0"),
    ({"faces": {"jpeg_quality": 40}}, "faces.jpeg_quality"),
    ({"run": {"runner": "ray"}}, "run.runner must be threads or dask"),
    ({"speakers": {"method": "bic"}}, "speakers.method must be one of"),
    ({"speakers": {"embedding_hop_s": 2.0}}, "embedding_hop_s"),
    ({"speakers": {"change_threshold": 2}}, "speakers.change_threshold"),
    ({"speakers": {"overlap": "maybe"}}, "speakers.overlap must be one of"),
    ({"speakers": {"overlap_threshold": 1.0}}, "speakers.overlap_threshold"),
    ({"speakers": {"overlap_min_s": -1}}, "speakers.overlap_min_s"),
])
def test_each_section_checks_itself(overrides, message):
    with pytest.raises(ConfigError, match=message):
        Config.load(overrides=overrides)


def test_the_asr_backends_are_the_configs_sub_sections():
    """The config knows the backends without importing tasks/; the two lists must agree."""
    from tasks.transcribe import BACKENDS

    assert set(BACKENDS) == set(Config().asr.backends()) == {"google", "whisper"}
