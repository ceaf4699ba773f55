"""The ingestor over real TCP against a real Kafka-protocol broker (Tansu)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from camproto import CameraDevice, CameraFile, DeviceFile, DualCamSlot, FileAccepted, crc16
from contracts import ChunkMeta
from contracts import models as wire
from devstack.infra import create_topics, start_tansu, wait_kafka
from ingestor.sink import KafkaSink
from simulator import ContentSpec, Faults, Fleet, SimulationConfig, simulate
from tests.ingestor.ingestor_helpers import make_ingestor, read_published, running, settings


def device_files(config: SimulationConfig) -> dict[tuple[str, str], bytes]:
    return {
        (f"{plan.imei:015d}", item.file.path): item.data
        for plan in Fleet(config).plans
        for item in plan.files(config.content)
    }


async def test_cameras_land_byte_identical_in_kafka(kafka: str) -> None:
    async with running(settings(kafka)) as ingestor:
        assert ingestor.port is not None
        config = SimulationConfig(
            port=ingestor.port,
            devices=6,
            content=ContentSpec(photos=1, videos=1, photo_size=50_000, video_size=700_000),
            faults=Faults(bad_crc_at=3, split=True),
            seed=7,
            timeout=60,
        )
        report = await simulate(config)
        assert report.ok, report.summary()
    published = await read_published(kafka, ends=12)
    assert published.by_imei_and_file() == device_files(config)
    for tid, end in published.ends.items():
        data = bytes(published.files[tid])
        assert end.size == len(data) and end.file_crc == crc16(data)
    for headers in published.chunk_headers:  # every record carries what a consumer checks
        meta = ChunkMeta.from_headers(None, headers)
        assert 0 <= meta.crc <= 0xFFFF and meta.origin is not None and meta.origin >= 0
    kinds = [type(e).__name__ for e in published.sessions]
    for name in ("Connected", "SessionStarted", "MetadataReceived", "TransferStarted",
                 "CrcMismatch", "TransferComplete", "Closed"):  # fmt: skip
        assert name in kinds
    closed = [e for e in published.sessions if isinstance(e, wire.Closed)]
    assert len(closed) == 6 and all(e.clean for e in closed)


class GatedSink:
    """A real Kafka sink whose acknowledgements the test releases."""

    def __init__(self, inner: KafkaSink) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.held = 0

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        real = await self.inner.send(topic, key, value, headers)
        gated: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.held += 1

        async def release() -> None:
            result = await real
            await self.gate.wait()
            gated.set_result(result)

        asyncio.get_running_loop().create_task(release())
        return gated


async def test_device_hears_done_only_after_kafka_acknowledged(kafka: str) -> None:
    config = settings(kafka)
    inner = KafkaSink(config.ingestor)
    await inner.producer.start()
    sink = GatedSink(inner)
    ingestor = make_ingestor(config, sink)
    await ingestor.start()
    port = ingestor.port
    assert port is not None
    item = DeviceFile(
        CameraFile.for_slot(DualCamSlot.PHOTO_FRONT), bytes(range(256)) * 40, bytes(32)
    )
    device = CameraDevice(imei=352094082736916, files=[item])
    conn = device.connect()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
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
            accepted.extend(e for e in conn.receive_data(data) if isinstance(e, FileAccepted))

    task = asyncio.create_task(pump())
    try:
        # Until the gate opens, the file cannot be confirmed: the start record itself waits.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), 0.4)
        assert accepted == [] and device.files == [item]
        sink.gate.set()
        await asyncio.wait_for(task, 10)
        assert [a.file for a in accepted] == [item.file] and device.files == []
    finally:
        task.cancel()
        writer.close()
        await ingestor.stop()
        await inner.producer.stop()


async def test_malformed_session_is_closed_and_others_go_on(kafka: str) -> None:
    async with running(settings(kafka)) as ingestor:
        assert ingestor.port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", ingestor.port)
        writer.write(b"\xff\xff\x00\x10garbage")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        writer.close()
        config = SimulationConfig(
            port=ingestor.port,
            devices=2,
            content=ContentSpec(photos=1, videos=0, photo_size=20_000),
            timeout=30,
        )
        assert (await simulate(config)).ok
    published = await read_published(kafka, ends=2)
    reasons = [e.reason for e in published.sessions if isinstance(e, wire.Closed)]
    assert any("unknown command id 0xFFFF" in r for r in reasons), reasons


async def test_silent_connection_times_out(kafka: str) -> None:
    async with running(settings(kafka, hello_timeout_seconds=0.3)) as ingestor:
        assert ingestor.port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", ingestor.port)
        assert await asyncio.wait_for(reader.read(), 5) == b"\x00\x00\x00\x00"  # CLOSE, EOF
        writer.close()
    published = await read_published(
        kafka, ends=0, until=lambda p: any(isinstance(e, wire.Closed) for e in p.sessions)
    )
    closed = [e for e in published.sessions if isinstance(e, wire.Closed)]
    assert closed and closed[0].reason == "no INIT within 0.3 s" and not closed[0].clean


async def test_broker_gone_means_nothing_is_confirmed(tmp_path: Path) -> None:
    broker = start_tansu(log=tmp_path / "tansu.log")
    bootstrap = f"127.0.0.1:{broker.port}"
    try:
        await wait_kafka(bootstrap)
        await create_topics(bootstrap)
        # On Tansu (a broker of our own to kill), which has no idempotent producer.
        config = settings(
            bootstrap,
            ack_timeout_seconds=1.0,
            kafka_request_timeout_ms=1500,
            kafka_enable_idempotence=False,
        )
        async with running(config) as ingestor:
            assert ingestor.port is not None
            broker.kill()  # SIGKILL: the broker is gone, the ingestor is not told
            sim = SimulationConfig(
                port=ingestor.port,
                devices=1,
                content=ContentSpec(photos=1, videos=0, photo_size=5_000),
                timeout=8,
                max_reconnects=1,
                reconnect_backoff=0.05,
            )
            report = await simulate(sim)
            assert not report.ok and report.files_accepted == 0
            # the process is still serving: a new connection gets an answer (CLOSE at idle)
            reader, writer = await asyncio.open_connection("127.0.0.1", ingestor.port)
            writer.write(b"\xff\xff\x00\x00")
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
    finally:
        broker.stop()


@pytest.mark.parametrize("limit", [8 * 1024])
async def test_one_connection_holds_a_bounded_amount(kafka: str, limit: int) -> None:
    config = settings(kafka, max_buffered_bytes=limit, record_bytes=4096)
    inner = KafkaSink(config.ingestor)
    await inner.producer.start()
    sink = GatedSink(inner)
    ingestor = make_ingestor(config, sink)
    await ingestor.start()
    port = ingestor.port
    assert port is not None
    sim = SimulationConfig(
        port=port, devices=1, content=ContentSpec(photos=0, videos=1, video_size=2_000_000),
        timeout=20,
    )  # fmt: skip
    task = asyncio.create_task(simulate(sim))
    try:
        await asyncio.sleep(0.3)
        held_while_gated = sink.held
        # Records wait for the gate: the ingestor stopped reading after about `limit` bytes.
        assert held_while_gated * 4096 < 2_000_000 / 4
        sink.gate.set()
        assert (await asyncio.wait_for(task, 20)).ok
    finally:
        task.cancel()
        await ingestor.stop()
        await inner.producer.stop()
