"""Real infrastructure for tests that cross a boundary: Apache Kafka, Tansu and an S3 server.

- ``kafka``: a real single-node Apache Kafka (KRaft) broker, started once per session from the
  jars of ``make kafka`` (about 6 s), emptied before each test: every topic deleted (with the
  group offsets on it) and fleetgate's topics created again, so each test starts as on a fresh
  broker. Tests using it carry the marker ``real_kafka`` and skip, with the reason, where there
  is no Java 17.
- ``kafka_cluster``: three KRaft nodes (replication factor 3, ``min.insync.replicas`` 2) for the
  fault tests (marker ``kafka_cluster``), started for those tests only.
- ``tansu``: the embedded default's broker, fresh per test (it starts in milliseconds), for the
  few tests that keep ``make run``'s default honest.
- ``s3``: a fresh s3rver per test.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from aiokafka.admin import AIOKafkaAdminClient
from cryptography.hazmat.primitives import serialization
from minio import Minio

from devstack.infra import (
    DEFAULT_PARTITIONS,
    S3RVER_KEY,
    TANSU_CLIENT_ENV,
    TopicsNotCreated,
    create_topics,
    start_s3rver,
    start_tansu,
    wait_kafka,
)
from devstack.kafka import KafkaCluster, SaslSslListener, java_missing_reason, start_kafka

#: SASL users of the session broker's SASL_SSL listener (PLAIN and both SCRAM mechanisms).
SASL_USERS = {"fleetgate": "fleetgate-secret"}


#: The fast layer (``make check``): pure code, no sockets, no brokers, no child processes.
FAST = (
    "tests/camproto/",
    "tests/contracts/",
    "tests/test_readme.py",
    "tests/assembler/test_assembler_agent.py",
    "tests/assembler/test_assembler_keys.py",
    "tests/assembler/test_assembler_state.py",
    "tests/connector/test_connector_config.py",
    "tests/connector/test_connector_units.py",
    "tests/kafka/test_kafka_security.py::test_settings_check_what_goes_together",
)
#: Tests whose assertions include latencies or deadlines that another test running beside
#: them would break: `make test` runs the rest on two workers, then these alone.
SERIAL = (
    "tests/connector/test_connector_outage.py",
    "tests/connector/test_connector_delivery.py::test_a_dead_endpoint_does_not_delay_a_healthy_one",
    "tests/connector/test_connector_reliability.py",
    "tests/connector/test_connector_units.py::test_rate_limiter_spaces_requests_evenly",
    "tests/hostile/",
)
#: Fixtures that start or reach infrastructure: a test using one is never in the fast layer.
INFRASTRUCTURE = {"kafka", "kafka_broker", "kafka_cluster", "tansu", "s3"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark what uses a real broker (``-m "not real_kafka"`` leaves it out), the fast
    layer (``-m fast``) and the tests that run alone (``-m serial``)."""
    root = Path(str(config.rootpath))
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & {"kafka", "kafka_broker"}:
            item.add_marker(pytest.mark.real_kafka)
        if "kafka_cluster" in names:
            item.add_marker(pytest.mark.kafka_cluster)
        where = Path(str(item.path)).relative_to(root).as_posix()
        node = where + item.nodeid.partition("::")[1] + item.nodeid.partition("::")[2]
        if not names & INFRASTRUCTURE and any(node.startswith(prefix) for prefix in FAST):
            item.add_marker(pytest.mark.fast)
        if any(node.startswith(prefix) for prefix in SERIAL):
            item.add_marker(pytest.mark.serial)
        if _shares_a_fixture(item):  # one worker runs the module: its fixture starts once
            item.add_marker(pytest.mark.xdist_group(where))


def _shares_a_fixture(item: pytest.Item) -> bool:
    """Whether the test uses a fixture wider than itself but narrower than the session."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(
        defs[-1].scope in ("class", "module", "package")
        for defs in info.name2fixturedefs.values()
        if defs
    )


def _require_java() -> None:
    reason = java_missing_reason()
    if reason is not None:
        pytest.skip(reason)


@dataclass(frozen=True)
class KafkaTls:
    """Files of the session broker's TLS: its CA, and a client certificate it accepts."""

    ca: Path
    client_cert: Path
    client_key: Path


