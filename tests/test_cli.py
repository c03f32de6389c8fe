"""Bad input gets one clear line and exit code 2; a run ends with a summary."""
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from modalink.cli import main

from conftest import ROOT


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "modalink.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


@pytest.mark.parametrize("args, message", [
    (["build", "/no/such/video.mp4", "--out", "{tmp}/d"], "no such file or folder: /no/such/video.mp4"),
    (["build", "{media}/av_grid_bbaf2n.mpg", "--out", "{media}/av_grid_bbaf2n.mpg/d"], "cannot write to"),
    (["build", "{media}/av_grid_bbaf2n.mpg", "--out", "{tmp}/d", "--asr", "nope"], "asr.backend must be one of ['google', 'whisper'], got 'nope'"),
    (["build", "{media}/av_grid_bbaf2n.mpg", "--out", "{tmp}/d", "--set", "faces.fsp=2"], "did you mean 'fps'"),
    (["build", "{media}/av_grid_bbaf2n.mpg", "--out", "{tmp}/d", "--config", "{tmp}/none.toml"], "config file not found"),
    (["build", "{media}/av_grid_bbaf2n.mpg", "--out", "{tmp}/d", "--asr", "whisper", "--asr-model", "tiny.en"],
     "English-only"),
])
def test_bad_input_is_one_line(args, message, media, tmp_path):
    result = run_cli(*(a.format(tmp=tmp_path, media=media) for a in args))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert message in lines[-1] and "Traceback" not in result.stderr
    assert len([line for line in lines if line.startswith("modalink: error")]) == 1 or "usage:" in result.stderr


def test_build_prints_a_summary_and_reports_failed_videos(prefect_server, media, media_server, tmp_path, capsys):
    code = main(["build", str(media / "av_grid_lwbsza.mpg"), f"{media_server.url}/no-video.html",
                 "--out", str(tmp_path / "d"), "--asr", "whisper", "--language", "en-US"])
    err = capsys.readouterr().err
    assert code == 3  # finished, but a source failed
    assert "videos:          1 ok, 1 failed" in err and "Unsupported URL" in err
    assert "segments kept:   1" in err and "wall time:" in err


def test_validate_checks_records_and_files(tmp_path):
    good = {"segment_id": "v-0_0", "video_id": "v", "source": "v.mp4", "start": 0.0, "end": 1.0, "duration": 1.0,
            "video_clip": "c.mp4", "audio_clip": "a.wav", "frame": "f.jpg",
            "active_face": {"x": 1, "y": 1, "w": 5, "h": 5, "confidence": 0.9}, "transcript": "hi",
            "transcript_status": "ok", "language": "en", "asr": {"backend": "whisper"}}
    for name in ("c.mp4", "a.wav", "f.jpg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "manifest.jsonl").write_text(json.dumps(good) + "\n" + json.dumps({**good, "segment_id": "v-0_1", "end": -1}) + "\n")
    result = run_cli("validate", str(tmp_path))
    assert result.returncode == 3 and '"problems": 1' in result.stdout and "v-0_1" in result.stderr
    (tmp_path / "f.jpg").unlink()
    assert '"problems": 3' in run_cli("validate", str(tmp_path)).stdout


@pytest.mark.parametrize("manifest, code, stdout", [
    (None, 2, ""),  # bad input: one line on stderr
    ("", 0, '{"segments": 0, "problems": 0}'),  # printed to a buffered stdout just before the exit
])
def test_the_command_keeps_mains_exit_code_output_and_exit_functions(manifest, code, stdout, tmp_path):
    """`modalink.cli.command` leaves out the interpreter's teardown, and nothing else."""
    if manifest is not None:
        (tmp_path / "manifest.jsonl").write_text(manifest)
    script = ("import atexit, sys; atexit.register(lambda: sys.stderr.write('exit functions ran\\n')); "
              "from modalink.cli import command; command(['validate', sys.argv[1]])")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout a buffered pipe
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                            env=env, timeout=120)
    assert result.returncode == code, result.stderr
    assert result.stdout.strip() == stdout and result.stderr.endswith("exit functions ran\n")


