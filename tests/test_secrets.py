"""Keys set for a run (the Google API key, the S3 secret key, the Prefect API key) appear in no file
of the dataset, no errors.log, no output of the run, no Prefect flow-run parameter or log, and no
error message: the config says only that a key is set."""
import json
import logging
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote_plus

import pytest

from modalink.config import SET, AsrConfig, AudioConfig, Config, ConfigError, GoogleOptions, parse_override
from modalink.secrets import redact
from modalink.storage import StorageError, open_storage
from tasks.audio import extract_audio
from tasks.transcribe import GoogleBackend, TranscriptionError, failed_transcript, transcribe

from conftest import ROOT
from s3_server import BUCKET, SeaweedServer, s3_client

GOOGLE_KEY = "AIzaFake-google-key+4f7a2c9e/x"  # "+" and "/" change in a URL query: both forms are looked for
BLOCK_KEY = "AIzaFake-block-key-81d3b6f0"
PREFECT_KEY = "pnu_fakeprefectkey5c2e9a17d3"
S3_ACCESS, S3_SECRET = "modalinksecrets", "s3-fake-secret-9e4b7d21c6"
BLOCK_NAME = "modalink-test-google-key"
CLIP = "av_grid_bbaf2n.mpg"


@pytest.fixture(autouse=True)
def no_key_in_the_environment(monkeypatch):
    """Whatever a test sets (the CLI moves a key into MODALINK_GOOGLE_KEY) is undone after it."""
    monkeypatch.delenv("MODALINK_GOOGLE_KEY", raising=False)


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory):
    """SeaweedFS whose second identity has this module's secret key."""
    server = SeaweedServer(tmp_path_factory.mktemp("seaweedfs-secrets"))
    identities = json.loads((server.folder / "identities.json").read_text())
    identities["identities"].append({"name": "secrets", "credentials": [{"accessKey": S3_ACCESS, "secretKey": S3_SECRET}],
                                     "actions": ["Admin", "Read", "Write", "List", "Tagging"]})
    (server.folder / "identities.json").write_text(json.dumps(identities))
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def clip_wav(media, tmp_path_factory):
    folder = tmp_path_factory.mktemp("secrets-wav")
    return extract_audio(str(media / CLIP), str(folder / "clip.wav"), AudioConfig()).path


def forms(*secrets: str) -> list[str]:
    return sorted({form for secret in secrets for form in (secret, quote_plus(secret))})


def assert_nowhere(texts: dict[str, bytes], *secrets: str) -> None:
    found = [f"{form!r} in {name}" for form in forms(*secrets) for name, data in texts.items() if form.encode() in data]
    assert not found, "\n".join(found)


def files_under(root: Path) -> dict[str, bytes]:
    return {str(path): path.read_bytes() for path in root.rglob("*") if path.is_file()}


def bucket_objects(client, prefix: str) -> dict[str, bytes]:
    found, token = {}, None
    while True:
        page = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix, **({"ContinuationToken": token} if token else {}))
        for item in page.get("Contents", []):
            found[f"s3://{BUCKET}/{item['Key']}"] = client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
        if not page.get("IsTruncated"):
            return found
        token = page["NextContinuationToken"]


