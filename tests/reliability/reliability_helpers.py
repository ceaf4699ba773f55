"""The pipeline as separate processes, to kill and restart: ``python -m fleetgate <service>``
with ``FLEETGATE_*`` settings, on a real Apache Kafka (the session's broker or a three-broker
cluster, passed in) or a Tansu of its own (to restart it), and s3rver (``devstack.infra``),
webhooks to a real HTTP server in the test process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from minio import Minio

from camproto import DeviceFile
from devstack.infra import (
    S3RVER,
    S3RVER_KEY,
    TANSU_CLIENT_ENV,
    BrokerStorage,
    Process,
    create_topics,
    free_port,
    start_s3rver,
    start_tansu,
    tansu_binary,
    wait_kafka,
)
from simulator import ContentSpec, Fleet, SimulationConfig
from tests.bucket import contents
from tests.e2e.e2e_helpers import Receiver, receiver
from tests.helpers import eventually

BUCKET = "fleetgate"


def camera_file(size: int, *, seed: int = 1, dualcam: bool = True) -> tuple[int, DeviceFile]:
    """(IMEI, a video of ``size`` bytes with its metadata) as the simulator makes them."""
    config = SimulationConfig(
        devices=1, dualcam_ratio=1.0 if dualcam else 0.0, seed=seed,
        content=ContentSpec(photos=0, videos=1, video_size=size),
    )  # fmt: skip
    (plan,) = Fleet(config).plans
    (item,) = plan.files(config.content)
    return plan.imei, item


# Processes ---------------------------------------------------------------------------------


@dataclass
class Service:
    """``fleetgate <command>`` as a child process; each run logs to its own file."""

    command: str
    env: dict[str, str]
    workdir: Path
    name: str = ""
    port: int | None = None  # the ingestor's camera port
    popen: subprocess.Popen[bytes] | None = None
    runs: int = 0
    stopped: bool = False  # by the test: its exit is no failure

    def __post_init__(self) -> None:
        self.name = self.name or self.command

    def log(self, run: int | None = None) -> Path:
        return self.workdir / f"{self.name}-{run or self.runs}.log"

    def start(self) -> Service:
        self.runs += 1
        self.stopped = False
        with self.log().open("ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "fleetgate", self.command],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONWARNINGS": "ignore", **self.env},
                cwd=self.workdir,
            )
        return self

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed."""
        self.stopped = True
        if self.alive:
            assert self.popen is not None
            self.popen.kill()
            self.popen.wait()

    async def terminate(self, within: float = 30.0) -> int:
        """SIGTERM, then wait for the exit status (the event loop goes on meanwhile)."""
        popen = self.popen
        assert popen is not None
        self.stopped = True
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                await eventually(lambda: popen.poll() is not None, within, f"{self.name} exit")
            except TimeoutError:
                popen.kill()
                popen.wait()
                raise
        return popen.returncode

    def events(self, event: str | None = None, run: int | None = None) -> list[dict[str, Any]]:
        """JSON log lines of one run (default: the current one), optionally of one event."""
        path = self.log(run)
        out = []
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    with contextlib.suppress(ValueError):
                        record = json.loads(line)
                        if event is None or record.get("event") == event:
                            out.append(record)
        return out

    async def wait_logged(self, event: str, count: int = 1, within: float = 30.0) -> None:
        await eventually(
            lambda: len(self.events(event)) >= count or not self.alive, within, f"{event}"
        )
        if not self.alive:
            tail = self.log().read_text(errors="replace")[-3000:]
            status = None if self.popen is None else self.popen.returncode
            raise AssertionError(f"{self.name} exited ({status}):\n{tail}")

    async def wait_listening(self, within: float = 60.0) -> None:
        assert self.port is not None

        def up() -> bool:
            if not self.alive:
                raise AssertionError(f"{self.name} exited:\n{self.log().read_text()[-3000:]}")
            with socket.socket() as sock:
                sock.settimeout(0.2)
                return sock.connect_ex(("127.0.0.1", self.port or 0)) == 0

        await eventually(up, within, f"{self.name} listening")


# Webhooks ------------------------------------------------------------------------------------


# The pipeline ------------------------------------------------------------------------------


