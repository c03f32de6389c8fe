"""The real Prefect flow over several real files at once, checked against what is known of each file."""
import json
import wave
from pathlib import Path

import pytest
from PIL import Image

from flows.build import build_dataset
from modalink.ffmpeg_tools import ffprobe_json
from modalink.records import contract_errors, read_jsonl, schema_errors

from conftest import GRID_CLIPS, grid_speech_span
from wer import word_error_rate

WHISPER = {"asr": {"backend": "whisper", "language": "en-US", "model": "tiny.en"}}
FILES = [*GRID_CLIPS, "noface_speech_autoeditor_example.mp4", "face_nospeech_liveportrait_d18.mp4",
         "face_nospeech_liveportrait_d19.mp4", "face_noaudiostream_liveportrait_d0.mp4"]


@pytest.fixture(scope="module")
def dataset(prefect_server, media, tmp_path_factory):
    out = tmp_path_factory.mktemp("dataset")
    summary = build_dataset([str(media / f) for f in FILES], str(out), WHISPER)
    return out, summary


def by_file(records, name):
    return [r for r in records if Path(r["source"]).name == name]


def test_summary_counts(dataset):
    out, summary = dataset
    assert summary["videos"] == {"total": len(FILES), "ok": len(FILES) - 1, "failed": 1, "reused": 0}
    assert summary["segments"]["kept"] == len(GRID_CLIPS)
    assert json.loads((out / "run_summary.json").read_text())["segments"]["kept"] == len(GRID_CLIPS)
    assert summary["versions"]["prefect"].startswith("3.") and summary["config"]["asr"]["backend"] == "whisper"
    assert summary["seconds_per_stage"]["frames"] > 0 and summary["seconds_per_stage"]["faces"] > 0


def test_every_record_meets_the_dataset_contract(dataset):
    out, _ = dataset
    records = list(read_jsonl(out / "manifest.jsonl"))
    assert records and schema_errors(records) == [] and contract_errors(records) == []
    assert len({r["segment_id"] for r in records}) == len(records)


def test_each_grid_clip_gives_one_segment_with_the_speaker_and_the_words(dataset, media):
    out, _ = dataset
    records = list(read_jsonl(out / "manifest.jsonl"))
    rates = []
    for name, sentence in GRID_CLIPS.items():
        record, = by_file(records, name)
        face = record["active_face"]
        assert 0 <= face["x"] and face["x"] + face["w"] <= 360 and 0 <= face["y"] and face["y"] + face["h"] <= 288
        assert record["transcript_status"] == "ok" and record["asr"] == {"backend": "whisper", "model": "tiny.en"}
        assert record["segment"] == "0_0" and record["segment_id"].endswith("-0_0")
        rates.append(word_error_rate(sentence, record["transcript"]))
    assert sum(rates) / len(rates) <= 0.35, rates


def test_grid_segment_matches_the_alignment(dataset, media):
    out, _ = dataset
    start, end = grid_speech_span(media)
    record, = by_file(read_jsonl(out / "manifest.jsonl"), "av_grid_id2_swwp2s.mpg")
    assert abs(record["start"] - start) <= 0.3 and abs(record["end"] - end) <= 0.3


def test_grid_segment_edges_are_within_a_tenth_of_a_second_of_the_words(dataset, media):
    """vad.refine_edges: both ends within 0.1 s of the .align speech span."""
    out, _ = dataset
    start, end = grid_speech_span(media)
    record, = by_file(read_jsonl(out / "manifest.jsonl"), "av_grid_id2_swwp2s.mpg")
    assert abs(record["start"] - start) <= 0.1 and abs(record["end"] - end) <= 0.1


def test_videos_record_what_was_dropped_and_why(dataset):
    out, _ = dataset
    videos = {Path(v["source"]).name: v for v in read_jsonl(out / "videos.jsonl")}
    speech_no_face = videos["noface_speech_autoeditor_example.mp4"]
    assert speech_no_face["status"] == "ok" and speech_no_face["segments_kept"] == 0
    assert speech_no_face["segments_found"] >= 2
    assert speech_no_face["segments_dropped"]["no_face"] == speech_no_face["segments_found"]
    for silent in ("face_nospeech_liveportrait_d18.mp4", "face_nospeech_liveportrait_d19.mp4"):
        assert videos[silent]["status"] == "ok" and videos[silent]["segments_kept"] == 0
    no_audio = videos["face_noaudiostream_liveportrait_d0.mp4"]
    assert no_audio["status"] == "failed" and "no audio stream" in no_audio["error"]
    assert "no audio stream" in (out / "errors.log").read_text()
    for name in GRID_CLIPS:
        assert videos[name]["status"] == "ok" and videos[name]["segments_kept"] == 1


