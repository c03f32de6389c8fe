"""Beyond one process: videos in parallel, segment tasks on a Dask worker and video flows on Prefect
process workers that see none of the flow's folders (each started in a mount namespace of its own,
with private tmpfs over the run's folders and HOME), with SeaweedFS as the only thing they share.
Each gives the dataset the one-process run gives."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import GRID_CLIPS, ROOT
from s3_server import ACCESS, BUCKET, SECRET, SeaweedServer, free_ports, s3_client

SOURCES = [*GRID_CLIPS, "noface_speech_autoeditor_example.mp4"]
ASR = ["--asr", "whisper", "--asr-model", "tiny.en", "--language", "en-US"]
MEDIA_FIELDS = ("video_clip", "audio_clip", "frame")
POOL = "modalink-scale-test"
can_unshare = os.geteuid() == 0 and shutil.which("unshare") is not None
needs_root = pytest.mark.skipif(not can_unshare, reason="a worker in a mount namespace of its own needs root and unshare(1)")


def modalink(*args, env, timeout=600):
    return subprocess.run([sys.executable, "-m", "modalink.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, media):
    """The flow machine's folder: the sources, its staging folder and its caches (hidden from the workers)."""
    root = tmp_path_factory.mktemp("flow-machine")
    (root / "sources").mkdir()
    for name in SOURCES:
        shutil.copyfile(media / name, root / "sources" / name)
    return root


@pytest.fixture(scope="module")
def sources(run_dir):
    return [str(run_dir / "sources" / name) for name in SOURCES]


@pytest.fixture(scope="module")
def env(prefect_server, run_dir):
    return {**os.environ, "PREFECT_API_URL": prefect_server, "TF_CPP_MIN_LOG_LEVEL": "3",
            "MODALINK_CACHE": str(run_dir / "cache"), "MODALINK_STAGING_DIR": str(run_dir / "staging")}


@pytest.fixture(scope="module")
def reference(env, sources, run_dir):
    """The dataset of one process, one video after the other."""
    out = run_dir / "one-process"
    done = modalink("build", *sources, "--out", str(out), *ASR, "--set", "run.parallel_videos=1", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def s3(tmp_path_factory, env):
    server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs-scale")).start()
    s3_env = {**env, "MODALINK_S3_ENDPOINT_URL": server.endpoint, "AWS_ACCESS_KEY_ID": ACCESS,
              "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1"}
    yield s3_env, s3_client(server.endpoint, ACCESS, SECRET)
    server.stop()


def assert_same_dataset(reference: Path, read) -> None:
    """Same records and the same media bytes; `read(key)` gives the other dataset's file."""
    assert read("manifest.jsonl").decode() == (reference / "manifest.jsonl").read_text()
    assert read("videos.jsonl").decode() == (reference / "videos.jsonl").read_text()
    records = [json.loads(line) for line in (reference / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == len(GRID_CLIPS)
    for record in records:
        for field in MEDIA_FIELDS:
            assert read(record[field]) == (reference / record[field]).read_bytes(), record[field]


def in_own_namespace(command: list[str], hidden: list[Path], env: dict, log: Path) -> subprocess.Popen:
    """`command` in a mount namespace of its own, with an empty tmpfs over each of `hidden`: a second
    machine that shares the code and the network, not the run's folders."""
    mounts = " && ".join(f"mount -t tmpfs tmpfs {folder}" for folder in hidden)
    return subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", f'{mounts} && mkdir -p "$HOME" && exec "$@"', "sh",
                             *command], env=env, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def worker_env(s3_env: dict, run_dir: Path, name: str) -> dict:
    private = run_dir / f"worker-{name}"  # inside the hidden run folder: its own tmpfs
    return {**s3_env, "MODALINK_CACHE": str(private / "cache"), "MODALINK_STAGING_DIR": str(private / "staging"),
            "PREFECT_HOME": str(private / "prefect-home"), "HOME": str(private / "home"), "MODALINK_ROOT": str(ROOT),
            "PYTHONPATH": str(ROOT)}


def hidden(run_dir: Path) -> list[Path]:
    """What a worker must not see: the run's folder (sources, staging, caches) and the user's caches
    (its HOME is a folder of its own; the real HOME stays visible for the interpreter it holds)."""
    user_cache = Path.home() / ".cache"
    user_cache.mkdir(exist_ok=True)
    return [run_dir, user_cache]


def stop(process: subprocess.Popen) -> None:
    """SIGKILL to `process` and everything it started (a machine switched off)."""
    if process.poll() is None:
        doomed = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and process.pid in ancestors(int(p.name))]
        for pid in doomed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait()


def test_videos_in_parallel_give_the_same_dataset(env, sources, reference, run_dir):
    out = run_dir / "parallel"
    done = modalink("build", *sources, "--out", str(out), *ASR, "--set", "run.parallel_videos=2", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_dataset(reference, lambda key: (out / key).read_bytes())


def test_a_remote_dask_cluster_needs_object_storage(env, sources, run_dir):
    done = modalink("build", *sources[:1], "--out", str(run_dir / "local"), *ASR, "--runner", "dask",
                    "--dask-address", "tcp://127.0.0.1:9", env=env)
    assert done.returncode == 2
    assert "share only object storage" in done.stderr.strip().splitlines()[-1]


@needs_root
def test_segment_tasks_on_a_dask_worker_that_sees_none_of_the_flows_folders(s3, sources, reference, run_dir):
    s3_env, client = s3
    port, = free_ports(1)
    address = f"tcp://127.0.0.1:{port}"
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                  "--port", str(port), "--dashboard-address", ":0"], env=s3_env, cwd=ROOT,
                                 stdout=(run_dir / "scheduler.log").open("w"), stderr=subprocess.STDOUT,
                                 start_new_session=True)
    wenv = worker_env(s3_env, run_dir, "dask")
    worker = in_own_namespace([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "2",
                               "--nthreads", "1", "--no-dashboard"], hidden(run_dir), wenv,
                              run_dir / "dask-worker.log")
    try:
        from distributed import Client

        with Client(address, timeout=60) as dask:
            dask.wait_for_workers(2, timeout=120)
            assert not any(dask.run(os.path.exists, sources[0]).values())  # the worker cannot see the sources
            done = modalink("build", *sources, "--out", f"s3://{BUCKET}/dask", *ASR, "--runner", "dask",
                            "--dask-address", address, env=s3_env)
            assert done.returncode == 0, done.stderr[-3000:]
            fetched = dask.run(lambda: sorted(p.name for p in (Path(os.environ["MODALINK_CACHE"]) / "shared").rglob("*")
                                              if p.is_file()))
        assert all("audio.wav" in names for names in fetched.values())  # inputs came from the bucket
        assert_same_dataset(reference, lambda key: client.get_object(Bucket=BUCKET, Key=f"dask/{key}")["Body"].read())
    finally:
        stop(worker)
        stop(scheduler)


