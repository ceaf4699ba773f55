"""OEM Server JSON records as fleetgate.records.v1 values (``contracts.dmt_oem``): the same
values, names, units and ``record_id`` as the same record sent over the binary protocol, with
``source`` saying which path it took."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import contracts
from contracts.dmt import telemetry_record, telemetry_record_json
from contracts.dmt_oem import oem_device_identity, oem_telemetry_records
from contracts.records import RecordSource, TelemetryRecord, apply_record
from dmtproto import (
    Analogue16,
    Analogue16Field,
    Analogue32,
    Analogue32Field,
    DigitalField,
    GpsField,
    Hello,
    OdometerField,
    Record,
    TripField,
    TripTypeField,
    to_dm_time,
)
from dmtproto.oem_json import decode_oem_json

VECTORS = Path(__file__).resolve().parents[1] / "dmtproto" / "vectors" / "dmt_http_json.txt"
EDGE, TRADITIONAL = [line for line in VECTORS.read_text().splitlines() if line.startswith("{")]
AT = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def _map(body: str) -> list[TelemetryRecord]:
    return oem_telemetry_records(
        decode_oem_json(body), session_id="req", ingestor="ing", received_at=AT
    )


def _binary_twin(seq: int, when: str, fix: str) -> Record:
    """The vector's first record as the device would have sent it over TCP."""
    return Record(
        sequence=seq,
        time=to_dm_time(datetime.fromisoformat(when).replace(tzinfo=UTC).timestamp()),
        log_reason=11,
        fields=(
            GpsField(
                gps_time=to_dm_time(datetime.fromisoformat(fix).replace(tzinfo=UTC).timestamp()),
                latitude_e7=437370138, longitude_e7=-793462607, altitude_m=197, speed_cm_s=0,
                speed_accuracy=13, heading_2deg=33, pdop_tenths=18, position_accuracy_m=37,
                status=7,
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


HELLO = Hello(
    serial=131693, imei="356692063643328", iccid="8944538523010771676", product_id=33,
    hardware_revision=0, firmware_major=33, firmware_minor=4,
)  # fmt: skip


def test_a_traditional_record_reads_as_its_binary_twin() -> None:
    oem = _map(TRADITIONAL)[0]
    binary = telemetry_record(
        _binary_twin(125, "2017-05-11 05:58:44", "2017-05-08 18:04:57"),
        HELLO,
        session_id="req",
        ingestor="ing",
        received_at=AT,
    )
    assert oem.source is RecordSource.OEM_HTTP and binary.source is RecordSource.TCP
    # the same record id: a record relayed by the OEM Server and sent directly de-duplicate
    assert oem.record_id == binary.record_id
    same = {"device", "source"}
    assert oem.model_dump(exclude=same) == binary.model_dump(exclude=same)
    assert oem.device.imei == binary.device.imei and oem.device.serial == binary.device.serial
    assert oem.device.firmware == "33.4.1.27" and oem.device.iccid == binary.device.iccid


def test_every_traditional_field_reads_as_the_binary_one() -> None:
    body = (
        '{"IMEI": "356692063643328", "Records": [{"SeqNo": 9, "Reason": 2, '
        '"DateUTC": "2024-01-01 00:00:00", "Fields": [{"FType": 15, "TT": 1, "Trim": 3}, '
        '{"FType": 26, "Dist": 1500, "Dur": 600}, {"FType": 27, "Odo": 4242, "RH": 7200}, '
        '{"FType": 6, "AnalogueData": {"3": -250, "9": 17}}]}]}'
    )
    (oem,) = _map(body)
    record = Record(
        sequence=9,
        time=to_dm_time(datetime(2024, 1, 1, tzinfo=UTC).timestamp()),
        log_reason=2,
        fields=(
            TripTypeField(trip_type=1, trim=3),
            TripField(distance_m=1500, duration_s=600),
            OdometerField(odometer=4242, run_hours_s=7200),
            Analogue16Field(values=(Analogue16(3, 0x10000 - 250), Analogue16(9, 17))),
        ),
    )
    binary = telemetry_record(record, HELLO, session_id="req", ingestor="ing", received_at=AT)
    same = {"device", "source"}
    assert oem.model_dump(exclude=same) == binary.model_dump(exclude=same)
    assert {m.name: m.value for m in oem.analogues}["temperature"] == -2.5


def test_the_edge_vector() -> None:
    (record,) = _map(EDGE)
    assert record.source is RecordSource.OEM_HTTP_EDGE and record.protocol == "dmt"
    assert record.sequence == 1549 and record.log_reason.name == "device_counters"
    assert record.device_time == datetime(2021, 12, 12, 16, 4, 52, tzinfo=UTC)
    assert record.device.serial == 416581 and record.device.hardware_revision == 1
    battery = {m.name: (m.value, m.unit, m.raw) for m in record.analogues}["battery_voltage"]
    assert battery == (5.304, "V", 5304)
    counters = {m.name: m.value for m in record.counters}
    assert counters["counter_142"] == 1629023 and len(counters) == 13
    # the registry takes the battery from it, as from a binary record
    assert apply_record(None, record).battery_voltage == 5.304


def test_unknown_field_types_are_kept() -> None:
    body = (
        '{"IMEI": "1", "Records": [{"SeqNo": 1, "Reason": 1, "DateUTC": "2024-01-01 00:00:00",'
        ' "Fields": [{"FType": 40, "X": 1}]}]}'
    )
    (record,) = _map(body)
    (unknown,) = record.unknown_fields
    assert unknown.id == 40 and bytes.fromhex(unknown.data_hex) == b'{"FType":40,"X":1}'


def test_records_encode_and_decode_and_old_records_read_as_tcp() -> None:
    for record in _map(TRADITIONAL) + _map(EDGE):
        assert contracts.decode(TelemetryRecord, contracts.encode(record)) == record
    # A record written before ``source`` existed reads as one from a TCP session.
    (oem,) = _map(EDGE)
    old = contracts.encode(oem).replace(b'"source":"oem_http_edge",', b"")
    assert b"source" not in old
    assert contracts.decode(TelemetryRecord, old).source is RecordSource.TCP
    # and the binary fast path writes the field
    fast = telemetry_record_json(
        _binary_twin(1, "2024-01-01 00:00:00", "2024-01-01 00:00:00"),
        HELLO,
        session_id="s",
        ingestor="i",
        received_at=AT,
    )
    assert b'"source":"tcp"' in fast


def test_identity() -> None:
    identity = oem_device_identity(decode_oem_json(TRADITIONAL).device)
    assert identity.imei == "356692063643328" and identity.product_id == 33
