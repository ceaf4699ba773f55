"""Consumer lag computed by the services: committed vs end offsets, per group and topic."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import REGISTRY

from runtime.lag import LagMonitor, lag_by_topic

A0, A1, B0 = TopicPartition("a", 0), TopicPartition("a", 1), TopicPartition("b", 0)


@pytest.mark.parametrize(
    ("end", "committed", "beginning", "lag"),
    [
        ({A0: 10, A1: 5, B0: 0}, {A0: 4, A1: 5}, {}, {"a": 6, "b": 0}),
        # never committed: everything retained counts
        ({A0: 10}, {}, {A0: 3}, {"a": 7}),
        # the commit fell behind retention: only what is left counts
        ({A0: 10}, {A0: 1}, {A0: 8}, {"a": 2}),
        # a commit past the end (a topic recreated) is no negative lag
        ({A0: 2}, {A0: 9}, {}, {"a": 0}),
        ({}, {A0: 1}, {}, {}),
    ],
)
def test_lag_by_topic(
    end: dict[TopicPartition, int],
    committed: dict[TopicPartition, int],
    beginning: dict[TopicPartition, int],
    lag: dict[str, int],
) -> None:
    assert lag_by_topic(end, committed, beginning) == lag


def _sample(group: str, topic: str) -> float | None:
    return REGISTRY.get_sample_value(
        "fleetgate_consumer_lag_records", {"group": group, "topic": topic}
    )


async def test_the_monitor_reads_committed_and_end_offsets_from_kafka(kafka: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("lag.test", 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=kafka, linger_ms=0)
    await producer.start()
    try:
        for i in range(10):  # one record per request (the embedded broker's ListOffsets is
            await producer.send_and_wait("lag.test", str(i).encode())  # exact then)
    finally:
        await producer.stop()
    # no auto-commit: stopping would commit the position it fetched up to
    committer = AIOKafkaConsumer(
        bootstrap_servers=kafka, group_id="lag-group", enable_auto_commit=False
    )
    await committer.start()
    try:
        committer.assign([TopicPartition("lag.test", 0)])
        await committer.commit({TopicPartition("lag.test", 0): OffsetAndMetadata(4, "")})
    finally:
        await committer.stop()

    monitor = LagMonitor(kafka, "lag-group", ["lag.test", "lag.absent"], interval=0.05)
    assert _sample("lag-group", "lag.test") == 0.0  # exported at zero from start-up
    assert _sample("lag-group", "lag.absent") == 0.0
    task = asyncio.create_task(monitor.run())
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while _sample("lag-group", "lag.test") != 6.0:
            assert asyncio.get_running_loop().time() < deadline, _sample("lag-group", "lag.test")
            await asyncio.sleep(0.05)
        other = LagMonitor(kafka, "lag-other-group", ["lag.test"], interval=0.05)
        other_task = asyncio.create_task(other.run())
        try:
            while _sample("lag-other-group", "lag.test") != 10.0:  # nothing committed
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
        finally:
            other_task.cancel()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_an_unreachable_kafka_counts_errors_and_keeps_trying() -> None:
    from devstack.infra import free_port

    monitor = LagMonitor(f"127.0.0.1:{free_port()}", "lag-nowhere", ["t"], interval=0.05)
    errors = "fleetgate_consumer_lag_errors_total"
    assert REGISTRY.get_sample_value(errors, {"group": "lag-nowhere"}) == 0.0
    task = asyncio.create_task(monitor.run())
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while (REGISTRY.get_sample_value(errors, {"group": "lag-nowhere"}) or 0) < 2:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("service", ["assembler", "connector"])
def test_the_lag_interval_and_kafka_security_are_the_services_settings(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from assembler.cli import lag_monitor
    from assembler.settings import AssemblerSettings
    from connector.cli import lag_monitors
    from connector.config import parse_config
    from connector.settings import ConnectorSettings

    monkeypatch.setenv("FLEETGATE_LAG_INTERVAL_SECONDS", "2.5")
    monkeypatch.setenv("FLEETGATE_KAFKA_BOOTSTRAP", "kafka-0:9093,kafka-1:9093")
    monkeypatch.setenv("FLEETGATE_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("FLEETGATE_KAFKA_SASL_USERNAME", "fleetgate")
    monkeypatch.setenv("FLEETGATE_KAFKA_SASL_PASSWORD", "s3cret")
    if service == "assembler":
        monitors = [lag_monitor(AssemblerSettings())]
        assert AssemblerSettings.model_fields["lag_interval_seconds"].default == 15.0
    else:
        config = parse_config(
            "endpoints:\n  - name: a\n    url: https://a.example\n"
            "  - name: b\n    url: https://b.example\n"
        )
        monitors = lag_monitors(ConnectorSettings(), config)
        assert ConnectorSettings.model_fields["lag_interval_seconds"].default == 15.0
        assert [m.group for m in monitors] == ["fleetgate-connector-a", "fleetgate-connector-b"]
    for monitor in monitors:
        assert monitor.interval == 2.5
        assert monitor.bootstrap == "kafka-0:9093,kafka-1:9093"
        assert monitor.client_kwargs["security_protocol"] == "SASL_PLAINTEXT"
        assert monitor.client_kwargs["sasl_plain_password"] == "s3cret"
    monkeypatch.setenv("FLEETGATE_LAG_INTERVAL_SECONDS", "0")
    with pytest.raises(ValueError, match="lag_interval_seconds"):
        AssemblerSettings() if service == "assembler" else ConnectorSettings()
