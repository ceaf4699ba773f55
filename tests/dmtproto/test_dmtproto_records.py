"""Data records and their fields: bytes in, dataclasses out, and back to the same bytes."""

from __future__ import annotations

import struct
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from dmtproto import (
    ANALOGUES_16,
    Analogue16,
    Analogue16Field,
    Analogue32,
    Analogue32Field,
    DebugField,
    DecodeError,
    DigitalField,
    DriverIdField,
    Field,
    FieldId,
    GpsField,
    LogReason,
    OdometerField,
    RawField,
    Record,
    TripField,
    TripTypeField,
    decode_fixed_records,
    decode_records,
    encode_fixed_record,
    encode_record,
    log_reason_name,
)
from dmtproto.records import decode_field
from tests.dmtproto.dmtproto_helpers import FIXED, field_bytes, h, record_bytes

GPS_DATA = h("fbb53a0f3c210e2145deeb051e001a0901940c070302")
GPS = GpsField(
    gps_time=255505915,
    latitude_e7=554574140,
    longitude_e7=99343941,
    altitude_m=30,
    speed_cm_s=2330,
    speed_accuracy=1,
    heading_2deg=148,
    pdop_tenths=12,
    position_accuracy_m=7,
    status=3,
)

# (name, field id, data, decoded)
FIELDS: list[tuple[str, int, bytes, Field]] = [
    ("gps", 0, GPS_DATA[:-1], GPS),
    ("gps-longer", 0, GPS_DATA[:-1] + b"\xee", replace(GPS, extra=b"\xee")),
    (
        "gps-negative",
        0,
        struct.pack("<IiihHBBBBB", 0, -337000000, -1512000000, -12, 0, 0, 0, 0, 0, 0),
        GpsField(
            gps_time=0,
            latitude_e7=-337000000,
            longitude_e7=-1512000000,
            altitude_m=-12,
            speed_cm_s=0,
            speed_accuracy=0,
            heading_2deg=0,
            pdop_tenths=0,
            position_accuracy_m=0,
            status=0,
        ),
    ),
    (
        "debug",
        1,
        h("2700") + b"RESET Dart 34.2.1.9 flags=1 WD=0",
        DebugField(code=0x27, text=b"RESET Dart 34.2.1.9 flags=1 WD=0"),
    ),
    ("debug-code-only", 1, h("0b00"), DebugField(code=11, text=b"")),
    ("digital", 2, h("0300000000000300"), DigitalField(inputs=3, outputs=0, status=3)),
    (
        "digital-high-bits",
        2,
        h("ffffffff0180ffff"),
        DigitalField(inputs=0xFFFFFFFF, outputs=0x8001, status=0xFFFF),
    ),
    ("driver-1-hex5", 3, h("010102030405"), DriverIdField(id_type=1, data=h("0102030405"))),
    ("driver-3-ascii4", 3, h("03") + b"AB12", DriverIdField(id_type=3, data=b"AB12")),
    ("driver-unknown-type", 3, h("09beef"), DriverIdField(id_type=9, data=h("beef"))),
    (
        "analogue16",
        6,
        h("011d1003400804180005e80f062e1c"),
        Analogue16Field(
            values=(
                Analogue16(1, 4125),
                Analogue16(3, 2112),
                Analogue16(4, 24),
                Analogue16(5, 4072),
                Analogue16(6, 7214),
            )
        ),
    ),
    ("analogue16-empty", 6, b"", Analogue16Field(values=())),
    (
        "analogue32",
        7,
        h("0b01000000") + h("0cffffffff"),
        Analogue32Field(values=(Analogue32(11, 1), Analogue32(12, -1))),
    ),
    ("trip-type", 15, h("0205"), TripTypeField(trip_type=2, trim=5)),
    ("trip-type-1-byte", 15, h("01"), TripTypeField(trip_type=1)),
    ("trip-type-longer", 15, h("010203"), TripTypeField(trip_type=1, trim=2, extra=h("03"))),
    ("trip", 26, struct.pack("<II", 12345, 678), TripField(distance_m=12345, duration_s=678)),
    (
        "odometer",
        27,
        struct.pack("<II", 987654, 3600 * 1234),
        OdometerField(odometer=987654, run_hours_s=3600 * 1234),
    ),
    ("unknown-id", 99, h("0102"), RawField(field_id=99, data=h("0102"))),
]


