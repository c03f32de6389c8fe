"""Shared fixtures: the real media shipped in media/, a Prefect test server, local HTTP servers."""
from __future__ import annotations

import functools
import http.server
import os
import threading
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


@pytest.fixture(scope="session")
def media() -> Path:
    assert (MEDIA / "av_grid_bbaf2n.mpg").is_file(), f"test media missing in {MEDIA}"
    return MEDIA


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server (and database) for the whole test session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # noqa: D401 - keep test output clean
        pass


def serve(handler_class, directory: Path | None = None):
    handler = functools.partial(handler_class, directory=str(directory)) if directory else handler_class
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="session")
def media_server(media):
    """A local HTTP server for yt-dlp's generic extractor: it serves the real media files."""
    server, url = serve(_QuietHandler, media)
    yield url
    server.shutdown()
