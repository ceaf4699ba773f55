"""The ingestor process: one listener per hosted protocol, admission, drain, one producer."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import structlog

from runtime.metrics import Readiness

from . import allowlist, metrics
from .adapter import Link, Protocol
from .connection import Connection
from .oem import HttpSettings, OemIntake
from .protocols import PROTOCOLS
from .registry import DeviceRegistry
from .settings import IngestorSettings, ListenerSettings
from .sink import KafkaSink, Ledger, Sink

__all__ = ["Ingestor", "hosted", "serve"]

_log = structlog.get_logger("fleetgate.ingestor")


class Ingestor:
    """Accepts connections on each protocol's listener and runs a
    :class:`~ingestor.connection.Connection` for each.

    A connection over ``max_connections`` (process-wide, or the protocol's own), over the
    protocol's ``max_connections_per_peer`` from one address, or arriving while the ingestor
    stops is closed at once (FIN, nothing sent), counted in
    ``fleetgate_ingestor_connections_refused_total{protocol, reason}`` and logged, at most one
    line a second per reason (with the count), so a flood cannot flood the log too.
    """

    def __init__(
        self,
        settings: IngestorSettings,
        sink: Sink,
        protocols: Sequence[Protocol],
        registry: DeviceRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.sink = sink
        #: The device registry every session starts from (without one given: a view of
        #: what this process published only, not read from Kafka).
        self.registry = registry or DeviceRegistry(settings, read=False)
        self.protocols: dict[str, Protocol] = {p.name: p for p in protocols}
        self.sessions: set[asyncio.Task[Any]] = set()
        self._live: dict[asyncio.Task[Any], Connection] = {}
        #: Listening port of each protocol, once started.
        self.ports: dict[str, int] = {}
        self._servers: list[asyncio.Server] = []
        self._stopping = False
        self._open: dict[str, int] = {}  # open connections by protocol
        self._per_peer: dict[tuple[str, str], int] = {}  # by (protocol, address); no zeros
        self._refusals = _RefusalLog()
        #: Why the ingestor is not ready (Kafka unreachable...), or None: new connections are
        #: refused meanwhile (readiness hook, set by :func:`serve`).
        self.not_ready: Callable[[], str | None] = lambda: None
        for protocol in protocols:
            metrics.register(protocol.name, protocol.close_reasons)

    @property
    def port(self) -> int | None:
        """The port of the first protocol's listener (the only one, often)."""
        return next(iter(self.ports.values()), None)

    async def start(self) -> None:
        """Read the device registry (bounded) while each protocol starts (the camera reads
        its progress topic), then open the listeners; a broken allow-list stops us here."""
        for protocol in self.protocols.values():
            allow = allowlist.reload(protocol.settings)
            if allow.imeis is not None:
                _log.info(
                    "imei_allow_list", protocol=protocol.name, imeis=allow.size, source=allow.source
                )
        await asyncio.gather(
            self.registry.start(), *(protocol.start() for protocol in self.protocols.values())
        )
        for protocol in self.protocols.values():
            listen = protocol.settings
            server = await asyncio.start_server(
                partial(self._accept, protocol), listen.host, listen.port, backlog=1024
            )
            self._servers.append(server)
            self.ports[protocol.name] = port = server.sockets[0].getsockname()[1]
            _log.info(
                "listening", protocol=protocol.name, host=listen.host, port=port,
                **protocol.describe(),
            )  # fmt: skip

    def _refusal(self, protocol: Protocol, host: str) -> tuple[str, str] | None:
        """Why a new connection from ``host`` is refused (reason label, text), if it is."""
        if self._stopping:
            return "shutdown", "ingestor shutting down"
        if (why := self.not_ready()) is not None:
            return "not_ready", f"not ready: {why}"
        limit = self.settings.max_connections
        if len(self.sessions) >= limit:
            return "max_connections", f"{len(self.sessions)} connections open (max_connections)"
        own = protocol.settings.max_connections
        open_here = self._open.get(protocol.name, 0)
        if own > 0 and open_here >= own:
            return "max_connections", (
                f"{open_here} {protocol.name} connections open ({protocol.name} max_connections)"
            )
        per_peer = protocol.settings.max_connections_per_peer
        held = self._per_peer.get((protocol.name, host), 0)
        if per_peer > 0 and held >= per_peer:
            return "max_connections_per_peer", (
                f"{host} has {held} connections open (max_connections_per_peer)"
            )
        return None

    async def _accept(
        self, protocol: Protocol, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Nothing may escape: asyncio would only log it, but a refused or broken connection
        # must still be closed and counted.
        try:
            peer = writer.get_extra_info("peername")
            host = str(peer[0]) if isinstance(peer, tuple) else str(peer)
            refusal = self._refusal(protocol, host)
            if refusal is not None:
                writer.close()
                metrics.connections_refused.labels(protocol.name, refusal[0]).inc()
                self._refusals.add(protocol.name, refusal[0], refusal[1], host)
                return
            await self._serve(protocol, reader, writer, host)
        except Exception:
            _log.exception("accept_failed", protocol=protocol.name)
            writer.close()

    async def _serve(
        self,
        protocol: Protocol,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        host: str,
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        name = protocol.name
        metrics.connections.labels(name).inc()
        metrics.connections_open.labels(name).inc()
        self.sessions.add(task)
        self._open[name] = self._open.get(name, 0) + 1
        self._per_peer[name, host] = self._per_peer.get((name, host), 0) + 1
        link: Link | None = None
        try:
            peer = writer.get_extra_info("peername")
            peer_text = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
            link = Link(
                protocol=name,
                settings=protocol.settings,
                instance=self.settings.instance,
                peer=peer_text,
                registry=self.registry,
                ledger=Ledger(
                    self.sink,
                    self.settings.ack_timeout_seconds,
                    self.settings.enqueue_timeout_seconds,
                    protocol=name,
                ),
                log=_log,
            )
            link.log = _log.bind(protocol=name, session=link.session_id, peer=peer_text)
            connection = Connection(reader, writer, protocol.session(link), hello=protocol.hello)
            self._live[task] = connection
            await connection.run(lambda: self._stopping)
        except Exception:  # a bug in one session must not take the others down
            _log.exception(
                "session_crashed",
                protocol=name,
                session=None if link is None else link.session_id,
                peer=None if link is None else link.peer,
            )
            writer.close()
        finally:
            self.sessions.discard(task)
            self._live.pop(task, None)
            metrics.connections_open.labels(name).dec()
            self._open[name] -= 1
            left = self._per_peer.pop((name, host), 1) - 1
            if left > 0:
                self._per_peer[name, host] = left

    async def stop(self) -> None:
        """Graceful stop (SIGTERM): stop accepting; close sessions that are not busy at
        once; give the others ``drain_timeout_seconds`` to finish; then cut them: each
        reaches a durable point, publishes it and says goodbye, so its device carries on
        elsewhere from there. Sessions still open ``close_timeout_seconds`` later are
        cancelled. Then each protocol stops."""
        self._stopping = True
        self._refusals.flush()
        for server in self._servers:
            server.close()
        for connection in list(self._live.values()):
            connection.request_stop()
        settings = self.settings
        pending = set(self.sessions)
        if pending:
            _log.info("draining", sessions=len(pending), timeout=settings.drain_timeout_seconds)
            _, pending = await asyncio.wait(pending, timeout=settings.drain_timeout_seconds)
        if pending:
            _log.info("cutting", sessions=len(pending), timeout=settings.close_timeout_seconds)
            for task in pending:
                live = self._live.get(task)
                if live is not None:
                    live.request_stop(cut=True)
            _, pending = await asyncio.wait(pending, timeout=settings.close_timeout_seconds)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for protocol in self.protocols.values():
            await protocol.stop()
        for server in self._servers:
            await server.wait_closed()
        await self.registry.stop()


@dataclass
class _RefusalLog:
    """Refused connections, logged at once and then at most once a second per reason."""

    interval: float = 1.0
    _pending: dict[tuple[str, str], tuple[int, str, str]] = field(default_factory=dict)
    _logged_at: dict[tuple[str, str], float] = field(default_factory=dict)
    _timer: asyncio.TimerHandle | None = None

    def add(self, protocol: str, reason: str, detail: str, peer: str) -> None:
        key = (protocol, reason)
        count = self._pending.get(key, (0, "", ""))[0] + 1
        self._pending[key] = (count, detail, peer)
        if time.monotonic() - self._logged_at.get(key, -self.interval) >= self.interval:
            self._emit(key)
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.interval, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for key in list(self._pending):
            self._emit(key)

    def _emit(self, key: tuple[str, str]) -> None:
        count, detail, peer = self._pending.pop(key)
        self._logged_at[key] = time.monotonic()
        _log.warning(
            "connections_refused",
            protocol=key[0],
            reason=key[1],
            detail=detail,
            count=count,
            peer=peer,
        )


def listener_settings(
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, ListenerSettings]:
    """Each registered protocol's settings (environment, then ``overrides[name]``)."""
    overrides = overrides or {}
    return {name: cls.settings_class(**overrides.get(name, {})) for name, cls in PROTOCOLS.items()}


def hosted(
    settings: IngestorSettings, sink: Sink, listeners: Mapping[str, ListenerSettings]
) -> list[Protocol]:
    """The enabled protocols, each with its listener settings."""
    return [
        PROTOCOLS[name](listen, settings, sink)
        for name, listen in listeners.items()
        if listen.enabled
    ]


async def serve(
    settings: IngestorSettings,
    stop: asyncio.Event,
    listeners: Mapping[str, ListenerSettings] | None = None,
    readiness: Readiness | None = None,
    http: HttpSettings | None = None,
) -> None:
    """Run until ``stop`` is set. The device registry is read first (at most
    ``registry_catchup_timeout_seconds``), so that sessions start from each device's last
    status; each protocol starts before its listener accepts (the camera first reads the
    progress topic, so that a device coming back resumes where Kafka has its file up to);
    devices are accepted only while ``readiness`` says ready. With
    ``http`` given a port, the OEM JSON intake listens too (:mod:`ingestor.oem`), sharing
    the producer and readiness; it stops first on SIGTERM."""
    readiness = readiness or Readiness("ingestor")
    sink = KafkaSink(settings)
    await sink.producer.start()
    watching = asyncio.create_task(readiness.watch(), name="readiness")
    try:
        protocols = hosted(settings, sink, listeners or listener_settings())
        registry = DeviceRegistry(settings)
        intake = None
        if http is not None and http.enabled:
            intake = OemIntake(http, settings, sink, readiness.why_not, registry)
        if not protocols and intake is None:
            raise ValueError("every protocol is disabled: nothing to listen for")
        ingestor = Ingestor(settings, sink, protocols, registry)
        ingestor.not_ready = readiness.why_not
        try:
            await asyncio.to_thread(readiness.evaluate)  # nobody refused as "not evaluated"
            await ingestor.start()  # each protocol's start (progress catch-up), then listeners
            if intake is not None:
                await intake.start()
            readiness.started()
            await stop.wait()
            readiness.hold("stopping", "draining on SIGTERM")
        finally:
            try:
                if intake is not None:
                    await intake.stop()
            finally:
                await ingestor.stop()
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
        await sink.producer.stop()
