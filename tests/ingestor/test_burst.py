"""A fleet arriving and finishing at once: sessions wait their turn for a full producer
instead of failing, and a core's deadline does not fire for bytes that already arrived
while the event loop (or Kafka) was late."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError

from camproto import (
    CameraDevice,
    CameraFile,
    DeviceFile,
    DualCamSlot,
    FileAccepted,
    ResumeRequested,
)
from contracts import Topic
from ingestor.adapter import Link, Session
from ingestor.connection import Connection
from ingestor.registry import DeviceRegistry
from ingestor.settings import IngestorSettings, ListenerSettings
from ingestor.sink import KafkaFailed, KafkaSink, Ledger
from tests.ingestor.ingestor_helpers import make_ingestor, settings

# --- Kafka backpressure ----------------------------------------------------------------------


async def test_a_burst_waits_for_a_full_producer_in_turn(kafka: str) -> None:
    """Each batch holds one record, so 300 sessions x 3 records queue for the producer far
    longer than their 0.5 s acknowledgement timeout; none fails, and they enter in turn."""
    tiny = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=0, max_batch_size=1200)
    sink = KafkaSink(settings(kafka).ingestor, tiny)
    await sink.producer.start()
    sessions, records, value = 300, 3, bytes(1000)
    firsts: list[tuple[int, int]] = []

    async def session(index: int) -> int:
        ledger = Ledger(sink, timeout=0.5, enqueue_timeout=120.0)
        first = None
        for _ in range(records):
            future = await ledger.publish(Topic.CHUNKS, b"one-partition", value)
            first = first or future
        await ledger.barrier()
        assert first is not None
        firsts.append((index, (await first).offset))
        return records

    try:
        done = await asyncio.gather(*(session(i) for i in range(sessions)))
    finally:
        await sink.producer.stop()
    assert sum(done) == sessions * records
    # First come, first served: sessions' first records landed in the order they asked.
    offsets = [offset for _, offset in sorted(firsts)]
    assert offsets == sorted(offsets)


class StalledProducer:
    """Takes nothing: every send waits, then times out as aiokafka's does."""

    def __init__(self) -> None:
        self.calls = 0

    async def send(self, topic: str, **_: Any) -> asyncio.Future[Any]:
        self.calls += 1
        await asyncio.sleep(0.05)
        raise KafkaTimeoutError()


async def test_a_stalled_producer_fails_its_queue_at_once() -> None:
    stalled = StalledProducer()
    sink = KafkaSink(settings("127.0.0.1:1").ingestor, stalled)
    ledgers = [Ledger(sink, timeout=30.0, enqueue_timeout=60.0) for _ in range(5)]
    results = await asyncio.gather(
        *(ledger.publish("t", b"k", b"v") for ledger in ledgers), return_exceptions=True
    )
    assert all(isinstance(r, KafkaFailed) for r in results)
    assert "KafkaTimeoutError" in str(results[0])
    assert all("producer stalled" in str(r) for r in results[1:])
    assert stalled.calls == 1  # those queued behind it did not wait the timeout again
    # A record that comes later tries the producer again.
    with pytest.raises(KafkaFailed, match="KafkaTimeoutError"):
        await Ledger(sink, timeout=30.0).publish("t", b"k", b"v")
    assert stalled.calls == 2


# --- timers vs the event loop's lag ----------------------------------------------------------


class NoSink:
    async def send(self, *_: Any) -> asyncio.Future[Any]:
        raise AssertionError("nothing is published here")


def _link() -> Link:
    return Link(
        protocol="test",
        settings=ListenerSettings(),
        instance="test",
        peer="peer",
        ledger=Ledger(NoSink(), 1.0),
        log=structlog.get_logger(),
        registry=DeviceRegistry(IngestorSettings(), read=False),
    )


