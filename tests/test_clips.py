from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from modalink.config import AudioConfig, ClipConfig, FaceConfig
from modalink.records import Segment, segment_files
from tasks.acquire import local_video
from tasks.clips import write_clip, write_frame
from tasks.faces import detect_faces_in_segments
from tasks.faces_decoding import decode_frames_at
from tasks.probe import probe


def frame_by_the_face_step(source: Path, start: float, end: float, out: Path) -> Path:
    video = local_video(source)
    segment = Segment(video.video_id, 0, 0, start, end)
    [result] = detect_faces_in_segments(video, probe(video.path), [segment], FaceConfig(), str(out))
    assert result.active is not None, "the face step writes frames of segments with a face only"
    return out / segment_files(segment).frame


def frame_by_ffmpeg(source: Path, start: float, end: float, out: Path) -> Path:
    write_frame(str(source), Segment("v", 0, 0, start, end).midpoint, out / "frame.jpg", FaceConfig().jpeg_quality)
    return out / "frame.jpg"


@pytest.mark.parametrize("writer, name, start, end", [
    (frame_by_the_face_step, "face_nospeech_liveportrait_d18.mp4", 1.0, 4.0),
    (frame_by_the_face_step, "av_grid_bbaf2n.mpg", 0.4, 2.6),  # MPEG-1 with B-frames
    (frame_by_ffmpeg, "face_nospeech_liveportrait_d18.mp4", 1.0, 4.0),
    (frame_by_ffmpeg, "av_grid_bbaf2n.mpg", 0.4, 2.6),
    (frame_by_ffmpeg, "noface_music_bigbuckbunny_0_30.webm", 3.3, 9.1),
])
def test_the_frame_is_the_one_at_the_segment_midpoint(media, tmp_path, writer, name, start, end):
    frame = writer(media / name, start, end, tmp_path)
    assert not list(tmp_path.rglob("*.partial*"))
    with Image.open(frame) as image:
        assert image.format == "JPEG"
        jpeg = np.asarray(image.convert("RGB"), dtype=float)
    middle = start + (end - start) / 2
    times = [round(middle + offset, 3) for offset in (-0.5, -0.2, 0.0, 0.2, 0.5)]
    source = {times[k]: rgb for k, rgb in decode_frames_at(str(media / name), times, jpeg.shape[1::-1])}
    difference = {t: np.abs(rgb.astype(float) - jpeg).mean() for t, rgb in source.items()}
    assert min(difference, key=difference.get) == times[2], difference
    assert difference[times[2]] < 2.0, difference  # the same picture, not only the nearest one


def test_the_face_step_writes_no_frame_for_a_segment_without_a_face(media, tmp_path):
    video = local_video(media / "noface_speech_autoeditor_example.mp4")
    [result] = detect_faces_in_segments(video, probe(video.path), [Segment(video.video_id, 0, 0, 2.0, 5.0)],
                                        FaceConfig(max_frames=2), str(tmp_path))
    assert result.active is None and not list(tmp_path.rglob("*.jpg"))


@pytest.mark.parametrize("quality", [2, 10, 31])
def test_the_face_steps_jpeg_matches_ffmpegs_at_each_quality(media, tmp_path, quality):
    """`faces.jpeg_quality` means ffmpeg's -q:v for both writers: files of about the same size."""
    from tasks.faces_decoding import encode_jpeg, frames_at

    name, at = "face_nospeech_liveportrait_d18.mp4", 2.0
    [(_, frame)] = frames_at(str(media / name), [at])
    ours = encode_jpeg(frame, quality)
    write_frame(str(media / name), at, tmp_path / "frame.jpg", quality)
    ffmpegs = (tmp_path / "frame.jpg").read_bytes()
    assert ours[:2] == b"\xff\xd8" and abs(len(ours) / len(ffmpegs) - 1) < 0.05, (len(ours), len(ffmpegs))


@pytest.mark.parametrize("aac_coder", ["fast", "twoloop", ""])
def test_clip_streams_last_the_segment_with_each_aac_coder(media, tmp_path, aac_coder):
    from modalink.ffmpeg_tools import ffprobe_json

    start, end = 0.4, 2.6
    config = ClipConfig(aac_coder=aac_coder)
    write_clip(str(media / "av_grid_bbaf2n.mpg"), start, end, tmp_path / "clip.mp4", config)
    streams = {s["codec_type"]: s for s in ffprobe_json(str(tmp_path / "clip.mp4"))["streams"]}
    assert (streams["video"]["codec_name"], streams["audio"]["codec_name"]) == ("h264", "aac")
    for kind in ("video", "audio"):
        assert abs(float(streams[kind]["duration"]) - (end - start)) < 0.05, (kind, streams[kind]["duration"])


def test_the_media_step_takes_the_frame_only_when_the_face_step_left_none(media, tmp_path):
    """A face-step result from a cache (S3 result storage, another machine) comes without the file."""
    from tasks.audio import extract_audio
    from tasks.clips import write_segment_media

    video = local_video(media / "av_grid_bbaf2n.mpg")
    wav = extract_audio(video.path, str(tmp_path / "audio.wav"), AudioConfig()).path
    segment = Segment(video.video_id, 0, 0, 0.4, 2.6)
    written = write_segment_media(video, segment, wav, str(tmp_path), ClipConfig())
    frame = tmp_path / written.frame
    assert frame.read_bytes()[:2] == b"\xff\xd8"
    frame.write_bytes(b"written by the face step")
    write_segment_media(video, segment, wav, str(tmp_path), ClipConfig())
    assert frame.read_bytes() == b"written by the face step"
