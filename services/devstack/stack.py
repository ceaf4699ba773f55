"""``fleetgate devstack``: the whole pipeline on one machine, what ``make run`` starts.

It starts a Tansu broker and an s3rver (unless ``FLEETGATE_KAFKA_BOOTSTRAP`` /
``FLEETGATE_S3_ENDPOINT`` point at real ones), creates the topics and the bucket, then runs
ingestor, assembler and connector as child processes, each the same ``fleetgate <service>``
that runs in production. A service that exits is restarted with backoff (the rest keeps
running). A stop (Ctrl-C, SIGTERM) stops the ingestor first (it drains: only durable bytes are
confirmed), waits for the assembler and connector to catch up with Kafka (consumer lag 0, up
to ``stop_drain_seconds``), stops them, and stops the broker last. Without
``FLEETGATE_CONNECTOR_CONFIG`` it also starts a webhook sink that writes what it receives to
``<data dir>/webhooks.jsonl``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from aiokafka.errors import KafkaError
from minio import Minio
from pydantic import Field

from runtime import CommonSettings, configure_logging
from runtime.kafka import KafkaSettings

from .infra import (
    S3RVER_KEY,
    TANSU_CLIENT_ENV,
    BrokerStorage,
    PortInUse,
    Process,
    create_topics,
    free_port,
    start_s3rver,
    start_tansu,
    wait_kafka,
)
from .kafka import start_kafka
from .lag import LagReader, StallWatch, describe
from .supervisor import Backoff, Supervised


class DevstackSettings(CommonSettings):
    data_dir: Path = Field(Path(".fleetgate"), description="where files, logs and config go")
    camera_port: int = Field(5232, description="device TCP port of the ingestor")
    dmt_port: int = Field(5233, description="Digital Matter TCP port of the ingestor")
    kafka_port: int = Field(9092, description="port of the embedded broker (if started)")
    s3_port: int = Field(9000, description="port of the embedded S3 server (if started)")
    broker: Literal["tansu", "kafka"] = Field(
        "tansu", description="embedded Tansu, or a local Apache Kafka (needs Java 17, make kafka)"
    )
    broker_storage: Literal["memory", "s3"] = Field(
        "memory",
        description="embedded broker keeps topics in memory (fast, gone on restart) or in the "
        "S3 server's bucket 'tansu' (kept across restarts, about 5 MB/s)",
    )
    s3_endpoint: str | None = Field(None, description="external S3 (host:port); none: embedded")
    s3_access_key: str = Field(S3RVER_KEY, description="S3 access key")
    s3_secret_key: str = Field(S3RVER_KEY, description="S3 secret key")
    s3_bucket: str = Field("fleetgate", description="bucket the files land in")
    connector_config: Path | None = Field(None, description="endpoints YAML; none: local sink")
    sink_port: int = Field(8099, description="port of the local webhook sink (if started)")
    metrics_base_port: int = Field(
        9101, description="ingestor /metrics here, assembler +1, connector +2; 0: off"
    )
    restart_initial_seconds: float = Field(
        0.5, gt=0, description="pause before restarting a service that exited (doubles)"
    )
    restart_max_seconds: float = Field(30.0, gt=0, description="longest pause before a restart")
    ingestor_stop_seconds: float = Field(
        40.0,
        gt=0,
        description="on stop, seconds the ingestor has to drain (its drain and close "
        "timeouts) before it is killed",
    )
    stop_drain_seconds: float = Field(
        60.0,
        ge=0,
        description="on stop, seconds the assembler and connector get to finish what Kafka "
        "holds once the ingestor is gone (what is left is printed)",
    )
    stop_stall_seconds: float = Field(
        10.0,
        gt=0,
        description="on stop, the wait for the assembler and connector ends early once their "
        "lag has not moved for this long (chunks of transfers the ingestor cut short are "
        "never done until their device comes back)",
    )


SERVICES = ("ingestor", "assembler", "connector")

#: What the banner says the in-memory broker forgets (the README says the same).
MEMORY_BROKER_NOTE = (
    "what Kafka holds is gone when the stack stops or the broker dies: files confirmed to "
    "devices but not yet stored, webhooks not yet delivered, transfer progress (a stop waits "
    "for the assembler and connector to finish first). Nothing is evicted meanwhile: Tansu's "
    "memory engine applies no retention, memory grows with every byte uploaded until the "
    "stack stops. FLEETGATE_BROKER_STORAGE=s3 keeps the records across restarts."
)


def _fleetgate(*args: str) -> list[str]:
    return [sys.executable, "-m", "fleetgate", *args]


def _say(message: str) -> None:
    print(f"devstack: {message}", file=sys.stderr, flush=True)


async def _terminate(process: Process | None, within: float) -> int | None:
    """SIGTERM, wait up to ``within`` s (the event loop runs meanwhile), then SIGKILL."""
    popen = None if process is None else process.popen
    if popen is None:
        return None
    if popen.poll() is None:
        popen.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(popen.wait, within)
        if popen.poll() is None:
            assert process is not None
            _say(f"{process.name} did not stop within {within:g} s; killing it")
            popen.kill()
            await asyncio.to_thread(popen.wait)
    return popen.returncode


class Stack:
    """The infrastructure (started once, stopped last) and the supervised services."""

    def __init__(self, settings: DevstackSettings) -> None:
        self.settings = settings
        #: s3rver and Tansu, in start order: not restarted (the memory broker would come back
        #: empty); if one dies, the stack stops.
        self.infra: list[Process] = []
        #: webhook sink (if any), ingestor, assembler, connector.
        self.services: dict[str, Supervised] = {}
        self.bootstrap = ""
        #: How our own clients reach Kafka (set when it is up).
        self.kafka: KafkaSettings = settings
        self.memory_broker = False
        self.backoff = Backoff(settings.restart_initial_seconds, settings.restart_max_seconds)

    def _supervise(self, name: str, args: list[str], port: int, env: dict[str, str]) -> Process:
        def make() -> Process:
            return Process(name, args, port, env=env, inherit=True).start()

        service = Supervised(name, make, self.backoff)
        self.services[name] = service
        return service.start(time.monotonic())

    async def start(self) -> dict[str, str]:
        s = self.settings
        data = s.data_dir.resolve()
        logs = data / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        if s.s3_endpoint:
            endpoint = s.s3_endpoint
        else:
            s3 = start_s3rver(data / "s3", s.s3_port, log=logs / "s3rver.log")
            self.infra.append(s3)
            endpoint = f"127.0.0.1:{s3.port}"
        client = Minio(
            endpoint.removeprefix("http://").removeprefix("https://"),
            access_key=s.s3_access_key,
            secret_key=s.s3_secret_key,
            secure=endpoint.startswith("https://"),
            region="us-east-1",
        )
        buckets = [s.s3_bucket] + (["tansu"] if s.broker_storage == "s3" else [])
        for bucket in buckets:
            if not client.bucket_exists(bucket):
                client.make_bucket(bucket)

        external_kafka = "FLEETGATE_KAFKA_BOOTSTRAP" in os.environ
        if external_kafka:
            bootstrap = s.kafka_bootstrap
        elif s.broker == "kafka":  # real Apache Kafka from `make kafka`'s jars
            cluster = start_kafka(data / "kafka", port=s.kafka_port or None)
            # Stopped after the services, like the embedded broker (dies: the stack stops).
            self.infra.extend(node.process for node in cluster.nodes if node.process)
            bootstrap = cluster.bootstrap
        else:
            storage = BrokerStorage(
                s3_endpoint=endpoint.removeprefix("http://") if s.broker_storage == "s3" else None,
                access_key=s.s3_access_key,
                secret_key=s.s3_secret_key,
            )
            broker = start_tansu(s.kafka_port, log=logs / "tansu.log", storage=storage)
            self.infra.append(broker)  # stopped before the S3 server it may write to
            bootstrap = f"127.0.0.1:{broker.port}"
            self.memory_broker = s.broker_storage == "memory"
        self.bootstrap = bootstrap
        # Our own clients (topic creation, the drain's lag reader) connect as the services do:
        # an external cluster with the FLEETGATE_KAFKA_* TLS/SASL settings they inherit too.
        self.kafka = s.model_copy(update={"kafka_bootstrap": bootstrap})
        await wait_kafka(self.kafka)
        await create_topics(self.kafka)

        config = s.connector_config
        sink_out = data / "webhooks.jsonl"
        if config is None:
            config = data / "connector.yaml"
            config.write_text(
                "# Written by `fleetgate devstack`: every webhook goes to the local sink.\n"
                "endpoints:\n"
                "  - name: local-sink\n"
                f"    url: http://127.0.0.1:{s.sink_port}/webhooks\n"
                "    allow_private_network: true  # the sink is on this machine\n"
            )
            self._supervise(
                "webhook-sink",
                _fleetgate("webhook-sink", "--port", str(s.sink_port), "--out", str(sink_out)),
                s.sink_port,
                {},
            ).wait_port()

        tansu = not external_kafka and s.broker == "tansu"
        env = {
            "FLEETGATE_KAFKA_BOOTSTRAP": bootstrap,
            **(TANSU_CLIENT_ENV if tansu else {}),  # external brokers: as the environment says
            "FLEETGATE_S3_ENDPOINT": endpoint,
            "FLEETGATE_S3_ACCESS_KEY": s.s3_access_key,
            "FLEETGATE_S3_SECRET_KEY": s.s3_secret_key,
            "FLEETGATE_S3_BUCKET": s.s3_bucket,
            "FLEETGATE_CAMERA_PORT": str(s.camera_port),
            "FLEETGATE_DMT_PORT": str(s.dmt_port),
            "FLEETGATE_CONNECTOR_CONFIG": str(config),
            "FLEETGATE_SPOOL_DIR": str(data / "spool"),
            "FLEETGATE_LOG_LEVEL": s.log_level,
        }
        base = s.metrics_base_port  # 0: no /metrics servers
        ports = {name: base + i if base else 0 for i, name in enumerate(SERVICES)}
        for name, metrics_port in ports.items():
            listen = s.camera_port if name == "ingestor" else metrics_port
            self._supervise(
                name, _fleetgate(name), listen, env | {"FLEETGATE_METRICS_PORT": str(metrics_port)}
            )
        ingestor = self.services["ingestor"].process
        assert ingestor is not None
        ingestor.wait_port()  # the ingestor's camera port is open: devices can come
        if external_kafka:
            kafka = bootstrap
        elif s.broker == "kafka":
            kafka = f"{bootstrap} (local Apache Kafka, KRaft)"
        elif s.broker_storage == "s3":
            kafka = f"{bootstrap} (embedded Tansu, topics kept in s3://tansu)"
        else:
            kafka = f"{bootstrap} (embedded Tansu, in memory)"
        forgets = {"in memory": MEMORY_BROKER_NOTE} if self.memory_broker else {}
        return {
            "device port": f"{s.camera_port} (TCP, Teltonika camera protocol)",
            "Digital Matter port": f"{s.dmt_port} (TCP, Digital Matter binary protocol)",
            "Kafka": kafka,
            **forgets,
            "files": f"s3://{s.s3_bucket} at http://{endpoint}"
            + ("" if s.s3_endpoint else f" (on disk: {data / 's3' / s.s3_bucket})"),
            "webhooks": str(config)
            + ("" if s.connector_config else f" -> local sink, received in {sink_out}"),
            "metrics": ", ".join(f"{n} http://127.0.0.1:{p}/metrics" for n, p in ports.items())
            if base
            else "off",
            "logs": str(logs),
            "crashes": "a service that exits is restarted (backoff "
            f"{s.restart_initial_seconds:g} s doubling to {s.restart_max_seconds:g} s)",
        }

    def dead_infra(self) -> Process | None:
        for process in self.infra:
            if process.popen is not None and process.popen.poll() is not None:
                return process
        return None

    def supervise(self) -> None:
        now = time.monotonic()
        for service in self.services.values():
            service.check(now)

    async def _while(self, condition: Callable[[], bool], within: float) -> bool:
        """Supervise until ``condition`` holds (True) or ``within`` s pass (False)."""
        deadline = time.monotonic() + within
        while not condition():
            if time.monotonic() >= deadline:
                return False
            self.supervise()
            await asyncio.sleep(0.1)
        return True

    async def stop(self, hurry: asyncio.Event | None = None) -> None:
        """Ingestor first (it drains), then wait for the assembler and the connector to finish
        what Kafka holds, then them, then the sink, the broker and the S3 server."""
        hurry = hurry or asyncio.Event()
        s = self.settings
        ingestor = self.services.get("ingestor")
        if ingestor is not None:
            _say("stopping the ingestor (it finishes or cuts transfers in flight) ...")
            ingestor.stopping = True
            await self._stop_service(ingestor, s.ingestor_stop_seconds, hurry)
        if self.bootstrap and not hurry.is_set() and self.dead_infra() is None:
            await self._drain(s.stop_drain_seconds, s.stop_stall_seconds, hurry)
        for name in ("assembler", "connector", "webhook-sink"):
            service = self.services.get(name)
            if service is not None:
                service.stopping = True
                await self._stop_service(service, 15.0, hurry)
        for process in reversed(self.infra):
            await _terminate(process, 10.0)

    async def _stop_service(self, service: Supervised, within: float, hurry: asyncio.Event) -> None:
        process = service.process
        if process is None or process.popen is None or process.popen.poll() is not None:
            return
        process.popen.terminate()

        def done() -> bool:
            return hurry.is_set() or not service.running

        await self._while(done, within)
        await _terminate(process, 0.0 if hurry.is_set() else 2.0)

    async def _drain(self, within: float, stall: float, hurry: asyncio.Event) -> None:
        """Until every consumer group has caught up with Kafka, its lag has not moved for
        ``stall`` s, or ``within`` s pass."""
        reader = LagReader(self.kafka)
        try:
            await reader.start()
            deadline = time.monotonic() + within
            said = 0.0
            watch = StallWatch(stall)
            while True:
                lags = await reader.lags()
                left = [lag for lag in lags if lag.records]
                if not left:
                    _say("the assembler and the connector have finished what Kafka holds")
                    return
                now = time.monotonic()
                if watch.stalled(left, now):
                    _say(
                        f"no progress for {stall:g} s; stopping with {describe(left)} left "
                        "(chunks of transfers cut short wait for their device to resume)"
                    )
                    return
                if hurry.is_set() or now >= deadline:
                    where = (
                        "it is lost with the in-memory broker"
                        if self.memory_broker
                        else "it stays in Kafka for the next start"
                    )
                    _say(f"stopping with work left: {describe(left)}; {where}")
                    return
                if now - said >= 2.0:
                    said = now
                    _say(
                        f"waiting up to {deadline - now:.0f} s for {describe(left)} "
                        "(Ctrl-C again: stop now)"
                    )
                await self._while(hurry.is_set, 0.25)
        except (KafkaError, OSError) as exc:
            _say(f"cannot read consumer lag ({exc!r}); stopping without waiting")
        finally:
            await reader.close()


async def run_stack(settings: DevstackSettings) -> int:
    stack = Stack(settings)
    stop = asyncio.Event()
    hurry = asyncio.Event()  # a second Ctrl-C: stop without waiting

    def on_signal() -> None:
        if stop.is_set():
            hurry.set()
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    status = 0
    try:
        summary = await stack.start()
        width = max(map(len, summary))
        lines = "\n".join(f"  {k:<{width}}  {v}" for k, v in summary.items())
        print(textwrap.dedent("fleetgate is running (Ctrl-C stops it):\n") + lines, flush=True)
        while not stop.is_set():
            dead = stack.dead_infra()
            if dead is not None:
                assert dead.popen is not None
                _say(f"{dead.name} exited ({dead.popen.returncode}); stopping the stack")
                status = 1
                break
            stack.supervise()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
        return status
    finally:
        _say("stopping ...")
        await stack.stop(hurry)
        restarts = {n: s.restarts for n, s in stack.services.items() if s.restarts}
        if restarts:
            _say("restarts: " + ", ".join(f"{n} {c}" for n, c in restarts.items()))
        _say("stopped")


def main(settings: DevstackSettings) -> int:
    configure_logging(settings.log_level, settings.log_json)
    try:
        return asyncio.run(run_stack(settings))
    except (PortInUse, FileNotFoundError) as exc:
        print(f"fleetgate devstack: {exc}", file=sys.stderr)
        return 2


__all__ = ["MEMORY_BROKER_NOTE", "DevstackSettings", "Stack", "free_port", "main", "run_stack"]
