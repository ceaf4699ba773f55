"""How a device's registry entry (``fleetgate.devices.v1``) carries over from its last known
status: :func:`apply_session` and :func:`apply_record` started from ``previous``, as a table."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contracts.records import (
    DeviceIdentity,
    DeviceStatus,
    LastConnection,
    LogReason,
    Measurement,
    Position,
    TelemetryRecord,
    apply_record,
    apply_session,
    rebase,
)

IMEI = "352093081234567"
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def position(latitude: float, *, valid: bool = True) -> Position:
    return Position(latitude=latitude, longitude=151.2, valid=valid)


def connection(protocol: str = "dmt", ingestor: str = "b", seconds: float = 100) -> LastConnection:
    return LastConnection(
        session_id=f"{ingestor}-{seconds:g}", ingestor=ingestor, protocol=protocol,
        peer="10.0.0.9:4000", connected_at=at(seconds),
    )  # fmt: skip


#: What an earlier session on ingestor "a" left: identity, power, temperature, signal, a fix.
KNOWN = DeviceStatus.model_validate(
    {
        "imei": IMEI, "protocols": ["dmt"], "last_seen": at(50),
        "last_connection": connection(ingestor="a", seconds=10), "serial": 4242,
        "product_id": 34, "product": "G62", "hardware_revision": 2, "firmware": "1.9",
        "iccid": "89610180004123456789", "battery_voltage": 4.0, "supply_voltage": 12.1,
        "temperature_c": 21.5, "signal": 20, "last_position": position(-33.8),
        "last_record_id": "r-old", "last_record_time": at(40), "updated_at": at(50),
    }
)  # fmt: skip


def identity(**fields: Any) -> DeviceIdentity:
    return DeviceIdentity(imei=IMEI, **fields)


@dataclass
class SessionCase:
    previous: DeviceStatus | None
    connection: LastConnection
    identity: DeviceIdentity | None
    #: Fields of the result (``last_connection`` is always the session's own).
    expected: dict[str, Any] = field(default_factory=dict)


SESSIONS = {
    "first session: what it tells": SessionCase(
        None, connection(), identity(firmware="1.10", iccid="8961"),
        {"protocols": ["dmt"], "firmware": "1.10", "iccid": "8961", "last_position": None,
         "battery_voltage": None, "last_seen": at(100), "updated_at": at(100)},
    ),
    "hello again: identity replaced, the rest kept": SessionCase(
        KNOWN, connection(), identity(firmware="1.10", hardware_revision=3),
        {"firmware": "1.10", "hardware_revision": 3, "iccid": KNOWN.iccid,
         "serial": KNOWN.serial, "last_position": KNOWN.last_position, "battery_voltage": 4.0,
         "supply_voltage": 12.1, "temperature_c": 21.5, "signal": 20,
         "last_record_id": "r-old", "last_seen": at(100), "updated_at": at(100)},
    ),
    "a field the hello leaves empty (no SIM read) keeps the old value": SessionCase(
        KNOWN, connection(), identity(firmware="1.9", iccid=None),
        {"iccid": KNOWN.iccid},
    ),
    "a camera session adds its protocol and keeps the tracker's fields": SessionCase(
        KNOWN, connection("camera"), None,
        {"protocols": ["dmt", "camera"], "firmware": "1.9", "product": "G62",
         "last_position": KNOWN.last_position, "battery_voltage": 4.0},
    ),
    "a writer whose clock ran ahead: times never go back, the connection is still new": SessionCase(
        KNOWN.model_copy(update={"last_seen": at(500), "updated_at": at(500)}),
        connection(), None,
        {"last_seen": at(500), "updated_at": at(500)},
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", SESSIONS.values(), ids=SESSIONS.keys())
def test_a_session_starts_from_the_last_known_status(case: SessionCase) -> None:
    status = apply_session(case.previous, IMEI, case.connection, case.identity)
    assert status.last_connection == case.connection
    got = {name: getattr(status, name) for name in case.expected}
    assert got == case.expected
    if case.previous is not None:
        assert status.updated_at >= case.previous.updated_at


def record(
    device_seconds: float | None,
    *,
    fix: Position | None = None,
    battery: float | None = None,
    received: float = 200,
    device: DeviceIdentity | None = None,
) -> TelemetryRecord:
    analogues = [] if battery is None else [Measurement(name="battery_voltage", value=battery)]
    return TelemetryRecord(
        record_id=f"r-{device_seconds}", protocol="dmt", session_id="s", ingestor="b",
        device=device or identity(firmware="1.9"), sequence=7,
        device_time=None if device_seconds is None else at(device_seconds),
        received_at=at(received), log_reason=LogReason(code=11), position=fix,
        analogues=analogues,
    )  # fmt: skip


@dataclass
class RecordCase:
    previous: DeviceStatus | None
    record: TelemetryRecord
    expected: dict[str, Any]


SESSION_KNOWN = apply_session(KNOWN, IMEI, connection(), identity(firmware="1.10"))

RECORDS = {
    "newer with a fix: position and power replaced": RecordCase(
        SESSION_KNOWN, record(150, fix=position(-33.7), battery=3.9),
        {"last_position": position(-33.7), "battery_voltage": 3.9, "last_record_time": at(150),
         "temperature_c": 21.5, "last_seen": at(200), "updated_at": at(200)},
    ),
    "newer without GPS: the last position stays": RecordCase(
        SESSION_KNOWN, record(150, battery=3.9),
        {"last_position": KNOWN.last_position, "battery_voltage": 3.9,
         "last_record_id": "r-150"},
    ),
    "newer with an invalid fix: the last valid position stays": RecordCase(
        SESSION_KNOWN, record(150, fix=position(0.0, valid=False)),
        {"last_position": KNOWN.last_position, "last_record_id": "r-150"},
    ),
    "older (a resend): only last seen moves": RecordCase(
        SESSION_KNOWN, record(20, fix=position(-34.0), battery=3.5, received=300),
        {"last_position": KNOWN.last_position, "battery_voltage": 4.0,
         "last_record_id": "r-old", "last_record_time": at(40), "last_seen": at(300)},
    ),
    "no device time (clock not set): applied": RecordCase(
        SESSION_KNOWN, record(None, battery=3.8),
        {"battery_voltage": 3.8, "last_record_time": None},
    ),
    "an older session's identity does not replace the newer session's": RecordCase(
        SESSION_KNOWN, record(150, device=identity(firmware="1.9", iccid="8961")),
        {"firmware": "1.10", "iccid": KNOWN.iccid},
    ),
    "identity fields not known yet are filled": RecordCase(
        SESSION_KNOWN.model_copy(update={"iccid": None, "serial": None}),
        record(150, device=identity(iccid="8961", serial=77)),
        {"iccid": "8961", "serial": 77, "firmware": "1.10"},
    ),
    "the last connection is the session's, never a record's": RecordCase(
        SESSION_KNOWN, record(150),
        {"last_connection": connection(), "protocols": ["dmt"]},
    ),
    "received by a clock behind: updated_at does not go back": RecordCase(
        SESSION_KNOWN.model_copy(update={"updated_at": at(900)}), record(150, received=200),
        {"updated_at": at(900), "last_record_time": at(150)},
    ),
    "from nothing (the OEM intake's first body)": RecordCase(
        None, record(150, fix=position(-33.7), device=identity(firmware="1.9", iccid="8961")),
        {"last_position": position(-33.7), "firmware": "1.9", "iccid": "8961",
         "last_connection": None, "protocols": ["dmt"]},
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", RECORDS.values(), ids=RECORDS.keys())
def test_a_record_folds_into_the_last_known_status(case: RecordCase) -> None:
    status = apply_record(case.previous, case.record)
    got = {name: getattr(status, name) for name in case.expected}
    assert got == case.expected
    if case.previous is not None:
        assert status.updated_at >= case.previous.updated_at


#: (a session's own last status, the newer one another ingestor wrote, fields of the base)
REBASES = {
    "the other's news is the base": (
        SESSION_KNOWN, KNOWN.model_copy(update={"firmware": "2.0", "updated_at": at(300),
                                                "last_connection": connection("dmt", "c", 250)}),
        {"firmware": "2.0", "last_connection": connection("dmt", "c", 250)},
    ),
    "written before it read this session's start: the later connection stays": (
        SESSION_KNOWN, KNOWN.model_copy(update={"firmware": "2.0", "updated_at": at(300)}),
        {"firmware": "2.0", "last_connection": connection()},
    ),
    "protocols this session saw are kept": (
        apply_session(KNOWN, IMEI, connection("camera", "b", 100)),
        KNOWN.model_copy(update={"updated_at": at(300)}),
        {"protocols": ["dmt", "camera"], "last_connection": connection("camera", "b", 100)},
    ),
}  # fmt: skip


@pytest.mark.parametrize(("own", "newest", "expected"), REBASES.values(), ids=REBASES.keys())
def test_a_newer_status_from_elsewhere_becomes_the_base(
    own: DeviceStatus, newest: DeviceStatus, expected: dict[str, Any]
) -> None:
    base = rebase(own, newest)
    assert {name: getattr(base, name) for name in expected} == expected
    assert base.updated_at == newest.updated_at
