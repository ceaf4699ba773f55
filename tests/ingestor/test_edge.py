"""The edge hosts any protocol: a toy line protocol plugged in as an adapter, next to the camera.

The toy device says ``HELLO <imei>``, sends ``REC <text>`` lines and ``COMMIT``; the server
answers ``OK <n>`` only once Kafka acknowledged the n records before the commit. The sink is
in memory and acknowledges when the test says so: what is checked is the edge (listeners,
limits, read loop, backpressure, barrier, close reasons, metrics), not Kafka.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from prometheus_client import REGISTRY
from pydantic_settings import SettingsConfigDict

from devstack.infra import create_topics
from ingestor.adapter import Link, PeerError, Protocol, Session
from ingestor.camera import CameraProtocol
from ingestor.server import Ingestor
from ingestor.settings import IngestorSettings, ListenerSettings
from ingestor.sink import KafkaSink
from simulator import ContentSpec, SimulationConfig, simulate
from tests.ingestor.ingestor_helpers import settings

#: Created before use: a topic the broker would auto-create may stall the producer meanwhile.
TOY_TOPIC = "fleetgate.test.toy.v1"


class ToySettings(ListenerSettings):
    model_config = SettingsConfigDict(env_prefix="FLEETGATE_TOY_", extra="ignore")

    hello_timeout_seconds: float = 0.3


class ToySession(Session):
    """A line protocol, sans-I/O in a few lines (a real core lives in libs/)."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self._buffer = b""
        self._out = bytearray()
        self._records = 0
        self._closed = False
        self._detail = "session closed"

    identified = property(lambda self: self.link.imei is not None)
    busy = property(lambda self: False)
    closed = property(lambda self: self._closed)
    detail = property(lambda self: self._detail)

    def next_deadline(self) -> float | None:
        return None

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    async def receive_data(self, data: bytes, now: float) -> None:
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            verb, _, rest = line.partition(b" ")
            if verb == b"HELLO" and not self.identified:
                self.link.identify(rest.decode())
            elif verb == b"REC" and self.identified:
                await self.link.ledger.publish(TOY_TOPIC, b"k", rest)
                self._records += 1
            elif verb == b"COMMIT" and self.identified:
                await self.link.ledger.barrier()
                self._out += b"OK %d\n" % self._records
            elif verb == b"BYE":
                self.link.close_reason, self._closed = "clean", True
            else:
                raise PeerError(f"unexpected {line[:20]!r}")

    async def receive_eof(self) -> None:
        self._closed = True

    async def handle_timeout(self, now: float) -> None:
        raise AssertionError("no deadline was set")

    async def close(self, detail: str) -> None:
        self._out += b"CLOSE\n"
        self._closed, self._detail = True, detail

    async def finish(self, detail: str) -> None:
        await self.link.ledger.barrier()


class ToyProtocol(Protocol):
    name: ClassVar[str] = "toy"
    hello: ClassVar[str] = "HELLO"
    settings_class: ClassVar[type[ListenerSettings]] = ToySettings

    def session(self, link: Link) -> Session:
        return ToySession(link)


