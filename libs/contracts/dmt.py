"""Digital Matter records as ``fleetgate.records.v1`` values: a pure mapping.

The protocol's rules (scales, names, units, log reasons, which fields exist) live in
``dmtproto``; this module only copies its decoded values into the protocol-neutral models of
:mod:`contracts.records`, so services never re-derive them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from dmtproto import (
    Analogue16Field,
    Analogue32Field,
    DebugField,
    DigitalField,
    DriverIdField,
    FixedRecord,
    GpsField,
    OdometerField,
    RawField,
    Record,
    TripField,
    TripTypeField,
)

from .records import (
    DebugText,
    DeviceIdentity,
    LogReason,
    Measurement,
    Position,
    TelemetryRecord,
    UnknownField,
    record_id,
)

__all__ = ["PROTOCOL", "DeviceHello", "device_identity", "telemetry_record"]

#: The ``protocol`` of Digital Matter records and sessions.
PROTOCOL = "dmt"


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
    def hardware_revision(self) -> int: ...
    @property
    def firmware(self) -> str: ...


def device_identity(hello: DeviceHello) -> DeviceIdentity:
    return DeviceIdentity(
        imei=hello.imei,
        serial=hello.serial,
        product_id=hello.product_id,
        hardware_revision=hello.hardware_revision,
        firmware=hello.firmware,
        iccid=hello.iccid or None,
    )


def telemetry_record(
    record: Record | FixedRecord,
    hello: DeviceHello,
    *,
    session_id: str,
    ingestor: str,
    received_at: datetime,
) -> TelemetryRecord:
    """The ``fleetgate.records.v1`` value of a decoded DMT record of the device ``hello``."""
    fields = _fixed(record) if isinstance(record, FixedRecord) else _fields(record)
    return TelemetryRecord(
        record_id=record_id(PROTOCOL, hello.imei, record.sequence, record.device_time),
        protocol=PROTOCOL,
        session_id=session_id,
        ingestor=ingestor,
        device=device_identity(hello),
        sequence=record.sequence,
        device_time=record.device_time,
        received_at=received_at,
        log_reason=LogReason(code=record.log_reason, name=record.log_reason_name),
        **fields,
    )


def _fields(record: Record) -> dict[str, object]:
    out: dict[str, object] = {}
    analogues: list[Measurement] = []
    counters: list[Measurement] = []
    debug: list[DebugText] = []
    unknown: list[UnknownField] = []
    for field in record.fields:
        if isinstance(field, GpsField):
            out["position"] = Position(
                latitude=field.latitude,
                longitude=field.longitude,
                altitude_m=field.altitude_m,
                speed_m_s=field.speed_m_s,
                heading_deg=field.heading,
                accuracy_m=field.position_accuracy_m,
                pdop=field.pdop,
                fix_time=field.fix_time,
                valid=field.valid,
            )
        elif isinstance(field, DigitalField):
            out |= {
                "inputs": field.inputs,
                "outputs": field.outputs,
                "status": field.status,
                "ignition": field.ignition,
            }
        elif isinstance(field, Analogue16Field):
            for value in field.values:
                kind = value.kind
                analogues.append(
                    Measurement(
                        id=value.id,
                        name=kind.name if kind else f"analogue_{value.id}",
                        value=value.value,
                        unit=kind.unit if kind else None,
                        raw=value.raw,
                    )
                )
        elif isinstance(field, Analogue32Field):
            analogues += [
                Measurement(id=v.id, name=f"analogue32_{v.id}", value=v.value, raw=v.value)
                for v in field.values
            ]
        elif isinstance(field, DriverIdField):
            out["driver_id"] = field.value
        elif isinstance(field, DebugField):
            debug.append(DebugText(code=field.code, text=field.message))
        elif isinstance(field, TripTypeField):
            out |= {"trip_type": field.trip_type, "trip_trim": field.trim}
        elif isinstance(field, TripField):
            counters += [
                _counter(field.field_id, "trip_distance", field.distance_m, "m"),
                _counter(field.field_id, "trip_duration", field.duration_s, "s"),
            ]
        elif isinstance(field, OdometerField):
            counters += [
                _counter(field.field_id, "odometer", field.odometer, None),
                _counter(field.field_id, "run_hours", field.run_hours_s, "s"),
            ]
        else:
            unknown.append(_unknown(field))
    return out | {"analogues": analogues, "counters": counters, "debug": debug,
                  "unknown_fields": unknown}  # fmt: skip


def _counter(field_id: int, name: str, value: int, unit: str | None) -> Measurement:
    return Measurement(id=field_id, name=name, value=value, unit=unit, raw=value)


def _unknown(field: RawField) -> UnknownField:
    return UnknownField(id=field.field_id, data_hex=field.data.hex(), problem=field.problem)


def _fixed(record: FixedRecord) -> dict[str, object]:
    analogues = [
        Measurement(id=i, name=f"adc{i}", value=value, raw=value)
        for i, value in enumerate(record.adc, start=1)
    ]
    analogues.append(
        Measurement(name="temperature", value=record.temperature_c, unit="°C",
                    raw=record.temperature_c)
    )  # fmt: skip
    analogues += [
        Measurement(name=f"acceleration_{axis}", value=value, raw=value)
        for axis, value in zip("xyz", record.acceleration, strict=True)
    ]
    return {
        "position": Position(
            latitude=record.latitude,
            longitude=record.longitude,
            altitude_m=record.altitude_m,
            speed_m_s=record.speed_m_s,
            heading_deg=record.heading,
            accuracy_m=record.position_accuracy_m,
            pdop=record.pdop,
            fix_time=record.device_time,
            valid=record.valid,
        ),
        "inputs": record.inputs,
        "outputs": record.outputs,
        "status": record.status,
        "ignition": record.ignition,
        "analogues": analogues,
    }