class AwaitSync(Session):
    """Like a camera server after RESUME: wants ``SYNC`` before its deadline, else it sends
    RESUME again (counted in ``timeouts``)."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.started = asyncio.Event()
        self.synced = asyncio.Event()
        self.deadline: float | None = None
        self.timeouts: list[float] = []
        self.resumed = asyncio.Event()  # a second RESUME went out
        self._closed = False

    identified = property(lambda self: True)
    busy = property(lambda self: False)
    closed = property(lambda self: self._closed)
    detail = property(lambda self: "done")

    async def start(self) -> None:
        self.deadline = asyncio.get_running_loop().time() + 0.2
        self.started.set()

    def next_deadline(self) -> float | None:
        return None if self.synced.is_set() else self.deadline

    def data_to_send(self) -> bytes:
        return b""

    async def receive_data(self, data: bytes, now: float) -> None:
        if b"SYNC" in data:
            self.synced.set()
        if b"BYE" in data:
            self._closed = True

    async def receive_eof(self) -> None:
        self._closed = True

    async def handle_timeout(self, now: float) -> None:
        self.timeouts.append(now)
        if len(self.timeouts) >= 2:
            self.resumed.set()
        self.deadline = now + 0.2

    async def close(self, detail: str) -> None:
        self._closed = True

    async def finish(self, detail: str) -> None:
        return None


async def test_a_deadline_does_not_fire_for_bytes_waiting_on_the_socket() -> None:
    sessions: list[AwaitSync] = []
    accepted = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _link()
        session = AwaitSync(link)
        sessions.append(session)
        accepted.set()
        await Connection(reader, writer, session).run()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(5):
            await accepted.wait()
            await sessions[0].started.wait()
        session = sessions[0]
        writer.write(b"SYNC")  # before the deadline: on the server's socket at once
        time.sleep(0.4)  # noqa: ASYNC251 - the loop stalls past the deadline (a burst elsewhere)
        async with asyncio.timeout(5):
            await session.synced.wait()
        assert session.timeouts == []  # no RESUME for a SYNC that had arrived
        writer.write(b"BYE")
        await asyncio.wait_for(reader.read(), 5)
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_deadline_still_fires_when_nothing_arrived() -> None:
    """The check costs the timer nothing when the bytes really are missing."""
    sessions: list[AwaitSync] = []
    accepted = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _link()
        sessions.append(AwaitSync(link))
        accepted.set()
        await Connection(reader, writer, sessions[-1]).run()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(5):
            await accepted.wait()
            await sessions[0].resumed.wait()
        writer.write(b"SYNC BYE")
        await asyncio.wait_for(reader.read(), 5)
        writer.close()
        assert sessions[0].synced.is_set()
    finally:
        server.close()
        await server.wait_closed()


class SlowAcks:
    """A real Kafka sink whose acknowledgements wait until the test opens the gate."""

    def __init__(self, inner: KafkaSink) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.first_held = asyncio.Event()

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        real = await self.inner.send(topic, key, value, headers)
        held: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def release() -> None:
            result = await real
            self.first_held.set()
            await self.gate.wait()
            held.set_result(result)

        asyncio.get_running_loop().create_task(release())
        return held


async def test_the_resume_interval_runs_from_the_resume_not_from_the_start_record(
    kafka: str,
) -> None:
    """Kafka takes longer than the RESUME interval (2 s) to acknowledge a file's start record:
    the RESUME went out at once and the device's SYNC waits in the socket, so no second
    RESUME follows (a device obeying it would end in a protocol error)."""
    config = settings(kafka)
    inner = KafkaSink(config.ingestor)
    await inner.producer.start()
    sink = SlowAcks(inner)
    ingestor = make_ingestor(config, sink)
    await ingestor.start()
    assert ingestor.port is not None
    item = DeviceFile(
        CameraFile.for_slot(DualCamSlot.PHOTO_FRONT), bytes(range(256)) * 8, bytes(32)
    )
    conn = CameraDevice(imei=352094082736916, files=[item]).connect()
    reader, writer = await asyncio.open_connection("127.0.0.1", ingestor.port)
    resumes: list[ResumeRequested] = []
    accepted: list[FileAccepted] = []

    async def pump() -> None:
        while not conn.closed:
            out = conn.data_to_send()
            if out:
                writer.write(out)
                await writer.drain()
            data = await reader.read(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, ResumeRequested):
                    resumes.append(event)
                elif isinstance(event, FileAccepted):
                    accepted.append(event)

    task = asyncio.create_task(pump())
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(sink.first_held.wait(), 10)
        loop.call_later(2.5, sink.gate.set)  # past the RESUME interval, the start record held
        await asyncio.wait_for(task, 20)
    finally:
        task.cancel()
        writer.close()
        await ingestor.stop()
        await inner.producer.stop()
    assert [a.file for a in accepted] == [item.file]
    assert len(resumes) == 1, resumes
