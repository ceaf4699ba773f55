"""Digital Matter records as ``fleetgate.records.v1`` values: a pure mapping.

The protocol's rules (scales, names, units, log reasons, which fields exist) live in
``dmtproto``; this module only copies its decoded values into the protocol-neutral layout of
:mod:`contracts.records`, so services never re-derive them.

The mapping builds the value once as plain data in the model's field order:
:func:`telemetry_record` validates it into a :class:`~contracts.records.TelemetryRecord`, and
:func:`telemetry_record_json` serialises it straight to the bytes ``contracts.encode`` would
give for that model (a test holds them equal), about twice as fast: it runs once per
record on the ingestor's hot path.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, Field

from dmtproto import (
    ANALOGUES_16,
    Analogue16Field,
    Analogue32Field,
    DebugField,
    DigitalField,
    DriverIdField,
    FixedRecord,
    GpsField,
    OdometerField,
    Record,
    TripField,
    TripTypeField,
)

from .records import DeviceIdentity, TelemetryRecord, record_id

__all__ = [
    "PROTOCOL",
    "DeviceHello",
    "DmtClosed",
    "DmtConnected",
    "DmtHello",
    "DmtSessionEvent",
    "TelemetryJson",
    "device_identity",
    "telemetry_record",
    "telemetry_record_json",
]

#: The ``protocol`` of Digital Matter records and sessions.
PROTOCOL = "dmt"

_Data = dict[str, Any]


class DeviceHello(Protocol):
    """What a HELLO tells (``dmtproto.HelloReceived`` or ``dmtproto.Hello``)."""

    @property
    def serial(self) -> int: ...
    @property
    def imei(self) -> str: ...
    @property
    def iccid(self) -> str: ...
    @property
    def product_id(self) -> int: ...
    @property
    def product(self) -> str | None: ...
    @property
    def hardware_revision(self) -> int: ...
    @property
    def firmware(self) -> str: ...


def _identity(hello: DeviceHello) -> _Data:
    return {
        "imei": hello.imei,
        "serial": hello.serial,
        "product_id": hello.product_id,
        "product": hello.product,
        "hardware_revision": hello.hardware_revision,
        "firmware": hello.firmware,
        "iccid": hello.iccid or None,
    }


def device_identity(hello: DeviceHello) -> DeviceIdentity:
    return DeviceIdentity.model_validate(_identity(hello))


# Session events: fleetgate.dmt.sessions.v1 -------------------------------------------------


class _SessionEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    session_id: str
    ingestor: str = Field(description="the ingestor instance that holds the session")
    imei: str | None = Field(None, description="None until the device sent its HELLO")
    at: datetime


class DmtConnected(_SessionEvent):
    """A device connected (nothing received yet)."""

    type: Literal["connected"] = "connected"
    peer: str = Field(description="ip:port the connection came from")


class DmtHello(_SessionEvent):
    """The device's HELLO: who it is. Its records follow."""

    type: Literal["hello"] = "hello"
    device: DeviceIdentity


class DmtClosed(_SessionEvent):
    """The session ended; ``reason`` says why (the ingestor's close reason and detail)."""

    type: Literal["closed"] = "closed"
    reason: str = Field(description="clean, device_closed, protocol_error, idle, kafka_error ...")
    detail: str
    clean: bool
    records: int = Field(description="records received in the session")
    committed: int = Field(description="records committed to the device")
    ignored_messages: int = Field(description="messages of types the server does not act on")
    duration_seconds: float


DmtSessionEvent = Annotated[DmtConnected | DmtHello | DmtClosed, Field(discriminator="type")]


def telemetry_record(
    record: Record | FixedRecord,
    hello: DeviceHello,
    *,
    session_id: str,
    ingestor: str,
    received_at: datetime,
) -> TelemetryRecord:
    """The ``fleetgate.records.v1`` value of a decoded DMT record of the device ``hello``."""
    return TelemetryRecord.model_validate(
        _record(record, hello, session_id=session_id, ingestor=ingestor, received_at=received_at)
    )


