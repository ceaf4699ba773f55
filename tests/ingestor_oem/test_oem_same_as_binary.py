"""The same record sent by a device over TCP and relayed by the OEM Server's JSON connector
lands twice on fleetgate.records.v1 with the same values and ``record_id``, read back from a
real broker: only ``source``, the session and the OEM Server's extra identity differ."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from contracts.records import RecordSource
from dmtproto import (
    Analogue16,
    Analogue16Field,
    Analogue32,
    Analogue32Field,
    DigitalField,
    DmtDevice,
    GpsField,
    Hello,
    to_dm_time,
)
from tests.dmt_e2e.dmt_helpers import Wire
from tests.dmt_e2e.dmt_helpers import running as running_dmt
from tests.ingestor_oem.oem_helpers import TRADITIONAL, read_landed
from tests.ingestor_oem.oem_helpers import running as running_oem


def _time(text: str) -> int:
    return to_dm_time(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def device() -> DmtDevice:
    """The traditional capture's device holding its first record (SeqNo 125)."""
    tracker = DmtDevice(
        Hello(
            serial=131693, imei="356692063643328", iccid="8944538523010771676", product_id=33,
            hardware_revision=1, firmware_major=33, firmware_minor=4,
        )
    )  # fmt: skip
    tracker.next_sequence = 125
    tracker.log(
        time=_time("2017-05-11 05:58:44"),
        log_reason=11,
        fields=(
            GpsField(
                gps_time=_time("2017-05-08 18:04:57"), latitude_e7=437370138,
                longitude_e7=-793462607, altitude_m=197, speed_cm_s=0, speed_accuracy=13,
                heading_2deg=33, pdop_tenths=18, position_accuracy_m=37, status=7,
            ),
            DigitalField(inputs=2, outputs=0, status=2),
            Analogue16Field(
                values=(Analogue16(1, 14641), Analogue16(3, 2484), Analogue16(4, 26),
                        Analogue16(5, 10868))
            ),
            Analogue32Field(
                values=(Analogue32(11, 34), Analogue32(12, 0), Analogue32(13, 309),
                        Analogue32(14, 9921), Analogue32(15, 3))
            ),
        ),
    )  # fmt: skip
    return tracker


async def test_a_record_over_tcp_and_through_the_oem_server_reads_the_same(kafka: str) -> None:
    tracker = device()
    async with running_dmt(kafka) as (ingestor, _):
        wire = await Wire.open(ingestor.ports["dmt"], tracker)
        while not wire.hello_answered:
            await wire.read()
        wire.conn.upload()
        await wire.flush()
        while not wire.commits:
            await wire.read()
        await wire.close()
    async with running_oem(kafka) as served, httpx.AsyncClient() as client:
        response = await client.post(served.url, content=TRADITIONAL)
        assert response.status_code == 200
    landed = await read_landed(kafka, lambda got: len(got.records) >= 6)
    by_source = {(r.source, r.sequence): r for r in landed.records}
    tcp = by_source[RecordSource.TCP, 125]
    oem = by_source[RecordSource.OEM_HTTP, 125]
    assert tcp.record_id == oem.record_id  # consumers de-duplicate the two
    differ = {"source", "session_id", "received_at", "device"}
    assert tcp.model_dump(exclude=differ) == oem.model_dump(exclude=differ)
    assert tcp.device.imei == oem.device.imei and tcp.device.serial == oem.device.serial
    assert tcp.device.iccid == oem.device.iccid and tcp.device.product_id == oem.device.product_id
