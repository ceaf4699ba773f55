"""Start real Apache Kafka (KRaft) brokers from the jars ``make kafka`` copies from Maven Central.

No Docker and no Kafka distribution: ``deploy/kafka/pom.xml`` pins ``kafka_2.13`` and
``mvn dependency:copy-dependencies`` puts it and its dependencies in ``.cache/kafka/lib``. Each
node here is one JVM in combined mode (broker and controller), formatted with the storage tool
(``kafka.tools.StorageTool``) and run as ``kafka.Kafka`` on its own ``server.properties``, with
settings that start fast and fail over fast on a laptop: small heap, short session timeouts,
no initial rebalance delay. A :class:`KafkaCluster` of one node is the tests' session broker
and ``FLEETGATE_BROKER=kafka make run``'s; of three (replication factor 3,
``min.insync.replicas`` 2, unclean leader election off) it is the fault tests' cluster.
Every node logs to ``<its dir>/server.log`` and can be killed (SIGKILL), stopped (SIGTERM) and
started again on the same data directory and ports.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .infra import REPO, Process, ensure_free, free_port

__all__ = [
    "KAFKA_LIB",
    "KafkaCluster",
    "KafkaMissing",
    "KafkaNode",
    "SaslSslListener",
    "java_missing_reason",
    "kafka_classpath",
    "new_cluster_id",
    "start_kafka",
]

#: Where ``make kafka`` copies the broker's jars (override with ``FLEETGATE_KAFKA_LIB``).
KAFKA_LIB = Path(os.environ.get("FLEETGATE_KAFKA_LIB", REPO / ".cache" / "kafka" / "lib"))

#: JVM flags: a small heap and the client compiler only (a broker here lives for minutes).
JVM_FLAGS = (
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
)

_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = out
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = info
logger.controller.name = org.apache.kafka.controller
logger.controller.level = warn
"""


class KafkaMissing(FileNotFoundError):
    """No Java 17+ or no broker jars: the reason says what to install or run."""


