import numpy as np
import pytest
from PIL import Image

from modalink.config import ClipConfig
from tasks.clips import write_clip_and_frame
from tasks.faces import decode_frames_at


@pytest.mark.parametrize("name, start, end", [
    ("face_nospeech_liveportrait_d18.mp4", 1.0, 4.0),
    ("av_grid_bbaf2n.mpg", 0.4, 2.6),
    ("noface_music_bigbuckbunny_0_30.webm", 3.3, 9.1),
])
def test_the_frame_is_the_one_at_the_segment_midpoint(media, tmp_path, name, start, end):
    write_clip_and_frame(str(media / name), start, end, tmp_path / "clip.mp4", tmp_path / "frame.jpg", ClipConfig())
    assert (tmp_path / "clip.mp4").stat().st_size > 0 and not list(tmp_path.glob("*.partial*"))
    with Image.open(tmp_path / "frame.jpg") as image:
        jpeg = np.asarray(image.convert("RGB"), dtype=float)
    middle = start + (end - start) / 2
    times = [round(middle + offset, 3) for offset in (-0.5, -0.2, 0.0, 0.2, 0.5)]
    source = {times[k]: rgb for k, rgb in decode_frames_at(str(media / name), times, jpeg.shape[1::-1])}
    difference = {t: np.abs(rgb.astype(float) - jpeg).mean() for t, rgb in source.items()}
    assert min(difference, key=difference.get) == times[2], difference


@pytest.mark.parametrize("aac_coder", ["fast", "twoloop", ""])
def test_clip_streams_last_the_segment_with_each_aac_coder(media, tmp_path, aac_coder):
    from modalink.ffmpeg_tools import ffprobe_json

    start, end = 0.4, 2.6
    config = ClipConfig(aac_coder=aac_coder)
    write_clip_and_frame(str(media / "av_grid_bbaf2n.mpg"), start, end, tmp_path / "clip.mp4", tmp_path / "frame.jpg", config)
    streams = {s["codec_type"]: s for s in ffprobe_json(str(tmp_path / "clip.mp4"))["streams"]}
    assert (streams["video"]["codec_name"], streams["audio"]["codec_name"]) == ("h264", "aac")
    for kind in ("video", "audio"):
        assert abs(float(streams[kind]["duration"]) - (end - start)) < 0.05, (kind, streams[kind]["duration"])
