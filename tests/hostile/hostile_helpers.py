"""Shared pieces of the hostile-input tests: a healthy fleet, raw connections, read-back."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import REGISTRY

import contracts
from camproto import CameraDevice, FileAccepted
from contracts import Topic
from contracts import models as wire
from simulator import ContentSpec, Fleet, SimulationConfig
from tests.helpers import eventually

wait_for = eventually  # the shared helper (tests/helpers.py), under its old name

#: The device INIT: command 0, protocol id, IMEI, settings (no length field).
INIT = struct.Struct(">HHQI")
#: Settings bit 25: "a file is ready, ask for its path".
PATH_READY = 1 << 25
#: What the server sends when it gives up on a device: CLOSE SESSION.
CLOSE = b"\x00\x00\x00\x00"


def healthy_fleet(port: int, *, devices: int = 3, seed: int = 11) -> SimulationConfig:
    """A few well-behaved cameras with small files: proof the ingestor still serves."""
    return SimulationConfig(
        port=port,
        devices=devices,
        content=ContentSpec(photos=1, videos=1, photo_size=20_000, video_size=120_000),
        seed=seed,
        timeout=45,
        io_timeout=30,
    )


def fleet_imeis(config: SimulationConfig) -> list[str]:
    return [f"{plan.imei:015d}" for plan in Fleet(config).plans]


def metric(name: str, **labels: str) -> float:
    """A sample of the process-wide Prometheus registry, summed over the labels not given
    (``protocol``...); 0 when absent."""
    return sum(
        sample.value
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def camera_metric(name: str, **labels: str) -> float:
    """An edge metric's sample for the camera protocol (``protocol="camera"``)."""
    return metric(name, protocol="camera", **labels)


def rss_bytes() -> int:
    """Resident set size of this process (VmRSS of /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@dataclass
class Outcome:
    """How the server ended a hostile connection, as the client saw it."""

    received: bytes
    ending: str  # "eof" (FIN) or "reset" (RST: the server closed with our bytes unread)
    seconds: float


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> Outcome:
    """Read until the server closes; fail if it has not within ``within`` seconds."""
    started = time.monotonic()
    received = bytearray()
    async with asyncio.timeout(within):
        while True:
            try:
                data = await reader.read(65536)
            except ConnectionResetError:
                return Outcome(bytes(received), "reset", time.monotonic() - started)
            if not data:
                return Outcome(bytes(received), "eof", time.monotonic() - started)
            received += data


@dataclass
class Hostile:
    """One hostile connection: its local address names its session in the events."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    peer: str = ""

    @classmethod
    async def open(cls, port: int, source: str = "127.0.0.1") -> Hostile:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        host, local_port = writer.get_extra_info("sockname")[:2]
        return cls(reader, writer, f"{host}:{local_port}")

    async def send(self, data: bytes) -> None:
        """Write, ignoring the server hanging up on us halfway (that is the point)."""
        with contextlib.suppress(ConnectionError):
            self.writer.write(data)
            await self.writer.drain()

    def close(self) -> None:
        self.writer.close()


@dataclass
class Sessions:
    """Session events read back from Kafka, indexed by the peer that caused them."""

    events: list[Any] = field(default_factory=list)

    def closed_by_peer(self) -> dict[str, wire.Closed]:
        peers = {e.session_id: e.peer for e in self.events if isinstance(e, wire.Connected)}
        return {
            peers[e.session_id]: e
            for e in self.events
            if isinstance(e, wire.Closed) and e.session_id in peers
        }

    def of_type(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


async def read_sessions(
    kafka: str, until: Callable[[Sessions], bool], within: float = 30.0
) -> Sessions:
    """Consume the sessions topic from the start until ``until`` holds."""
    out = Sessions()
    consumer = AIOKafkaConsumer(
        str(Topic.SESSIONS), bootstrap_servers=kafka, auto_offset_reset="earliest",
        enable_auto_commit=False, max_partition_fetch_bytes=8 << 20,
    )  # fmt: skip
    await consumer.start()
    try:
        async with asyncio.timeout(within):
            while not until(out):
                batch = await consumer.getmany(timeout_ms=200, max_records=50_000)
                for records in batch.values():
                    out.events += (
                        contracts.decode(contracts.SessionEvent, r.value) for r in records
                    )
    finally:
        await consumer.stop()
    return out


def closed_for(peers: set[str]) -> Callable[[Sessions], bool]:
    return lambda sessions: peers <= sessions.closed_by_peer().keys()


@contextlib.contextmanager
def open_files(needed: int) -> Any:
    """Raise the soft RLIMIT_NOFILE to at least ``needed`` (skip if the hard limit is lower)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs {needed} open files per process; RLIMIT_NOFILE hard limit is {hard}")
    if soft == resource.RLIM_INFINITY or soft >= needed:
        yield
        return
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def upload(port: int, device: CameraDevice, within: float = 20.0) -> list[FileAccepted]:
    """Drive ``device`` over one connection until the server closes it; what it accepted."""
    conn = device.connect()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    accepted: list[FileAccepted] = []
    try:
        async with asyncio.timeout(within):
            while not conn.closed:
                out = conn.data_to_send()
                if out:
                    writer.write(out)
                    await writer.drain()
                data = await reader.read(65536)
                if not data:
                    break
                events = conn.receive_data(data)
                accepted += (e for e in events if isinstance(e, FileAccepted))
    finally:
        writer.close()
    return accepted