@pytest.mark.parametrize(
    ("field_id", "data", "expected"), [c[1:] for c in FIELDS], ids=[c[0] for c in FIELDS]
)
def test_field_table(field_id: int, data: bytes, expected: Field) -> None:
    decoded = decode_field(field_id, data)
    assert decoded == expected
    assert decoded.field_id == field_id
    assert decoded.encode() == data
    # In a record, through the record codec, whole and back.
    raw = record_bytes(7, 100, 3, field_bytes(field_id, data))
    (record,) = decode_records(raw)
    assert record.fields == (expected,)
    assert record.raw == raw
    assert encode_record(Record(sequence=7, time=100, log_reason=3, fields=(expected,))) == raw


# (name, field id, data, problem)
TOO_SHORT = [
    ("gps-20", 0, GPS_DATA[:20], "GPS field of 20 bytes does not fit its layout"),
    ("debug-1", 1, h("27"), "DEBUG field of 1 bytes"),
    ("digital-7", 2, h("03000000000003"), "DIGITAL field of 7 bytes"),
    ("driver-empty", 3, b"", "DRIVER_ID field of 0 bytes"),
    ("analogue16-odd", 6, h("011d1003"), "not a multiple of 3"),
    ("analogue32-odd", 7, h("0b010000"), "not a multiple of 5"),
    ("trip-type-empty", 15, b"", "TRIP_TYPE field of 0 bytes"),
    ("trip-7", 26, bytes(7), "TRIP field of 7 bytes"),
    ("odometer-4", 27, bytes(4), "ODOMETER field of 4 bytes"),
]


@pytest.mark.parametrize(
    ("field_id", "data", "problem"), [c[1:] for c in TOO_SHORT], ids=[c[0] for c in TOO_SHORT]
)
def test_field_too_short_for_its_layout_is_kept_raw(
    field_id: int, data: bytes, problem: str
) -> None:
    decoded = decode_field(field_id, data)
    assert isinstance(decoded, RawField)
    assert decoded.data == data and decoded.field_id == field_id
    assert decoded.problem is not None and problem in decoded.problem
    assert decoded.encode() == data


def test_gps_properties() -> None:
    assert GPS.fix_time == datetime(2021, 2, 5, 5, 51, 55, tzinfo=UTC)
    assert GPS.latitude == 55.457414
    assert GPS.longitude == 9.9343941
    assert GPS.speed_m_s == 23.3
    assert GPS.heading == 296
    assert GPS.pdop == 1.2
    assert GPS.valid
    assert not replace(GPS, status=0).valid


def test_debug_message() -> None:
    assert (
        DebugField(code=20, text=b"No Admin params found\x00\x00").message
        == "No Admin params found"
    )
    assert DebugField(code=20, text=b"bad \xff").message == "bad \ufffd"


def test_digital_ignition() -> None:
    assert DigitalField(inputs=3, outputs=0, status=0).ignition
    assert not DigitalField(inputs=2, outputs=0, status=0).ignition


@pytest.mark.parametrize(
    ("id_type", "data", "value"),
    [
        (1, h("0102030405ff"), "0102030405"),
        (2, h("010203040506ff"), "010203040506"),
        (3, b"AB12X", "AB12"),
        (4, b"AB123X", "AB123"),
        (5, b"DRIVER-42", "DRIVER-42"),
        (6, b"OP 7", "OP 7"),
        (7, h("deadbeef"), "deadbeef"),
        (42, h("cafe"), "cafe"),
        (3, b"A\xffB1", "A\ufffdB1"),
    ],
)
def test_driver_id_value(id_type: int, data: bytes, value: str) -> None:
    assert DriverIdField(id_type=id_type, data=data).value == value