def telemetry_record_json(
    record: Record | FixedRecord,
    hello: DeviceHello,
    *,
    session_id: str,
    ingestor: str,
    received_at: datetime,
    rid: str | None = None,
) -> bytes:
    """``contracts.encode(telemetry_record(...))``, without building the model. ``rid``: the
    record's :func:`~contracts.records.record_id` when the caller has it already."""
    data = _record(
        record, hello, session_id=session_id, ingestor=ingestor, received_at=received_at, rid=rid
    )
    return orjson.dumps(data, option=orjson.OPT_UTC_Z)


class TelemetryJson:
    """:func:`telemetry_record_json` for one session's records: what is the same for all of
    them (the device's identity, the session) is serialised once, and each record's value
    is that prefix, its id and the rest (:func:`_tail`), the bytes of the whole value."""

    __slots__ = ("_head", "_hello", "_middle")

    def __init__(self, hello: DeviceHello, *, session_id: str, ingestor: str) -> None:
        self._hello = hello
        # ``{"schema":...,"record_id":"`` the id ``","protocol":...,"device":{...},`` then
        # the tail's members (its bytes past the opening brace): the order of ``_record``.
        self._head = b'{"schema":"record.v1","record_id":"'
        middle = orjson.dumps(
            {
                "protocol": PROTOCOL,
                "source": "tcp",
                "session_id": session_id,
                "ingestor": ingestor,
                "device": _identity(hello),
            }
        )
        self._middle = b'",' + middle[1:-1] + b","

    def __call__(
        self, record: Record | FixedRecord, received_at: datetime, rid: str | None = None
    ) -> bytes:
        device_time = record.device_time
        if rid is None:
            rid = record_id(PROTOCOL, self._hello.imei, record.sequence, device_time)
        return self._value(record, received_at, rid, device_time)

    def with_id(self, record: Record | FixedRecord, received_at: datetime) -> tuple[str, bytes]:
        """The record's :func:`~contracts.records.record_id` and its value (the session's
        hot path: the device time is computed once for both)."""
        device_time = record.device_time
        rid = record_id(PROTOCOL, self._hello.imei, record.sequence, device_time)
        return rid, self._value(record, received_at, rid, device_time)

    def _value(
        self,
        record: Record | FixedRecord,
        received_at: datetime,
        rid: str,
        device_time: datetime | None,
    ) -> bytes:
        tail = orjson.dumps(_tail(record, received_at, device_time), option=orjson.OPT_UTC_Z)
        # A record id is hex: nothing to escape.
        return b"".join((self._head, rid.encode(), self._middle, memoryview(tail)[1:]))


def _record(
    record: Record | FixedRecord,
    hello: DeviceHello,
    *,
    session_id: str,
    ingestor: str,
    received_at: datetime,
    rid: str | None = None,
) -> _Data:
    device_time = record.device_time
    if rid is None:
        rid = record_id(PROTOCOL, hello.imei, record.sequence, device_time)
    data: _Data = {
        "schema": "record.v1",
        "record_id": rid,
        "protocol": PROTOCOL,
        "source": "tcp",
        "session_id": session_id,
        "ingestor": ingestor,
        "device": _identity(hello),
    }
    data.update(_tail(record, received_at, device_time))
    return data


def _tail(
    record: Record | FixedRecord, received_at: datetime, device_time: datetime | None
) -> _Data:
    """The record's members from ``sequence`` on, in the model's order."""
    data: _Data = {
        "sequence": record.sequence,
        "device_time": device_time,
        "received_at": received_at,
        "log_reason": {"code": record.log_reason, "name": record.log_reason_name},
        "position": None,
        "ignition": None,
        "inputs": None,
        "outputs": None,
        "status": None,
        "driver_id": None,
        "trip_type": None,
        "trip_trim": None,
        "analogues": [],
        "counters": [],
        "debug": [],
        "unknown_fields": [],
    }
    if isinstance(record, FixedRecord):
        _fixed(record, data)
    else:
        _fields(record, data)
    return data