def test_a_run_without_a_prefect_server_starts_its_own_and_stops_it(media, tmp_path):
    """No PREFECT_API_URL: the CLI starts a temporary server while its models load, and stops it; a
    re-run with nothing to do stops it at once."""
    command, env = build_without_prefect_server(media, tmp_path)
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "segments kept:   1" in result.stderr
    with sqlite3.connect(tmp_path / "prefect-home" / "prefect.db") as db:  # the flow runs were recorded by that server
        flow_runs = dict(db.execute("select name, state_type from flow_run").fetchall())
        task_runs = db.execute("select state_type from task_run").fetchall()
    assert len(flow_runs) == 2 and set(flow_runs.values()) == {"COMPLETED"}
    # the task runs were not (no task run recorder): only the video subflow's own, created through the API
    assert task_runs == [("COMPLETED",)]
    assert "telemetry" not in result.stderr and "View at" not in result.stderr  # offline, and no UI to link to
    assert temporary_servers(env["PREFECT_HOME"]) == []

    # The same command again has nothing to do: it says so, and its server is stopped unused.
    again = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert again.returncode == 0 and "segments kept:   1" in again.stderr and "up to date:" in again.stderr
    with sqlite3.connect(tmp_path / "prefect-home" / "prefect.db") as db:
        assert db.execute("select count(*) from flow_run").fetchone() == (2,)
    assert temporary_servers(env["PREFECT_HOME"]) == []


GRID_CLIPS = ["av_grid_bbaf2n.mpg", "av_grid_lwbsza.mpg", "av_grid_swiz3n.mpg"]


def build_without_prefect_server(media, tmp_path, clips: int = 1) -> tuple[list[str], dict[str, str]]:
    """`modalink build` of the first `clips` GRID clips, and an environment with no PREFECT_API_URL."""
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    return [sys.executable, "-m", "modalink.cli", "build", *(str(media / name) for name in GRID_CLIPS[:clips]),
            "--out", str(tmp_path / "d"), "--asr", "whisper", "--asr-model", "tiny.en", "--language", "en-US"], env