def test_analogue_scaling_names_and_units() -> None:
    field = decode_field(6, h("011d1003400804180005e80f062e1c02b004"))
    assert isinstance(field, Analogue16Field)
    by_name = {a.kind.name: (a.value, a.kind.unit) for a in field.values if a.kind}
    assert by_name == {
        "battery_voltage": (4.125, "V"),
        "temperature": (21.12, "°C"),
        "signal_strength": (24, "CSQ"),
        "solar_voltage": (4.072, "V"),
        "battery_level": (72.14, "%"),
        "supply_voltage": (12.0, "V"),
    }
    assert field.get(4) == Analogue16(4, 24)
    assert field.get(9) is None
    assert Analogue16(3, 0xFF38).value == -2.0  # signed: -200 hundredths of a degree
    assert Analogue16(1, 0xFF38).value == 65.336  # unsigned
    assert Analogue16(17, 1234).value == 1234 and Analogue16(17, 1234).kind is None
    assert set(ANALOGUES_16) == {1, 2, 3, 4, 5, 6}


def test_extended_length_field() -> None:
    text = b"x" * 300
    raw = record_bytes(1, 0, 21, field_bytes(1, h("0100") + text))
    assert raw[11:15] == h("01ff2e01")
    (record,) = decode_records(raw)
    assert record.fields == (DebugField(code=1, text=text),)
    assert encode_record(Record(sequence=1, time=0, log_reason=21, fields=record.fields)) == raw


def test_extended_length_below_255_is_decoded_too() -> None:
    raw = record_bytes(1, 0, 3, h("1aff0800") + struct.pack("<II", 5, 6))
    (record,) = decode_records(raw)
    assert record.fields == (TripField(distance_m=5, duration_s=6),)
    assert record.raw == raw


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (h("00"), RawField(field_id=0, data=b"", problem="field header cut short")),
        (
            h("06ff01"),
            RawField(field_id=6, data=h("01"), problem="extended field length cut short"),
        ),
        (
            h("0605011d10"),
            RawField(
                field_id=6,
                data=h("011d10"),
                problem="field of 5 bytes runs 2 bytes past its record",
            ),
        ),
    ],
)
def test_field_cut_short_by_its_record_is_kept_raw(fields: bytes, expected: RawField) -> None:
    (record,) = decode_records(record_bytes(1, 0, 3, h("0201") + b"\x07" + fields))
    first, second = record.fields
    assert isinstance(first, RawField) and first.field_id == 2 and first.data == b"\x07"
    assert first.problem is not None and "DIGITAL field of 1 bytes" in first.problem
    assert second == expected


def test_record_properties() -> None:
    record = Record(
        sequence=9,
        time=255505915,
        log_reason=12,
        fields=(GPS, DigitalField(inputs=1, outputs=0, status=0)),
    )
    assert record.device_time == datetime(2021, 2, 5, 5, 51, 55, tzinfo=UTC)
    assert record.log_reason_name == "harsh_brake"
    assert record.get(GpsField) is GPS
    assert record.get(TripField) is None
    assert Record(sequence=1, time=0, log_reason=99).device_time is None
    assert Record(sequence=1, time=0, log_reason=99).log_reason_name is None


def test_raw_does_not_take_part_in_equality() -> None:
    (record,) = decode_records(record_bytes(5, 6, 7))
    assert record == Record(sequence=5, time=6, log_reason=7)
    assert record.raw == record_bytes(5, 6, 7)


def test_log_reasons() -> None:
    assert len(LogReason) == 51 and [r.value for r in LogReason] == list(range(51))
    assert log_reason_name(1) == "start_of_trip"
    assert log_reason_name(9) == "digital_input_changed"
    assert log_reason_name(44) == "entered_geofence"
    assert log_reason_name(50) == "bluetooth_tag_data"
    assert log_reason_name(51) is None


