"""Shared pieces of the connector tests: HTTP receivers, events, a producer, a running connector."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client import REGISTRY

from connector.config import ConnectorConfig, parse_config
from connector.consumer import serve
from connector.replay import scan
from connector.settings import ConnectorSettings
from contracts import DeadLetter, FileFailed, FileInfo, FileStored, Topic, encode
from contracts.models import Camera, Media
from tests.conftest import S3
from tests.helpers import eventually, eventually_sync

#: No test waits longer than this for a condition.
DEADLINE = 20.0


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it, and the status it answered."""

    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    status: int
    at: float = 0.0  # time.time() when the request arrived

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def event_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


#: What ``respond`` returns: a status, or a status and extra response headers.
Answer = int | tuple[int, dict[str, str]]


class Receiver:
    """A threaded HTTP(S) server on 127.0.0.1 whose answers the test decides.

    ``respond(headers, body)`` returns the status (or status and headers); the default answers
    200 to everything. It may block (a hanging endpoint). ``port`` 0 picks a free one.
    """

    def __init__(
        self,
        respond: Callable[[dict[str, str], bytes], Answer] | None = None,
        tls: ssl.SSLContext | None = None,
        port: int = 0,
    ) -> None:
        self.respond = respond or (lambda headers, body: 200)
        self.requests: list[Received] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with receiver._lock:
                    receiver._connections.add(self.connection)

            def finish(self) -> None:
                with receiver._lock:
                    receiver._connections.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:
                at = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    receiver.in_flight += 1
                    receiver.max_in_flight = max(receiver.max_in_flight, receiver.in_flight)
                try:
                    answer = receiver.respond(headers, body)
                finally:
                    with receiver._lock:
                        receiver.in_flight -= 1
                status, extra = answer if isinstance(answer, tuple) else (answer, {})
                with receiver._lock:
                    receiver.requests.append(Received(self.path, headers, body, status, at))
                try:
                    self.send_response(status)
                    for name, value in extra.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the client gave up (timeout)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        # A short poll: close() waits for it, and tests call close() with a connector running.
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        port: int = self.server.server_address[1]
        return port

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/hook"

    def snapshot(self) -> list[Received]:
        """Every request so far, in the order they arrived."""
        with self._lock:
            return sorted(self.requests, key=lambda r: r.at)

    def delivered(self) -> list[Received]:
        return [r for r in self.snapshot() if r.ok]

    def delivered_ids(self) -> list[str]:
        return [r.event_id for r in self.delivered()]

    def attempts(self, event_id: str) -> list[Received]:
        return [r for r in self.snapshot() if r.event_id == event_id]

    def close(self) -> None:
        """Down: no new connections, and the kept-alive ones are cut too."""
        self.server.shutdown()
        self.server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


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
    """:func:`tests.helpers.eventually` with this module's argument order and deadline."""
    await eventually(condition, within, what)


def wait_until(condition: Callable[[], bool], what: str, within: float = DEADLINE) -> None:
    """:func:`tests.helpers.eventually_sync` with this module's argument order and deadline."""
    eventually_sync(condition, within, what)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


_FILE = FileInfo(identifier="%photof", slot="photo_front", camera="dualcam", media="photo")
_T0 = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)


def stored(
    n: int,
    imei: str = "356307042441013",
    *,
    bucket: str = "fleetgate",
    camera: Camera = "dualcam",
    media: Media = "photo",
) -> FileStored:
    file = (
        _FILE
        if (camera, media) == ("dualcam", "photo")
        else FileInfo(identifier=f"{camera}/{media}/{n}", camera=camera, media=media)
    )
    return FileStored(
        event_id=f"stored-{n}",
        transfer_id=f"t{n:031d}",
        imei=imei,
        file=file,
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


async def produce(
    bootstrap: str, events: Iterable[FileStored | FileFailed]
) -> dict[str, tuple[int, int]]:
    """Publish ``events`` to fleetgate.files.v1, keyed by IMEI like the assembler does; return
    where each landed: event id -> (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1)
    await producer.start()
    try:
        sent = [
            (
                event.event_id,
                await producer.send(str(Topic.FILES), encode(event), key=event.imei.encode()),
            )
            for event in events
        ]
        await producer.flush()
        return {
            event_id: (meta.partition, meta.offset)
            for event_id, meta in [(i, await f) for i, f in sent]
        }
    finally:
        await producer.stop()


async def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The next offset ``group`` committed on each partition of ``topic``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic}


def accounted(
    events: Iterable[FileStored | FileFailed], receiver: Receiver, letters: list[DeadLetter]
) -> None:
    """Each event was delivered at least once or dead-lettered with a reason: none lost."""
    delivered = set(receiver.delivered_ids())
    parked = {d.event_id for d in letters if d.reason and (d.last_error or d.last_status)}
    lost = [e.event_id for e in events if e.event_id not in delivered | parked]
    assert not lost, f"lost: {lost}"


def settings_for(kafka: str, s3: S3, **overrides: Any) -> ConnectorSettings:
    """Fast settings: a short session timeout because Tansu makes a group's first join wait
    for a part of it (3000 ms: 2 s; 2000 ms: 1 s)."""
    values: dict[str, Any] = {
        "kafka_bootstrap": kafka,
        "s3_endpoint": s3.endpoint,
        "s3_access_key": s3.access_key,
        "s3_secret_key": s3.secret_key,
        "kafka_session_timeout_ms": 2000,
        "kafka_heartbeat_interval_ms": 500,
        "shutdown_grace_seconds": 1.0,
    }
    return ConnectorSettings(**(values | overrides))


#: A retry schedule for tests: the same machinery as the default (5 s ... 1 h), much faster.
FAST_RETRY: dict[str, Any] = {"schedule": ["200ms", "500ms", "1s"], "max_age": "3s", "jitter": 0.1}


def config_of(
    *endpoints: dict[str, Any], retry: dict[str, Any] | None = None, base: Path | None = None
) -> ConnectorConfig:
    """A config of ``endpoints`` (allowed on 127.0.0.1 unless they say otherwise); relative
    file names start at ``base``."""
    listed = [{"allow_private_network": True} | endpoint for endpoint in endpoints]
    text = yaml.safe_dump({"retry": FAST_RETRY if retry is None else retry, "endpoints": listed})
    return parse_config(text, base=base)


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


async def dead_letters(kafka: str, endpoint: str | None = None) -> list[DeadLetter]:
    """Every dead letter in the topic (of ``endpoint`` if given)."""
    settings = ConnectorSettings(kafka_bootstrap=kafka)
    letters = [
        DeadLetter.model_validate_json(record.value)
        async for record in scan(settings, str(Topic.DEADLETTER))
    ]
    return [d for d in letters if endpoint is None or d.endpoint == endpoint]


async def wait_dead_letters(
    kafka: str, endpoint: str, count: int, within: float = DEADLINE
) -> list[DeadLetter]:
    """Until ``endpoint`` has ``count`` dead letters; they, sorted by event id."""
    deadline = time.monotonic() + within
    while True:
        letters = await dead_letters(kafka, endpoint)
        if len(letters) >= count:
            return sorted(letters, key=lambda d: d.event_id)
        if time.monotonic() > deadline:
            raise AssertionError(f"{endpoint}: {len(letters)} dead letters, not {count}")
        await asyncio.sleep(0.1)