@dataclass
class Pipeline:
    """Tansu, s3rver, a webhook receiver and the services, each restartable."""

    workdir: Path
    hooks: Receiver
    kafka_port: int = 0
    s3_port: int = 0
    #: Tansu keeps topics in memory (lost on restart) or in s3rver's bucket "tansu" (kept).
    durable_broker: bool = False
    #: Bootstrap of a running Kafka with fleetgate's topics (none: a Tansu of our own).
    kafka: str | None = None
    #: Extra FLEETGATE_* settings of every service (e.g. replication on a cluster).
    common: dict[str, str] = field(default_factory=dict)
    broker: Process | None = None
    s3: Process | None = None
    services: list[Service] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return self.kafka or f"127.0.0.1:{self.kafka_port}"

    @property
    def s3_endpoint(self) -> str:
        return f"127.0.0.1:{self.s3_port}"

    def s3_client(self) -> Minio:
        return Minio(self.s3_endpoint, S3RVER_KEY, S3RVER_KEY, secure=False, region="us-east-1")

    async def start_broker(self) -> None:
        """Tansu on the same port each time; then fleetgate's topics."""
        storage = BrokerStorage(s3_endpoint=self.s3_endpoint if self.durable_broker else None)
        if not self.kafka_port:
            self.broker = start_tansu(log=self.workdir / "tansu.log", storage=storage)
            self.kafka_port = self.broker.port
        else:  # a restart: the port may have connections in TIME_WAIT, which Tansu allows
            url = f"tcp://127.0.0.1:{self.kafka_port}"
            args = [str(tansu_binary()), "broker", "--listener-url", url]
            args += ["--advertised-listener-url", url, *storage.args()]
            self.broker = Process(
                "tansu", args, self.kafka_port, self.workdir / "tansu.log", env=storage.env()
            )
            self.broker.start().wait_port()
        await wait_kafka(self.bootstrap)
        await create_topics(self.bootstrap)

    def start_s3(self) -> None:
        """s3rver on the same port and directory each time (objects survive a restart)."""
        directory = self.workdir / "s3"
        if not self.s3_port:
            self.s3 = start_s3rver(directory, log=self.workdir / "s3rver.log")
            self.s3_port = self.s3.port
            return
        args = [str(S3RVER), "-a", "127.0.0.1", "-p", str(self.s3_port), "-d", str(directory)]
        self.s3 = Process("s3rver", [*args, "--silent"], self.s3_port, self.workdir / "s3rver.log")
        self.s3.start().wait_port()

    def _common(self) -> dict[str, str]:
        return {
            "FLEETGATE_KAFKA_BOOTSTRAP": self.bootstrap,
            **({} if self.kafka else TANSU_CLIENT_ENV),
            "FLEETGATE_LOG_JSON": "true",
            "FLEETGATE_LOG_LEVEL": "INFO",
            "FLEETGATE_METRICS_PORT": "0",
        } | self.common

    def _add(self, service: Service) -> Service:
        self.services.append(service)
        return service.start()

    def ingestor(self, name: str, **settings: str) -> Service:
        port = free_port()
        env = self._common() | {
            "FLEETGATE_CAMERA_HOST": "127.0.0.1",
            "FLEETGATE_CAMERA_PORT": str(port),
            "FLEETGATE_DMT_PORT": "0",  # several ingestors on one host: any free port
            "FLEETGATE_INSTANCE": name,
        }
        env |= {f"FLEETGATE_{k.upper()}": v for k, v in settings.items()}
        return self._add(Service("ingestor", env, self.workdir, name=name, port=port))

    def _s3_env(self) -> dict[str, str]:
        return {
            "FLEETGATE_S3_ENDPOINT": self.s3_endpoint,
            "FLEETGATE_S3_ACCESS_KEY": S3RVER_KEY,
            "FLEETGATE_S3_SECRET_KEY": S3RVER_KEY,
            "FLEETGATE_S3_BUCKET": BUCKET,
        }

    def assembler(self, **settings: str) -> Service:
        env = (
            self._common()
            | self._s3_env()
            | {
                "FLEETGATE_SPOOL_DIR": str(self.workdir / "spool"),
                "FLEETGATE_S3_PART_SIZE": str(5 * 1024 * 1024),
                "FLEETGATE_S3_RETRY_MAX_SECONDS": "1",
                "FLEETGATE_S3_TIMEOUT_SECONDS": "5",
                "FLEETGATE_BROKER_SESSION_TIMEOUT_SECONDS": "6",
                "FLEETGATE_BROKER_REBALANCE_TIMEOUT_SECONDS": "6",
                "FLEETGATE_BROKER_HEARTBEAT_INTERVAL_SECONDS": "1",
                "FLEETGATE_BROKER_COMMIT_INTERVAL_SECONDS": "0.2",
            }
        )
        env |= {f"FLEETGATE_{k.upper()}": v for k, v in settings.items()}
        return self._add(Service("assembler", env, self.workdir))

    def connector(self, **settings: str) -> Service:
        config = self.workdir / "connector.yaml"
        config.write_text(
            "endpoints:\n"
            "  - name: platform\n"
            f"    url: {self.hooks.url}\n"
            "    timeout_seconds: 60\n"
            "    allow_private_network: true\n"
        )
        env = (
            self._common()
            | self._s3_env()
            | {
                "FLEETGATE_CONNECTOR_CONFIG": str(config),
                "FLEETGATE_KAFKA_SESSION_TIMEOUT_MS": "6000",
                "FLEETGATE_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
                "FLEETGATE_RETRY_INITIAL_SECONDS": "0.2",
                "FLEETGATE_RETRY_MAX_SECONDS": "1",
            }
        )
        env |= {f"FLEETGATE_{k.upper()}": v for k, v in settings.items()}
        return self._add(Service("connector", env, self.workdir))

    def check(self) -> None:
        """Raise if a service died that the test did not stop."""
        for service in self.services:
            if not service.stopped and not service.alive:
                tail = service.log().read_text(errors="replace")[-3000:]
                raise AssertionError(f"{service.name} died:\n{tail}")

    async def until(self, condition: Callable[[], bool], within: float, what: str) -> None:
        """:func:`eventually`, failing at once if a service dies meanwhile."""

        def check() -> bool:
            self.check()
            return condition()

        await eventually(check, within, what)

    def objects(self) -> dict[str, bytes]:
        return contents(self.s3_client(), BUCKET)

    def stop(self) -> None:
        for service in reversed(self.services):
            service.kill()
        for process in (self.s3, self.broker):
            if process is not None:
                process.stop()


@contextlib.asynccontextmanager
async def pipeline(
    workdir: Path,
    *,
    kafka: str | None = None,
    durable_broker: bool = False,
    common: dict[str, str] | None = None,
) -> Any:
    """S3 with the bucket, a broker (``kafka``, or a Tansu of its own), a webhook receiver;
    services are started by the test."""
    with receiver() as hooks:
        line = Pipeline(workdir, hooks, durable_broker=durable_broker, kafka=kafka)
        line.common = dict(common or {})
        try:
            line.start_s3()
            client = line.s3_client()
            for bucket in (BUCKET, "tansu") if durable_broker else (BUCKET,):
                if not client.bucket_exists(bucket):
                    client.make_bucket(bucket)
            if kafka is None:
                await line.start_broker()
            yield line
        finally:
            line.stop()