def test_field_ids() -> None:
    assert {f.name: f.value for f in FieldId} == {
        "GPS": 0, "DEBUG": 1, "DIGITAL": 2, "DRIVER_ID": 3, "ANALOGUE_16": 6,
        "ANALOGUE_32": 7, "TRIP_TYPE": 15, "TRIP": 26, "ODOMETER": 27,
    }  # fmt: skip


def test_several_records_and_empty_payload() -> None:
    payload = record_bytes(1, 2, 3) + record_bytes(4, 5, 6, field_bytes(99, b"z"))
    records = decode_records(payload)
    assert [(r.sequence, r.time, r.log_reason) for r in records] == [(1, 2, 3), (4, 5, 6)]
    assert records[1].fields == (RawField(field_id=99, data=b"z"),)
    assert decode_records(b"") == []


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (h("0b00010000"), "record 1 starts with 5 bytes left, less than its 11-byte header"),
        (record_bytes(1, 0, 0) + h("0a00"), "record 2 starts with 2 bytes left"),
        (h("0a00") + bytes(9), r"record 1 \(sequence 0\) has length 10; allowed 11..11 here"),
        (
            h("0c00") + h("07000000") + bytes(5),
            r"record 1 \(sequence 7\) has length 12; allowed 11..11 here",
        ),
    ],
)
def test_bad_record_lengths(payload: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_records(payload)


def test_record_built_in_code_uses_extended_length_only_when_needed() -> None:
    record = Record(
        sequence=1, time=2, log_reason=3, fields=(RawField(field_id=200, data=bytes(254)),)
    )
    assert encode_record(record)[11:13] == h("c8fe")


# --- fixed 64-byte records --------------------------------------------------------------------


def test_fixed_record_decodes() -> None:
    (record,) = decode_fixed_records(FIXED)
    assert record.raw == FIXED
    assert record.sequence == record.index == 4242
    assert record.device_time == datetime(2024, 3, 9, 17, 45, 30, tzinfo=UTC)
    assert record.longitude == 9.9343941 and record.latitude == -55.457414  # lon before lat
    assert record.speed_m_s == 23.3 and record.heading == 296 and record.altitude_m == -30
    assert record.position_accuracy_m == 7 and record.speed_accuracy == 1
    assert record.log_reason == record.event == 11 and record.log_reason_name == "heartbeat"
    assert record.valid and record.ignition
    assert record.inputs == 0x81 and record.outputs == 2
    assert record.adc == (1, 2, 3, -4, 5)
    assert record.temperature_c == -12
    assert record.acceleration == (100, -200, 981)
    assert record.device_id == b"DEVICEID"
    assert record.pdop == 1.25
    assert record.checksum == 0xBEEF and record.reserved == b"\x00\x00"
    assert encode_fixed_record(record) == FIXED
    rebuilt = replace(record, raw=b"")
    assert rebuilt == record and encode_fixed_record(rebuilt) == FIXED


def test_fixed_record_invalid_date_and_flags() -> None:
    data = bytearray(FIXED)
    data[5:9] = bytes(4)  # month 0
    data[26] = 0  # status: not valid
    data[27] = 0x80  # inputs bit 0 clear
    (record,) = decode_fixed_records(bytes(data))
    assert record.device_time is None
    assert not record.valid and not record.ignition


def test_several_fixed_records() -> None:
    records = decode_fixed_records(FIXED * 3)
    assert len(records) == 3 and all(r.raw == FIXED for r in records)


@pytest.mark.parametrize("size", [0, 1, 63, 65, 127])
def test_fixed_records_must_be_whole(size: int) -> None:
    with pytest.raises(
        DecodeError, match=f"payload of {size} bytes is not a whole number of 64-byte records"
    ):
        decode_fixed_records((FIXED * 2)[:size])
