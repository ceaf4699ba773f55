"""Telemetry records as Digital Matter's OEM Server posts them: the "traditional" JSON.

An endpoint with ``format: oem`` receives what a platform built for the OEM Server's HTTP
connector expects (``../shared/reference/digital-matter-protocol.md`` B.6)::

    {"SerNo": 131693, "IMEI": "356692063643328", "ICCID": "8944538523010771676",
     "ProdId": 33, "FW": "33.4.1.27",
     "Records": [{"SeqNo": 125, "Reason": 11, "DateUTC": "2017-05-11 05:58:44",
                  "Fields": [{"GpsUTC": "2017-05-08 18:04:57", "Lat": 43.7370138, ...,
                              "FType": 0}, ...]}]}

Values are in the OEM Server's units, which are the device's wire units except for the
position: latitude and longitude in degrees, ``Spd`` in cm/s, ``Head`` in degrees, ``Alt`` and
``PosAcc`` in metres, ``PDOP`` in tenths, analogues and counters as the device sent them
(``Measurement.raw``). A record of any source maps (a binary device, the JSON intake): the
mapping reads only :class:`~contracts.records.TelemetryRecord`.

What ``record.v1`` does not keep cannot be given back: ``SpdAcc`` is left out, and
``GpsStat`` is 1 for a valid fix and 0 otherwise (the device's other status bits are not
kept). Debug texts, driver ids and fields fleetgate did not decode have no agreed OEM JSON
form and are left out, except the undecoded fields of a body the OEM Server posted (source
``oem_http``): ``contracts.dmt_oem`` keeps each as its JSON text, so it is given back as
received. Fields are in ``FType`` order. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from contracts.records import Measurement, RecordSource, TelemetryRecord

__all__ = ["OEM_TIME_FORMAT", "oem_body", "oem_json", "oem_record"]

#: ``DateUTC`` and ``GpsUTC``: "yyyy-MM-dd HH:mm:ss", UTC.
OEM_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

_Data = dict[str, Any]

#: Counters by name -> (FType, key); a field is given when any of its counters is there.
_COUNTERS = {
    "trip_distance": (26, "Dist"),
    "trip_duration": (26, "Dur"),
    "odometer": (27, "Odo"),
    "run_hours": (27, "RH"),
}
#: Analogues of a fixed-format (0x10) record: no OEM field id of their own.
_FIXED_ANALOGUE = re.compile(r"adc\d+")


def _time(when: datetime) -> str:
    return when.strftime(OEM_TIME_FORMAT)


def _int(value: float | None) -> int | None:
    return None if value is None else round(value)


def _raw(measurement: Measurement) -> float | int:
    if measurement.raw is not None:
        return measurement.raw
    value = measurement.value
    return int(value) if value.is_integer() else value


def _field(ftype: int, values: _Data) -> _Data:
    """An OEM field: its values without the unknown ones, ``FType`` last (as the server)."""
    field = {k: v for k, v in values.items() if v is not None}
    field["FType"] = ftype
    return field


def _fields(record: TelemetryRecord) -> list[_Data]:
    fields: list[_Data] = []
    if (p := record.position) is not None:
        fix_time = p.fix_time or record.device_time
        gps = {
            "GpsUTC": None if fix_time is None else _time(fix_time),
            "Lat": round(p.latitude, 7),
            "Long": round(p.longitude, 7),
            "Alt": _int(p.altitude_m),
            "Spd": None if p.speed_m_s is None else round(p.speed_m_s * 100),
            "Head": _int(p.heading_deg),
            "PDOP": None if p.pdop is None else round(p.pdop * 10),
            "PosAcc": _int(p.accuracy_m),
            "GpsStat": 1 if p.valid else 0,
        }
        fields.append(_field(0, gps))
    if (record.inputs, record.outputs, record.status) != (None, None, None):
        digital = {"DIn": record.inputs, "DOut": record.outputs, "DevStat": record.status}
        fields.append(_field(2, digital))
    analogue16: _Data = {}
    analogue32: _Data = {}
    for m in record.analogues:
        if m.id is None or _FIXED_ANALOGUE.fullmatch(m.name):
            continue
        target = analogue32 if m.name.startswith("analogue32_") else analogue16
        target[str(m.id)] = _raw(m)
    if analogue16:
        fields.append(_field(6, {"AnalogueData": analogue16}))
    if analogue32:
        fields.append(_field(7, {"AnalogueData": analogue32}))
    if record.trip_type is not None:
        fields.append(_field(15, {"TT": record.trip_type, "Trim": record.trip_trim}))
    counters: dict[int, _Data] = {}
    for m in record.counters:
        if m.name in _COUNTERS:
            ftype, key = _COUNTERS[m.name]
            counters.setdefault(ftype, {})[key] = _raw(m)
    fields += [_field(ftype, counters[ftype]) for ftype in sorted(counters)]
    if record.source is RecordSource.OEM_HTTP:
        fields += _posted_fields(record)
    fields.sort(key=lambda field: int(field["FType"]))
    return fields


def _posted_fields(record: TelemetryRecord) -> list[_Data]:
    """The fields of an OEM Server body that fleetgate did not decode, as the server posted
    them: their ``data_hex`` is the field's JSON text (``contracts.dmt_oem``)."""
    fields: list[_Data] = []
    for unknown in record.unknown_fields:
        try:
            field = orjson.loads(bytes.fromhex(unknown.data_hex))
        except ValueError:  # not hex, not UTF-8 or not JSON: not a field this mapping kept
            continue
        if isinstance(field, dict) and field.get("FType") == unknown.id:
            del field["FType"]  # last, as the server writes it
            fields.append(field | {"FType": unknown.id})
    return fields


def oem_record(record: TelemetryRecord) -> _Data:
    """One entry of ``Records``. ``DateUTC`` is the device time; a record logged before the
    device's clock was set has none, and gets the time fleetgate received it."""
    return {
        "SeqNo": record.sequence,
        "Reason": record.log_reason.code,
        "DateUTC": _time(record.device_time or record.received_at),
        "Fields": _fields(record),
    }


def oem_body(records: Sequence[TelemetryRecord]) -> _Data:
    """The body for ``records`` of ONE device (ValueError for none, or several devices).

    The device's identity is taken from the newest record that has each part of it."""
    if not records:
        raise ValueError("no records")
    imeis = {r.imei for r in records}
    if len(imeis) > 1:
        raise ValueError(f"records of several devices: {sorted(imeis)}")

    def newest(attribute: str) -> Any:
        return next(
            (v for r in reversed(records) if (v := getattr(r.device, attribute)) is not None),
            None,
        )

    return {
        "SerNo": newest("serial"),
        "IMEI": records[0].imei,
        "ICCID": newest("iccid"),
        "ProdId": newest("product_id"),
        "FW": newest("firmware"),
        "Records": [oem_record(r) for r in records],
    }


def oem_json(records: Sequence[TelemetryRecord]) -> bytes:
    """:func:`oem_body` as the bytes that are POSTed."""
    return orjson.dumps(oem_body(records))
