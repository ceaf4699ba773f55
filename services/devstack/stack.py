"""``fleetgate devstack``: the whole pipeline on one machine, what ``make run`` starts.

It starts a Tansu broker and an s3rver (unless ``FLEETGATE_KAFKA_BOOTSTRAP`` /
``FLEETGATE_S3_ENDPOINT`` point at real ones), creates the topics and the bucket, then runs
ingestor, assembler and connector as child processes, each the same ``fleetgate <service>``
that runs in production. Without ``FLEETGATE_CONNECTOR_CONFIG`` it also starts a webhook
sink that writes what it receives to ``<data dir>/webhooks.jsonl``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Literal

from minio import Minio
from pydantic import Field

from runtime import CommonSettings, configure_logging

from .infra import (
    S3RVER_KEY,
    BrokerStorage,
    PortInUse,
    Process,
    create_topics,
    free_port,
    start_s3rver,
    start_tansu,
    wait_kafka,
)


class DevstackSettings(CommonSettings):
    data_dir: Path = Field(Path(".fleetgate"), description="where files, logs and config go")
    camera_port: int = Field(5232, description="device TCP port of the ingestor")
    dmt_port: int = Field(5233, description="Digital Matter TCP port of the ingestor")
    kafka_port: int = Field(9092, description="port of the embedded broker (if started)")
    s3_port: int = Field(9000, description="port of the embedded S3 server (if started)")
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


SERVICES = ("ingestor", "assembler", "connector")


def _fleetgate(*args: str) -> list[str]:
    return [sys.executable, "-m", "fleetgate", *args]


class Stack:
    def __init__(self, settings: DevstackSettings) -> None:
        self.settings = settings
        self.children: list[Process] = []  # in start order; stopped in reverse

    def _spawn(self, name: str, args: list[str], port: int, env: dict[str, str]) -> Process:
        process = Process(name, args, port, env=env, inherit=True).start()
        self.children.append(process)
        return process

    async def start(self) -> dict[str, str]:
        s = self.settings
        data = s.data_dir.resolve()
        logs = data / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        if s.s3_endpoint:
            endpoint = s.s3_endpoint
        else:
            s3 = start_s3rver(data / "s3", s.s3_port, log=logs / "s3rver.log")
            self.children.append(s3)
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
        else:
            storage = BrokerStorage(
                s3_endpoint=endpoint.removeprefix("http://") if s.broker_storage == "s3" else None,
                access_key=s.s3_access_key,
                secret_key=s.s3_secret_key,
            )
            broker = start_tansu(s.kafka_port, log=logs / "tansu.log", storage=storage)
            self.children.append(broker)  # stopped before the S3 server it may write to
            bootstrap = f"127.0.0.1:{broker.port}"
        await wait_kafka(bootstrap)
        await create_topics(bootstrap)

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
            self._spawn(
                "webhook-sink",
                _fleetgate("webhook-sink", "--port", str(s.sink_port), "--out", str(sink_out)),
                s.sink_port,
                {},
            ).wait_port()

        env = {
            "FLEETGATE_KAFKA_BOOTSTRAP": bootstrap,
            "FLEETGATE_S3_ENDPOINT": endpoint,
            "FLEETGATE_S3_ACCESS_KEY": s.s3_access_key,
            "FLEETGATE_S3_SECRET_KEY": s.s3_secret_key,
            "FLEETGATE_S3_BUCKET": s.s3_bucket,
            "FLEETGATE_CAMERA_PORT": str(s.camera_port),
            "FLEETGATE_DMT_PORT": str(s.dmt_port),
            "FLEETGATE_CONNECTOR_CONFIG": str(config),
            "FLEETGATE_SPOOL_DIR": str(data / "spool"),
            "FLEETGATE_LOG_LEVEL": s.log_level,
            # The embedded broker holds a first group join for half the session timeout.
            "FLEETGATE_BROKER_SESSION_TIMEOUT_SECONDS": "6",
            "FLEETGATE_BROKER_REBALANCE_TIMEOUT_SECONDS": "6",
            "FLEETGATE_BROKER_HEARTBEAT_INTERVAL_SECONDS": "1",
        }
        base = s.metrics_base_port  # 0: no /metrics servers
        ports = {name: base + i if base else 0 for i, name in enumerate(SERVICES)}
        for name, metrics_port in ports.items():
            listen = s.camera_port if name == "ingestor" else metrics_port
            self._spawn(
                name, _fleetgate(name), listen, env | {"FLEETGATE_METRICS_PORT": str(metrics_port)}
            )
        self.children[-3].wait_port()  # the ingestor's camera port is open: devices can come
        return {
            "device port": f"{s.camera_port} (TCP, Teltonika camera protocol)",
            "Digital Matter port": f"{s.dmt_port} (TCP, Digital Matter binary protocol)",
            "Kafka": bootstrap
            + (
                ""
                if external_kafka
                else " (embedded Tansu, "
                + ("topics kept in s3://tansu)" if s.broker_storage == "s3" else "in memory)")
            ),
            "files": f"s3://{s.s3_bucket} at http://{endpoint}"
            + ("" if s.s3_endpoint else f" (on disk: {data / 's3' / s.s3_bucket})"),
            "webhooks": str(config)
            + ("" if s.connector_config else f" -> local sink, received in {sink_out}"),
            "metrics": ", ".join(f"{n} http://127.0.0.1:{p}/metrics" for n, p in ports.items())
            if base
            else "off",
            "logs": str(logs),
        }

    def dead_child(self) -> Process | None:
        for child in self.children:
            if child.popen is not None and child.popen.poll() is not None:
                return child
        return None

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop(timeout=25 if child.name == "ingestor" else 10)


async def run_stack(settings: DevstackSettings) -> int:
    stack = Stack(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        summary = await stack.start()
        width = max(map(len, summary))
        lines = "\n".join(f"  {k:<{width}}  {v}" for k, v in summary.items())
        print(textwrap.dedent("fleetgate is running (Ctrl-C stops it):\n") + lines, flush=True)
        while not stop.is_set():
            dead = stack.dead_child()
            if dead is not None:
                assert dead.popen is not None
                print(f"{dead.name} exited ({dead.popen.returncode}); stopping", file=sys.stderr)
                return 1
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                continue
        return 0
    finally:
        print("stopping ...", file=sys.stderr, flush=True)
        stack.stop()


def main(settings: DevstackSettings) -> int:
    configure_logging(settings.log_level, settings.log_json)
    try:
        return asyncio.run(run_stack(settings))
    except (PortInUse, FileNotFoundError) as exc:
        print(f"fleetgate devstack: {exc}", file=sys.stderr)
        return 2


__all__ = ["DevstackSettings", "Stack", "free_port", "main", "run_stack"]
