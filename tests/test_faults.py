"""Faults a run meets besides being killed (tests/test_resume.py): the S3 server stopped mid-run
and started again, the staging folder's disk full, the transcription service failing or hanging.
Each time nothing is lost, nothing is half-published, and the next run finishes the job."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows.build import build_dataset
from modalink.cli import main
from modalink.config import AcquireConfig
from modalink.storage import no_space_left
from tasks.acquire import download

from conftest import GRID_CLIPS, ROOT
from dataset_files import differences, manifest_records, missing_media, published_files, stray_files
from s3_server import BUCKET, SeaweedServer, s3_client, s3_environment

CLIPS = list(GRID_CLIPS)[:2]
WHISPER = ["--asr", "whisper", "--language", "en-US"]


def build_args(media: Path, out: str, *extra: str) -> list[str]:
    return ["build", *(str(media / name) for name in CLIPS), "--out", out, *WHISPER, *extra]


@pytest.fixture(scope="module")
def reference(prefect_server, media, tmp_path_factory) -> dict[str, bytes]:
    """The published files of an uninterrupted run on a disk with room."""
    out = tmp_path_factory.mktemp("reference")
    assert main(build_args(media, str(out))) == 0
    return published_files(out)


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs")).start()
    yield server
    server.stop()


def bucket_files(client, prefix: str) -> dict[str, bytes]:
    """The published files under `prefix`, as `published_files` gives them for a folder."""
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/"):
        for item in page.get("Contents", []):
            key = item["Key"][len(prefix) + 1:]
            found[key] = client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
    return found


def same_as_reference(found: dict[str, bytes], reference: dict[str, bytes]) -> list[str]:
    """The reference's files that `found` lacks or holds with other bytes."""
    return sorted(key for key, content in reference.items() if found.get(key) != content)


def nothing_half_published(client, prefix: str) -> None:
    """A manifest in the bucket, if there is one, names only objects that are there; no temporary key is left."""
    keys = {item["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/")
            for item in page.get("Contents", [])}
    manifest = f"{prefix}/manifest.jsonl"
    text = client.get_object(Bucket=BUCKET, Key=manifest)["Body"].read().decode() if manifest in keys else None
    assert not missing_media(manifest_records(text), lambda key: f"{prefix}/{key}" in keys)
    assert not any("/.partial/" in key for key in keys)


def test_s3_server_stopped_mid_run_and_started_again(prefect_server, s3, media, reference, tmp_path):
    """The server stops once the first cached step is in the bucket and comes back a few seconds
    later, while the run retries its writes: the run rides it out or stops with one line, with
    nothing half-published; the same command then ends with the uninterrupted run's dataset."""
    client, prefix = s3_client(s3.endpoint), "outage"
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "TF_CPP_MIN_LOG_LEVEL": "3",
           **s3_environment(s3.endpoint, tmp_path / "staging")}
    command = [sys.executable, "-m", "modalink.cli", *build_args(media, f"s3://{BUCKET}/{prefix}"),
               "--set", "run.retries=4", "--set", "run.retry_delay_s=1"]
    log = tmp_path / "run.log"
    with log.open("w") as output:
        run = subprocess.Popen(command, env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while not client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/.modalink/cache/").get("KeyCount"):
            assert run.poll() is None and time.time() < deadline, "the run ended before writing to the bucket"
            time.sleep(0.1)
        s3.stop()
        time.sleep(3)
        s3.start()
        run.wait(timeout=600)
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    if run.returncode != 0:  # it stopped: one line that says what to do
        last = text.strip().splitlines()[-1]
        assert run.returncode == 1 and last.startswith("modalink: error: could not publish the dataset"), text[-3000:]
        assert "run the same command again" in last
    nothing_half_published(client, prefix)

    again = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert same_as_reference(bucket_files(client, prefix), reference) == []


class SmallDisk:
    """A folder on a tmpfs of its own, of `size`; `resize` gives it more room and keeps what it holds."""

    def __init__(self, path: Path):
        self.path = path
        path.mkdir()

    def mount(self, size: str, *options: str) -> None:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([*options, f"size={size}"]), "tmpfs",
                               str(self.path)], capture_output=True, text=True)
        assert done.returncode == 0, f"mount -t tmpfs {self.path} failed: {done.stderr.strip()}"

    def resize(self, size: str) -> None:
        self.mount(size, "remount")


@pytest.fixture()
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a full disk is made with `mount -t tmpfs`, which needs root (this project's machines and CI run as root)")
    disk = SmallDisk(tmp_path / "small-disk")
    yield disk
    subprocess.run(["umount", str(disk.path)], check=False, capture_output=True)


def check_full_disk_line(capfd, folder: Path) -> None:
    err = capfd.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"modalink: error: no space left on device in {folder}"), last
    assert "run the same command again" in last


