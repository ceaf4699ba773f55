"""The local infrastructure itself: what the embedded default and the tests stand on."""

from __future__ import annotations

import asyncio
import io

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from contracts import Topic
from tests.conftest import S3


def test_topics_exist_with_their_partitions(kafka: str) -> None:
    async def main() -> dict[str, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
        await admin.start()
        try:
            described = await admin.describe_topics([str(t) for t in Topic])
        finally:
            await admin.close()
        return {d["topic"]: len(d["partitions"]) for d in described}

    assert asyncio.run(main()) == {Topic.SESSIONS: 4, Topic.CHUNKS: 8, Topic.FILES: 4}


def test_records_round_trip_with_acks_all(kafka: str) -> None:
    async def main() -> list[tuple[bytes, bytes, dict[str, bytes]]]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all")
        await producer.start()
        try:
            for i in range(3):
                await producer.send_and_wait(
                    str(Topic.FILES), b"v%d" % i, key=b"k", headers=[("h", b"%d" % i)]
                )
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            str(Topic.FILES), bootstrap_servers=kafka, auto_offset_reset="earliest"
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
