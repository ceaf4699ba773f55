"""The Digital Matter adapter on a real broker (Tansu) over real sockets: records in Kafka
with their values, raw messages, the device registry, session events, and the commit reply
only after Kafka acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from contracts import Topic
from contracts.dmt import DmtClosed, DmtConnected, DmtHello
from contracts.records import RawHeader
from devstack.infra import TANSU_CLIENT_ENV, create_topics, start_tansu, wait_kafka
from dmtproto import MessageType, decode_message_records
from ingestor.sink import KafkaSink
from simulator.dmt import DmtSimulationConfig, simulate_dmt
from tests.dmt_e2e.dmt_helpers import (
    FailingSink,
    GatedSink,
    Landed,
    Wire,
    read_landed,
    running,
    tracker,
)
from tests.hostile.hostile_helpers import metric

IMEI = "352093081234567"


async def _upload(wire: Wire) -> int:
    """HELLO answered, then one batch and its commit request written."""
    while not wire.hello_answered:
        await wire.read()
    count: int = wire.conn.upload()
    await wire.flush()
    return count


async def test_records_land_with_their_values_and_are_committed(kafka: str) -> None:
    device = tracker(IMEI, records=5)
    sent = list(device.pending)
    records_before = metric("fleetgate_ingestor_records_total", protocol="dmt")
    bytes_before = metric("fleetgate_ingestor_received_bytes_total", protocol="dmt")
    async with running(kafka) as (ingestor, _):
        port = ingestor.ports["dmt"]
        wire = await Wire.open(port, device, records_per_message=2)
        assert await _upload(wire) == 5
        while not wire.commits:
            await wire.read()
        assert wire.commits[0].ok and device.pending == [] and device.committed == 5
        # the edge's records counter, labelled by protocol, counts what was committed
        assert metric("fleetgate_ingestor_records_total", protocol="dmt") == records_before + 5
        received = metric("fleetgate_ingestor_received_bytes_total", protocol="dmt")
        assert received - bytes_before > 5 * 20  # HELLO, three messages, the commit request
        await wire.close()

        def done(landed: Landed) -> bool:
            return len(landed.records) >= 5 and any(
                isinstance(e, DmtClosed) for e in landed.sessions
            )

        landed = await read_landed(kafka, done)

    by_sequence = {r.sequence: r for r in landed.records}
    assert sorted(by_sequence) == [r.sequence for r in sent]
    for i, record in enumerate(sent):
        got = by_sequence[record.sequence]
        assert got.device.imei == IMEI and got.protocol == "dmt"
        assert got.device.product == "G62" or got.device.product_id == 34
        assert got.device.firmware == "1.9" and got.device.serial == 4242
        assert got.log_reason.code == 3
        assert got.position is not None and got.position.valid
        assert abs(got.position.latitude - (-33.8 + i / 1000)) < 1e-6
        assert abs(got.position.longitude - 151.2) < 1e-6
        assert got.position.speed_m_s == 10.0 and got.position.heading_deg == 90.0
        assert got.ignition is not None and got.inputs == 1
        values = {m.name: (m.value, m.unit) for m in got.analogues}
        assert values["battery_voltage"] == (round((4000 + i) * 0.001, 6), "V")
        assert values["temperature"] == (21.5, "°C")
    # Raw: every record as a complete message, decodable again, its record id in a header.
    record_ids = {r.sequence: r.record_id for r in landed.records}
    raw_records = [(h, v) for _, v, h in landed.raw if h[RawHeader.MESSAGE_TYPE] != b"0"]
    assert len(raw_records) == 5
    for headers, value in raw_records:
        assert value[:2] == b"\x02\x55" and value[2] == MessageType.DATA_RECORDS
        (decoded,) = decode_message_records(value)
        assert headers[RawHeader.RECORD_ID].decode() == record_ids[decoded.sequence]
    hellos = [v for _, v, h in landed.raw if h[RawHeader.MESSAGE_TYPE] == b"0"]
    assert len(hellos) == 1 and hellos[0][2] == MessageType.HELLO
    assert all(key == IMEI.encode() for key, _, _ in landed.raw)
    # The registry knows the device, with what the last record said.
    status = landed.devices[IMEI]
    assert status.protocols == ["dmt"] and status.serial == 4242 and status.firmware == "1.9"
    assert status.iccid == "89610180004123456789"
    assert status.battery_voltage == 4.004 and status.temperature_c == 21.5
    assert status.last_position is not None
    assert abs(status.last_position.latitude - (-33.796)) < 1e-6
    assert status.last_connection is not None and status.last_connection.protocol == "dmt"
    # Session events: connected, hello, closed (clean: everything was committed).
    # (keyed by session until the HELLO, by IMEI after: in time order, not partition order)
    events = sorted(landed.sessions, key=lambda e: e.at)
    assert [type(e) for e in events] == [DmtConnected, DmtHello, DmtClosed]
    closed = events[-1]
    assert closed.records == 5 and closed.committed == 5 and closed.clean
    assert closed.imei == IMEI


async def test_no_commit_reply_before_kafka_acknowledged(kafka: str) -> None:
    device = tracker(IMEI, records=4)
    holder: dict[str, GatedSink] = {}

    def gated(inner: Any) -> GatedSink:
        holder["sink"] = GatedSink(inner)
        return holder["sink"]

    async with running(kafka, gated) as (ingestor, _):
        sink = holder["sink"]
        wire = await Wire.open(ingestor.ports["dmt"], device)
        await _upload(wire)
        # The records reached the broker, but their acknowledgements are held: no commit.
        with contextlib.suppress(TimeoutError):
            await wire.read(within=0.4)
        assert wire.commits == [] and not wire.eof and len(device.pending) == 4
        assert sink.held >= 1 + 2 * 4  # connected, HELLO raw ..., each record twice
        sink.gate.set()
        async with asyncio.timeout(10):
            while not wire.commits:
                await wire.read()
        assert wire.commits[0].ok and device.pending == []
        await wire.close()


async def test_kafka_failure_means_no_commit_and_the_session_closes(kafka: str) -> None:
    device = tracker(IMEI, records=3)
    holder: dict[str, FailingSink] = {}

    def failing(inner: Any) -> FailingSink:
        holder["sink"] = FailingSink(inner)
        return holder["sink"]

    async with running(kafka, failing) as (ingestor, _):
        wire = await Wire.open(ingestor.ports["dmt"], device)
        while not wire.hello_answered:
            await wire.read()
        holder["sink"].failing = True
        wire.conn.upload()
        await wire.flush()
        async with asyncio.timeout(10):
            while not wire.eof:
                await wire.read()  # until EOF
        assert wire.commits == [] and len(device.pending) == 3  # the device still has them
        await wire.close()


class OneFailsSink:
    """The real sink, direct paths included, but the third record on
    ``fleetgate.records.v1`` fails instead of being acknowledged; the records around it are
    acknowledged."""

    def __init__(self, inner: KafkaSink) -> None:
        self.inner = inner
        self.records = 0
        self.direct = 0

    def _fails(self, topic: str) -> bool:
        if topic != Topic.RECORDS:
            return False
        self.records += 1
        return self.records == 3

    def _failed(self) -> asyncio.Future[Any]:
        failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        failed.set_exception(ConnectionError("NOT_ENOUGH_REPLICAS (test)"))
        return failed

    def send_now(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any] | None:
        future = self.inner.send_now(topic, key, value, headers)
        if future is None:
            return None  # ``send`` takes it: counted there
        self.direct += 1
        return self._failed() if self._fails(topic) else future

    def append_now(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any] | None:
        future = self.inner.append_now(topic, key, value, headers)
        if future is None:
            return None
        self.direct += 1
        return self._failed() if self._fails(topic) else future

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> asyncio.Future[Any]:
        future = await self.inner.send(topic, key, value, headers)
        return self._failed() if self._fails(topic) else future


async def test_one_failed_record_amid_acknowledged_ones_means_no_commit(kafka: str) -> None:
    """Five records, one commit request: the third fails while the others (the last
    included) are acknowledged. No commit; the session closes with kafka_error and the
    device keeps all five to send again."""
    device = tracker(IMEI, records=5)
    holder: dict[str, OneFailsSink] = {}

    def one_fails(inner: Any) -> OneFailsSink:
        holder["sink"] = OneFailsSink(inner)
        return holder["sink"]

    before = metric(
        "fleetgate_ingestor_sessions_closed_total", protocol="dmt", reason="kafka_error"
    )
    async with running(kafka, one_fails) as (ingestor, _):
        wire = await Wire.open(ingestor.ports["dmt"], device, records_per_message=5)
        assert await _upload(wire) == 5
        async with asyncio.timeout(10):
            while not wire.eof:
                await wire.read()
        assert wire.commits == [] and len(device.pending) == 5
        assert holder["sink"].records == 5 and holder["sink"].direct > 0
        await wire.close()
    after = metric("fleetgate_ingestor_sessions_closed_total", protocol="dmt", reason="kafka_error")
    assert after == before + 1


async def test_a_big_read_is_decoded_in_slices_and_all_committed(kafka: str) -> None:
    """256 records (a device's upload) in messages of 128 (about 5.5 KiB each, over the
    ingestor's 4 KiB slice) and the commit request written at once: every record lands once,
    decoded, with its raw message, and the commit covers all of them."""
    imei = "352093081299991"  # records of this test only
    device = tracker(imei, records=256)
    sequences = sorted(r.sequence for r in device.pending)
    async with running(kafka) as (ingestor, _):
        wire = await Wire.open(ingestor.ports["dmt"], device, records_per_message=128)
        assert await _upload(wire) == 256
        async with asyncio.timeout(20):
            while not wire.commits:
                await wire.read()
        assert wire.commits[0].ok and device.committed == 256 and device.pending == []
        await wire.close()

        def raw_of(out: Landed) -> list[bytes]:
            return [
                v for k, v, h in out.raw
                if k == imei.encode() and h[RawHeader.MESSAGE_TYPE] == b"4"
            ]  # fmt: skip

        landed = await read_landed(
            kafka,
            lambda out: (
                sum(r.device.imei == imei for r in out.records) >= 256 and len(raw_of(out)) >= 256
            ),
        )
    assert sorted(r.sequence for r in landed.records if r.device.imei == imei) == sequences
    raw = [decode_message_records(v) for v in raw_of(landed)]
    assert sorted(r.sequence for (r,) in raw) == sequences  # one record per raw message


async def test_resent_records_keep_their_record_id(kafka: str) -> None:
    """Devices hang up before the commit reply, reconnect and resend: every record arrives
    at least once, and the copies carry the same record_id."""
    async with running(kafka) as (ingestor, _):
        report = await simulate_dmt(
            DmtSimulationConfig(
                port=ingestor.ports["dmt"], devices=3, records=40, records_per_commit=16,
                disconnect_before_commit=2, seed=7, timeout_seconds=60,
            )
        )  # fmt: skip
        assert report.ok, report.summary()
        assert sum(d.resent for d in report.devices) > 0
        landed = await read_landed(
            kafka, lambda out: len({r.record_id for r in out.records}) >= 120
        )
    assert len(landed.records) > 120  # resends arrived again ...
    ids: dict[tuple[str, int], set[str]] = {}
    for record in landed.records:
        ids.setdefault((record.device.imei, record.sequence), set()).add(record.record_id)
    assert len(ids) == 120 and all(len(v) == 1 for v in ids.values())  # ... as the same record
    assert {d.imei for d in report.devices} == set(landed.devices)


async def test_garbage_closes_only_that_session(kafka: str) -> None:
    async with running(kafka) as (ingestor, _):
        port = ingestor.ports["dmt"]
        bad = await simulate_dmt(
            DmtSimulationConfig(port=port, devices=2, records=10, garbage=True, seed=3)
        )
        # The garbage closed a session; the devices came back and got everything committed.
        assert bad.ok, bad.summary()
        assert all(d.garbage_sent and d.connections >= 2 for d in bad.devices)
        landed = await read_landed(
            kafka, lambda out: sum(isinstance(e, DmtClosed) for e in out.sessions) >= 4
        )
    reasons = [e.reason for e in landed.sessions if isinstance(e, DmtClosed)]
    assert reasons.count("protocol_error") == 2


async def test_imei_not_allowed_is_refused_before_anything_is_published(kafka: str) -> None:
    async with running(kafka, imei_allow="352093089999999") as (ingestor, _):
        wire = await Wire.open(ingestor.ports["dmt"], tracker(IMEI, records=1))
        async with asyncio.timeout(10):
            while not wire.eof:
                await wire.read()  # until EOF
        assert not wire.hello_answered
        await wire.close()
        landed = await read_landed(
            kafka, lambda out: any(isinstance(e, DmtClosed) for e in out.sessions)
        )
    assert landed.raw == [] and landed.records == [] and landed.devices == {}
    assert [e.reason for e in landed.sessions if isinstance(e, DmtClosed)] == ["not_allowed"]


async def test_broker_gone_means_no_commit_and_the_device_keeps_its_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real broker killed mid-session: no commit reply, the session closes, the tracker
    still holds every record."""
    for name, value in TANSU_CLIENT_ENV.items():  # the services' settings, as on Tansu
        monkeypatch.setenv(name, value)
    broker = start_tansu(log=tmp_path / "tansu.log")
    bootstrap = f"127.0.0.1:{broker.port}"
    try:
        await wait_kafka(bootstrap)
        await create_topics(bootstrap)
        device = tracker(IMEI, records=4)
        async with running(
            bootstrap, edge={"ack_timeout_seconds": 2.0, "kafka_request_timeout_ms": 2000}
        ) as (ingestor, _):
            wire = await Wire.open(ingestor.ports["dmt"], device)
            while not wire.hello_answered:
                await wire.read()
            broker.stop()
            wire.conn.upload()
            await wire.flush()
            async with asyncio.timeout(30):
                while not wire.eof:
                    await wire.read()  # until the server hangs up
            assert wire.commits == [] and len(device.pending) == 4
            await wire.close()
    finally:
        broker.stop()
