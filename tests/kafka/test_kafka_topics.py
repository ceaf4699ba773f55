"""fleetgate's topics on a real Apache Kafka: created with their contract configuration, and the
compacted topics (transfer progress, device registry) really compacted (Tansu accepts the setting
but never compacts)."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from contracts import TOPIC_CONFIGS, Topic
from devstack.infra import DEFAULT_PARTITIONS

KEYS = 20
ROUNDS = 40


async def topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)]
        )
    finally:
        await admin.close()
    (resource,) = response.resources
    return {entry[0]: entry[1] for entry in resource[4]}


async def test_compacted_topics_are_created_compacted(kafka: str) -> None:
    assert {Topic.PROGRESS, Topic.DEVICES} <= set(TOPIC_CONFIGS)
    for topic, wanted in TOPIC_CONFIGS.items():
        config = await topic_config(kafka, topic)
        assert {k: config[k] for k in wanted} == wanted, topic
    assert (await topic_config(kafka, Topic.CHUNKS))["cleanup.policy"] == "delete"


async def read_all(bootstrap: str, topic: str) -> list[tuple[bytes, bytes]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(DEFAULT_PARTITIONS[topic])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[tuple[bytes, bytes]] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=500)
            out += [(r.key, r.value) for rs in batch.values() for r in rs]
        return out
    finally:
        await consumer.stop()


@pytest.mark.parametrize(
    ("topic", "key"), [(Topic.PROGRESS, b"transfer-%d"), (Topic.DEVICES, b"35000000000%04d")]
)
async def test_compacted_topic_stays_bounded(kafka: str, topic: Topic, key: bytes) -> None:
    """40 updates of each of 20 keys (transfers; devices by IMEI); compaction leaves one
    record per key. (Segments roll every 100 ms here so the cleaner has closed segments to work
    on.)"""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        await admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC,
                    topic,
                    configs=TOPIC_CONFIGS[topic]
                    | {"segment.ms": "100", "min.cleanable.dirty.ratio": "0.01"},
                )
            ]
        )
    finally:
        await admin.close()
    partitions = DEFAULT_PARTITIONS[topic]
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for round_ in range(ROUNDS):
            for n in range(KEYS):
                await producer.send(topic, b"%d" % round_, key=key % n)
            await producer.flush()
            await asyncio.sleep(0.03)
        # One more record in every partition after segment.ms: each partition rolls its last
        # segment, so every update above is in a closed segment the cleaner may compact.
        await asyncio.sleep(0.15)
        for partition in range(partitions):
            await producer.send(topic, b"last", key=b"roller-%d" % partition, partition=partition)
        await producer.flush()
    finally:
        await producer.stop()
    written = KEYS * ROUNDS + partitions
    bound = KEYS + partitions  # the latest of each key, and the rollers
    started = time.monotonic()
    while True:
        records = await read_all(kafka, topic)
        if len(records) <= bound or time.monotonic() - started > 60:
            break
        await asyncio.sleep(0.2)
    compacted_in = time.monotonic() - started
    print(f"\n{topic}: {written} records written, {len(records)} kept after compaction "
          f"({compacted_in:.1f} s)")  # fmt: skip
    latest = dict(records)
    assert len(records) <= bound < written  # bounded: one record per key
    assert all(latest[key % n] == b"%d" % (ROUNDS - 1) for n in range(KEYS))
