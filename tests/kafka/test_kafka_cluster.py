"""A three-broker Apache Kafka cluster under faults, with the whole pipeline on it.

Replication factor 3, ``min.insync.replicas`` 2, unclean leader election off: what a
production cluster runs. 20 cameras upload while a broker dies (SIGKILL of the one leading
most of the chunk topic's partitions) or while all three restart one after the other. Then every
stored object is compared byte for byte with what its device sent: 0 lost, 0 corrupt, 0
duplicate objects, and every file a device heard "done" for is stored (nothing Kafka
acknowledged was lost). The time to recover is printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from connector.settings import ConnectorSettings
from contracts import Topic
from contracts import models as wire
from devstack.infra import create_topics
from devstack.kafka import KafkaCluster
from simulator import ContentSpec, Faults, Fleet, SimulationConfig, simulate
from tests.helpers import eventually_async
from tests.reliability.reliability_helpers import Pipeline, pipeline

#: What a metadata query may raise while a broker dies: ask again.
BROKER_GONE = (KafkaError, OSError)
CAMERAS = 20
CONTENT = ContentSpec(photos=1, videos=1, photo_size=60_000, video_size=700_000)
#: Replicated like production: every topic on all three brokers.
CLUSTER_SETTINGS = {"FLEETGATE_CONNECTOR_TOPIC_REPLICATION": "3"}


def figure(name: str, **values: object) -> None:
    print(f"\n[kafka cluster] {name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))


async def leaders(bootstrap: str, topic: str) -> dict[int, int]:
    """partition -> leader node id (-1: none) as the cluster reports it now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        return {p["partition"]: p["leader"] for p in described["partitions"]}
    finally:
        await admin.close()


async def isr_sizes(bootstrap: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        return [len(p["isr"]) for p in described["partitions"]]
    finally:
        await admin.close()


async def fresh_topics(cluster: KafkaCluster) -> None:
    """Every topic gone, then fleetgate's created with replication factor 3."""
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if not t.startswith("__")]
        if topics:
            await admin.delete_topics(topics)
    finally:
        await admin.close()
    await create_topics(cluster.bootstrap, replication=3)

    async def full() -> bool:
        return all(n == 3 for n in await isr_sizes(cluster.bootstrap, Topic.CHUNKS))

    await eventually_async(full, 30, "chunk topic fully replicated", retry_on=BROKER_GONE)


async def start_pipeline_services(line: Pipeline) -> None:
    ingestor = line.ingestor("a", ack_timeout_seconds="30", kafka_request_timeout_ms="10000")
    assembler = line.assembler()
    line.connector()
    await ingestor.wait_listening()
    await assembler.wait_logged("assembler_started", within=60)


def cameras(port: int, seed: int) -> SimulationConfig:
    return SimulationConfig(
        port=port, devices=CAMERAS, content=CONTENT, seed=seed, timeout=180,
        max_reconnects=20, reconnect_backoff=0.2,
        faults=Faults(slow=150_000),  # cellular links: uploads last several seconds
    )  # fmt: skip


def expected_files(config: SimulationConfig) -> dict[tuple[str, str], bytes]:
    return {
        (f"{plan.imei:015d}", item.file.path): item.data
        for plan in Fleet(config).plans
        for item in plan.files(config.content)
    }


def announced(line: Pipeline) -> dict[tuple[str, str], Any]:
    out = {}
    for raw in line.hooks.bodies():
        data = wire.WebhookBody.model_validate(raw).data
        if isinstance(data, wire.StoredFileData):
            out[(data.imei, data.file.identifier)] = data
    return out


def verdict(line: Pipeline, expected: dict[tuple[str, str], bytes]) -> dict[str, int]:
    """Objects in S3 against what the devices sent: lost, corrupt, duplicates."""
    objects = line.objects()
    per_imei = Counter(key.split("/", 1)[0] for key in objects)
    wanted = Counter(imei for imei, _ in expected)
    by_file = announced(line)
    lost = sum(1 for key in expected if key not in by_file or by_file[key].key not in objects)
    corrupt = sum(
        1
        for key, data in by_file.items()
        if key in expected and data.key in objects and objects[data.key] != expected[key]
    )
    duplicates = sum(max(0, per_imei[imei] - n) for imei, n in wanted.items())
    return {"files": len(expected), "lost": lost, "corrupt": corrupt, "duplicates": duplicates}


