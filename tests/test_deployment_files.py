"""prefect.yaml and docker/ name what the code expects. No Docker engine runs here, so these files
are checked for what they promise: the flow, its parameters, the pool, the services, the variables."""
import inspect
from pathlib import Path

import yaml

from conftest import ROOT

PROJECT = yaml.safe_load((ROOT / "prefect.yaml").read_text())
COMPOSE = yaml.safe_load((ROOT / "docker" / "docker-compose.yml").read_text())
POOL = "modalink-process"


def entrypoint_flow(entrypoint):
    from prefect.flows import load_flow_from_entrypoint

    return load_flow_from_entrypoint(str(ROOT / entrypoint))


def test_deployments_point_at_the_modalink_flow_with_valid_parameters():
    names = {d["name"] for d in PROJECT["deployments"]}
    assert names == {"playlist", "nightly", "video-worker"}
    for deployment in PROJECT["deployments"]:
        flow = entrypoint_flow(deployment["entrypoint"])
        assert deployment["work_pool"]["name"] == POOL
        if deployment["name"] == "video-worker":
            continue  # its own test below
        assert flow.name == "modalink"  # so `prefect deployment run 'modalink/<name>'` works
        assert set(deployment["parameters"]) <= set(inspect.signature(flow.fn).parameters)
        from modalink.config import Config

        Config.load(overrides=deployment["parameters"]["config"])  # valid config


def test_the_video_worker_deployment_is_what_fan_out_names():
    """run.fan_out's example value names this deployment; the run passes every parameter itself."""
    from modalink.config import Config

    worker = next(d for d in PROJECT["deployments"] if d["name"] == "video-worker")
    flow = entrypoint_flow(worker["entrypoint"])
    assert f"{flow.name}/{worker['name']}" == "modalink-video-worker/video-worker"
    assert not worker.get("parameters")
    fan_out = Config.load(overrides={"run": {"fan_out": "modalink-video-worker/video-worker"}}).run.fan_out
    assert fan_out == f"{flow.name}/{worker['name']}"


def test_nightly_is_a_cron_schedule():
    nightly = next(d for d in PROJECT["deployments"] if d["name"] == "nightly")
    from prefect.client.schemas.schedules import CronSchedule

    schedule, = nightly["schedules"]
    assert CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"]).cron == "0 2 * * *"


def test_compose_runs_server_minio_and_a_worker_on_the_pool():
    services = COMPOSE["services"]
    assert {"prefect-server", "minio", "minio-init", "worker"} <= set(services)
    assert "4200:4200" in services["prefect-server"]["ports"] and "9000:9000" in services["minio"]["ports"]
    worker = services["worker"]
    assert worker["command"] == ["prefect", "worker", "start", "--pool", POOL, "--type", "process"]
    environment = worker["environment"]
    assert environment["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert environment["MODALINK_S3_ENDPOINT_URL"] == "http://minio:9000"
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(environment)
    assert "mc mb" in " ".join(services["minio-init"]["command"])
    env_example = (ROOT / "docker" / "modalink.env.example").read_text()
    for variable in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "MODALINK_BUCKET"):
        assert f"{variable}=" in env_example


def test_the_code_reads_the_variables_compose_sets():
    storage = (ROOT / "modalink" / "storage.py").read_text()
    assert "MODALINK_S3_ENDPOINT_URL" in storage
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert f'"--pool", "{POOL}"' in dockerfile and "ffmpeg" in dockerfile
    readme = (ROOT / "deployments" / "README.md").read_text()
    assert f"prefect worker start --pool {POOL} --type process" in readme
    assert Path(ROOT / PROJECT["deployments"][0]["entrypoint"].split(":")[0]).is_file()
