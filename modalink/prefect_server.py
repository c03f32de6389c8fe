"""The temporary Prefect server of a run that names no PREFECT_API_URL.

Left to itself, Prefect starts this server at the first flow call, after importing its whole server
API into the calling process, and waits for it (BENCHMARKS.md has the times). `TemporaryServer` runs the
same server (Prefect's `create_app` under uvicorn, ephemeral services, no UI) as soon as the CLI
has parsed its arguments, so it comes up on the other core while Prefect and the steps are
imported and the model loads; the flow then talks to it through `temporary_settings`, as
`prefect_test_harness` does. A run against a standing server (a deployment, or PREFECT_API_URL
set) is left alone.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

PORT_IN_USE = 3  # uvicorn's exit status when it cannot bind


def offline_defaults() -> None:
    """Before Prefect is imported: no usage telemetry from a temporary server (offline, every run
    would log an error). A value the user set wins."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# A server that lives for one run and that nobody reads afterwards: no event feed to store for a UI,
# no automations to trigger, and no task runs recorded from their events (flow runs still are; the
# task runs' states, results and caches live in the run's process and in the dataset's storage).
# Recording the task runs cost the server about 7 of its 15-17 CPU seconds on the 10-minute benchmark
# input (BENCHMARKS.md).
UNUSED_SERVICES = {"PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "false",
                   "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
                   "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED": "false"}


def server_environment(environ) -> dict[str, str]:
    """The temporary server's environment: `environ` with the services of UNUSED_SERVICES off unless it
    turns them on, no UI, and the run's process id (`exit_with_run`)."""
    return {**UNUSED_SERVICES, **environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1", "MODALINK_RUN_PID": str(os.getpid())}


class TemporaryServer:
    """A Prefect API server in a child process, for one run."""

    def __init__(self) -> None:
        self.port = 0
        self.process: subprocess.Popen | None = None

    @classmethod
    def start_early(cls) -> "TemporaryServer | None":
        """Started before this process imports Prefect, unless PREFECT_API_URL is in the
        environment; `needed` then asks Prefect's own settings (profiles included)."""
        if os.environ.get("PREFECT_API_URL"):
            return None
        server = cls()
        server.start()
        return server

    @staticmethod
    def needed() -> bool:
        """No API URL in Prefect's settings, and ephemeral servers allowed."""
        from prefect.settings import get_current_settings

        settings = get_current_settings()
        return not settings.api.url and settings.server.ephemeral.enabled

    @property
    def log_path(self) -> Path:
        """The server's own output: PREFECT_HOME/modalink-server.log."""
        return Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser() / "modalink-server.log"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> None:
        self.port = free_port()
        env = server_environment(os.environ)
        # Its messages go to a log file, not to the run's console: stopping it while a service (the task
        # run recorder, when turned on) holds the last events of the run makes Prefect log a traceback. It runs
        # in a session of its own, so that Ctrl-C in the terminal reaches only this process, which
        # unwinds the run while the server still answers and then stops it (with the terminal's
        # SIGINT the server died at once, and every task thread waited minutes on API retries). If
        # this process dies without stopping it (SIGKILL), the server ends itself (`exit_with_run`).
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(__file__).resolve().parent.parent), "--factory",
                 "modalink.prefect_server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
                 "--log-level", "error", "--lifespan", "on"], env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    def wait_ready(self, timeout_s: float) -> bool:
        import httpx

        deadline = time.monotonic() + timeout_s
        restarts = 0
        with httpx.Client() as client:
            while time.monotonic() < deadline:
                exit_code = self.process.poll()
                # uvicorn exits with 3 when the port was taken between free_port() and the bind, and
                # also when the app fails to start: one new port, then it is given up
                if exit_code == PORT_IN_USE and restarts < 1:
                    restarts += 1
                    self.start()
                elif exit_code is not None:
                    return False
                try:
                    if client.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                        return True
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Prefect's calls go to this server inside the block, and what Prefect still holds for it is
        sent before the block ends; the caller stops the server. If it did not come up, Prefect starts
        its own as usual (and reports why it cannot)."""
        from prefect.settings import (PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
                                      PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, PREFECT_UI_URL, temporary_settings)

        if not self.wait_ready(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()):
            self.stop()
            print(f"modalink: the temporary Prefect server did not start (its output: {self.log_path}); "
                  "Prefect starts one of its own", file=sys.stderr)
            yield
            return
        # No UI link in the log: this server serves no UI and is gone when the run ends. No flow run
        # heartbeats: they let a standing server spot crashed runs, and each flow run would wait at
        # its end for the heartbeat thread to stop.
        updates = {PREFECT_API_URL: self.api_url, PREFECT_UI_URL: "", PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
        with temporary_settings(updates=updates):
            try:
                yield
            finally:
                send_pending_logs_and_events()


def send_pending_logs_and_events() -> None:
    """Let Prefect's log and event workers send what they hold while the server still runs (as
    `prefect_test_harness` does before it stops its server)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=10)