@dataclass(frozen=True)
class KafkaBroker:
    cluster: KafkaCluster
    tls: KafkaTls

    @property
    def bootstrap(self) -> str:
        return self.cluster.bootstrap

    @property
    def sasl_bootstrap(self) -> str:
        return self.cluster.sasl_bootstrap


def _certificates(directory: Path) -> tuple[Path, Path, KafkaTls]:
    """(broker keystore PEM, truststore PEM, client files), all from one throwaway CA."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    key = serialization.load_pem_private_key(server.private_key_pem.bytes(), password=None)
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )  # Kafka's PEM keystore takes PKCS#8 keys only
    keystore = directory / "broker.pem"
    keystore.write_bytes(b"".join(b.bytes() for b in server.cert_chain_pems) + pkcs8)
    truststore = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(truststore))
    client = ca.issue_cert("fleetgate-client")
    cert, client_key = directory / "client.pem", directory / "client.key"
    cert.write_bytes(b"".join(b.bytes() for b in client.cert_chain_pems))
    client.private_key_pem.write_to_path(str(client_key))
    return keystore, truststore, KafkaTls(truststore, cert, client_key)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """The session's single-node Apache Kafka, with a PLAINTEXT and a SASL_SSL listener."""
    _require_java()
    root = tmp_path_factory.mktemp("kafka")
    keystore, truststore, tls = _certificates(root / "tls")
    started = time.monotonic()
    cluster = start_kafka(
        root / "broker", 1, sasl_ssl=SaslSslListener(keystore, truststore, SASL_USERS)
    )
    try:
        asyncio.run(wait_kafka(cluster.bootstrap, within=60))
        print(f"\nApache Kafka broker up in {time.monotonic() - started:.1f} s")
        yield KafkaBroker(cluster, tls)
    finally:
        cluster.stop()


async def reset_kafka(bootstrap: str, within: float = 30.0) -> None:
    """Delete every topic but Kafka's own (their group offsets go with them), then create
    fleetgate's topics afresh."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        topics = {t for t in await admin.list_topics() if not t.startswith("__")}
        if topics:
            await admin.delete_topics(sorted(topics), timeout_ms=10000)
            deadline = time.monotonic() + within
            while topics & set(await admin.list_topics()):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"topics not deleted within {within} s")
                await asyncio.sleep(0.05)
        # Created is not yet served: wait until the broker leads every partition. A busy
        # broker may answer a creation with a timeout and go on creating: ask again.
        deadline = time.monotonic() + within
        failure: Exception | None = None
        while True:
            try:
                await create_topics(bootstrap)
            except TopicsNotCreated as exc:
                failure = exc
            if await _all_led(admin):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"fleetgate's topics not served after {within} s: {failure}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def _all_led(admin: AIOKafkaAdminClient) -> bool:
    names = [t for t in await admin.list_topics() if not t.startswith("__")]
    if not {str(t) for t in DEFAULT_PARTITIONS} <= set(names):
        return False
    for topic in await admin.describe_topics(names):
        if topic["error_code"] or any(
            p["error_code"] or p["leader"] < 0 for p in topic["partitions"]
        ):
            return False
    return True


@pytest.fixture
def kafka(kafka_broker: KafkaBroker) -> str:
    """Bootstrap address of the session's Apache Kafka broker, emptied, with fleetgate's topics."""
    asyncio.run(reset_kafka(kafka_broker.bootstrap))
    return kafka_broker.bootstrap


@pytest.fixture(scope="module")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Three KRaft nodes, replication factor 3, min.insync.replicas 2, no unclean election."""
    _require_java()
    started = time.monotonic()
    cluster = start_kafka(tmp_path_factory.mktemp("kafka-cluster"), 3)
    try:
        asyncio.run(wait_kafka(cluster.bootstrap, within=60))
        print(f"\nthree-broker Apache Kafka cluster up in {time.monotonic() - started:.1f} s")
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def tansu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Bootstrap address of a fresh Tansu broker with fleetgate's topics created; settings
    read from the environment meanwhile get the Tansu workarounds (``TANSU_CLIENT_ENV``)."""
    for name, value in TANSU_CLIENT_ENV.items():
        monkeypatch.setenv(name, value)
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
