"""A real Label Studio for the annotation tests: `label-studio start` from its own environment
(`.venv-labelstudio`, whose pins clash with the pipeline's), on 127.0.0.1 at a free port, SQLite in
a temporary data dir, local file serving on, analytics, Sentry and the version check off; an admin
with a known API token, and a second annotator who signs up through the admin's invite link.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import requests

from cdp import free_port, stop_process

VERSION = "1.23.2"
ADMIN = ("admin@modalink.test", "admin-pass-1", "modalink-admin-token-0001")
ANNOTATOR = ("annotator2@modalink.test", "annotator-pass-2")


def offline_env(document_root: Path, data_dir: Path) -> dict[str, str]:
    """The variables Label Studio 1.23.2 reads (label_studio/core/settings) to serve the dataset's files
    and to stay off the internet."""
    return {
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "DJANGO_DB": "sqlite",
        "COLLECT_ANALYTICS": "false",  # no usage events from the frontend
        "LATEST_VERSION_CHECK": "false",  # no PyPI request at start
        "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",  # label_studio's settings name Sentry's ingest by default
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",  # annotators join by invite only
        "FEATURE_FLAGS_OFFLINE": "true",
    }


def ensure_environment(root: Path) -> Path:
    """The label-studio command: MODALINK_LABEL_STUDIO, else ROOT/.venv-labelstudio (created when
    missing, as `make labelstudio-env` does). Raises RuntimeError when it cannot be created."""
    named = os.environ.get("MODALINK_LABEL_STUDIO")
    command = Path(named) if named else root / ".venv-labelstudio" / "bin" / "label-studio"
    if command.is_file():
        return command
    if named:
        raise RuntimeError(f"MODALINK_LABEL_STUDIO={named} does not exist")
    venv = command.parents[1]
    steps = [["python3", "-m", "venv", str(venv)],
             [str(venv / "bin" / "pip"), "install", "--quiet", f"label-studio=={VERSION}"]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"could not create {venv}: {' '.join(step)}: {done.stderr.strip()[-300:]}")
    (venv / ".installed").touch()
    return command


class LabelStudio:
    def __init__(self, command: Path, document_root: Path, data_dir: Path):
        self.document_root, self.data_dir = document_root, data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = data_dir / "label-studio.log"
        env = {**os.environ, **offline_env(document_root, data_dir)}
        env.pop("PYTHONPATH", None)  # its own environment, nothing of the pipeline's
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [str(command), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", str(data_dir), "--username", ADMIN[0], "--password", ADMIN[1],
             "--user-token", ADMIN[2], "--enable-legacy-api-token"],
            stdout=self.log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=data_dir, start_new_session=True)
        self.start_s: float | None = None
        self.annotator_token: str | None = None

    def wait(self, timeout: float = 300) -> "LabelStudio":
        """Until /health answers (its first start migrates the SQLite database), then the second user."""
        if self.start_s is not None:
            return self
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"label-studio exited ({self.process.returncode}): {self.log.read_text()[-2000:]}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() - self.started > timeout:
                raise TimeoutError(f"label-studio did not answer in {timeout} s: {self.log.read_text()[-2000:]}")
            time.sleep(0.5)
        self.start_s = time.monotonic() - self.started
        print(f"label-studio answered after {self.start_s:.1f} s", file=sys.stderr)
        self.annotator_token = self.sign_up(*ANNOTATOR)
        return self

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Token {token or ADMIN[2]}"}

    def api(self, method: str, path: str, token: str | None = None, **kwargs) -> requests.Response:
        response = requests.request(method, f"{self.url}{path}", headers=self.headers(token), timeout=60, **kwargs)
        assert response.status_code < 400, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response

    def sign_up(self, email: str, password: str) -> str:
        """A second user, through the admin's invite link (signup without a link is off); their token."""
        invite = self.api("GET", "/api/invite").json()["invite_url"]
        session = requests.Session()
        session.get(self.url + invite, timeout=30)
        answer = session.post(self.url + invite, timeout=30, headers={"Referer": self.url + invite}, data={
            "csrfmiddlewaretoken": session.cookies["csrftoken"], "email": email, "password": password,
            "allow_newsletters": "false"})
        assert answer.status_code == 200, answer.text[:500]
        return session.get(f"{self.url}/api/current-user/token", timeout=30).json()["token"]

    def login_cookies(self, email: str = ADMIN[0], password: str = ADMIN[1]) -> dict[str, str]:
        """A logged-in browser session: the cookies of the login form."""
        session = requests.Session()
        session.get(f"{self.url}/user/login/", timeout=30)
        answer = session.post(f"{self.url}/user/login/", timeout=30, headers={"Referer": f"{self.url}/user/login/"},
                              data={"csrfmiddlewaretoken": session.cookies["csrftoken"], "email": email,
                                    "password": password})
        assert answer.status_code == 200 and "sessionid" in session.cookies, answer.text[:300]
        return dict(session.cookies)

    def export(self, project: int) -> list[dict]:
        """A JSON export through the snapshot API, with the annotators' emails (completed_by in full)."""
        snapshot = self.api("POST", f"/api/projects/{project}/exports", json={
            "title": "modalink", "serialization_options": {"annotations__completed_by": {"only_id": False}}}).json()
        deadline = time.monotonic() + 60
        while snapshot["status"] not in ("completed", "failed") and time.monotonic() < deadline:
            time.sleep(0.3)
            snapshot = self.api("GET", f"/api/projects/{project}/exports/{snapshot['id']}").json()
        assert snapshot["status"] == "completed", snapshot
        return self.api("GET", f"/api/projects/{project}/exports/{snapshot['id']}/download?exportType=JSON").json()

    def stop(self) -> None:
        stop_process(self.process)


def version_of(command: Path) -> str | None:
    pip = command.parent / "pip"
    done = subprocess.run([str(pip), "show", "label-studio"], capture_output=True, text=True)
    found = re.search(r"^Version: (\S+)", done.stdout, re.M)
    return found.group(1) if found else None
