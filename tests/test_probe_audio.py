import wave

import pytest

from modalink.config import AudioConfig
from tasks.audio import extract_audio
from tasks.base import MediaError
from tasks.probe import probe


@pytest.mark.parametrize("name, width, height, audio_codec", [
    ("av_grid_bbaf2n.mpg", 360, 288, "mp2"),
    ("noface_music_bigbuckbunny_0_30.webm", 1280, 720, "vorbis"),
    ("face_nospeech_liveportrait_d18.mp4", 480, 480, "aac"),
])
def test_probe_reads_streams(media, name, width, height, audio_codec):
    info = probe(str(media / name))
    assert (info.width, info.height, info.audio_codec) == (width, height, audio_codec) and info.duration > 1


@pytest.mark.parametrize("name, message", [
    ("face_noaudiostream_liveportrait_d0.mp4", "has no audio stream"),
    ("en_jfk.flac", "has no video stream"),
    ("README.md", "does not decode"),
])
def test_probe_refuses_unusable_files(media, name, message):
    with pytest.raises(MediaError, match=message):
        probe(str(media / name))


def test_audio_is_16k_mono_pcm_of_the_whole_soundtrack(media, tmp_path):
    audio = extract_audio(str(media / "noface_music_bigbuckbunny_0_30.webm"), str(tmp_path / "a.wav"), AudioConfig())
    with wave.open(audio.path) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        assert abs(wav.getnframes() / 16000 - 30.0) < 0.1
    assert not audio.fallback


def damaged_copy(media, tmp_path):
    """The auto-editor MP4 with a run of bytes in its audio-bearing middle overwritten."""
    data = bytearray((media / "noface_speech_autoeditor_example.mp4").read_bytes())
    for offset in range(len(data) // 3, len(data) // 3 + 200_000, 1000):
        data[offset:offset + 200] = bytes(200)
    path = tmp_path / "damaged.mp4"
    path.write_bytes(bytes(data))
    return path


def test_damaged_audio_uses_the_tolerant_fallback(media, tmp_path):
    audio = extract_audio(str(damaged_copy(media, tmp_path)), str(tmp_path / "a.wav"), AudioConfig())
    assert audio.fallback
    assert abs(audio.duration - 42.4) < 1.0  # time kept: gaps are filled, not squeezed out


def test_without_the_fallback_damaged_audio_is_a_clear_error(media, tmp_path):
    with pytest.raises(MediaError, match="audio does not decode"):
        extract_audio(str(damaged_copy(media, tmp_path)), str(tmp_path / "a.wav"), AudioConfig(fallback=False))


@pytest.mark.parametrize("fake_ffmpeg, error, calls", [
    ("kill -9 $$", "killed by signal 9", 1),  # the OOM killer: no verdict on the audio, the task retries
    ("exit 1", "audio does not decode, even error-tolerantly", 2),  # a real decoding failure: fallback tried
])
def test_a_killed_ffmpeg_is_not_taken_for_damaged_audio(fake_ffmpeg, error, calls, media, tmp_path, monkeypatch):
    from modalink.ffmpeg_tools import find_binary

    fake = tmp_path / "ffmpeg"
    fake.write_text(f"#!/bin/sh\necho x >> {tmp_path}/calls\n{fake_ffmpeg}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("MODALINK_FFMPEG", str(fake))
    find_binary.cache_clear()
    try:
        with pytest.raises(Exception, match=error):
            extract_audio(str(media / "av_grid_bbaf2n.mpg"), str(tmp_path / "a.wav"), AudioConfig())
    finally:
        find_binary.cache_clear()
    assert len((tmp_path / "calls").read_text().split()) == calls