class HeldSink:
    """Records land in memory; each is acknowledged when the test releases it."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes]] = []
        self.futures: list[asyncio.Future[Any]] = []
        self.sent = asyncio.Event()

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        self.records.append((topic, value))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        self.sent.set()
        return future

    def release(self) -> None:
        for offset, future in enumerate(self.futures):
            if not future.done():
                future.set_result(type("Meta", (), {"offset": offset, "partition": 0})())


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def toy(sink: Any, **listener: Any) -> tuple[Ingestor, ToyProtocol]:
    edge = IngestorSettings(instance="edge-test", ack_timeout_seconds=5.0)
    protocol = ToyProtocol(ToySettings(host="127.0.0.1", port=0, **listener), edge, sink)
    return Ingestor(edge, sink, [protocol]), protocol


async def _line(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readline(), 5)


async def test_commit_is_answered_only_after_kafka_acknowledged() -> None:
    sink = HeldSink()
    ingestor, _ = toy(sink)
    produced = metric("fleetgate_ingestor_kafka_produce_seconds_count", protocol="toy")
    await ingestor.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", ingestor.ports["toy"])
        writer.write(b"HELLO 352094080000001\nREC a\nREC b\nCOMMIT\n")
        await writer.drain()
        with pytest.raises(TimeoutError):  # held: both records wait for Kafka
            await asyncio.wait_for(reader.readline(), 0.3)
        assert sink.records == [(TOY_TOPIC, b"a"), (TOY_TOPIC, b"b")]
        sink.release()
        assert await _line(reader) == b"OK 2\n"
        writer.write(b"BYE\n")
        assert await _line(reader) == b""
        writer.close()
    finally:
        await ingestor.stop()
    assert metric("fleetgate_ingestor_sessions_closed_total", protocol="toy", reason="clean") >= 1
    # the window's first record timed under the session's protocol (one sample per window
    # of records awaited together), held at least 0.3 s
    count = metric("fleetgate_ingestor_kafka_produce_seconds_count", protocol="toy")
    assert count == produced + 1
    assert metric("fleetgate_ingestor_kafka_produce_seconds_sum", protocol="toy") >= 0.3


async def test_edge_closes_with_its_reasons_for_any_protocol() -> None:
    sink = HeldSink()
    ingestor, _ = toy(sink, max_connections_per_peer=2)
    before = {
        reason: metric("fleetgate_ingestor_sessions_closed_total", protocol="toy", reason=reason)
        for reason in ("idle", "protocol_error", "not_allowed")
    }
    refused = metric(
        "fleetgate_ingestor_connections_refused_total",
        protocol="toy",
        reason="max_connections_per_peer",
    )
    await ingestor.start()
    port = ingestor.ports["toy"]
    try:
        silent = await asyncio.open_connection("127.0.0.1", port)
        rude = await asyncio.open_connection("127.0.0.1", port)
        third = await asyncio.open_connection("127.0.0.1", port)  # over the per-peer limit
        assert await _line(third[0]) == b""
        rude[1].write(b"GARBAGE\n")
        assert await _line(rude[0]) == b""  # protocol error: closed, nothing said
        assert await _line(silent[0]) == b"CLOSE\n"  # no HELLO within 0.3 s
        for _, writer in (silent, rude, third):
            writer.close()
    finally:
        await ingestor.stop()
    after = {
        reason: metric("fleetgate_ingestor_sessions_closed_total", protocol="toy", reason=reason)
        for reason in before
    }
    assert after["idle"] - before["idle"] == 1
    assert after["protocol_error"] - before["protocol_error"] == 1
    assert (
        metric(
            "fleetgate_ingestor_connections_refused_total",
            protocol="toy",
            reason="max_connections_per_peer",
        )
        == refused + 1
    )


async def test_the_allow_list_is_per_protocol() -> None:
    sink = HeldSink()
    ingestor, _ = toy(sink, imei_allow="352094080000001")
    await ingestor.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", ingestor.ports["toy"])
        writer.write(b"HELLO 352094080000009\nREC secret\n")
        assert await _line(reader) == b""
        writer.close()
    finally:
        await ingestor.stop()
    assert sink.records == []  # refused before anything of it was published


async def test_a_failed_record_closes_the_session_with_kafka_error() -> None:
    sink = HeldSink()
    ingestor, _ = toy(sink)
    await ingestor.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", ingestor.ports["toy"])
        writer.write(b"HELLO 352094080000001\nREC a\nCOMMIT\n")
        await writer.drain()
        await asyncio.wait_for(sink.sent.wait(), 5)
        before = metric(
            "fleetgate_ingestor_sessions_closed_total", protocol="toy", reason="kafka_error"
        )
        errors = metric("fleetgate_ingestor_kafka_errors_total", protocol="toy")
        sink.futures[0].set_exception(RuntimeError("NOT_ENOUGH_REPLICAS"))
        assert await _line(reader) == b""  # never "OK": the device sends it again later
        writer.close()
    finally:
        await ingestor.stop()
    after = metric("fleetgate_ingestor_sessions_closed_total", protocol="toy", reason="kafka_error")
    assert after == before + 1
    assert metric("fleetgate_ingestor_kafka_errors_total", protocol="toy") == errors + 1


async def test_two_protocols_side_by_side(kafka: str) -> None:
    """A camera fleet uploads on the camera listener while the toy protocol commits on its
    own, one process, one producer."""
    await create_topics(kafka, extra=[TOY_TOPIC])
    config = settings(kafka)
    sink = KafkaSink(config.ingestor)
    await sink.producer.start()
    camera = CameraProtocol(config.camera, config.ingestor, sink, read_progress=False)
    other = ToyProtocol(ToySettings(host="127.0.0.1", port=0), config.ingestor, sink)
    ingestor = Ingestor(config.ingestor, sink, [camera, other])
    try:
        await ingestor.start()
        assert set(ingestor.ports) == {"camera", "toy"}
        fleet = asyncio.create_task(
            simulate(
                SimulationConfig(
                    port=ingestor.ports["camera"],
                    devices=2,
                    content=ContentSpec(photos=1, videos=0, photo_size=20_000),
                    timeout=30,
                )
            )
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", ingestor.ports["toy"])
        writer.write(b"HELLO 352094080000001\nREC x\nCOMMIT\n")
        assert await _line(reader) == b"OK 1\n"
        writer.close()
        report = await asyncio.wait_for(fleet, 30)
        assert report.ok, report.summary()
    finally:
        await ingestor.stop()
        await sink.producer.stop()
