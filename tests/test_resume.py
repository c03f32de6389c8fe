"""A run killed with SIGKILL in the middle and started again gives the dataset an uninterrupted run gives."""
import os
import signal
import subprocess
import sys
import time

from conftest import GRID_CLIPS, ROOT

MEDIA = [*GRID_CLIPS, "noface_speech_autoeditor_example.mp4", "face_nospeech_liveportrait_d18.mp4"]


def build_command(media, out):
    return [sys.executable, "-m", "modalink.cli", "build", *(str(media / name) for name in MEDIA), "--out", str(out),
            "--asr", "whisper", "--language", "en-US"]


def test_a_run_killed_midway_resumes_to_the_same_dataset(prefect_server, media, tmp_path):
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "TF_CPP_MIN_LOG_LEVEL": "3"}
    reference, resumed = tmp_path / "uninterrupted", tmp_path / "killed"
    subprocess.run(build_command(media, reference), env=env, cwd=ROOT, check=True, capture_output=True, timeout=600)

    run = subprocess.Popen(build_command(media, resumed), env=env, cwd=ROOT, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list((resumed / "video_clips").glob("*/*.mp4")):  # some segments are done, others are not
        assert run.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)  # the run and its ffmpeg children, with no chance to clean up
    run.wait()
    assert not (resumed / "manifest.jsonl").exists()
    cached_before_restart = len(list((resumed / ".modalink" / "cache").iterdir()))
    assert cached_before_restart > 0

    again = subprocess.run(build_command(media, resumed), env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (resumed / "manifest.jsonl").read_text() == (reference / "manifest.jsonl").read_text()
    assert (resumed / "videos.jsonl").read_text() == (reference / "videos.jsonl").read_text()
    check = subprocess.run([sys.executable, "-m", "modalink.cli", "validate", str(resumed)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
