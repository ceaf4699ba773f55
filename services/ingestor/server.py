"""The ingestor process: a TCP server of camera sessions and one Kafka producer."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from runtime.kafka import producer_kwargs

from . import allowlist, metrics
from .progress import ProgressBook, ProgressPublisher, ProgressReader
from .session import CameraSession, Sink
from .settings import IngestorSettings

_log = structlog.get_logger("fleetgate.ingestor")


class KafkaSink:
    """aiokafka producer with acks=all: a record's future resolves once every in-sync
    replica has it."""

    def __init__(self, settings: IngestorSettings) -> None:
        self.producer = AIOKafkaProducer(
            **producer_kwargs(settings),
            linger_ms=settings.kafka_linger_ms,
            max_request_size=settings.kafka_max_request_bytes,
            max_batch_size=256 * 1024,
            request_timeout_ms=settings.kafka_request_timeout_ms,
            client_id=f"fleetgate-ingestor-{settings.instance}",
        )

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await self.producer.send(
            str(topic), value=value, key=key, headers=headers
        )
        return future


class Ingestor:
    """Accepts camera connections and runs a :class:`CameraSession` for each.

    A connection over ``max_connections``, over ``max_connections_per_peer`` from one address,
    or arriving while the ingestor stops is closed at once (FIN, nothing sent), counted in
    ``fleetgate_ingestor_connections_refused_total{reason}`` and logged, at most one line a
    second per reason (with the count), so a flood cannot flood the log too.
    """

    def __init__(
        self, settings: IngestorSettings, sink: Sink, book: ProgressBook | None = None
    ) -> None:
        self.settings = settings
        self.sink = sink
        #: Durable offsets of transfers (filled by a ProgressReader in :func:`serve`).
        self.book = book if book is not None else ProgressBook(settings.progress_max_age)
        self.publisher = ProgressPublisher(sink, self.book, settings.ack_timeout)
        metrics.progress_entries.set_function(lambda: len(self.book))
        self.sessions: set[asyncio.Task[Any]] = set()
        self._live: dict[asyncio.Task[Any], CameraSession] = {}
        self.port: int | None = None
        self._server: asyncio.Server | None = None
        self._stopping = False
        self._per_peer: dict[str, int] = {}  # open connections by peer address; no zeros
        self._refusals = _RefusalLog()

    async def start(self) -> int:
        allow = allowlist.reload(self.settings)  # a broken allow-list stops us here
        if allow.imeis is not None:
            _log.info("imei_allow_list", imeis=allow.size, source=allow.source)
        self._server = await asyncio.start_server(
            self._accept, self.settings.camera_host, self.settings.camera_port, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def _refusal(self, host: str) -> tuple[str, str] | None:
        """Why a new connection from ``host`` is refused (reason label, text), if it is."""
        if self._stopping:
            return "shutdown", "ingestor shutting down"
        limit = self.settings.max_connections
        if len(self.sessions) >= limit:
            return "max_connections", f"{len(self.sessions)} connections open (max_connections)"
        per_peer = self.settings.max_connections_per_peer
        if per_peer > 0 and self._per_peer.get(host, 0) >= per_peer:
            return "max_connections_per_peer", (
                f"{host} has {self._per_peer[host]} connections open (max_connections_per_peer)"
            )
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Nothing may escape: asyncio would only log it, but a refused or broken connection
        # must still be closed and counted.
        try:
            peer = writer.get_extra_info("peername")
            host = str(peer[0]) if isinstance(peer, tuple) else str(peer)
            refusal = self._refusal(host)
            if refusal is not None:
                writer.close()
                metrics.connections_refused.labels(refusal[0]).inc()
                self._refusals.add(refusal[0], refusal[1], host)
                return
            await self._serve(reader, writer, host)
        except Exception:
            _log.exception("accept_failed")
            writer.close()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        metrics.connections.inc()
        metrics.connections_open.inc()
        self.sessions.add(task)
        self._per_peer[host] = self._per_peer.get(host, 0) + 1
        session: CameraSession | None = None
        try:
            session = CameraSession(
                reader, writer, self.sink, self.settings, book=self.book, publisher=self.publisher
            )
            self._live[task] = session
            await session.run(lambda: self._stopping)
        except Exception:  # a bug in one session must not take the others down
            _log.exception(
                "session_crashed",
                session=None if session is None else session.session_id,
                peer=None if session is None else session.peer,
            )
            writer.close()
        finally:
            self.sessions.discard(task)
            self._live.pop(task, None)
            metrics.connections_open.dec()
            left = self._per_peer.pop(host, 1) - 1
            if left > 0:
                self._per_peer[host] = left

    async def stop(self) -> None:
        """Graceful stop (SIGTERM): stop accepting; close sessions with no file in flight at
        once; give the others ``drain_timeout`` to finish their file; then cut them: each
        makes what it received durable, publishes that offset and sends CLOSE, so its device
        resumes elsewhere from there. Sessions still open ``close_timeout`` later are
        cancelled."""
        self._stopping = True
        self._refusals.flush()
        if self._server is not None:
            self._server.close()
        for session in list(self._live.values()):
            session.request_stop()
        pending = set(self.sessions)
        if pending:
            _log.info("draining", sessions=len(pending), timeout=self.settings.drain_timeout)
            _, pending = await asyncio.wait(pending, timeout=self.settings.drain_timeout)
        if pending:
            _log.info("cutting", sessions=len(pending), timeout=self.settings.close_timeout)
            for task in pending:
                live = self._live.get(task)
                if live is not None:
                    live.request_stop(cut=True)
            _, pending = await asyncio.wait(pending, timeout=self.settings.close_timeout)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.publisher.close(within=self.settings.close_timeout)
        if self._server is not None:
            await self._server.wait_closed()


@dataclass
class _RefusalLog:
    """Refused connections, logged at once and then at most once a second per reason."""

    interval: float = 1.0
    _pending: dict[str, tuple[int, str, str]] = field(default_factory=dict)
    _logged_at: dict[str, float] = field(default_factory=dict)
    _timer: asyncio.TimerHandle | None = None

    def add(self, reason: str, detail: str, peer: str) -> None:
        count = self._pending.get(reason, (0, "", ""))[0] + 1
        self._pending[reason] = (count, detail, peer)
        if time.monotonic() - self._logged_at.get(reason, -self.interval) >= self.interval:
            self._emit(reason)
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.interval, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for reason in list(self._pending):
            self._emit(reason)

    def _emit(self, reason: str) -> None:
        count, detail, peer = self._pending.pop(reason)
        self._logged_at[reason] = time.monotonic()
        _log.warning("connections_refused", reason=reason, detail=detail, count=count, peer=peer)


async def serve(settings: IngestorSettings, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set. Devices are accepted only once the progress topic has been
    read (so that a device coming back resumes where Kafka has its file up to)."""
    sink = KafkaSink(settings)
    await sink.producer.start()
    book = ProgressBook(settings.progress_max_age)
    reader = ProgressReader(settings, book)
    following: asyncio.Task[None] | None = None
    try:
        await reader.start()
        await reader.catch_up()
        following = asyncio.create_task(reader.follow(), name="progress reader")
        ingestor = Ingestor(settings, sink, book)
        port = await ingestor.start()
        _log.info("listening", host=settings.camera_host, port=port, transfers_known=len(book))
        await stop.wait()
        await ingestor.stop()
    finally:
        if following is not None:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
        await reader.stop()
        await sink.producer.stop()