def _position(
    latitude: float,
    longitude: float,
    altitude: int,
    speed: float,
    heading: int,
    accuracy: int,
    pdop: float,
    fix_time: datetime | None,
    valid: bool,
) -> _Data:
    return {
        "latitude": latitude,
        "longitude": longitude,
        "altitude_m": float(altitude),
        "speed_m_s": speed,
        "heading_deg": float(heading),
        "accuracy_m": float(accuracy),
        "pdop": pdop,
        "fix_time": fix_time,
        "valid": valid,
    }


def _measurement(
    ident: int | None, name: str, value: float, unit: str | None, raw: int | None
) -> _Data:
    return {"id": ident, "name": name, "value": float(value), "unit": unit, "raw": raw}


def _fields(record: Record, data: _Data) -> None:
    analogues: list[_Data] = data["analogues"]
    counters: list[_Data] = data["counters"]
    kinds = ANALOGUES_16
    for field in record.fields:
        if isinstance(field, GpsField):
            # ``_position`` of the field's properties, inlined (it runs for every record).
            data["position"] = {
                "latitude": field.latitude,
                "longitude": field.longitude,
                "altitude_m": float(field.altitude_m),
                "speed_m_s": field.speed_m_s,
                "heading_deg": float(field.heading),
                "accuracy_m": float(field.position_accuracy_m),
                "pdop": field.pdop,
                "fix_time": field.fix_time,
                "valid": field.valid,
            }
        elif isinstance(field, DigitalField):
            data["ignition"] = field.ignition
            data["inputs"] = field.inputs
            data["outputs"] = field.outputs
            data["status"] = field.status
        elif isinstance(field, Analogue16Field):
            # ``Analogue16.kind`` and ``.value``, one lookup per value (several per record).
            for ident, raw in field.values:
                kind = kinds.get(ident)
                if kind is None:
                    analogues.append(
                        {
                            "id": ident,
                            "name": f"analogue_{ident}",
                            "value": float(raw),
                            "unit": None,
                            "raw": raw,
                        }
                    )
                else:
                    analogues.append(
                        {
                            "id": ident,
                            "name": kind.name,
                            "value": float(kind.scaled(raw)),
                            "unit": kind.unit,
                            "raw": raw,
                        }
                    )
        elif isinstance(field, Analogue32Field):
            analogues += [
                _measurement(v.id, f"analogue32_{v.id}", v.value, None, v.value)
                for v in field.values
            ]
        elif isinstance(field, DriverIdField):
            data["driver_id"] = field.value
        elif isinstance(field, DebugField):
            data["debug"].append({"code": field.code, "text": field.message})
        elif isinstance(field, TripTypeField):
            data["trip_type"] = field.trip_type
            data["trip_trim"] = field.trim
        elif isinstance(field, TripField):
            counters.append(
                _measurement(26, "trip_distance", field.distance_m, "m", field.distance_m)
            )
            counters.append(
                _measurement(26, "trip_duration", field.duration_s, "s", field.duration_s)
            )
        elif isinstance(field, OdometerField):
            counters.append(_measurement(27, "odometer", field.odometer, None, field.odometer))
            counters.append(
                _measurement(27, "run_hours", field.run_hours_s, "s", field.run_hours_s)
            )
        else:
            data["unknown_fields"].append(
                {"id": field.field_id, "data_hex": field.data.hex(), "problem": field.problem}
            )


def _fixed(record: FixedRecord, data: _Data) -> None:
    data["position"] = _position(
        record.latitude,
        record.longitude,
        record.altitude_m,
        record.speed_m_s,
        record.heading,
        record.position_accuracy_m,
        record.pdop,
        record.device_time,
        record.valid,
    )
    data["ignition"] = record.ignition
    data["inputs"] = record.inputs
    data["outputs"] = record.outputs
    data["status"] = record.status
    analogues = [
        _measurement(i, f"adc{i}", value, None, value) for i, value in enumerate(record.adc, 1)
    ]
    analogues.append(
        _measurement(None, "temperature", record.temperature_c, "°C", record.temperature_c)
    )
    analogues += [
        _measurement(None, f"acceleration_{axis}", value, None, value)
        for axis, value in zip("xyz", record.acceleration, strict=True)
    ]
    data["analogues"] = analogues
