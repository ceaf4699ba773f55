"""A Digital Matter server played by ``dmtproto``'s server role on a real socket, devices
uploading through the real ingestor, and a connector that forwards to that server."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from connector.settings import ConnectorSettings
from devstack.infra import free_port as infra_free_port
from dmtproto import (
    CommitRequested,
    DmtDevice,
    FixedRecord,
    HelloReceived,
    Record,
    RecordReceived,
    RemoteProtocolError,
    ServerConnection,
    encode_record,
)
from tests.helpers import eventually

DEADLINE = 30.0


@dataclass
class Received:
    """What the server got from one IMEI, over all its connections."""

    hellos: list[bytes] = field(default_factory=list)
    #: Each record's bytes (``Record.raw``) in the order they arrived, resends included.
    records: list[bytes] = field(default_factory=list)
    #: Every byte each connection sent, one entry a connection.
    streams: list[bytes] = field(default_factory=list)
    #: Records the server committed (answered a commit request covering them).
    committed: list[bytes] = field(default_factory=list)


class DmServer:
    """A third-party Digital Matter server: the project's own protocol core in the server
    role, on 127.0.0.1. ``commits`` False: it never answers a commit request; ``refuse``:
    IMEIs whose commit requests it never answers."""

    def __init__(
        self, port: int = 0, *, commits: bool = True, refuse: frozenset[str] = frozenset()
    ) -> None:
        self.port = port
        self.commits = commits
        self.refuse = refuse
        self.devices: dict[str, Received] = {}
        self.connections = 0
        #: Connections not finished yet (their ``streams`` entry comes at the end).
        self.open = 0
        self.errors: list[str] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> DmServer:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Down: no new connections, and the open ones are cut."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def committed(self, imei: str) -> list[bytes]:
        return self.devices[imei].committed if imei in self.devices else []

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self._writers.add(writer)
        loop = asyncio.get_running_loop()
        conn = ServerConnection(now=loop.time(), unix_time=time.time())
        seen: Received | None = None
        imei = ""
        uncommitted: list[bytes] = []
        stream = bytearray()
        try:
            while data := await reader.read(65536):
                stream += data
                for event in conn.receive_data(data, loop.time()):
                    if isinstance(event, HelloReceived):
                        imei = event.imei
                        seen = self.devices.setdefault(imei, Received())
                        seen.hellos.append(event.raw)
                    elif isinstance(event, RecordReceived):
                        assert seen is not None
                        seen.records.append(event.record.raw)
                        uncommitted.append(event.record.raw)
                    elif (
                        isinstance(event, CommitRequested)
                        and self.commits
                        and imei not in self.refuse
                    ):
                        assert seen is not None
                        conn.commit()
                        seen.committed += uncommitted
                        uncommitted = []
                writer.write(conn.data_to_send())
                await writer.drain()
        except RemoteProtocolError as exc:
            self.errors.append(str(exc))
        except ConnectionError:
            pass
        finally:
            if seen is not None:
                seen.streams.append(bytes(stream))
            self.open -= 1
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def free_port() -> int:
    """A port nothing listens on (for a target that is down, then comes up there); outside
    the ephemeral range, so no outgoing connection takes it meanwhile."""
    return infra_free_port()


def record_bytes(records: list[Record | FixedRecord]) -> list[bytes]:
    return [encode_record(r) if isinstance(r, Record) else r.raw for r in records]


async def upload(port: int, device: DmtDevice, records_per_message: int = 16) -> None:
    """The device connects to the ingestor, uploads everything it holds, hangs up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = device.connect(records_per_message=records_per_message)
    try:
        async with asyncio.timeout(DEADLINE):
            while True:
                writer.write(conn.data_to_send())
                await writer.drain()
                if conn.finished:
                    return
                data = await reader.read(65536)
                assert data, "the ingestor closed the connection"
                conn.receive_data(data)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def settings(kafka: str, **overrides: Any) -> ConnectorSettings:
    """Fast connector settings; no S3 (records only)."""
    values: dict[str, Any] = {
        "kafka_bootstrap": kafka,
        "kafka_session_timeout_ms": 2000,
        "kafka_heartbeat_interval_ms": 500,
        "shutdown_grace_seconds": 1.0,
    }
    return ConnectorSettings(**(values | overrides))


async def wait_for(condition: Callable[[], bool], what: str, within: float = DEADLINE) -> None:
    await eventually(condition, within, what)