def create_app():
    """Prefect's server app for `TemporaryServer`, with `BusyRetries`, ending with the run's process.

    Until the app exists (while its imports run), SIGTERM ends the server at once: it has no database open
    and nothing to shut down yet. Under uvicorn's own handler it would wait until start-up is done, and
    so would a run that finds it has nothing to do and stops its server right away. The watch for the
    run's end starts first, so a run killed while its server starts up leaves none behind either."""
    if os.environ.get("MODALINK_RUN_PID"):
        threading.Thread(target=exit_with_run, args=(int(os.environ["MODALINK_RUN_PID"]),), daemon=True).start()
    in_main_thread = threading.current_thread() is threading.main_thread()
    uvicorn_handler = signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0)) if in_main_thread else None
    try:
        from prefect.server.api.server import create_app as prefect_app

        app = BusyRetries(prefect_app())
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, uvicorn_handler)
    return app


def exit_with_run(run_pid: int, every_s: float = 0.5, grace_s: float = 3.0) -> None:
    """In the server: once the run's process is gone (the server has a new parent), stop as on SIGTERM;
    if uvicorn is still busy after `grace_s` (its start-up, the database's migrations, runs to the end
    before it heeds SIGTERM), exit outright: nobody is left to answer, and SQLite rolls back what a
    write had not committed."""
    while os.getppid() == run_pid:
        time.sleep(every_s)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace_s)
    os._exit(0)


class BusyRetries:
    """ASGI middleware: a request that Prefect's server answers with 503 is run again in the server,
    every `every_s`, for up to `for_s`, before that answer reaches the client (with `Retry-After`).

    Prefect's server answers 503 when SQLite refuses a write because another one is committing
    (a write transaction that started from an older snapshot fails at once, whatever the busy
    timeout). Nothing of the refused request was committed, so running it again is what the client
    would do, and the refused requests are run again one at a time, so that they do not refuse each
    other; Prefect's client alone waits 2 s, then 4 s, and gives up after five tries. 60 task runs
    created at once on the plain app over SQLite meet `database is locked`; behind this middleware all
    are created (BENCHMARKS.md, Throughput)."""

    def __init__(self, app, every_s: float = 0.05, for_s: float = 20.0, retry_after: str = "0.1"):
        self.app, self.every_s, self.for_s = app, every_s, for_s
        self.header = (b"retry-after", retry_after.encode())
        self._retrying = None  # an asyncio.Lock, made in the server's event loop

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        import asyncio

        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client left before its request was read
                return
            body, more = body + message.get("body", b""), message.get("more_body", False)
        deadline = time.monotonic() + self.for_s
        answer = await self.answer(scope, body, receive)
        if answer and answer[0]["status"] == 503:
            if self._retrying is None:
                self._retrying = asyncio.Lock()
            # One refused request is run again at a time: many retrying at once refuse each other's
            # writes again and again (the 60 at once of the Throughput test then met 20 s of refusals).
            async with self._retrying:
                while True:
                    await asyncio.sleep(self.every_s)
                    answer = await self.answer(scope, body, receive)
                    if not answer or answer[0]["status"] != 503 or time.monotonic() + self.every_s > deadline:
                        break
        for message in answer:
            if message["type"] == "http.response.start" and message["status"] == 503:
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"retry-after" for name, _ in headers):
                    message = {**message, "headers": [*headers, self.header]}
            await send(message)

    async def answer(self, scope, body: bytes, receive) -> list[dict]:
        """The app's whole answer to the request `body`, on a copy of `scope`; after the body,
        `receive` is the client's (a disconnect). An exception raised after a whole answer was
        given is dropped."""
        messages, delivered = [], False

        async def replay():
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def keep(message):
            messages.append(message)

        try:
            await self.app(dict(scope), replay, keep)  # a router updates the scope it is given
        except Exception:
            # Starlette's error middleware re-raises what its handler answered (Prefect's 503 for a
            # busy database): with the answer kept, the exception is that answer's, not a new one
            last = messages[-1] if messages else {}
            if last.get("type") != "http.response.body" or last.get("more_body", False):
                raise
        return messages
