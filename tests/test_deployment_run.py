"""The `playlist` deployment of prefect.yaml, deployed to a real (temporary) Prefect server, run by name
with parameters from the CLI as CI would, and executed by a process worker on real media."""
import json
import os
import re
import subprocess
import sys

from conftest import GRID_CLIPS, ROOT

POOL = "modalink-process"


def prefect(*args, env, timeout=300):
    done = subprocess.run([sys.executable, "-m", "prefect", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"prefect {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_playlist_deployment_runs_on_a_process_worker(prefect_server, media, tmp_path):
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "MODALINK_ROOT": str(ROOT),
           "PREFECT_HOME": str(tmp_path / "prefect-home"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    prefect("work-pool", "create", POOL, "--type", "process", "--overwrite", env=env)
    prefect("--no-prompt", "deploy", "--name", "playlist", env=env)

    out = tmp_path / "dataset"
    params = {"sources": [str(media / name) for name in list(GRID_CLIPS)[:2]], "out": str(out),
              "config": {"asr": {"backend": "whisper", "model": "tiny.en", "language": "en-US"}}}
    started = prefect("deployment", "run", "modalink/playlist", "--params", json.dumps(params), env=env)
    flow_run_id = re.search(r"UUID:\s*([0-9a-f-]{36})", started).group(1)

    prefect("worker", "start", "--pool", POOL, "--run-once", env=env, timeout=600)

    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(flow_run_id)
    assert flow_run.state.is_completed(), flow_run.state
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(os.path.basename(r["source"]) for r in records) == sorted(list(GRID_CLIPS)[:2])
    assert all(r["transcript_status"] == "ok" and r["asr"]["model"] == "tiny.en" for r in records)
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["videos"] == {"total": 2, "ok": 2, "failed": 0, "reused": 0}