def temporary_servers(prefect_home: str) -> list:
    """The temporary Prefect server processes running with this PREFECT_HOME."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if "modalink.prefect_server:create_app" in " ".join(process.info["cmdline"] or []) \
                    and process.environ().get("PREFECT_HOME") == prefect_home:
                found.append(process)
        except psutil.Error:
            pass
    return found


@pytest.mark.parametrize("signal_name, to_process_group", [
    ("SIGTERM", False),  # `kill`
    ("SIGTERM", True),  # `timeout`: the run, its temporary server and its ffmpeg children all get it
    ("SIGINT", True),  # Ctrl-C in a terminal: the same
])
def test_a_signal_during_the_run_ends_it_and_its_temporary_server(signal_name, to_process_group, media, tmp_path):
    """Exit 130 within seconds, the flow runs recorded as crashed, the temporary server stopped. A
    signal to the whole process group must not stop the server before the run has unwound: on a long
    video the task threads then waited minutes on API retries, and the runs stayed "running"."""
    import signal
    import threading

    # Three videos, one after the other: the signal comes during the first one's face step and finds the
    # run busy, even on a slow machine (one GRID clip leaves about a second after that point)
    command, env = build_without_prefect_server(media, tmp_path, clips=3)
    # As a shell starts a command in the foreground: with SIGINT handled, even where this test runs as
    # a background job (which ignores SIGINT, and so would its children)
    run = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env, start_new_session=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: list[str] = []
    faces_submitted = threading.Event()

    def read_stderr() -> None:
        for line in run.stderr:
            lines.append(line)
            if "pieces after speaker split" in line:  # the face step's task threads start now
                faces_submitted.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    assert faces_submitted.wait(timeout=120), "".join(lines)[-2000:]
    sig = getattr(signal, signal_name)
    os.killpg(run.pid, sig) if to_process_group else run.send_signal(sig)
    run.wait(timeout=30)
    reader.join(timeout=10)
    stderr = "".join(lines)
    assert run.returncode == 130 and "interrupted; run the same command again to resume" in stderr, stderr[-2000:]
    assert "segments kept" not in stderr
    assert temporary_servers(env["PREFECT_HOME"]) == []
    with sqlite3.connect(tmp_path / "prefect-home" / "prefect.db") as db:
        flow_run_states = [state for state, in db.execute("select state_type from flow_run")]
    # the run and the video it was in crashed; a video finished before the signal may stay completed
    assert flow_run_states.count("CRASHED") >= 2 and set(flow_run_states) <= {"CRASHED", "COMPLETED"}, flow_run_states


def test_a_killed_run_leaves_no_temporary_server(media, tmp_path):
    """SIGKILL gives the run no chance to stop its server (which has a session of its own): the server
    notices that its run is gone and stops itself."""
    import signal
    import time

    import psutil

    command, env = build_without_prefect_server(media, tmp_path)
    run = subprocess.Popen(command, stderr=subprocess.DEVNULL, cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while not temporary_servers(env["PREFECT_HOME"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    servers = temporary_servers(env["PREFECT_HOME"])
    assert servers, "no temporary server was started"
    run.send_signal(signal.SIGKILL)
    run.wait()
    _, alive = psutil.wait_procs(servers, timeout=15)
    assert alive == []


def serve_once(middleware, body_parts: list[bytes]) -> list[dict]:
    """What a client sent `body_parts` (one ASGI message each) receives through `middleware`."""
    import asyncio

    incoming = [{"type": "http.request", "body": part, "more_body": n < len(body_parts) - 1}
                for n, part in enumerate(body_parts)]
    sent = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(middleware({"type": "http"}, receive, send))
    return sent


def answering(statuses: list[int], headers=(), raise_after_5xx: bool = False):
    """An ASGI app answering each call with the next of `statuses` (the last one for ever) and
    keeping the request body it read each time; with `raise_after_5xx`, it raises after a 5xx
    answer, as Starlette's error middleware does after its handler answered."""
    bodies = []

    async def app(scope, receive, send):
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        bodies.append(body)
        status = statuses[min(len(bodies), len(statuses)) - 1]
        await send({"type": "http.response.start", "status": status, "headers": list(headers)})
        await send({"type": "http.response.body", "body": str(status).encode()})
        if raise_after_5xx and status >= 500:
            raise RuntimeError("database is locked")

    return app, bodies


@pytest.mark.parametrize("raise_after_5xx", [False, True])
def test_a_request_refused_while_sqlite_is_busy_is_run_again_in_the_server(raise_after_5xx):
    """Two 503s (SQLite busy) then the answer: the client gets the answer, and each run of the
    request read the whole body the client sent."""
    from modalink.prefect_server import BusyRetries

    app, bodies = answering([503, 503, 201], raise_after_5xx=raise_after_5xx)
    sent = serve_once(BusyRetries(app, every_s=0.01), [b'{"name": ', b'"task"}'])
    assert bodies == [b'{"name": "task"}'] * 3
    assert sent[0]["status"] == 201 and sent[1]["body"] == b"201" and len(sent) == 2
    assert b"retry-after" not in dict(sent[0]["headers"])


@pytest.mark.parametrize("headers, retry_after", [
    ([], b"0.1"),  # the client's next try soon, not after Prefect's default 2 s
    ([(b"retry-after", b"5")], b"5"),  # the server's own answer is kept
])
def test_a_server_still_busy_after_the_retries_answers_503_with_retry_after(headers, retry_after):
    from modalink.prefect_server import BusyRetries

    app, bodies = answering([503], headers)
    sent = serve_once(BusyRetries(app, every_s=0.01, for_s=0.2), [b"{}"])
    assert sent[0]["status"] == 503 and dict(sent[0]["headers"])[b"retry-after"] == retry_after
    assert 3 <= len(bodies) <= 21  # run again every 0.01 s for 0.2 s, then given up