def prefect(*args, env, timeout=300):
    done = subprocess.run([sys.executable, "-m", "prefect", *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def running_flow_pids(prefect_api: str) -> list[int]:
    """The process ids of the video flow runs now running (a process worker's `hostname:pid`)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))))
    return [int(run.infrastructure_pid.rsplit(":", 1)[-1]) for run in runs
            if run.infrastructure_pid and run.name.startswith("video ")]


def ancestors(pid: int) -> set[int]:
    """`pid` and the processes above it."""
    found = set()
    while pid > 1 and pid not in found:
        found.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return found


@needs_root
def test_two_process_workers_share_a_playlist_and_one_killed_mid_video_loses_nothing(s3, sources, reference, run_dir):
    s3_env, client = s3
    prefect("work-pool", "create", POOL, "--type", "process", "--overwrite", env=s3_env)
    prefect("--no-prompt", "deploy", "--name", "video-worker", "--pool", POOL, env=s3_env)
    workers = []
    for name in ("a", "b"):
        wenv = worker_env(s3_env, run_dir, name)
        workers.append(in_own_namespace([sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL,
                                         "--type", "process", "--limit", "1"], hidden(run_dir), wenv,
                                        run_dir / f"worker-{name}.log"))
    parent = subprocess.Popen([sys.executable, "-m", "modalink.cli", "build", *sources, "--out", f"s3://{BUCKET}/pool",
                               *ASR, "--set", "run.fan_out=modalink-video-worker/video-worker",
                               "--set", "run.lease_timeout_s=20"], env=s3_env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        killed = None
        deadline = time.time() + 300
        while killed is None:  # the first worker seen running a video dies with it
            assert parent.poll() is None and time.time() < deadline, "no video flow ran on a worker"
            for pid in running_flow_pids(s3_env["PREFECT_API_URL"]):
                if killed := next((w for w in workers if w.pid in ancestors(pid)), None):
                    break
            time.sleep(0.5)
        stop(killed)
        output, _ = parent.communicate(timeout=900)
        assert parent.returncode == 0, output[-4000:]
        assert "its worker was lost; submitted again" in output, [l for l in output.splitlines() if "WARN" in l or "ERROR" in l]
        assert_same_dataset(reference, lambda key: client.get_object(Bucket=BUCKET, Key=f"pool/{key}")["Body"].read())
        summary = json.loads(client.get_object(Bucket=BUCKET, Key="pool/run_summary.json")["Body"].read())
        assert summary["videos"]["ok"] == len(SOURCES) and summary["videos"]["failed"] == 0
    finally:
        if parent.poll() is None:
            parent.kill()
        for worker in workers:
            stop(worker)
