"""The speaker_face stage: the face whose mouth moves with the voice is the speaker (issue 16).

Pure functions on made-up boxes and series; then the stage's functions on real inputs (the GRID clips,
bench/make_av_inputs.py's side_by_side.mp4 cut at its reference turns, voice_over.mp4); then one flow."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from modalink.config import AudioConfig, Config, ConfigError, FaceConfig
from modalink.records import FaceBox, Segment, read_jsonl, schema_errors
from modalink.stages import Drop, SegmentInput
from tasks.acquire import local_video
from tasks.audio import extract_audio
from tasks.faces import detect_faces_in_segments
from tasks.probe import probe
from tasks.speaker_face import (DROP_OFF_SCREEN, SpeakerFace, SpeakerFaceConfig, SpeakerFaceStage, box_at, decide,
                                link_tracks, mouth_motion, pearson, sample_times, score_track, speakers_in_chunk)

from conftest import GRID_CLIPS

WHISPER = {"asr": {"backend": "whisper", "language": "en-US", "model": "tiny.en"}}


def test_boxes_are_linked_into_tracks_across_frames():
    left = [FaceBox(10, 10, 50, 60, 0.99, t) for t in (0.0, 1.0, 2.0)]
    right = [FaceBox(300 + 3 * t, 12, 40, 50, 0.98, t) for t in (0.0, 2.0)]  # missed at 1.0, moved a little
    tracks = link_tracks([left[0], right[0], left[1], right[1], left[2]])
    assert tracks == [left, right]  # largest first, each in time order
    assert box_at(left, 1.0) == ((10, 10, 50, 60), "detected")
    assert box_at(right, 1.0) == ((303.0, 12.0, 40.0, 50.0), "interpolated")
    assert box_at(right, 3.0)[1] == "held" and box_at(right, -1.0)[1] == "held"


def test_sample_times_and_the_signals():
    assert sample_times(1.0, 2.0, 5.0, 75) == [1.0, 1.2, 1.4, 1.6, 1.8]
    assert len(sample_times(0.0, 30.0, 5.0, 75)) == 75
    crops = [np.zeros((24, 32), np.float32), np.ones((24, 32), np.float32) * 3, None]
    assert np.allclose(mouth_motion(crops)[:1], [3.0]) and np.isnan(mouth_motion(crops)[1])
    assert pearson(np.array([1.0, 2, 3]), np.array([2.0, 4, 6])) == pytest.approx(1.0)
    assert pearson(np.array([1.0, 1, 1]), np.array([1.0, 2, 3])) is None


def test_the_decision():
    options = SpeakerFaceConfig()
    level = np.array([-40.0, -20, -25, -45, -22, -30, -50, -21])
    moving = level + 60
    everywhere = np.ones(len(level), bool)
    frames_everywhere = np.ones(len(level) + 1, bool)
    opening = np.r_[level, -30.0]
    speaker = score_track(1, moving / 10, opening, level, np.r_[level, -30.0], everywhere, frames_everywhere, options)
    against = score_track(1, -moving / 10 + 10, -opening, level, np.r_[level, -30.0], everywhere, frames_everywhere,
                          options)
    still = score_track(0, np.full(len(level), 0.01), opening, level, np.r_[level, -30.0], everywhere,
                        frames_everywhere, options)
    assert speaker.score == pytest.approx(1.0) and against.score == pytest.approx(-1.0) and still.score == 0.0
    assert decide([still, speaker], level, options)[:3] == ("motion", None, 1)
    assert decide([against], level, options)[0] == "off_screen"
    assert decide([still], level, options)[:2] == ("largest", "no mouth moves")
    assert decide([speaker], level[:3], options)[:2] == ("largest", "too few frames")
    assert decide([speaker], np.full(8, -30.0), options)[:2] == ("largest", "flat speech level")


def test_its_options_are_checked():
    assert Config().section("speaker_face") == SpeakerFaceConfig()
    with pytest.raises(ConfigError, match="off_screen must be drop or keep"):
        Config.load(overrides={"speaker_face": {"off_screen": "maybe"}})
    with pytest.raises(ConfigError, match="faces.detector must be mtcnn or yuface"):
        Config.load(overrides={"faces": {"detector": "haar"}})


@pytest.fixture(scope="module")
def soundtracks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("soundtracks")

    def soundtrack(video) -> str:
        path = folder / f"{video.video_id}.wav"
        if not path.exists():
            extract_audio(video.path, str(path), AudioConfig())
        return str(path)
    return soundtrack


def stage_on(path: Path, spans, soundtracks, options=SpeakerFaceConfig()):
    """The faces stage (MTCNN, defaults), then the speaker_face stage's functions, on segments cut at `spans`."""
    video = local_video(path)
    info = probe(video.path)
    segments = [Segment(video.video_id, k, 0, a, b) for k, (a, b) in enumerate(spans)]
    faces = detect_faces_in_segments(video, info, segments, FaceConfig())
    items = [SegmentInput(video, s, info, soundtracks(video), "/unused", {"faces": f}) for s, f in zip(segments, faces)]
    return faces, speakers_in_chunk(items, options)


