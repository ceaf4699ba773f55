"""An in-test camera server: camproto's server role on real TCP sockets, files kept in memory.

It stands in for the ingestor until that exists. One :class:`camproto.ServerConnection` per
connection with :class:`camproto.DefaultPolicy` choices; every checked chunk is "durable" at
once, so :meth:`_StorePolicy.resume_point` resumes a file from what the server already holds
for that ``(imei, identifier)``, as an ingestor would after a dropped connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pytest

from camproto import (
    ChunkReceived,
    CrcMismatch,
    DefaultPolicy,
    DelegatingPolicy,
    Event,
    MetadataReceived,
    PathEmpty,
    RemoteProtocolError,
    ResumePoint,
    ServerConfig,
    ServerConnection,
    ServerState,
    SessionClosed,
    SessionInfo,
    SessionStarted,
    StatusReceived,
    TransferComplete,
    TransferInfo,
    TransferStarted,
    crc16,
)
from camproto.metadata import Metadata
from simulator import ContentSpec, DevicePlan

Key = tuple[int, bytes]  # (imei, identifier)


@dataclass(slots=True)
class Partial:
    """What the server holds of a file not yet complete."""

    data: bytearray = field(default_factory=bytearray)
    crc: int = 0
    metadata: Metadata | None = None


@dataclass(frozen=True, slots=True)
class Resume:
    """A TransferStarted: where the server asked the device to start."""

    imei: int
    identifier: bytes
    offset: int


@dataclass(frozen=True, slots=True)
class FirstChunk:
    """The first chunk after a non-zero resume: where its CRC chain started."""

    imei: int
    identifier: bytes
    offset: int
    crc_init: int


class _StorePolicy(DelegatingPolicy):
    """DefaultPolicy, except that files resume from what the server already holds."""

    def __init__(self, server: FileServer) -> None:
        self._server = server
        self.base = DefaultPolicy()

    def resume_point(self, session: SessionInfo, transfer: TransferInfo) -> ResumePoint:
        key = (session.imei, transfer.file.identifier)
        partial = self._server.partials.get(key)
        if partial is None or partial.metadata != transfer.metadata:
            # Nothing held, or another file now in that slot: start afresh.
            self._server.partials[key] = Partial(metadata=transfer.metadata)
            return ResumePoint()
        return ResumePoint(offset=len(partial.data), crc=partial.crc)


class FileServer:
    """Accepts camera connections on 127.0.0.1 and stores what they upload.

    ``close_at_once`` makes it a server that closes every connection as soon as it opens;
    ``silent`` one that reads everything and never answers.
    """

    def __init__(
        self,
        *,
        config: ServerConfig | None = None,
        close_at_once: bool = False,
        silent: bool = False,
    ) -> None:
        self.config = config or ServerConfig()
        self.close_at_once = close_at_once
        self.silent = silent
        self.host = "127.0.0.1"
        self.port = 0
        #: Completed files, in the order they completed (a slot may hold several in turn).
        self.files: dict[Key, list[bytes]] = {}
        self.metadata: dict[Key, list[Metadata]] = {}
        self.partials: dict[Key, Partial] = {}
        self.resumes: list[Resume] = []
        self.first_chunks: list[FirstChunk] = []
        self.crc_mismatches = 0
        self.sessions = 0
        self.active = 0
        self.max_active = 0
        #: RemoteProtocolError messages: sessions closed for a broken protocol.
        self.protocol_errors: list[str] = []
        #: Anything that should never happen (chunks out of order, bad file CRC).
        self.problems: list[str] = []
        #: Per IMEI, how its sessions ended, and the failure-path events seen.
        self.closed: dict[int, list[SessionClosed]] = {}
        self.noted: dict[int, list[Event]] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)

    def received(self, imei: int, identifier: bytes) -> list[bytes]:
        return self.files.get((imei, identifier), [])

    def missing(self, plans: Sequence[DevicePlan], spec: ContentSpec) -> list[str]:
        """Every file of ``plans`` the server does not hold byte-identical, described."""
        missing = []
        for plan in plans:
            by_key: dict[Key, list[bytes]] = {}
            for item in plan.files(spec):
                by_key.setdefault((plan.imei, item.file.identifier), []).append(item.data)
            for (imei, identifier), expected in by_key.items():
                got = self.received(imei, identifier)
                # A file re-sent after its confirmation was lost may come twice; order holds.
                if list(dict.fromkeys(got)) != expected:
                    missing.append(
                        f"device {plan.index} ({plan.kind}) {identifier!r}: expected"
                        f" {[len(data) for data in expected]} bytes, got {[len(d) for d in got]}"
                    )
        return missing

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.sessions += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.silent:
                while await reader.read(64 * 1024):
                    pass
            elif not self.close_at_once:
                await self._session(reader, writer)
        finally:
            self.active -= 1
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        conn = ServerConnection(policy=_StorePolicy(self), config=self.config)
        context = _Context()
        while conn.state is not ServerState.CLOSED:
            deadline = conn.next_deadline()
            try:
                async with asyncio.timeout_at(deadline):
                    data = await reader.read(64 * 1024)
            except TimeoutError:
                events = conn.handle_timeout(loop.time())
            except OSError:
                return
            else:
                try:
                    events = conn.receive_data(data, loop.time()) if data else conn.receive_eof()
                except RemoteProtocolError as exc:
                    self.protocol_errors.append(str(exc))
                    return
            for event in events:
                self._on_event(conn, context, event)
            out = conn.data_to_send()
            if out:
                writer.write(out)
                try:
                    await writer.drain()
                except OSError:
                    return
            if not data:
                return

    def _on_event(self, conn: ServerConnection, context: _Context, event: Event) -> None:
        if isinstance(event, SessionClosed):
            self.closed.setdefault(context.imei, []).append(event)
        elif isinstance(event, PathEmpty | StatusReceived):
            self.noted.setdefault(context.imei, []).append(event)
        elif isinstance(event, SessionStarted):
            context.imei = event.imei
        elif isinstance(event, MetadataReceived):
            context.metadata = event.metadata
        elif isinstance(event, TransferStarted):
            key = (context.imei, event.file.identifier)
            partial = self.partials[key]
            if event.resume_offset != len(partial.data):  # the server chose another offset
                del partial.data[event.resume_offset :]
                partial.crc = crc16(partial.data)
            context.key, context.resumed = key, event.resume_offset
            self.resumes.append(Resume(context.imei, event.file.identifier, event.resume_offset))
        elif isinstance(event, ChunkReceived):
            assert context.key is not None
            partial = self.partials[context.key]
            if event.offset != len(partial.data):
                self.problems.append(
                    f"{context.key}: chunk at {event.offset}, held {len(partial.data)}"
                )
            if context.resumed and event.offset == context.resumed:
                self.first_chunks.append(
                    FirstChunk(context.imei, event.file.identifier, event.offset, event.crc_init)
                )
            partial.data += event.data
            partial.crc = event.file_crc
        elif isinstance(event, CrcMismatch):
            self.crc_mismatches += 1
        elif isinstance(event, TransferComplete):
            assert context.key is not None
            partial = self.partials.pop(context.key)
            data = bytes(partial.data)
            if crc16(data) != event.file_crc or event.device_crc_ok is False:
                self.problems.append(f"{context.key}: file CRC does not match")
            self.files.setdefault(context.key, []).append(data)
            if context.metadata is not None:
                self.metadata.setdefault(context.key, []).append(context.metadata)
            context.key, context.resumed = None, 0
            conn.confirm_file()


@dataclass(slots=True)
class _Context:
    imei: int = 0
    key: Key | None = None
    resumed: int = 0
    metadata: Metadata | None = None


class ServerFactory(Protocol):
    async def __call__(
        self,
        *,
        config: ServerConfig | None = None,
        close_at_once: bool = False,
        silent: bool = False,
    ) -> FileServer: ...


@pytest.fixture
async def make_server() -> AsyncIterator[ServerFactory]:
    """Start FileServers (``make_server(close_at_once=True)`` ...); all are stopped after."""
    servers: list[FileServer] = []

    async def make(
        *,
        config: ServerConfig | None = None,
        close_at_once: bool = False,
        silent: bool = False,
    ) -> FileServer:
        server = FileServer(config=config, close_at_once=close_at_once, silent=silent)
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


@pytest.fixture
async def file_server(make_server: ServerFactory) -> FileServer:
    """A started FileServer with the default protocol settings."""
    return await make_server()