@pytest.mark.parametrize("size, when", [("400k", "steps"), ("1000k", "publication")])
def test_full_disk_under_a_local_dataset(prefect_server, media, reference, small_disk, capfd, size, when):
    """The dataset folder (its own staging folder) fills up while the steps write their media, or
    while the records are published: one line, exit code 1, no manifest, no half-written file;
    with room again, the same command finishes the dataset."""
    small_disk.mount(size)
    out = small_disk.path / "dataset"
    assert main(build_args(media, str(out), "--set", "run.retry_delay_s=0.1")) == 1
    check_full_disk_line(capfd, out)
    clips = list((out / "video_clips").glob("*/*.mp4"))
    assert len(clips) == (2 if when == "publication" else 1)
    assert not (out / "manifest.jsonl").exists() and stray_files(out) == []

    small_disk.resize("64m")
    assert main(build_args(media, str(out))) == 0
    assert differences(out, reference) == []


def test_full_staging_disk_under_an_s3_dataset(prefect_server, s3, media, reference, small_disk, monkeypatch, capfd):
    """MODALINK_STAGING_DIR on a disk that fills up while the steps write: one line naming it,
    nothing in the bucket but cached steps; with room again, the dataset is finished."""
    small_disk.mount("400k")
    for name, value in s3_environment(s3.endpoint, small_disk.path).items():
        monkeypatch.setenv(name, value)
    client, prefix = s3_client(s3.endpoint), "full-staging"
    assert main(build_args(media, f"s3://{BUCKET}/{prefix}", "--set", "run.retry_delay_s=0.1")) == 1
    staging = next(small_disk.path.iterdir())
    check_full_disk_line(capfd, staging)
    published = bucket_files(client, prefix)
    assert published and all(key.startswith(".modalink/cache/") for key in published)
    assert stray_files(staging) == []

    small_disk.resize("64m")
    assert main(build_args(media, f"s3://{BUCKET}/{prefix}")) == 0
    assert same_as_reference(bucket_files(client, prefix), reference) == []


def test_a_download_onto_a_full_disk_is_no_space_and_resumes(media, media_server, small_disk):
    """yt-dlp's write error is the full disk's (not a failed download, retried, then a failed video);
    with room again the download resumes from its .part file to the served bytes."""
    small_disk.mount("200k")
    url, folder = f"{media_server.url}/av_grid_swiz3n.mpg", str(small_disk.path / "downloads")
    with pytest.raises(OSError) as raised:
        download(url, AcquireConfig(), folder)
    assert no_space_left(raised.value) is raised.value
    small_disk.resize("4m")
    video = download(url, AcquireConfig(), folder)
    assert Path(video.path).read_bytes() == (media / "av_grid_swiz3n.mpg").read_bytes()


def google_config(server, **asr) -> dict:
    return {"asr": {"backend": "google", "google": {"endpoint": server.endpoint, "timeout_s": 1.0}, "retries": 0,
                    **asr}}


@pytest.mark.parametrize("fault", [{"failures": 1}, {"hangs": 1, "hang_s": 3.0}], ids=["5xx", "hangs"])
def test_transcription_service_failing_is_retried_alone_by_the_next_run(prefect_server, google, media, tmp_path, fault):
    """The first request to the speech service fails (503, or no answer within the 1 s timeout): that
    segment is kept, flagged failed. The next run sends that segment's audio again, and only it; no
    other step runs again (the seconds per stage, the media files' times) and the other records stay."""
    clips, out = [str(media / name) for name in CLIPS], tmp_path / "dataset"
    google.reset(**fault)
    first = build_dataset(clips, str(out), google_config(google))
    records = manifest_records((out / "manifest.jsonl").read_text())
    failed = [r for r in records if r["transcript_status"] == "failed"]
    assert len(failed) == 1 and first["segments"]["transcription_failed"] == 1
    expected_error = "Service Unavailable" if "failures" in fault else "no answer within 1 s"
    assert expected_error in failed[0]["transcript_error"], failed[0]["transcript_error"]
    failed_request = google.requests[0]
    media_times = {path: path.stat().st_mtime_ns for folder in ("video_clips", "audio_clips", "video_frames")
                   for path in (out / folder).rglob("*") if path.is_file()}
    assert len(media_times) == 6

    google.reset()
    second = build_dataset(clips, str(out), google_config(google))
    assert [request["sha256"] for request in google.requests] == [failed_request["sha256"]]
    assert set(second["seconds_per_stage"]) <= {"transcription", "voice", "records"}, second["seconds_per_stage"]
    assert {path: path.stat().st_mtime_ns for path in media_times} == media_times
    again = manifest_records((out / "manifest.jsonl").read_text())
    fixed = next(r for r in again if r["segment_id"] == failed[0]["segment_id"])
    assert (fixed["transcript"], fixed["transcript_status"], fixed["transcript_error"]) == ("مرحبا بكم", "ok", None)
    assert [r for r in again if r is not fixed] == [r for r in records if r["segment_id"] != fixed["segment_id"]]
    assert second["segments"]["transcription_failed"] == 0