async def test_leader_of_the_chunk_partitions_sigkilled_while_20_cameras_upload(
    kafka_cluster: KafkaCluster, tmp_path: Path
) -> None:
    cluster = kafka_cluster
    await fresh_topics(cluster)
    async with pipeline(tmp_path, kafka=cluster.bootstrap, common=CLUSTER_SETTINGS) as line:
        await start_pipeline_services(line)
        assert line.services[0].port is not None
        config = cameras(line.services[0].port, seed=1201)
        expected = expected_files(config)

        before = await leaders(cluster.bootstrap, Topic.CHUNKS)
        victim, led = Counter(before.values()).most_common(1)[0]
        upload = asyncio.create_task(simulate(config))
        # Mid-upload: the photos (small) are stored, the videos still on their way.
        await line.until(lambda: len(announced(line)) >= 5, 60, "the first files stored")
        killed = time.monotonic()
        cluster.kill(victim)  # SIGKILL: no controlled shutdown, no leadership handed over
        survivors = ",".join(n.address for n in cluster.nodes if n.node_id != victim)

        async def new_leaders() -> bool:
            now = await leaders(survivors, Topic.CHUNKS)
            return all(leader not in (-1, victim) for leader in now.values())

        await eventually_async(
            new_leaders, 60, "new leaders of the chunk partitions", retry_on=BROKER_GONE
        )
        reelected = time.monotonic() - killed
        report = await upload
        uploaded = time.monotonic() - killed
        await line.until(lambda: len(announced(line)) >= len(expected), 120, "every file stored")
        stored = time.monotonic() - killed
        await asyncio.sleep(0.3)  # a duplicate would show up now, if any were coming
        result = verdict(line, expected)

        cluster.start_node(victim)  # back on its data directory, for the next test
        restarted = time.monotonic()

        async def caught_up() -> bool:
            return all(n == 3 for n in await isr_sizes(cluster.bootstrap, Topic.CHUNKS))

        await eventually_async(
            caught_up, 90, "the restarted broker back in every ISR", retry_on=BROKER_GONE
        )
        rejoined = time.monotonic() - restarted
    figure(
        "leader SIGKILL",
        cameras=CAMERAS,
        killed_node=victim,
        chunk_partitions_it_led=f"{led}/{len(before)}",
        new_leaders_after_s=round(reelected, 2),
        uploads_done_after_s=round(uploaded, 2),
        all_stored_after_s=round(stored, 2),
        restarted_broker_in_isr_after_s=round(rejoined, 2),
        reconnects=sum(d.reconnects for d in report.outcomes),
        **result,
    )
    assert report.ok, report.summary()
    assert report.files_accepted == len(expected)  # every device heard "done", and ...
    assert result == {"files": len(expected), "lost": 0, "corrupt": 0, "duplicates": 0}


