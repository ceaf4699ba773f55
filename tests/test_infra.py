"""The local infrastructure itself: what the embedded default and the tests stand on."""

from __future__ import annotations

import asyncio
import io
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from contracts import Topic
from devstack.infra import (
    DEFAULT_PARTITIONS,
    BrokerStorage,
    PortInUse,
    create_topics,
    start_tansu,
    wait_kafka,
)
from tests.conftest import S3


def test_topics_exist_with_their_partitions(tansu: str) -> None:
    async def main() -> dict[str, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=tansu)
        await admin.start()
        try:
            described = await admin.describe_topics([str(t) for t in DEFAULT_PARTITIONS])
        finally:
            await admin.close()
        return {d["topic"]: len(d["partitions"]) for d in described}

    described = asyncio.run(main())
    assert {Topic.SESSIONS: 4, Topic.CHUNKS: 8, Topic.FILES: 4}.items() <= described.items()
    assert described == {str(t): n for t, n in DEFAULT_PARTITIONS.items()}


def test_records_round_trip_with_acks_all(tansu: str) -> None:
    async def main() -> list[tuple[bytes, bytes, dict[str, bytes]]]:
        producer = AIOKafkaProducer(bootstrap_servers=tansu, acks="all")
        await producer.start()
        try:
            for i in range(3):
                await producer.send_and_wait(
                    str(Topic.FILES), b"v%d" % i, key=b"k", headers=[("h", b"%d" % i)]
                )
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            str(Topic.FILES), bootstrap_servers=tansu, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            batch = await consumer.getmany(timeout_ms=5000, max_records=3)
        finally:
            await consumer.stop()
        return [(r.key, r.value, dict(r.headers)) for rs in batch.values() for r in rs]

    got = asyncio.run(main())
    assert got == [(b"k", b"v%d" % i, {"h": b"%d" % i}) for i in range(3)]


def test_s3_keeps_objects_with_metadata(s3: S3) -> None:
    client = s3.client()
    body = b"x" * 1000
    client.put_object(s3.bucket, "a/b.bin", io.BytesIO(body), len(body), metadata={"imei": "1"})
    stat = client.stat_object(s3.bucket, "a/b.bin")
    assert stat.size == 1000
    assert stat.metadata is not None
    assert stat.metadata["x-amz-meta-imei"] == "1"
    assert client.get_object(s3.bucket, "a/b.bin").read() == body


def test_devstack_refuses_a_taken_port_clearly(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse, match=f"port {port} for the Kafka broker"):
            start_tansu(port)
        result = subprocess.run(
            [sys.executable, "-m", "fleetgate", "devstack", "--kafka-port", str(port),
             "--data-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert result.returncode == 2
    assert f"port {port} for the Kafka broker (FLEETGATE_KAFKA_PORT) is in use" in result.stderr


def test_broker_on_s3_storage_keeps_records_across_sigkill_when_read_first(
    s3: S3, tmp_path: Path
) -> None:
    """Records survive a SIGKILL of the broker, read back before anything writes to the
    partition again (written first, Tansu 0.6.0 restarts its offsets at 0: see README)."""
    s3.client().make_bucket("tansu")
    storage = BrokerStorage(s3_endpoint=s3.endpoint)
    broker = start_tansu(log=tmp_path / "tansu.log", storage=storage)
    bootstrap = f"127.0.0.1:{broker.port}"

    async def produce() -> None:
        await wait_kafka(bootstrap)
        await create_topics(bootstrap)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for i in range(5):
                await producer.send_and_wait(str(Topic.FILES), b"r%d" % i, key=b"k")
        finally:
            await producer.stop()

    async def consume() -> list[bytes]:
        await wait_kafka(bootstrap)
        consumer = AIOKafkaConsumer(
            str(Topic.FILES), bootstrap_servers=bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        values: list[bytes] = []
        try:
            async with asyncio.timeout(15):
                while len(values) < 5:
                    batch = await consumer.getmany(timeout_ms=300)
                    values += [r.value for rs in batch.values() for r in rs if r.value]
        finally:
            await consumer.stop()
        return values

    try:
        asyncio.run(produce())
        broker.kill()  # SIGKILL: nothing flushed on the way out
        broker = start_tansu(broker.port, log=tmp_path / "tansu.log", storage=storage)
        assert sorted(asyncio.run(consume())) == [b"r%d" % i for i in range(5)]
    finally:
        broker.stop()