def side(result: SpeakerFace, frame_width: int) -> str:
    centre = result.active.x + result.active.w / 2
    return "left" if centre < frame_width / 2 else "right"


def test_the_speaking_face_is_chosen_side_by_side(av_inputs, soundtracks):
    """Segments cut at the reference turns (VAD may merge the turns into one segment: see the flow test)."""
    doc = json.loads((av_inputs / "side_by_side.turns.json").read_text())
    turns = doc["turns"]
    faces, results = stage_on(av_inputs / "side_by_side.mp4", [(t["start"], t["end"]) for t in turns], soundtracks)
    chosen = [side(r, doc["frame_size"][0]) if isinstance(r, SpeakerFace) else None for r in results]
    right = sum(c == t["speaker_side"] for c, t in zip(chosen, turns))
    assert right >= 0.9 * len(turns), (chosen, [t["speaker_side"] for t in turns])
    assert all(len({round(f.x) // 360 for f in fr.faces}) == 2 for fr in faces)  # both faces were on screen
    assert all(r.decision == "motion" and r.track is not None for r in results)
    for result, turn in zip(results, turns):  # the face through the clip: every sampled frame, inside the half
        assert len(result.face_track) == len(sample_times(turn["start"], turn["end"], SpeakerFaceConfig().fps, SpeakerFaceConfig().max_frames))
        box = doc["boxes"][turn["speaker_side"]]
        assert all(box["x0"] - 5 <= p.x and p.x + p.w <= box["x1"] + 5 for p in result.face_track)


def test_frames_handed_over_by_the_faces_stage_give_the_decoded_result(av_inputs, media, soundtracks, tmp_path):
    """The faces stage's pass leaves each segment with a face its frames and crops (tasks.speaker_frames);
    the speaker_face stage takes them instead of decoding again, with the same result, and deletes them.
    A segment without a face leaves nothing; without a handover the frames are decoded again, and files left
    for another segment of the same name (an earlier run that cut it elsewhere) are not taken."""
    from modalink.stages import get_stage
    from tasks.speaker_frames import Handover, folder

    doc = json.loads((av_inputs / "side_by_side.turns.json").read_text())
    video, info = local_video(av_inputs / "side_by_side.mp4"), probe(str(av_inputs / "side_by_side.mp4"))
    video_no_face = local_video(media / "noface_music_bigbuckbunny_0_30.webm")
    segments = [Segment(video.video_id, k, 0, t["start"], t["end"]) for k, t in enumerate(doc["turns"][:3])]
    items = [SegmentInput(video, s, info, soundtracks(video), str(tmp_path)) for s in segments]
    faces_stage, speaker_stage, config = get_stage("faces"), get_stage("speaker_face"), Config()
    faces = faces_stage.run_chunk(items, faces_stage.options(config))
    handed = sorted(p.name for p in folder(video, str(tmp_path)).iterdir())
    assert handed == sorted(f"{s.name}.{kind}" for s in segments for kind in ("grey.raw", "index.npz"))
    with_faces = [dataclasses.replace(item, results={"faces": f}) for item, f in zip(items, faces)]
    taken = speaker_stage.run_chunk(with_faces, speaker_stage.options(config))
    assert not any(folder(video, str(tmp_path)).iterdir())
    decoded = speaker_stage.run_chunk(with_faces, speaker_stage.options(config))  # nothing left: decoded
    assert [r.cache_form() for r in taken] == [r.cache_form() for r in decoded]
    assert all(r.face_crops for r in taken)

    faces_stage.run_chunk(items, faces_stage.options(config))  # files left by a run that cut other segments 0_0, ...
    handover = Handover.of(video, str(tmp_path), faces_stage.options(config)[1])
    moved = dataclasses.replace(segments[0], start=segments[0].start + 0.05)
    assert handover.take(moved, faces[0]) is None and handover.take(segments[1], faces[1]) is not None
    Handover.clear(video, str(tmp_path))
    assert not folder(video, str(tmp_path)).exists()

    cartoon = SegmentInput(video_no_face, Segment(video_no_face.video_id, 0, 0, 3.0, 5.0), probe(video_no_face.path),
                           "/unused", str(tmp_path))
    assert faces_stage.run_chunk([cartoon], faces_stage.options(config)) == [Drop("no_face")]
    assert not any(folder(video_no_face, str(tmp_path)).glob("*"))


def test_a_voice_over_is_dropped_or_kept_as_configured(av_inputs, soundtracks):
    speech = json.loads((av_inputs / "voice_over.json").read_text())["speech"]
    spans = [(speech["start"], 5.0), (5.0, speech["end"])]
    _, dropped = stage_on(av_inputs / "voice_over.mp4", spans, soundtracks, SpeakerFaceConfig(off_screen="drop"))
    assert dropped == [Drop(DROP_OFF_SCREEN)] * 2
    _, kept = stage_on(av_inputs / "voice_over.mp4", spans, soundtracks)
    assert all(r.decision == "off_screen" and r.score is None for r in kept)


@pytest.mark.parametrize("name", list(GRID_CLIPS))
def test_a_grid_speaker_is_kept(media, soundtracks, name):
    faces, (result,) = stage_on(media / name, [(0.5, 2.6)], soundtracks)
    assert isinstance(result, SpeakerFace) and result.decision == "motion"
    assert abs(result.active.x - faces[0].active.x) < 20  # the one face on screen


def test_the_record_carries_the_choice_and_validates(av_inputs, soundtracks):
    doc = json.loads((av_inputs / "side_by_side.turns.json").read_text())
    turn = doc["turns"][1]
    _, (result,) = stage_on(av_inputs / "side_by_side.mp4", [(turn["start"], turn["end"])], soundtracks)
    fields = SpeakerFaceStage().record_fields(result, SpeakerFaceConfig())
    assert fields["active_face"]["x"] >= 360 and set(fields["custom"]) == {"speaker_face"}
    record = {"segment_id": "v-0_0", "video_id": "v", "source": "v.mp4", "start": 0.0, "end": 1.0, "duration": 1.0,
              "video_clip": "c.mp4", "audio_clip": "a.wav", "frame": "f.jpg", "transcript": None,
              "transcript_status": "empty", "language": "en-US", "asr": {"backend": "whisper"}, **fields}
    assert schema_errors([record]) == []
    assert schema_errors([{**record, "custom": {"speaker_face": {"decision": "guess"}}}])


def test_the_flow_on_side_by_side_and_voice_over(prefect_server, av_inputs, tmp_path):
    """build_dataset with whisper tiny.en: the side-by-side segments get the speaking face when VAD cuts
    them at the turns; the voice-over is dropped as speaker_off_screen (with off_screen = drop)."""
    from flows.build import build_dataset

    doc = json.loads((av_inputs / "side_by_side.turns.json").read_text())
    summary = build_dataset([str(av_inputs / "side_by_side.mp4"), str(av_inputs / "voice_over.mp4")], str(tmp_path),
                            {**WHISPER, "speaker_face": {"off_screen": "drop"}})
    assert summary["videos"]["ok"] == 2
    records = read_jsonl(tmp_path / "manifest.jsonl")
    assert records and schema_errors(records) == []
    videos = {Path(v["source"]).name: v for v in read_jsonl(tmp_path / "videos.jsonl")}
    voice_over = videos["voice_over.mp4"]
    assert voice_over["segments_kept"] == 0 and voice_over["segments_dropped"][DROP_OFF_SCREEN] >= 1
    side_records = [r for r in records if Path(r["source"]).name == "side_by_side.mp4"]
    assert side_records and all(Path(r["source"]).name == "side_by_side.mp4" for r in records)
    for record in side_records:
        entry = record["custom"]["speaker_face"]
        assert entry["decision"] in ("motion", "largest") and entry["face_track"]
        assert record["active_face"]["x"] == pytest.approx(
            min(entry["face_track"], key=lambda p: abs(p["time"] - (record["start"] + record["duration"] / 2)))["x"],
            abs=60)
        inside = [t for t in doc["turns"] if t["start"] - 0.2 <= record["start"] and record["end"] <= t["end"] + 0.2]
        if len(inside) == 1:  # a segment cut at one turn: its speaker's face
            centre = record["active_face"]["x"] + record["active_face"]["w"] / 2
            assert ("left" if centre < 360 else "right") == inside[0]["speaker_side"]
