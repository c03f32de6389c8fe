"""A run killed with SIGKILL at any moment, from the first download to the manifest's publication,
and started again gives the dataset an uninterrupted run gives.

The moments are drawn by `random.Random(SEED)`: one in each fifth of the span between the first
file in downloads/ and manifest.jsonl, as the uninterrupted run took it; two more are watched for:
the download's first file, and publication under way (videos.jsonl there, manifest.jsonl not yet).
The inputs: a GRID clip downloaded by URL (yt-dlp, from the local media server) and two local ones.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import ROOT
from dataset_files import MEDIA_FIELDS, differences, manifest_records, missing_media, published_files, stray_files

SEED = int(os.environ.get("MODALINK_KILL_SEED", "19"))
LOCAL_CLIPS, URL_CLIP = ("av_grid_bbaf2n.mpg", "av_grid_lwbsza.mpg"), "av_grid_swiz3n.mpg"


@dataclass(frozen=True)
class KillPoint:
    name: str
    fraction: float | None  # of the reference span after the first download; None: at publication


def kill_points(seed: int, count: int = 5) -> list[KillPoint]:
    rng = random.Random(seed)
    drawn = [rng.uniform(k / count, (k + 1) / count) for k in range(count)]
    return [KillPoint("first download file", 0.0), *(KillPoint(f"{f:.0%} of the way", f) for f in drawn),
            KillPoint("publication under way", None)]


def build_command(sources: list[str], out: Path) -> list[str]:
    return [sys.executable, "-m", "modalink.cli", "build", *sources, "--out", str(out),
            "--asr", "whisper", "--language", "en-US"]


def download_begun(out: Path) -> bool:
    folder = out / "downloads"
    return folder.is_dir() and next(folder.iterdir(), None) is not None


def publishing(out: Path) -> bool:
    """videos.jsonl is published before manifest.jsonl, the last export."""
    return (out / "videos.jsonl").exists()


def check_nothing_half_published(out: Path) -> None:
    """A manifest, if there is one, names only files that are there."""
    manifest = out / "manifest.jsonl"
    records = manifest_records(manifest.read_text() if manifest.exists() else None)
    assert not missing_media(records, lambda key: (out / key).is_file())


@pytest.fixture(scope="module")
def environment(prefect_server):
    return {**os.environ, "PREFECT_API_URL": prefect_server, "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture(scope="module")
def sources(media, media_server):
    return [f"{media_server.url}/{URL_CLIP}", *(str(media / name) for name in LOCAL_CLIPS)]


@pytest.fixture(scope="module")
def reference(environment, sources, tmp_path_factory):
    """The uninterrupted run's dataset, and the seconds from its first download file to its manifest."""
    out = tmp_path_factory.mktemp("uninterrupted")
    log = out.parent / f"{out.name}.log"
    with log.open("w") as stderr:
        run = subprocess.Popen(build_command(sources, out), env=environment, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=stderr)
        first_download = None
        while run.poll() is None and not (out / "manifest.jsonl").exists():
            if first_download is None and download_begun(out):
                first_download = time.monotonic()
            time.sleep(0.01)
        published = time.monotonic()
        run.wait(timeout=600)
    assert run.returncode == 0, log.read_text()[-3000:]
    assert first_download is not None, "the reference run downloaded nothing"
    return out, published - first_download


def kill_at(point: KillPoint, span: float, command: list[str], environment: dict, out: Path) -> None:
    """Start the run and SIGKILL it and its children (ffmpeg, yt-dlp's) at `point`."""
    run = subprocess.Popen(command, env=environment, cwd=ROOT, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first_download = None
    deadline = time.monotonic() + 300
    while True:
        assert run.poll() is None and time.monotonic() < deadline, f"{point.name}: the run ended before it was killed"
        now = time.monotonic()
        if first_download is None and download_begun(out):
            first_download = now
        if first_download is not None and (publishing(out) or (
                point.fraction is not None and now - first_download >= point.fraction * span)):
            break
        time.sleep(0.005)
    os.killpg(run.pid, signal.SIGKILL)  # no chance to clean up
    run.wait()


def test_a_run_killed_at_seeded_moments_resumes_to_the_same_dataset(environment, sources, reference, tmp_path):
    uninterrupted, span = reference
    expected = published_files(uninterrupted)
    records = manifest_records((uninterrupted / "manifest.jsonl").read_text())
    assert len(records) == 3 and all(f"{r[f]}" in expected for r in records for f in MEDIA_FIELDS)
    for number, point in enumerate(kill_points(SEED)):
        where = f"seed {SEED}, kill {number} ({point.name})"
        out = tmp_path / f"kill-{number}"
        command = build_command(sources, out)
        kill_at(point, span, command, environment, out)
        check_nothing_half_published(out)

        again = subprocess.run(command, env=environment, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, f"{where}: {again.stderr[-3000:]}"
        assert differences(out, expected) == [], f"{where}: these differ from the uninterrupted run's"
        assert stray_files(out) == [], where
        segment_ids = [r["segment_id"] for r in manifest_records((out / "manifest.jsonl").read_text())]
        assert len(segment_ids) == len(set(segment_ids)) == 3, where
        check = subprocess.run([sys.executable, "-m", "modalink.cli", "validate", str(out)], cwd=ROOT,
                               capture_output=True, text=True)
        assert check.returncode == 0 and json.loads(check.stdout)["problems"] == 0, f"{where}: {check.stderr}"
