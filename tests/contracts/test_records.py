"""fleetgate.records.v1 and fleetgate.devices.v1: DMT records mapped, ids stable across
resends, the registry folded from sessions and records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings

import contracts
from contracts import Topic
from contracts.dmt import (
    PROTOCOL,
    TelemetryJson,
    device_identity,
    telemetry_record,
    telemetry_record_json,
)
from contracts.records import (
    DeviceIdentity,
    DeviceStatus,
    LastConnection,
    Measurement,
    Position,
    TelemetryRecord,
    UnknownField,
    apply_record,
    apply_session,
    record_id,
)
from contracts.topics import TOPIC_CONFIGS
from dmtproto import (
    Analogue16,
    Analogue16Field,
    Analogue32,
    Analogue32Field,
    DebugField,
    DriverIdField,
    FixedRecord,
    HelloReceived,
    OdometerField,
    RawField,
    Record,
    RecordReceived,
    ServerConnection,
    TripField,
    TripTypeField,
    decode_fixed_records,
    decode_hello,
)
from tests.dmtproto.dmtproto_helpers import FIXED, records

h = bytes.fromhex
HELLO = h(
    "025500310038f90100333533333233303831363639373330003839363130313835303031383234383434363330"
    "002202010900000000"
)
DATA = h(
    "0255047a003d0035020000fbb53a0f030015fbb53a0f3c210e2145deeb051e001a0901940c0703020803000000"
    "00000300060f011d1003400804180005e80f062e1c3d003602000086b93a0f03001586b93a0fe5421c21bbe1be"
    "051700c30901a50d070302080300000000000300060f011d1003bb0804180005e80f062e1c"
)
AT = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
IMEI = "353323081669730"


def vector_records() -> tuple[HelloReceived, list[Record]]:
    server = ServerConnection(now=0.0, unix_time=AT.timestamp())
    events = server.receive_data(HELLO + DATA, 0.0)
    hello = events[0]
    assert isinstance(hello, HelloReceived)
    records = [e.record for e in events if isinstance(e, RecordReceived)]
    return hello, [r for r in records if isinstance(r, Record)]


def test_vector_record_maps_to_the_contract() -> None:
    hello, (first, _) = vector_records()
    value = telemetry_record(first, hello, session_id="s1", ingestor="i1", received_at=AT)
    assert value.protocol == PROTOCOL == "dmt"
    assert value.device == DeviceIdentity(
        imei=IMEI, serial=129336, product_id=34, product="Dart", hardware_revision=2,
        firmware="1.9", iccid="89610185001824844630",
    )  # fmt: skip
    assert value.sequence == 565
    assert value.device_time == datetime(2021, 2, 5, 5, 51, 55, tzinfo=UTC)
    assert (value.log_reason.code, value.log_reason.name) == (3, "elapsed_time")
    assert value.position == Position(
        latitude=55.457414, longitude=9.9343941, altitude_m=30, speed_m_s=23.3, heading_deg=296,
        accuracy_m=7, pdop=1.2, fix_time=datetime(2021, 2, 5, 5, 51, 55, tzinfo=UTC), valid=True,
    )  # fmt: skip
    assert (value.inputs, value.outputs, value.status, value.ignition) == (3, 0, 3, True)
    assert [(a.name, a.value, a.unit, a.raw) for a in value.analogues] == [
        ("battery_voltage", 4.125, "V", 4125),
        ("temperature", 21.12, "°C", 2112),
        ("signal_strength", 24, "CSQ", 24),
        ("solar_voltage", 4.072, "V", 4072),
        ("battery_level", 72.14, "%", 7214),
    ]
    assert value.counters == [] and value.unknown_fields == [] and value.debug == []
    back = contracts.decode(TelemetryRecord, contracts.encode(value))
    assert back == value
    assert contracts.encode(value).startswith(b'{"schema":"record.v1"')


def test_a_resent_record_has_the_same_id() -> None:
    hello, (first, second) = vector_records()
    one = telemetry_record(first, hello, session_id="s1", ingestor="i1", received_at=AT)
    # The device did not get the commit and sends the same records on a new connection,
    # perhaps to another ingestor.
    _, (again, _) = vector_records()
    later = AT + timedelta(minutes=5)
    two = telemetry_record(again, hello, session_id="s2", ingestor="i2", received_at=later)
    assert one.record_id == two.record_id
    other = telemetry_record(second, hello, session_id="s1", ingestor="i1", received_at=AT)
    assert other.record_id != one.record_id
    assert one.record_id == record_id("dmt", IMEI, 565, first.device_time)
    assert one.record_id == "75d788d01ebdc4fc567bf8573c42b0bc"  # a published id never changes


def test_record_id_tells_records_apart() -> None:
    when = datetime(2021, 2, 5, tzinfo=UTC)
    same = record_id("dmt", IMEI, 1, when)
    assert same == record_id("dmt", IMEI, 1, when)
    others = {
        record_id("dmt", "353323081669731", 1, when),
        record_id("dmt", IMEI, 2, when),
        record_id("dmt", IMEI, 1, when + timedelta(seconds=1)),  # sequence restarted
        record_id("dmt", IMEI, 1, None),
        record_id("teltonika", IMEI, 1, when),
    }
    assert same not in others and len(others) == 5


def test_every_field_kind_maps() -> None:
    hello = decode_hello(HELLO[5:])
    record = Record(
        sequence=7,
        time=0,
        log_reason=99,
        fields=(
            DebugField(code=0x27, text=b"RESET Dart 34.2.1.9\x00"),
            DriverIdField(id_type=3, data=b"AB12"),
            TripTypeField(trip_type=2, trim=1),
            TripField(distance_m=1500, duration_s=300),
            OdometerField(odometer=123456, run_hours_s=7200),
            RawField(field_id=44, data=h("0102")),
            RawField(field_id=0, data=h("01"), problem="GPS field of 1 bytes does not fit"),
        ),
    )
    value = telemetry_record(record, hello, session_id="s", ingestor="i", received_at=AT)
    assert value.device_time is None and value.position is None
    assert (value.log_reason.code, value.log_reason.name) == (99, None)
    assert value.driver_id == "AB12"
    assert (value.trip_type, value.trip_trim) == (2, 1)
    assert [d.model_dump() for d in value.debug] == [{"code": 0x27, "text": "RESET Dart 34.2.1.9"}]
    assert value.counters == [
        Measurement(id=26, name="trip_distance", value=1500, unit="m", raw=1500),
        Measurement(id=26, name="trip_duration", value=300, unit="s", raw=300),
        Measurement(id=27, name="odometer", value=123456, unit=None, raw=123456),
        Measurement(id=27, name="run_hours", value=7200, unit="s", raw=7200),
    ]
    assert value.unknown_fields == [
        UnknownField(id=44, data_hex="0102"),
        UnknownField(id=0, data_hex="01", problem="GPS field of 1 bytes does not fit"),
    ]


def test_unknown_analogues_keep_their_ids() -> None:
    record = Record(
        sequence=1,
        time=1,
        log_reason=11,
        fields=(
            Analogue16Field(values=(Analogue16(17, 5),)),
            Analogue32Field(values=(Analogue32(11, -4),)),
        ),
    )
    value = telemetry_record(
        record, decode_hello(HELLO[5:]), session_id="s", ingestor="i", received_at=AT
    )
    assert value.analogues == [
        Measurement(id=17, name="analogue_17", value=5, raw=5),
        Measurement(id=11, name="analogue32_11", value=-4, raw=-4),
    ]


def test_fixed_record_maps() -> None:
    (record,) = decode_fixed_records(FIXED)
    value = telemetry_record(
        record, decode_hello(HELLO[5:]), session_id="s", ingestor="i", received_at=AT
    )
    assert value.sequence == 4242
    assert value.device_time == datetime(2024, 3, 9, 17, 45, 30, tzinfo=UTC)
    assert value.log_reason.name == "heartbeat"
    assert value.position is not None
    assert (value.position.latitude, value.position.longitude) == (-55.457414, 9.9343941)
    assert value.position.pdop == 1.25 and value.position.valid
    assert (value.inputs, value.outputs, value.ignition) == (0x81, 2, True)
    names = {a.name: a.value for a in value.analogues}
    assert names == {
        "adc1": 1, "adc2": 2, "adc3": 3, "adc4": -4, "adc5": 5, "temperature": -12,
        "acceleration_x": 100, "acceleration_y": -200, "acceleration_z": 981,
    }  # fmt: skip


def test_empty_iccid_is_none() -> None:
    hello = decode_hello(HELLO[5:9] + HELLO[9:25] + bytes(21) + HELLO[46:])
    assert device_identity(hello).iccid is None


# --- the registry -----------------------------------------------------------------------------


def test_registry_folds_sessions_and_records() -> None:
    hello, (first, second) = vector_records()
    connection = LastConnection(
        session_id="s1", ingestor="i1", protocol="dmt", peer="10.0.0.7:40000", connected_at=AT
    )
    status = apply_session(None, IMEI, connection, device_identity(hello))
    assert status.protocols == ["dmt"] and status.firmware == "1.9" and status.serial == 129336
    assert (status.product_id, status.product) == (34, "Dart")
    assert status.last_seen == AT and status.battery_voltage is None

    later = AT + timedelta(seconds=2)
    newer = telemetry_record(second, hello, session_id="s1", ingestor="i1", received_at=later)
    status = apply_record(status, newer)
    assert status.battery_voltage == 4.125 and status.temperature_c == 22.35
    assert status.signal == 24 and status.supply_voltage is None
    assert status.last_position is not None and status.last_position.latitude == 55.5500261
    assert status.last_record_id == newer.record_id and status.last_seen == later

    # An older record arriving later (a resend) does not roll the status back.
    older = telemetry_record(first, hello, session_id="s2", ingestor="i2", received_at=later)
    after = apply_record(status, older)
    assert after.last_position == status.last_position
    assert after.temperature_c == 22.35 and after.last_record_id == newer.record_id

    # A camera session of the same IMEI adds its protocol.
    camera = LastConnection(session_id="c1", ingestor="i1", protocol="camera", connected_at=later)
    status = apply_session(after, IMEI, camera)
    assert status.protocols == ["dmt", "camera"] and status.firmware == "1.9"
    assert apply_session(status, IMEI, camera).protocols == ["dmt", "camera"]
    back = contracts.decode(DeviceStatus, contracts.encode(status))
    assert back == status


def test_registry_from_a_record_alone_and_invalid_fix() -> None:
    hello, (first, _) = vector_records()
    value = telemetry_record(first, hello, session_id="s", ingestor="i", received_at=AT)
    assert value.position is not None
    invalid = value.model_copy(
        update={"position": value.position.model_copy(update={"valid": False})}
    )
    status = apply_record(None, invalid)
    assert status.imei == IMEI and status.protocols == ["dmt"] and status.last_position is None
    assert status.last_connection is None and status.iccid == "89610185001824844630"


def test_topics() -> None:
    names = {Topic.RECORDS: "fleetgate.records.v1", Topic.DMT_RAW: "fleetgate.dmt.raw.v1",
             Topic.DEVICES: "fleetgate.devices.v1"}  # fmt: skip
    assert all(str(topic) == name for topic, name in names.items())
    assert TOPIC_CONFIGS[Topic.DEVICES] == {"cleanup.policy": "compact"}


# --- the fast JSON path -----------------------------------------------------------------------


def test_json_path_gives_the_model_bytes_for_the_vector_and_fixed_records() -> None:
    hello, records = vector_records()
    fixed = decode_fixed_records(FIXED * 2)
    both: list[Record | FixedRecord] = [*records, *fixed]
    for record in both:
        for at in (AT, AT.replace(microsecond=123456)):
            fast = telemetry_record_json(
                record, hello, session_id="s", ingestor="i", received_at=at
            )
            model = telemetry_record(record, hello, session_id="s", ingestor="i", received_at=at)
            assert fast == contracts.encode(model)
            # the session's mapper (identity built once), with or without the record id given
            session = TelemetryJson(hello, session_id="s", ingestor="i")
            rid = record_id(PROTOCOL, hello.imei, record.sequence, record.device_time)
            assert session(record, at) == fast == session(record, at, rid)
            assert session.with_id(record, at) == (rid, fast)  # the ingestor's hot path


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records())
def test_json_path_gives_the_model_bytes_for_any_record(record: Record) -> None:
    hello = decode_hello(HELLO[5:])
    model = telemetry_record(record, hello, session_id="s", ingestor="i", received_at=AT)
    fast = telemetry_record_json(record, hello, session_id="s", ingestor="i", received_at=AT)
    assert fast == contracts.encode(model)
    session = TelemetryJson(hello, session_id="s", ingestor="i")
    assert session(record, AT) == fast
    rid = record_id(PROTOCOL, hello.imei, record.sequence, record.device_time)
    assert session.with_id(record, AT) == (rid, fast)
    assert contracts.decode(TelemetryRecord, fast) == model
