"""TLS and SASL against a real Apache Kafka listener configured SASL_SSL, as managed clusters are:
the broker requires a client certificate and a SASL login (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
Every client is built from ``FLEETGATE_KAFKA_*`` settings by ``runtime.kafka``, the same
functions the services use."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError
from pydantic import ValidationError

from contracts import Topic
from devstack.infra import create_topics, wait_kafka
from devstack.lag import ASSEMBLER_GROUP, LagReader
from ingestor.settings import IngestorSettings
from ingestor.sink import KafkaSink
from runtime.kafka import KafkaSettings, client_kwargs, faust_app, producer_kwargs
from tests.conftest import SASL_USERS, KafkaBroker
from tests.helpers import eventually_async

USER, PASSWORD = next(iter(SASL_USERS.items()))


def secure(broker: KafkaBroker, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "kafka_bootstrap": broker.sasl_bootstrap,
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": USER,
        "kafka_sasl_password": PASSWORD,
        "kafka_ssl_cafile": broker.tls.ca,
        "kafka_ssl_certfile": broker.tls.client_cert,
        "kafka_ssl_keyfile": broker.tls.client_key,
    }
    return values | overrides


async def round_trip(settings: KafkaSettings, topic: str) -> bytes | None:
    producer = AIOKafkaProducer(**producer_kwargs(settings), request_timeout_ms=10000)
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b"over SASL_SSL", key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(**client_kwargs(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, sent.partition)
        consumer.assign([tp])
        consumer.seek(tp, sent.offset)
        record = await consumer.getone()
        value: bytes | None = record.value
        return value
    finally:
        await consumer.stop()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_producer_and_consumer_over_sasl_ssl(
    kafka_broker: KafkaBroker, mechanism: str
) -> None:
    settings = KafkaSettings(**secure(kafka_broker, kafka_sasl_mechanism=mechanism))
    assert settings.kafka_enable_idempotence  # on by default, and a real broker grants it
    topic = f"security-{mechanism.lower()}-{uuid.uuid4().hex[:8]}"
    assert await round_trip(settings, topic) == b"over SASL_SSL"


async def test_admin_over_sasl_ssl_sees_the_topics(kafka_broker: KafkaBroker, kafka: str) -> None:
    admin = AIOKafkaAdminClient(**client_kwargs(KafkaSettings(**secure(kafka_broker))))
    await admin.start()
    try:
        assert "fleetgate.camera.chunks.v1" in await admin.list_topics()
    finally:
        await admin.close()


async def test_a_service_settings_connect_from_the_environment(
    kafka_broker: KafkaBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ingestor's own settings class, read from FLEETGATE_KAFKA_* variables."""
    for name, value in secure(kafka_broker, kafka_sasl_mechanism="SCRAM-SHA-256").items():
        monkeypatch.setenv(f"FLEETGATE_{name.upper()}", str(value))
    sink = KafkaSink(IngestorSettings(instance="secure"))
    await sink.producer.start()
    try:
        future = await sink.send("security-ingestor", b"k", b"v", [])
        assert (await future).offset == 0
    finally:
        await sink.producer.stop()


async def test_faust_app_producer_over_sasl_ssl(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    settings = KafkaSettings(**secure(kafka_broker, kafka_sasl_mechanism="PLAIN"))
    app = faust_app(settings, "security-test", datadir=str(tmp_path), web_enabled=False)
    producer = app.producer
    await producer.start()
    try:
        metadata = await producer.send_and_wait("security-faust", b"k", b"v", None, None, None)
        assert metadata.offset == 0
    finally:
        await producer.stop()


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"kafka_sasl_password": "wrong"}, KafkaError),
        ({"kafka_sasl_mechanism": "PLAIN", "kafka_sasl_username": "nobody"}, KafkaError),
        # The broker requires a client certificate: the TLS handshake fails without one.
        ({"kafka_ssl_certfile": None, "kafka_ssl_keyfile": None}, KafkaConnectionError),
        # Our CA is not the system's: an unverified broker is refused.
        ({"kafka_ssl_cafile": None}, KafkaConnectionError),
    ],
    ids=["bad-password", "unknown-user", "no-client-certificate", "untrusted-broker"],
)
async def test_wrong_credentials_are_refused(
    kafka_broker: KafkaBroker, overrides: dict[str, Any], error: type[Exception]
) -> None:
    settings = KafkaSettings(**secure(kafka_broker, **overrides))
    producer = AIOKafkaProducer(**producer_kwargs(settings), request_timeout_ms=5000)
    with pytest.raises(error):
        await producer.start()
    await producer.stop()


def test_settings_check_what_goes_together() -> None:
    with pytest.raises(ValidationError, match="needs kafka_sasl_username"):
        KafkaSettings(kafka_security_protocol="SASL_PLAINTEXT")
    with pytest.raises(ValidationError, match="go together"):
        KafkaSettings(kafka_ssl_certfile=Path("client.pem"))
    plain = client_kwargs(KafkaSettings(kafka_bootstrap="a:1,b:2"))
    assert plain == {"bootstrap_servers": "a:1,b:2", "security_protocol": "PLAINTEXT"}
    assert producer_kwargs(KafkaSettings(kafka_enable_idempotence=False))["enable_idempotence"] is (
        False
    )


async def test_devstack_creates_topics_and_reads_lag_over_sasl_ssl(
    kafka_broker: KafkaBroker, kafka: str
) -> None:
    """``fleetgate devstack`` against a secured external cluster: its own clients (readiness,
    topic creation, the drain's lag reader) connect with the shared settings too."""
    settings = KafkaSettings(**secure(kafka_broker, kafka_sasl_mechanism="SCRAM-SHA-256"))
    plain = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await plain.start()
    try:  # one of fleetgate's topics gone: create_topics over SASL_SSL puts it back
        await plain.delete_topics([str(Topic.DEVICES)])
        await eventually_async(
            lambda: _missing(plain, Topic.DEVICES), 30, "the devices topic deleted"
        )
    finally:
        await plain.close()
    await wait_kafka(settings, within=30)
    await create_topics(settings)
    assert str(Topic.DEVICES) in await _topics(settings)

    producer = AIOKafkaProducer(**producer_kwargs(settings))
    await producer.start()
    try:
        for n in range(3):
            await producer.send_and_wait(Topic.CHUNKS, b"chunk", key=b"t%d" % n)
    finally:
        await producer.stop()
    reader = LagReader(settings)
    await reader.start()
    try:
        lags = await reader.lags()
    finally:
        await reader.close()
    # (connector groups of earlier tests on this broker outlive their topics: nothing to do)
    assert [(lag.group, lag.records) for lag in lags if lag.records] == [(ASSEMBLER_GROUP, 3)]
    assert lags[0].group == ASSEMBLER_GROUP


async def _topics(settings: KafkaSettings) -> set[str]:
    admin = AIOKafkaAdminClient(**client_kwargs(settings))
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def _missing(admin: AIOKafkaAdminClient, topic: str) -> bool:
    return topic not in await admin.list_topics()


async def test_devstack_refuses_a_secured_broker_without_credentials(
    kafka_broker: KafkaBroker,
) -> None:
    with pytest.raises(TimeoutError, match="not ready"):
        await wait_kafka(kafka_broker.sasl_bootstrap, within=2)
