"""Object stores for the tests, on free ports of 127.0.0.1, one per test session (fsspec keeps one
file system per set of options, so an endpoint must not change): moto's S3 server, with the standard
AWS_* variables pointing every client (boto3, s3fs, subprocesses) at it; and, where installed
(gcp-storage-emulator + gcsfs), a GCS emulator chosen by STORAGE_EMULATOR_HOST."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(port: int) -> None:
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"no server on port {port}")


@pytest.fixture(scope="session")
def gcs_endpoint():
    pytest.importorskip("gcp_storage_emulator")
    pytest.importorskip("gcsfs")
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gcp_storage_emulator",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--in-memory",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    old = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    try:
        _wait_for(port)
        yield os.environ["STORAGE_EMULATOR_HOST"]
    finally:
        proc.terminate()
        proc.wait()
        if old is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = old


@pytest.fixture
def gcs_bucket(gcs_endpoint, request):
    """A new, empty bucket on the GCS emulator: `gs://<name>`."""
    import fsspec

    name = "t-" + "".join(c for c in request.node.name.lower() if c.isalnum())[:40] + f"-{time.time_ns() % 10**6}"
    fsspec.filesystem("gcs").mkdir(name)
    return f"gs://{name}"


@pytest.fixture(scope="session")
def s3_endpoint():
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    old = {k: os.environ.get(k) for k in [*ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update(ENV, AWS_ENDPOINT_URL=url)
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("moto server did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def bucket(s3_endpoint, request):
    """A new, empty bucket: `s3://<name>`."""
    import boto3

    name = "t-" + "".join(c for c in request.node.name.lower() if c.isalnum())[:40] + f"-{time.time_ns() % 10**6}"
    boto3.client("s3").create_bucket(Bucket=name)
    return f"s3://{name}"