def java_missing_reason() -> str | None:
    """Why real Kafka cannot run here (None: it can). Kafka 4 needs Java 17 or newer."""
    java = shutil.which("java")
    if java is None:
        return "needs Java 17 (java not found)"
    try:
        out = subprocess.run(
            [java, "-XshowSettings:properties", "-version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"needs Java 17 ({java} does not run: {exc})"
    for line in out.splitlines():
        if "java.specification.version" in line:
            version = line.split("=", 1)[1].strip()
            major = int(version.split(".")[1] if version.startswith("1.") else version)
            if major < 17:
                return f"needs Java 17 (java is {version})"
            return None
    return f"needs Java 17 (cannot tell the version of {java})"


def kafka_classpath(lib: Path | None = None) -> str:
    lib = lib or KAFKA_LIB
    jars = sorted(lib.glob("*.jar"))
    if not any(jar.name.startswith("kafka_2.13-") for jar in jars):
        raise KafkaMissing(f"no Kafka jars in {lib}: run `make kafka` (needs Maven)")
    return os.pathsep.join(str(jar) for jar in jars)


@dataclass(frozen=True)
class SaslSslListener:
    """An extra SASL_SSL listener, as managed clusters have: TLS with a client certificate
    required, and users for PLAIN and SCRAM-SHA-256/512 (SCRAM ones are created at format).

    ``keystore``: one PEM file with the broker's certificate chain and its PKCS#8 key;
    ``truststore``: the PEM of the CA that signs client certificates.
    """

    keystore: Path
    truststore: Path
    users: Mapping[str, str]
    port: int = field(default_factory=free_port)


@dataclass
class KafkaNode:
    """One KRaft node (broker and controller in one JVM)."""

    node_id: int
    directory: Path
    port: int
    controller_port: int
    process: Process | None = None
    started_in: float = 0.0  # seconds from spawn to answering on its port, last start

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def log(self) -> Path:
        return self.directory / "server.log"

    @property
    def properties(self) -> Path:
        return self.directory / "server.properties"

    @property
    def alive(self) -> bool:
        popen = self.process.popen if self.process else None
        return popen is not None and popen.poll() is None

    def spawn(self, classpath: str) -> None:
        args = ["java", *JVM_FLAGS, *_log4j(self.directory), "-cp", classpath, "kafka.Kafka"]
        self.process = Process(
            f"kafka-{self.node_id}", [*args, str(self.properties)], self.port, self.log
        ).start()

    def kill(self) -> None:
        """SIGKILL: nothing flushed, no controlled shutdown."""
        if self.process is not None:
            self.process.kill()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM: a controlled shutdown (leadership moves away first)."""
        if self.process is not None:
            self.process.stop(timeout)


def new_cluster_id() -> str:
    """A random KRaft cluster id (URL-safe base64 of a UUID, as Kafka makes them), never one
    starting with ``-``: ``kafka-storage format -t -x...`` reads that as an option (about 1
    id in 64 would fail the format)."""
    while True:
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not candidate.startswith("-"):
            return candidate


@dataclass
class KafkaCluster:
    """``size`` KRaft nodes on 127.0.0.1 under ``directory``; :meth:`start` formats and runs."""

    directory: Path
    size: int = 1
    sasl_ssl: SaslSslListener | None = None
    #: Broker settings added to (or replacing) the defaults of :meth:`settings`.
    overrides: Mapping[str, str] = field(default_factory=dict)
    nodes: list[KafkaNode] = field(default_factory=list)
    cluster_id: str = field(default_factory=new_cluster_id)
    classpath: str = ""
    #: Client port of node 1 (0: a free one); the others always take free ports.
    port: int = 0

    @property
    def bootstrap(self) -> str:
        """PLAINTEXT bootstrap servers of every node."""
        return ",".join(node.address for node in self.nodes)

    @property
    def sasl_bootstrap(self) -> str:
        assert self.sasl_ssl is not None, "no SASL_SSL listener"
        return f"127.0.0.1:{self.sasl_ssl.port}"

    def node(self, node_id: int) -> KafkaNode:
        return next(node for node in self.nodes if node.node_id == node_id)

    def settings(self, node: KafkaNode) -> dict[str, str]:
        replicas = min(self.size, 3)
        isr = min(replicas, 2)
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        listeners = [f"PLAINTEXT://127.0.0.1:{node.port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(node.data),
            # Durability as production runs it.
            "default.replication.factor": str(replicas),
            "min.insync.replicas": str(isr),
            "unclean.leader.election.enable": "false",
            "offsets.topic.replication.factor": str(replicas),
            "transaction.state.log.replication.factor": str(replicas),
            "transaction.state.log.min.isr": str(isr),
            "share.coordinator.state.topic.replication.factor": str(replicas),
            "share.coordinator.state.topic.min.isr": str(isr),
            # Fast on a laptop: few internal partitions, joins without delay, a dead node
            # fenced within seconds, segments rolled often enough for compaction to be seen.
            "num.partitions": "4",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.num.partitions": "4",
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "500",
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "3000",
            "controller.quorum.fetch.timeout.ms": "2000",
            "controller.quorum.election.timeout.ms": "1000",
            "replica.lag.time.max.ms": "5000",
            "log.cleaner.backoff.ms": "1000",
            "log.retention.check.interval.ms": "5000",
            "num.io.threads": "4",
            "num.network.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "log.flush.offset.checkpoint.interval.ms": "1000",
            # Chunk records up to 16 MiB, as the pipeline's defaults allow.
            "message.max.bytes": str(16 * 1024 * 1024),
            "replica.fetch.max.bytes": str(16 * 1024 * 1024),
            "auto.create.topics.enable": "true",
            "delete.topic.enable": "true",
        }
        if self.sasl_ssl is not None:
            sec = self.sasl_ssl
            listeners.append(f"SASL_SSL://127.0.0.1:{sec.port}")
            protocols.append("SASL_SSL:SASL_SSL")
            plain_users = " ".join(f'user_{u}="{p}"' for u, p in sec.users.items())
            props |= {
                "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
                "listener.name.sasl_ssl.plain.sasl.jaas.config": (
                    "org.apache.kafka.common.security.plain.PlainLoginModule required "
                    f"{plain_users};"
                ),
                "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                ),
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                ),
                "ssl.keystore.type": "PEM",
                "ssl.keystore.location": str(sec.keystore),
                "ssl.truststore.type": "PEM",
                "ssl.truststore.location": str(sec.truststore),
                # A SASL_SSL listener ignores the unprefixed ssl.client.auth.
                "listener.name.sasl_ssl.ssl.client.auth": "required",
                "ssl.endpoint.identification.algorithm": "",
            }
        props["listeners"] = ",".join(
            [*listeners, f"CONTROLLER://127.0.0.1:{node.controller_port}"]
        )
        props["advertised.listeners"] = ",".join(listeners)
        props["listener.security.protocol.map"] = ",".join(protocols)
        return props | dict(self.overrides)

    def _scram_args(self) -> list[str]:
        if self.sasl_ssl is None:
            return []
        args = []
        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            for user, password in self.sasl_ssl.users.items():
                args += ["--add-scram", f"{mechanism}=[name={user},password={password}]"]
        return args

    def start(self, within: float = 90.0) -> KafkaCluster:
        """Format every node (in parallel), start them all, wait until each answers."""
        self.classpath = self.classpath or kafka_classpath()
        if not self.nodes:
            for node_id in range(1, self.size + 1):
                directory = self.directory / f"node-{node_id}"
                directory.mkdir(parents=True, exist_ok=True)
                port = self.port if node_id == 1 and self.port else free_port()
                self.nodes.append(KafkaNode(node_id, directory, port, free_port()))
        meta = self.nodes[0].data / "meta.properties"
        if meta.exists():  # formatted before (a kept data directory): same cluster
            for line in meta.read_text().splitlines():
                if line.startswith("cluster.id="):
                    self.cluster_id = line.split("=", 1)[1].strip()
        formats = []
        for node in self.nodes:
            _write_properties(node.properties, self.settings(node))
            (node.directory / "log4j2.properties").write_text(_LOG4J2)
            if not (node.data / "meta.properties").exists():
                formats.append((node, self._format(node)))
        for node, popen in formats:
            if popen.wait(within) != 0:
                raise RuntimeError(
                    f"formatting kafka-{node.node_id} failed:\n{node.log.read_text()[-3000:]}"
                )
        for node in self.nodes:
            self.start_node(node.node_id, wait=False)
        for node in self.nodes:
            self._wait(node, within)
        return self

    def _format(self, node: KafkaNode) -> subprocess.Popen[bytes]:
        args = ["java", *JVM_FLAGS, *_log4j(node.directory), "-cp", self.classpath]
        args += ["kafka.tools.StorageTool", "format", "--ignore-formatted"]
        args += ["-t", self.cluster_id, "-c", str(node.properties), *self._scram_args()]
        with node.log.open("ab") as out:
            return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)

    def start_node(self, node_id: int, *, wait: bool = True, within: float = 90.0) -> KafkaNode:
        """(Re)start one node on its data directory and ports."""
        node = self.node(node_id)
        node.started_in = time.monotonic()
        node.spawn(self.classpath)
        if wait:
            self._wait(node, within)
        return node

    def _wait(self, node: KafkaNode, within: float) -> None:
        assert node.process is not None
        try:
            node.process.wait_port(within)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}:\n{node.log.read_text(errors='replace')[-3000:]}") from None
        node.started_in = time.monotonic() - node.started_in

    def kill(self, node_id: int) -> None:
        self.node(node_id).kill()

    def stop(self, nodes: Iterable[int] | None = None) -> None:
        """Stop the given nodes (default: all, in parallel, then kill stragglers)."""
        chosen = [self.node(i) for i in nodes] if nodes is not None else self.nodes
        for node in chosen:
            popen = node.process.popen if node.process else None
            if popen is not None and popen.poll() is None:
                popen.terminate()
        deadline = time.monotonic() + 30
        for node in chosen:
            popen = node.process.popen if node.process else None
            if popen is None:
                continue
            try:
                popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()


def _log4j(directory: Path) -> Sequence[str]:
    return (f"-Dlog4j2.configurationFile={directory / 'log4j2.properties'}",)


def _write_properties(path: Path, props: Mapping[str, str]) -> None:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n")

    path.write_text("".join(f"{key}={escape(value)}\n" for key, value in sorted(props.items())))


def start_kafka(
    directory: Path,
    size: int = 1,
    *,
    sasl_ssl: SaslSslListener | None = None,
    overrides: Mapping[str, str] | None = None,
    port: int | None = None,
) -> KafkaCluster:
    """A running KRaft cluster of ``size`` nodes (raises :class:`KafkaMissing` if it can't)."""
    reason = java_missing_reason()
    if reason is not None:
        raise KafkaMissing(reason)
    if port:
        ensure_free(port, "the Kafka broker (FLEETGATE_KAFKA_PORT)")
    cluster = KafkaCluster(
        directory, size, sasl_ssl=sasl_ssl, overrides=dict(overrides or {}), port=port or 0
    )
    try:
        return cluster.start()
    except BaseException:
        cluster.stop()
        raise