async def test_rolling_restart_of_all_three_brokers_under_load(
    kafka_cluster: KafkaCluster, tmp_path: Path
) -> None:
    cluster = kafka_cluster
    await fresh_topics(cluster)
    async with pipeline(tmp_path, kafka=cluster.bootstrap, common=CLUSTER_SETTINGS) as line:
        await start_pipeline_services(line)
        assert line.services[0].port is not None
        port = line.services[0].port
        expected: dict[tuple[str, str], bytes] = {}
        reports = []
        rolling = True

        async def load() -> None:
            """Wave after wave of 20 cameras until the last broker is back."""
            seed = 1300
            while rolling:
                config = cameras(port, seed=seed)
                expected.update(expected_files(config))
                reports.append(await simulate(config))
                seed += 1

        uploads = asyncio.create_task(load())
        await line.until(lambda: len(announced(line)) >= 3, 60, "the first files stored")
        began = time.monotonic()
        per_node = []
        try:
            for node in cluster.nodes:
                one = time.monotonic()
                await asyncio.to_thread(cluster.stop, [node.node_id])  # SIGTERM: controlled
                await asyncio.to_thread(cluster.start_node, node.node_id)

                async def back_in_isr() -> bool:
                    return all(n == 3 for n in await isr_sizes(cluster.bootstrap, Topic.CHUNKS))

                await eventually_async(
                    back_in_isr,
                    90,
                    f"broker {node.node_id} back in every ISR",
                    retry_on=BROKER_GONE,
                )
                per_node.append(round(time.monotonic() - one, 1))
        finally:
            rolling = False
        rolled = time.monotonic() - began
        await uploads
        await line.until(lambda: len(announced(line)) >= len(expected), 120, "every file stored")
        stored = time.monotonic() - began
        await asyncio.sleep(0.3)
        result = verdict(line, expected)
        line.check()
    figure(
        "rolling restart",
        cameras=CAMERAS,
        seconds_per_broker=per_node,
        roll_took_s=round(rolled, 1),
        all_stored_after_s=round(stored, 1),
        waves=len(reports),
        reconnects=sum(d.reconnects for r in reports for d in r.outcomes),
        **result,
    )
    for report in reports:
        assert report.ok, report.summary()
    assert sum(r.files_accepted for r in reports) == len(expected)
    assert result == {"files": len(expected), "lost": 0, "corrupt": 0, "duplicates": 0}


async def coordinator(bootstrap: str, group: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    await admin.start()
    try:
        node: int = await admin.find_coordinator(group)
        return node
    finally:
        await admin.close()


async def test_broker_down_while_the_assembler_stores_and_the_connector_delivers(
    kafka_cluster: KafkaCluster, tmp_path: Path
) -> None:
    """Webhooks are held at the endpoint while 20 cameras upload; once the first file is
    stored, the broker that coordinates the connector's consumer group is SIGKILLed; the
    uploads and the storing go on, then the endpoint is let go, the broker still down."""
    cluster = kafka_cluster
    await fresh_topics(cluster)
    async with pipeline(tmp_path, kafka=cluster.bootstrap, common=CLUSTER_SETTINGS) as line:
        await start_pipeline_services(line)
        assert line.services[0].port is not None
        line.hooks.hold.clear()  # the endpoint keeps every POST waiting
        config = cameras(line.services[0].port, seed=1203)
        expected = expected_files(config)
        upload = asyncio.create_task(simulate(config))
        # The first files are stored and their webhooks held; the rest is still on its way.
        await line.until(lambda: line.hooks.held >= 1, 60, "a webhook held at the endpoint")
        group = f"{ConnectorSettings().connector_group_prefix}-platform"
        victim = await coordinator(cluster.bootstrap, group)
        assembler_coordinator = await coordinator(cluster.bootstrap, "fleetgate-assembler")
        files_leaders = await leaders(cluster.bootstrap, Topic.FILES)
        stored_before = len(line.objects())
        killed = time.monotonic()
        cluster.kill(victim)
        report = await upload  # the assembler goes on storing, with the broker down
        line.hooks.hold.set()  # the endpoint answers again, the broker still down
        await line.until(lambda: len(announced(line)) >= len(expected), 120, "every webhook")
        recovered = time.monotonic() - killed
        await asyncio.sleep(0.3)
        result = verdict(line, expected)
        cluster.start_node(victim)

        async def caught_up() -> bool:
            return all(n == 3 for n in await isr_sizes(cluster.bootstrap, Topic.CHUNKS))

        await eventually_async(caught_up, 90, "the restarted broker back", retry_on=BROKER_GONE)
    figure(
        "broker down while storing and delivering",
        cameras=CAMERAS,
        killed_node=victim,
        it_coordinated="connector group"
        + (" and assembler group" if assembler_coordinator == victim else ""),
        files_partitions_it_led=sum(1 for leader in files_leaders.values() if leader == victim),
        objects_stored_before_kill=f"{stored_before}/{len(expected)}",
        all_delivered_after_s=round(recovered, 2),
        **result,
    )
    assert report.ok, report.summary()
    assert report.files_accepted == len(expected)
    assert result == {"files": len(expected), "lost": 0, "corrupt": 0, "duplicates": 0}