def test_every_media_file_is_what_the_record_says(dataset):
    out, _ = dataset
    for record in read_jsonl(out / "manifest.jsonl"):
        with wave.open(str(out / record["audio_clip"])) as wav:
            assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
            assert abs(wav.getnframes() / 16000 - record["duration"]) <= 0.01
        probe = ffprobe_json(str(out / record["video_clip"]))
        kinds = {s["codec_type"]: s["codec_name"] for s in probe["streams"]}
        assert kinds == {"video": "h264", "audio": "aac"}
        assert abs(float(probe["format"]["duration"]) - (record["end"] - record["start"])) <= 0.1
        with Image.open(out / record["frame"]) as frame:
            frame.load()
            assert frame.format == "JPEG" and frame.size == (360, 288)


def test_a_second_run_reuses_everything_and_duplicates_nothing(dataset, media):
    out, first = dataset
    before = (out / "manifest.jsonl").read_text()
    again = build_dataset([str(media / f) for f in FILES], str(out), WHISPER)
    assert (out / "manifest.jsonl").read_text() == before
    assert again["segments"]["kept"] == first["segments"]["kept"]
    assert again["videos"]["reused"] == first["videos"]["ok"] and first["videos"]["reused"] == 0
    for stage in ("audio", "frames", "faces", "clips", "transcription"):
        assert stage not in again["seconds_per_stage"], f"{stage} ran again"


@pytest.fixture()
def one_grid_clip(media):
    return [str(media / "av_grid_bbaf2n.mpg")]


def google_config(server, **asr):
    return {"asr": {"backend": "google", "google": {"endpoint": server.endpoint}, "retries": 2, "retry_delay_s": 0.05,
                    **asr}}


def test_google_transcript_lands_in_the_record(prefect_server, google, one_grid_clip, tmp_path):
    build_dataset(one_grid_clip, str(tmp_path), google_config(google))
    record, = read_jsonl(tmp_path / "manifest.jsonl")
    assert (record["transcript"], record["transcript_status"], record["language"]) == ("مرحبا بكم", "ok", "ar-EG")
    assert len(google.requests) == 1


def test_google_failure_is_retried_then_succeeds(prefect_server, google, one_grid_clip, tmp_path):
    google.reset(failures=1)
    build_dataset(one_grid_clip, str(tmp_path), google_config(google))
    record, = read_jsonl(tmp_path / "manifest.jsonl")
    assert record["transcript_status"] == "ok" and len(google.requests) == 2


def test_google_permanent_failure_is_flagged_not_dropped(prefect_server, google, one_grid_clip, tmp_path):
    google.reset(always_fail=True)
    summary = build_dataset(one_grid_clip, str(tmp_path), google_config(google))
    record, = read_jsonl(tmp_path / "manifest.jsonl")
    assert (record["transcript"], record["transcript_status"]) == (None, "failed")
    assert "Internal Server Error" in record["transcript_error"] and len(google.requests) == 3  # first try + 2 retries
    assert summary["segments"]["transcription_failed"] == 1
    video, = read_jsonl(tmp_path / "videos.jsonl")
    assert video["transcription_failed"] == 1 and "transcription failed" in (tmp_path / "errors.log").read_text()


def test_a_local_dask_cluster_gives_the_same_manifest(prefect_server, media, tmp_path):
    clips = [str(media / name) for name in list(GRID_CLIPS)[:2]]
    build_dataset(clips, str(tmp_path / "threads"), WHISPER)
    dask = {**WHISPER, "run": {"runner": "dask", "workers": 2}}
    summary = build_dataset(clips, str(tmp_path / "dask"), dask)
    assert summary["config"]["run"]["runner"] == "dask"
    threads = (tmp_path / "threads" / "manifest.jsonl").read_text()
    assert threads and (tmp_path / "dask" / "manifest.jsonl").read_text() == threads


def test_changing_one_option_redoes_only_the_steps_that_read_it(prefect_server, google, one_grid_clip, tmp_path):
    build_dataset(one_grid_clip, str(tmp_path), WHISPER)
    switched = build_dataset(one_grid_clip, str(tmp_path), google_config(google))  # another ASR backend
    stages = set(switched["seconds_per_stage"])
    assert "transcription" in stages and not stages & {"audio", "vad", "speaker_split", "frames", "faces", "clips"}
    record, = read_jsonl(tmp_path / "manifest.jsonl")
    assert record["asr"]["backend"] == "google" and len(google.requests) == 1