def prefect_records(since: datetime) -> tuple[list, dict[str, bytes]]:
    """The flow runs created since `since` and, as texts, their parameters, their logs and the
    Prefect server's whole database (every file of it)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime, LogFilter, LogFilterFlowRunId
    from prefect.settings import get_current_settings

    texts = {}
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(start_time=FlowRunFilterStartTime(after_=since)))
        for run in runs:
            texts[f"parameters of flow run {run.name}"] = json.dumps(run.parameters, ensure_ascii=False).encode()
        logs, offset = [], 0
        while page := client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[r.id for r in runs])),
                                       limit=200, offset=offset):
            logs.extend(page)
            offset += len(page)
        texts["flow run logs"] = "\n".join(log.message for log in logs).encode()
    url = get_current_settings().server.database.connection_url.get_secret_value()
    database = Path(url.split(":///", 1)[1])
    texts.update({f"prefect database {p.name}": p.read_bytes() for p in database.parent.glob(f"{database.name}*")})
    return runs, texts


def build(out: str, *options: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "modalink.cli", "build", str(ROOT / "media" / CLIP), "--out", out,
               "--asr", "google", "--language", "en-US", "--set", "asr.retries=0", "--verbose", *options]
    return subprocess.run(command, capture_output=True, cwd=ROOT, timeout=600, env=env)


def run_env(prefect_server: str, **extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name != "MODALINK_GOOGLE_KEY"}
    return {**env, "PREFECT_API_URL": prefect_server, "PREFECT_API_KEY": PREFECT_KEY, "TF_CPP_MIN_LOG_LEVEL": "3",
            **extra}


def test_keys_of_a_run_into_s3_are_nowhere_in_what_it_leaves(prefect_server, google, seaweed, tmp_path):
    """A real build into S3 with the Google key given on the command line, the S3 secret and the Prefect
    API key in the environment: the key reaches Google, and none of them is in the bucket (records,
    summaries, cached results), the staging folder, the output, or what Prefect stored."""
    since = datetime.now(timezone.utc)
    env = run_env(prefect_server, MODALINK_S3_ENDPOINT_URL=seaweed.endpoint, AWS_ACCESS_KEY_ID=S3_ACCESS,
                  AWS_SECRET_ACCESS_KEY=S3_SECRET, AWS_DEFAULT_REGION="us-east-1",
                  MODALINK_STAGING_DIR=str(tmp_path / "staging"))
    result = build(f"s3://{BUCKET}/secrets", "--set", f"asr.google.endpoint={google.endpoint}",
                   "--set", f"asr.google.key={GOOGLE_KEY}", env=env)
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert google.requests and all(r["query"]["key"] == [GOOGLE_KEY] for r in google.requests)

    client = s3_client(seaweed.endpoint, S3_ACCESS, S3_SECRET)
    stored = bucket_objects(client, "secrets/")
    summary = json.loads(stored[f"s3://{BUCKET}/secrets/run_summary.json"])
    assert summary["config"]["asr"]["google"]["key"] == SET
    assert any("/runs/" in name for name in stored) and any("/.modalink/cache/" in name for name in stored)
    runs, prefect = prefect_records(since)
    assert {run.parameters["config"]["asr"]["google"]["key"] for run in runs} == {SET} and len(runs) >= 2
    texts = {**stored, **files_under(tmp_path / "staging"), "stdout": result.stdout, "stderr": result.stderr, **prefect}
    assert_nowhere(texts, GOOGLE_KEY, S3_SECRET, PREFECT_KEY)


def test_a_refused_key_from_a_secret_block_is_not_in_the_errors_or_records(prefect_server, google, tmp_path):
    """The key comes from a Prefect Secret block; Google refuses it, quoting the request (key and all)
    in its answer: the segment is kept flagged, and its error, errors.log, the output and Prefect's
    records say why without the key."""
    from prefect.blocks.system import Secret

    Secret(value=BLOCK_KEY).save(BLOCK_NAME, overwrite=True)
    google.reset(forbidden=True)
    since = datetime.now(timezone.utc)
    out = tmp_path / "dataset"
    result = build(str(out), "--set", f"asr.google.endpoint={google.endpoint}",
                   "--set", f"asr.google.key_secret={BLOCK_NAME}", env=run_env(prefect_server))
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert google.requests and all(r["query"]["key"] == [BLOCK_KEY] for r in google.requests)

    record, = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert record["transcript_status"] == "failed"
    assert "Forbidden" in record["transcript_error"] and "key=***" in record["transcript_error"]
    assert "Forbidden" in (out / "errors.log").read_text()
    summary = json.loads((out / "run_summary.json").read_text())
    google_options = summary["config"]["asr"]["google"]
    assert (google_options["key"], google_options["key_secret"]) == (None, BLOCK_NAME)
    runs, prefect = prefect_records(since)
    assert runs and all(run.parameters["config"]["asr"]["google"]["key_secret"] == BLOCK_NAME for run in runs)
    texts = {**files_under(out), "stdout": result.stdout, "stderr": result.stderr, **prefect}
    assert_nowhere(texts, BLOCK_KEY, PREFECT_KEY)


def test_a_key_in_the_config_goes_to_the_environment_and_the_config_says_set(tmp_path):
    (tmp_path / "c.toml").write_text(f'[asr.google]\nkey = "{GOOGLE_KEY}"\n')
    config = Config.load(tmp_path / "c.toml")
    assert os.environ["MODALINK_GOOGLE_KEY"] == GOOGLE_KEY
    assert config.asr.google.key == SET and config.to_dict()["asr"]["google"]["key"] == SET
    assert GOOGLE_KEY not in json.dumps(config.to_dict()) and "key" not in config.cache_view()["asr"]["google"]
    assert GoogleBackend(config.asr).key() == GOOGLE_KEY

    del os.environ["MODALINK_GOOGLE_KEY"]
    recorded = Config.from_dict(config.to_dict())  # a recorded config read back sets no key
    assert recorded.asr.google.key == SET and "MODALINK_GOOGLE_KEY" not in os.environ
    with pytest.raises(ConfigError, match="MODALINK_GOOGLE_KEY is not in this process's environment"):
        GoogleBackend(recorded.asr).prepare()
    assert Config.load(overrides=parse_override("asr.google.key=none")).to_dict()["asr"]["google"]["key"] is None


def test_a_key_only_in_the_environment_is_used_and_recorded_as_set(google, clip_wav, monkeypatch):
    monkeypatch.setenv("MODALINK_GOOGLE_KEY", GOOGLE_KEY)
    options = AsrConfig(language="en-US", google=GoogleOptions(endpoint=google.endpoint))
    assert transcribe(clip_wav, options).status == "ok"
    assert google.requests[0]["query"]["key"] == [GOOGLE_KEY]
    assert Config().to_dict()["asr"]["google"]["key"] == SET


def test_google_refusing_the_key_raises_without_it(google, clip_wav, monkeypatch):
    monkeypatch.setenv("MODALINK_GOOGLE_KEY", GOOGLE_KEY)
    google.reset(forbidden=True)
    options = AsrConfig(language="en-US", google=GoogleOptions(endpoint=google.endpoint))
    with pytest.raises(TranscriptionError, match="Forbidden") as raised:
        transcribe(clip_wav, options)
    assert google.requests[0]["query"]["key"] == [GOOGLE_KEY]
    assert_nowhere({"message": str(raised.value).encode()}, GOOGLE_KEY)
    flagged = failed_transcript(RuntimeError(f"from elsewhere: {GOOGLE_KEY}"), options)
    assert flagged.error == "from elsewhere: ***"


def test_a_missing_secret_block_is_one_clear_error(prefect_server):
    options = AsrConfig(google=GoogleOptions(key_secret="no-such-block-here"))
    with pytest.raises(ConfigError, match="cannot read the Prefect Secret block 'no-such-block-here'"):
        GoogleBackend(options).prepare()


def test_storage_errors_and_log_lines_hide_credentials(monkeypatch, caplog):
    """An endpoint URL with a password in it, and the secret key itself, are hidden in the error of a
    storage that cannot be reached and in any log line."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.setenv("MODALINK_S3_ENDPOINT_URL", f"http://{S3_ACCESS}:{S3_SECRET}@127.0.0.1:9")
    with pytest.raises(StorageError) as raised:
        open_storage(f"s3://{BUCKET}/x").check()
    assert "cannot reach S3 storage" in str(raised.value) and S3_SECRET not in str(raised.value)
    with caplog.at_level(logging.INFO, logger="modalink.test"):
        logging.getLogger("modalink.test").info("secret %s at %s", S3_SECRET, "s3://user:hunter22@host/bucket")
    assert S3_SECRET not in caplog.text and "hunter22" not in caplog.text and "s3://user:***@host" in caplog.text


def test_redact_leaves_ordinary_text_alone(monkeypatch):
    monkeypatch.setenv("PREFECT_API_KEY", PREFECT_KEY)
    text = f"http://127.0.0.1:4200/api key {PREFECT_KEY} or {quote_plus(GOOGLE_KEY)}"
    monkeypatch.setenv("MODALINK_GOOGLE_KEY", GOOGLE_KEY)
    assert redact(text) == "http://127.0.0.1:4200/api key *** or ***"
    monkeypatch.setenv("AWS_SESSION_TOKEN", "abc")  # too short to be told from ordinary words
    assert redact("abc def") == "abc def"
