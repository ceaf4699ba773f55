"""The ingestor process: a TCP server of camera sessions and one Kafka producer."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer

from . import metrics
from .session import CameraSession, Sink
from .settings import IngestorSettings

_log = structlog.get_logger("fleetgate.ingestor")


class KafkaSink:
    """aiokafka producer with acks=all: a record's future resolves once every in-sync
    replica has it."""

    def __init__(self, settings: IngestorSettings) -> None:
        self.producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap,
            acks="all",
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
    """Accepts camera connections and runs a :class:`CameraSession` for each."""

    def __init__(self, settings: IngestorSettings, sink: Sink) -> None:
        self.settings = settings
        self.sink = sink
        self.sessions: set[asyncio.Task[str]] = set()
        self.port: int | None = None
        self._server: asyncio.Server | None = None
        self._stopping = False

    async def start(self) -> int:
        self._server = await asyncio.start_server(
            self._accept, self.settings.camera_host, self.settings.camera_port, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.sessions) >= self.settings.max_connections or self._stopping:
            metrics.connections_refused.inc()
            writer.close()
            return
        metrics.connections.inc()
        metrics.connections_open.inc()
        session = CameraSession(reader, writer, self.sink, self.settings)
        task = asyncio.current_task()
        assert task is not None
        self.sessions.add(task)
        try:
            await session.run(lambda: self._stopping)
        except Exception:  # a bug in one session must not take the others down
            _log.exception("session_crashed", session=session.session_id, peer=session.peer)
            writer.close()
        finally:
            self.sessions.discard(task)
            metrics.connections_open.dec()

    async def stop(self) -> None:
        """Stop accepting; let sessions finish a file for ``drain_timeout``; then cut them."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        pending = set(self.sessions)
        if pending:
            _log.info("draining", sessions=len(pending), timeout=self.settings.drain_timeout)
            _, pending = await asyncio.wait(pending, timeout=self.settings.drain_timeout)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()


async def serve(settings: IngestorSettings, stop: asyncio.Event) -> None:
    """Run until ``stop`` is set."""
    sink = KafkaSink(settings)
    await sink.producer.start()
    try:
        ingestor = Ingestor(settings, sink)
        port = await ingestor.start()
        _log.info("listening", host=settings.camera_host, port=port)
        await stop.wait()
        await ingestor.stop()
    finally:
        await sink.producer.stop()
