"""Facial-expression pre-labels: fer's model on real frames, and the stage's record."""
import numpy as np
import pytest

from modalink.config import FaceConfig
from modalink.records import FaceBox, Segment
from tasks.acquire import local_video
from tasks.expressions import CLASSES, ExpressionConfig, prepare_face, score_faces, speaker_boxes
from tasks.faces import detect_faces_in_segments
from tasks.probe import probe

EXPRESSION_CLIP = "face_nospeech_liveportrait_d18.mp4"  # a neutral face that opens its mouth to an "O" at 2.2-3.1 s


def test_the_face_is_made_square_with_a_margin_and_scaled_to_minus_one_one():
    rgb = np.zeros((100, 200, 3), dtype=np.uint8)
    rgb[20:60, 50:80] = 255  # the face box, white
    face = prepare_face(rgb, FaceBox(x=50, y=20, w=30, h=40, confidence=1.0, time=0.0))
    assert face.shape == (64, 64) and face.dtype == np.float32
    assert face.max() == pytest.approx(1.0) and face.min() == pytest.approx(-1.0)
    # 40 px high + 10 px each side: the white face fills 40/60 of the height, centred
    white_rows = np.where(face.max(axis=1) > 0)[0]
    assert abs(len(white_rows) / 64 - 40 / 60) < 0.05 and abs(white_rows.mean() - 31.5) < 2


@pytest.fixture(scope="module")
def scored(media):
    video = local_video(media / EXPRESSION_CLIP)
    info = probe(video.path)
    segment = Segment(video.video_id, 0, 0, 0.0, 6.0)
    found, = detect_faces_in_segments(video, info, [segment], FaceConfig(fps=4, max_frames=24))
    expressions, = score_faces(video.path, (info.width, info.height), [speaker_boxes(found.faces, found.active)])
    return {frame.time: dict(zip(CLASSES, frame.scores)) for frame in expressions.frames}, expressions


def test_neutral_frames_read_neutral_and_the_o_mouth_reads_surprise(scored):
    by_time, _ = scored
    for t in (0.0, 0.25, 1.5, 2.0):
        assert max(by_time[t], key=by_time[t].get) == "neutral" and by_time[t]["neutral"] > 0.8, (t, by_time[t])
    for t in (2.5, 2.75):
        assert max(by_time[t], key=by_time[t].get) == "surprise" and by_time[t]["surprise"] > 0.8, (t, by_time[t])


def test_the_summary_is_the_mean_its_top_class_and_margin(scored):
    by_time, expressions = scored
    mean = np.mean([[scores[c] for c in CLASSES] for scores in by_time.values()], axis=0)
    assert np.allclose(expressions.mean, mean, atol=1e-3)
    assert expressions.top == CLASSES[int(np.argmax(mean))]
    assert expressions.margin == pytest.approx(np.sort(mean)[-1] - np.sort(mean)[-2], abs=1e-3)
    assert expressions.model.startswith("fer 25.10.3") and expressions.classes == CLASSES


def test_the_stage_needs_the_chosen_speaker_and_has_its_own_section():
    from modalink.config import Config
    from modalink.stages import get_stage

    stage = get_stage("expressions")
    assert stage.needs == ("faces", "speaker_face") and stage.per_chunk
    assert isinstance(Config().section("expressions"), ExpressionConfig)


def test_the_crops_speaker_face_took_score_as_the_frames_decoded_again(media, tmp_path, monkeypatch):
    """The stage scores the speaker's face crops that speaker_face took in its own decoding pass; without
    them it decodes the frames itself. Same frames, same faces, same scores, and with the crops nothing is
    decoded again."""
    import dataclasses

    from modalink.config import AudioConfig
    from modalink.stages import SegmentInput
    from tasks import expressions
    from tasks.audio import extract_audio
    from tasks.speaker_face import SpeakerFaceConfig, speakers_in_chunk

    video = local_video(media / EXPRESSION_CLIP)
    info = probe(video.path)
    segment = Segment(video.video_id, 0, 0, 0.0, 6.0)
    found, = detect_faces_in_segments(video, info, [segment], FaceConfig())
    soundtrack = extract_audio(video.path, str(tmp_path / "a.wav"), AudioConfig()).path
    item = SegmentInput(video, segment, info, soundtrack, "/unused", {"faces": found})
    speaker, = speakers_in_chunk([item], SpeakerFaceConfig())
    assert [t for t, _ in speaker.face_crops] == sorted(box.time for box in found.faces) and len(found.faces) == 6
    stage, options = expressions.ExpressionsStage(), ExpressionConfig()
    without = dataclasses.replace(item, results={"faces": found, "speaker_face": dataclasses.replace(speaker, face_crops=())})
    decoded, = stage.run_chunk([without], options)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")
    monkeypatch.setattr(expressions, "decode_frames_at", no_decoding)
    from_crops, = stage.run_chunk([dataclasses.replace(item, results={"faces": found, "speaker_face": speaker})], options)
    assert [f.time for f in from_crops.frames] == [f.time for f in decoded.frames]
    assert from_crops == decoded
