"""Shared fixtures: the real media shipped in media/, a Prefect test server, local HTTP servers."""
from __future__ import annotations

import functools
import hashlib
import json
import http.server
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
MEDIA = Path(os.environ.get("MODALINK_TEST_MEDIA", ROOT / "media"))
GRID_CLIPS = {  # file -> the sentence spoken (media/README.md)
    "av_grid_bbaf2n.mpg": "bin blue at f two now",
    "av_grid_lwbsza.mpg": "lay white by s zero again",
    "av_grid_swiz3n.mpg": "set white in z three now",
    "av_grid_id2_swwp2s.mpg": "set white with p two soon",
}
JFK_TEXT = "And so, my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


def grid_speech_span(media: Path) -> tuple[float, float]:
    """Start and end of the speech in av_grid_id2_swwp2s.mpg, from its .align file (1/25000 s units)."""
    words = [line.split() for line in (media / "av_grid_id2_swwp2s.align").read_text().splitlines()]
    spoken = [(int(a) / 25000, int(b) / 25000) for a, b, w in words if w != "sil"]
    return spoken[0][0], spoken[-1][1]


def bench_module(name: str):
    """A script of bench/ loaded as a module (its measuring functions, reused by the tests)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def speech(path: Path, folder: Path):
    """(soundtrack path, VAD speech spans) of a media file, with default options."""
    from modalink.config import AudioConfig, VadConfig
    from tasks.audio import extract_audio
    from tasks.vad import detect_speech

    audio = extract_audio(str(path), str(folder / f"{path.name}.wav"), AudioConfig())
    return audio.path, detect_speech(audio.path, VadConfig()).spans


@pytest.fixture(scope="session")
def media() -> Path:
    assert (MEDIA / "av_grid_bbaf2n.mpg").is_file(), f"test media missing in {MEDIA}"
    return MEDIA


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server (and database) for the whole test session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        from prefect.settings import get_current_settings

        yield get_current_settings().api.url  # for subprocesses: PREFECT_API_URL


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # noqa: D401 - keep test output clean
        pass


def serve(handler_class, directory: Path | None = None):
    handler = functools.partial(handler_class, directory=str(directory)) if directory else handler_class
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class MediaServer:
    """A local HTTP server for yt-dlp's generic extractor: the real media files, plus an HTML page
    with two <video> tags (a playlist to yt-dlp). Records every GET path."""

    def __init__(self, media: Path, folder: Path):
        for item in media.iterdir():
            (folder / item.name).symlink_to(item)
        (folder / "playlist.html").write_text(
            "<html><head><title>GRID playlist</title></head><body>"
            '<video src="av_grid_bbaf2n.mpg"></video><video src="av_grid_lwbsza.mpg"></video></body></html>')
        (folder / "no-video.html").write_text("<html><head><title>nothing here</title></head><body>text</body></html>")
        self.paths: list[str] = []
        server = self

        class Handler(_QuietHandler):
            def do_GET(self):  # noqa: N802
                server.paths.append(self.path)
                super().do_GET()

        self.server, self.url = serve(Handler, folder)


@pytest.fixture(scope="session")
def media_server(media, tmp_path_factory):
    server = MediaServer(media, tmp_path_factory.mktemp("served"))
    yield server
    server.server.shutdown()


class FakeGoogleSpeech:
    """A local stand-in for the Google Speech API v2: answers like Google, or fails on purpose.

    `failures` requests are answered 503 before it answers; `always_fail` answers 500 forever;
    `forbidden` answers 403 with the request's path and query (the key too) in its reason phrase,
    as some gateways do; `hangs` requests get no answer for `hang_s` seconds, then the connection
    is closed (a service that hangs past the client's timeout). Every request is recorded (query,
    content type, body size, whether the body is FLAC, the body's SHA-256).
    """

    def __init__(self):
        self.requests: list[dict] = []
        self.failures = self.hangs = 0
        self.hang_s = 0.0
        self.always_fail = self.forbidden = False
        self.transcript = "مرحبا بكم"
        self.server, base = serve(self._handler())
        self.endpoint = f"{base}/speech-api/v2/recognize"

    def reset(self, failures=0, always_fail=False, transcript="مرحبا بكم", forbidden=False, hangs=0, hang_s=3.0):
        self.requests.clear()
        self.failures, self.always_fail, self.transcript = failures, always_fail, transcript
        self.forbidden, self.hangs, self.hang_s = forbidden, hangs, hang_s

    def _handler(self):
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):  # noqa: N802
                from urllib.parse import parse_qs, urlparse

                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.requests.append({"query": parse_qs(urlparse(self.path).query),
                                      "content_type": self.headers.get("Content-Type"),
                                      "flac": body[:4] == b"fLaC", "bytes": len(body),
                                      "sha256": hashlib.sha256(body).hexdigest()})
                if fake.forbidden:
                    self.send_response(403, f"Forbidden: API key not valid for {self.path}")
                    self.end_headers()
                    return
                if fake.hangs > 0:
                    fake.hangs -= 1
                    time.sleep(fake.hang_s)
                    self.close_connection = True
                    return
                if fake.always_fail or fake.failures > 0:
                    fake.failures -= 1
                    self.send_response(500 if fake.always_fail else 503)
                    self.end_headers()
                    return
                result = ([{"alternative": [{"transcript": fake.transcript, "confidence": 0.9}], "final": True}]
                          if fake.transcript else [])
                payload = '{"result":[]}\n' + json.dumps({"result": result, "result_index": 0}, ensure_ascii=False)
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.end_headers()
                self.wfile.write(payload.encode("utf-8"))

        return Handler


@pytest.fixture(scope="session")
def google_server():
    fake = FakeGoogleSpeech()
    yield fake
    fake.server.shutdown()


@pytest.fixture()
def google(google_server):
    google_server.reset()
    return google_server


@pytest.fixture(scope="session")
def av_inputs(media, tmp_path_factory) -> Path:
    """bench/make_av_inputs.py's inputs (conversation.mp4 and its reference turns, ...), built once per
    session into a temporary folder (about 6 s on a 2-core machine)."""
    import contextlib
    import io

    module = bench_module("make_av_inputs")
    out = tmp_path_factory.mktemp("av-inputs")
    with contextlib.redirect_stdout(io.StringIO()):
        assert module.main(["--media", str(media), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """One real Label Studio for the session (started here, waited for by `.wait()`, so that a test
    can build its dataset meanwhile). Its document root holds the datasets the tests annotate.
    Skips only when its environment is missing and cannot be created."""
    from ls_server import LabelStudio, ensure_environment

    try:
        command = ensure_environment(ROOT)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"no Label Studio environment, and it could not be created: {exc}")
    server = LabelStudio(command, tmp_path_factory.mktemp("ls-root"), tmp_path_factory.mktemp("ls-data"))
    yield server
    server.stop()