def test_an_exception_with_no_whole_answer_still_reaches_the_server():
    from modalink.prefect_server import BusyRetries

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("broken mid-answer")

    with pytest.raises(RuntimeError, match="broken mid-answer"):
        serve_once(BusyRetries(app), [b"{}"])


BURST_OF_WRITES = """
import asyncio, httpx, sys
from prefect.server.api.server import create_app
from modalink.prefect_server import BusyRetries

async def main():
    app = create_app()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=BusyRetries(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://server") as client:
            flow = (await client.post("/api/flows/", json={"name": "burst"})).json()["id"]
            run = (await client.post("/api/flow_runs/", json={"flow_id": flow})).json()["id"]
            tasks = [client.post("/api/task_runs/", json={"flow_run_id": run, "task_key": "t",
                                                          "dynamic_key": str(n)}) for n in range(60)]
            print(sorted({answer.status_code for answer in await asyncio.gather(*tasks)}))

asyncio.run(main())
"""


def test_a_burst_of_task_runs_created_at_once_all_succeed_on_prefects_sqlite_server(tmp_path):
    """60 task runs created at the same moment on Prefect's own server app over SQLite (where
    some writes are refused as busy): every one is created."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "0"}
    env.pop("PREFECT_API_URL", None)
    result = subprocess.run([sys.executable, "-c", BURST_OF_WRITES], capture_output=True, text=True, cwd=ROOT,
                            env=env, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[201]", result.stdout + result.stderr[-2000:]


@pytest.mark.parametrize("status", [200, 500])
def test_other_answers_pass_through_once(status):
    from modalink.prefect_server import BusyRetries

    app, bodies = answering([status])
    sent = serve_once(BusyRetries(app, every_s=0.01), [b"{}"])
    assert len(bodies) == 1 and sent[0]["status"] == status and b"retry-after" not in dict(sent[0]["headers"])


def test_the_temporary_server_records_no_task_runs_unless_the_environment_asks():
    from modalink.prefect_server import server_environment

    recorder = "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED"
    assert server_environment({"PATH": "/bin"})[recorder] == "false"
    assert server_environment({recorder: "true"})[recorder] == "true"
    assert server_environment({"PREFECT_UI_ENABLED": "1"})["PREFECT_UI_ENABLED"] == "0"  # never a UI


def test_the_temporary_servers_output_goes_to_its_log_file(tmp_path, monkeypatch, capfd):
    """A server that cannot start is given up, and what it said is in PREFECT_HOME/modalink-server.log,
    not on the run's console."""
    from modalink.prefect_server import TemporaryServer

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PREFECT_SERVER_DATABASE_CONNECTION_URL", f"sqlite+aiosqlite:///{tmp_path}/missing/dir/prefect.db")
    server = TemporaryServer()
    server.start()
    try:
        assert server.wait_ready(60) is False
    finally:
        server.stop()
    assert server.log_path == tmp_path / "home" / "modalink-server.log"
    assert "unable to open database file" in server.log_path.read_text()
    assert "unable to open database file" not in capfd.readouterr().err


@pytest.mark.parametrize("layout, out, expected", [
    ([], "new-dataset", True),  # nothing there yet
    ([".modalink/cache/"], "d", True),  # the folder, but no cached step
    ([".modalink/cache/5f3a"], "d", False),  # a re-run: TensorFlow may never be needed
    ([], "s3://bucket/prefix", False),  # a remote dataset may hold another machine's cache
])
def test_models_preload_before_the_server_is_up_only_for_a_new_dataset(tmp_path, layout, out, expected):
    from modalink.result_storage import holds_no_cached_steps
    from modalink.storage import open_storage

    for entry in layout:
        path = tmp_path / out / entry
        path.mkdir(parents=True) if entry.endswith("/") else (path.parent.mkdir(parents=True), path.write_bytes(b"x"))
    assert holds_no_cached_steps(open_storage(out if "://" in out else str(tmp_path / out))) is expected
