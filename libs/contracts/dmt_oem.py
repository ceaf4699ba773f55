"""Digital Matter OEM Server JSON records as ``fleetgate.records.v1`` values: a pure mapping.

The ingestor's HTTP intake decodes a body with :func:`dmtproto.oem_json.decode_oem_json`; this
module copies the decoded values into :class:`~contracts.records.TelemetryRecord` exactly as
:mod:`contracts.dmt` does for the binary protocol (the same names, units, scales and
``record_id``), with ``source`` saying which path the record took. So a record the device sent
over TCP and the same record relayed by the OEM Server read the same and de-duplicate on
``record_id``.
"""

from __future__ import annotations

from datetime import datetime

from dmtproto.oem_json import OemBody, OemDevice, OemFormat, OemRecord

from .dmt import PROTOCOL, _Data, _measurement
from .records import DeviceIdentity, RecordSource, TelemetryRecord, record_id

__all__ = ["oem_device_identity", "oem_source", "oem_telemetry_records"]


def oem_source(body: OemBody) -> RecordSource:
    """The ``source`` of a body's records."""
    if body.format is OemFormat.EDGE:
        return RecordSource.OEM_HTTP_EDGE
    return RecordSource.OEM_HTTP


def _identity(device: OemDevice) -> _Data:
    return {
        "imei": device.imei,
        "serial": device.serial,
        "product_id": device.product_id,
        "product": device.product,
        "hardware_revision": device.hardware_revision,
        "firmware": device.firmware,
        "iccid": device.iccid,
    }


def oem_device_identity(device: OemDevice) -> DeviceIdentity:
    return DeviceIdentity.model_validate(_identity(device))


def oem_telemetry_records(
    body: OemBody, *, session_id: str, ingestor: str, received_at: datetime
) -> list[TelemetryRecord]:
    """The ``fleetgate.records.v1`` values of every record of ``body``, in its order."""
    source = oem_source(body)
    identity = _identity(body.device)
    return [
        TelemetryRecord.model_validate(
            _record(record, body.device.imei, identity, source, session_id, ingestor, received_at)
        )
        for record in body.records
    ]


def _record(
    record: OemRecord,
    imei: str,
    identity: _Data,
    source: RecordSource,
    session_id: str,
    ingestor: str,
    received_at: datetime,
) -> _Data:
    position = record.position
    digital = record.digital
    analogues: list[_Data] = []
    for value in record.analogues:
        kind = value.kind
        if kind is None:
            analogues.append(
                _measurement(value.id, f"analogue_{value.id}", value.raw, None, value.raw)
            )
        else:
            analogues.append(_measurement(value.id, kind.name, value.value, kind.unit, value.raw))
    analogues += [
        _measurement(v.id, f"analogue32_{v.id}", v.value, None, v.value) for v in record.analogues32
    ]
    analogues += [
        _measurement(
            v.id, f"analogue_{v.id}", v.value, None, v.value if isinstance(v.value, int) else None
        )
        for v in record.edge_analogues
    ]
    counters: list[_Data] = []
    if record.trip is not None:
        trip = record.trip
        counters.append(_measurement(26, "trip_distance", trip.distance_m, "m", trip.distance_m))
        counters.append(_measurement(26, "trip_duration", trip.duration_s, "s", trip.duration_s))
    if record.odometer is not None:
        odo = record.odometer
        counters.append(_measurement(27, "odometer", odo.odometer, None, odo.odometer))
        counters.append(_measurement(27, "run_hours", odo.run_hours_s, "s", odo.run_hours_s))
    counters += [
        _measurement(
            v.id, f"counter_{v.id}", v.value, None, v.value if isinstance(v.value, int) else None
        )
        for v in record.edge_counters
    ]
    return {
        "schema": "record.v1",
        "record_id": record_id(PROTOCOL, imei, record.sequence, record.device_time),
        "protocol": PROTOCOL,
        "source": source,
        "session_id": session_id,
        "ingestor": ingestor,
        "device": identity,
        "sequence": record.sequence,
        "device_time": record.device_time,
        "received_at": received_at,
        "log_reason": {"code": record.log_reason, "name": record.log_reason_name},
        "position": None
        if position is None
        else {
            "latitude": position.latitude,
            "longitude": position.longitude,
            "altitude_m": position.altitude_m,
            "speed_m_s": position.speed_m_s,
            "heading_deg": position.heading_deg,
            "accuracy_m": position.accuracy_m,
            "pdop": position.pdop,
            "fix_time": position.fix_time,
            "valid": position.valid,
        },
        "ignition": None if digital is None else digital.ignition,
        "inputs": None if digital is None else digital.inputs,
        "outputs": None if digital is None else digital.outputs,
        "status": None if digital is None else digital.status,
        "driver_id": None,
        "trip_type": None if record.trip_type is None else record.trip_type.trip_type,
        "trip_trim": None if record.trip_type is None else record.trip_type.trim,
        "analogues": analogues,
        "counters": counters,
        "debug": [],
        "unknown_fields": [
            {
                "id": field.ftype,
                "data_hex": field.json.encode().hex(),
                "problem": "OEM JSON field type not decoded: data_hex is its JSON text",
            }
            for field in record.unknown
        ],
    }
