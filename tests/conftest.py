"""Real infrastructure for tests that cross a boundary: a Tansu broker and an S3 server.

Both start in well under a second, so each test gets its own (no shared state between tests).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from minio import Minio

from devstack.infra import S3RVER_KEY, create_topics, start_s3rver, start_tansu, wait_kafka


@pytest.fixture
def kafka(tmp_path: Path) -> Iterator[str]:
    """Bootstrap address of a fresh Tansu broker with fleetgate's topics created."""
    broker = start_tansu(log=tmp_path / "tansu.log")
    bootstrap = f"127.0.0.1:{broker.port}"
    try:
        asyncio.run(wait_kafka(bootstrap))
        asyncio.run(create_topics(bootstrap))
        yield bootstrap
    finally:
        broker.stop()


@dataclass(frozen=True)
class S3:
    endpoint: str  # host:port
    access_key: str
    secret_key: str
    bucket: str

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def client(self) -> Minio:
        return Minio(
            self.endpoint,
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region="us-east-1",
        )


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[S3]:
    """A fresh s3rver (objects on disk under the test's tmp_path) with one bucket."""
    server = start_s3rver(tmp_path / "s3", log=tmp_path / "s3rver.log")
    info = S3(f"127.0.0.1:{server.port}", S3RVER_KEY, S3RVER_KEY, "fleetgate")
    try:
        info.client().make_bucket(info.bucket)
        yield info
    finally:
        server.stop()
