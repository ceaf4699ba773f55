"""The same services against Apache Kafka and MinIO images, where a Docker engine exists.

Everything else runs on Tansu and s3rver (no Docker on the development machines); these
tests check the parts those stand-ins cannot vouch for: Apache Kafka's own acks=all and
consumer semantics under the ingestor, and MinIO's multipart and metadata under the assembler.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def _docker_available() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=2)
    except Exception:  # no engine, no socket, no permission: all mean "no Docker here"
        return False
    try:
        client.ping()
    except Exception:
        return False
    finally:
        client.close()
    return True


pytestmark = pytest.mark.skipif(
    not _docker_available(),
    reason="needs a Docker engine: testcontainers starts Apache Kafka and MinIO images",
)


@pytest.fixture(scope="module")
def apache_kafka() -> Iterator[str]:
    from testcontainers.community.kafka import KafkaContainer

    from devstack.infra import create_topics

    with KafkaContainer().with_kraft() as kafka:
        bootstrap = kafka.get_bootstrap_server()
        asyncio.run(create_topics(bootstrap))
        yield bootstrap


@pytest.fixture(scope="module")
def minio() -> Iterator[dict[str, str]]:
    from testcontainers.community.minio import MinioContainer

    with MinioContainer() as container:
        config = container.get_config()
        container.get_client().make_bucket("fleetgate")
        yield {
            "endpoint": str(config["endpoint"]),
            "access_key": str(config["access_key"]),
            "secret_key": str(config["secret_key"]),
        }


async def upload(bootstrap: str, seed: int) -> set[str]:
    """Simulated cameras through an in-process ingestor; returns their IMEIs."""
    from simulator import ContentSpec, Faults, SimulationConfig, simulate
    from tests.ingestor.ingestor_helpers import running, settings

    async with running(settings(bootstrap)) as ingestor:
        assert ingestor.port is not None
        config = SimulationConfig(
            port=ingestor.port,
            devices=4,
            content=ContentSpec(photos=1, videos=1, photo_size=50_000, video_size=1_000_000),
            faults=Faults(bad_crc_at=3, split=True),
            seed=seed,
            timeout=120,
        )
        report = await simulate(config)
        assert report.ok, report.summary()
    return {f"{outcome.imei:015d}" for outcome in report.outcomes}


async def test_ingestor_on_apache_kafka(apache_kafka: str) -> None:
    from tests.ingestor.ingestor_helpers import read_published

    imeis = await upload(apache_kafka, seed=1)
    published = await read_published(apache_kafka, ends=8, within=60)
    files = published.by_imei_and_file()
    assert {imei for imei, _ in files} >= imeis and len(files) >= 8


def test_assembler_stores_on_minio(
    apache_kafka: str, minio: dict[str, str], tmp_path: Path
) -> None:
    from minio import Minio

    imeis = asyncio.run(upload(apache_kafka, seed=2))
    env = os.environ | {
        "FLEETGATE_KAFKA_BOOTSTRAP": apache_kafka,
        "FLEETGATE_S3_ENDPOINT": minio["endpoint"],
        "FLEETGATE_S3_ACCESS_KEY": minio["access_key"],
        "FLEETGATE_S3_SECRET_KEY": minio["secret_key"],
        "FLEETGATE_S3_BUCKET": "fleetgate",
        "FLEETGATE_SPOOL_DIR": str(tmp_path / "spool"),
    }
    client = Minio(minio["endpoint"], minio["access_key"], minio["secret_key"], secure=False)

    def stored() -> int:
        return sum(
            1
            for imei in imeis
            for _ in client.list_objects("fleetgate", prefix=f"{imei}/", recursive=True)
        )

    process = subprocess.Popen([sys.executable, "-m", "fleetgate", "assembler"], env=env)
    try:
        deadline = time.monotonic() + 120
        while stored() < 8 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert stored() == 8  # 4 devices x (photo + video), each once
    finally:
        process.terminate()
        process.wait(30)
