"""Shared pieces of the connector tests: HTTP receivers, events, a producer, a running connector."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY

from connector.config import ConnectorConfig, parse_config
from connector.consumer import serve
from connector.settings import ConnectorSettings
from contracts import FileFailed, FileInfo, FileStored, Topic, encode
from tests.conftest import S3

#: No test waits longer than this for a condition.
DEADLINE = 20.0


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it, and the status it answered."""

    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def event_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class Receiver:
    """A threaded HTTP(S) server on 127.0.0.1 whose answers the test decides.

    ``respond(headers, body)`` returns the status; the default answers 200 to everything.
    """

    def __init__(
        self,
        respond: Callable[[dict[str, str], bytes], int] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.respond = respond or (lambda headers, body: 200)
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = receiver.respond(headers, body)
                with receiver._lock:
                    receiver.requests.append(Received(self.path, headers, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}/hook"

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def delivered(self) -> list[Received]:
        return [r for r in self.snapshot() if r.ok]

    def delivered_ids(self) -> list[str]:
        return [r.event_id for r in self.delivered()]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(*args: Any, **kwargs: Any) -> Receiver:
        made.append(Receiver(*args, **kwargs))
        return made[-1]

    try:
        yield make
    finally:
        for receiver in made:
            receiver.close()


async def wait_for(condition: Callable[[], bool], what: str, within: float = DEADLINE) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


def wait_until(condition: Callable[[], bool], what: str, within: float = DEADLINE) -> None:
    """:func:`wait_for` outside an event loop."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        time.sleep(0.02)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


_FILE = FileInfo(identifier="%photof", slot="photo_front", camera="dualcam", media="photo")
_T0 = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)


def stored(n: int, imei: str = "356307042441013", *, bucket: str = "fleetgate") -> FileStored:
    return FileStored(
        event_id=f"stored-{n}",
        transfer_id=f"t{n:031d}",
        imei=imei,
        file=_FILE,
        started_at=_T0,
        size=11,
        sha256="0" * 64,
        crc16=0x1234,
        bucket=bucket,
        key=f"{imei}/2026/11/20/{n}.jpg",
        content_type="image/jpeg",
        stored_at=_T0,
    )


def failed(n: int, imei: str = "356307042441013") -> FileFailed:
    return FileFailed(
        event_id=f"failed-{n}",
        transfer_id=f"f{n:031d}",
        imei=imei,
        file=_FILE,
        started_at=_T0,
        reason="crc_mismatch",
        failed_at=_T0,
    )


async def produce(bootstrap: str, events: Iterable[FileStored | FileFailed]) -> None:
    """Publish ``events`` to fleetgate.files.v1, keyed by IMEI like the assembler does."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1)
    await producer.start()
    try:
        for event in events:
            await producer.send(str(Topic.FILES), encode(event), key=event.imei.encode())
        await producer.flush()
    finally:
        await producer.stop()


def settings_for(kafka: str, s3: S3, **overrides: Any) -> ConnectorSettings:
    """Fast settings: short retries, and a short session timeout because Tansu makes a group's
    first join wait for a part of it (3000 ms: 2 s)."""
    values: dict[str, Any] = {
        "kafka_bootstrap": kafka,
        "s3_endpoint": s3.endpoint,
        "s3_access_key": s3.access_key,
        "s3_secret_key": s3.secret_key,
        "kafka_session_timeout_ms": 3000,
        "kafka_heartbeat_interval_ms": 1000,
        "retry_initial_seconds": 0.05,
        "retry_max_seconds": 0.2,
        "shutdown_grace_seconds": 1.0,
    }
    return ConnectorSettings(**(values | overrides))


def config_of(*endpoints: dict[str, Any]) -> ConnectorConfig:
    return parse_config(yaml.safe_dump({"endpoints": list(endpoints)}))


@contextlib.asynccontextmanager
async def running(settings: ConnectorSettings, config: ConnectorConfig) -> AsyncIterator[None]:
    """The connector in this event loop; stopped (as by SIGTERM) on leaving."""
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, config, stop))
    try:
        yield
        if task.done():  # it crashed: show why
            await task
    finally:
        stop.set()
        await asyncio.wait_for(task, DEADLINE)
