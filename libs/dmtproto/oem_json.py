"""Digital Matter OEM Server JSON bodies (its HTTP(S) JSON connector), decoded: pure, no I/O.

The OEM Server POSTs what devices uploaded to it as JSON, in one of two formats:

- **traditional**: ``SerNo``, ``IMEI``, ``ICCID``, ``ProdId``, ``FW`` and ``Records[]``, each
  record ``SeqNo``, ``Reason``, ``DateUTC`` (``yyyy-MM-dd HH:mm:ss``, UTC) and ``Fields[]``
  told apart by ``FType``: the binary protocol's field ids with the same values, already
  scaled where the OEM Server scales them (``Lat``/``Long`` in degrees, ``Head`` in degrees);
- **Edge / LoRa** (recognised by its ``device`` object): one record per body, ``date``
  (ISO 8601), ``device {sn, prod, rev, fw, iccid, imei}``, ``sqn``, ``reason``, optional
  ``lat``/``lng``/``posAcc``/``posInfo``, ``analogues [{id, val}]``, ``inputs``, ``outputs``,
  ``status`` and ``counters [{id, val}]``.

:func:`decode_oem_json` turns a body into an :class:`OemBody`: the device and its records,
with the binary protocol's own field types wherever the values are the same
(:class:`~dmtproto.DigitalField`, :class:`~dmtproto.Analogue16` ...), so a record reads the
same whichever path it took. A body that does not decode raises :class:`OemJsonError`, whose
``field`` names the offending field as a path (``Records[2].Fields[0].Lat``); nothing of such
a body is to be kept, the OEM Server sends it again.

Units, where the public sources leave them open: ``Spd`` is cm/s, ``Alt`` and ``PosAcc`` m,
``PDOP`` tenths (as in the binary GPS field); the Edge format's ``posInfo.PDOP`` is taken as
given. A ``DateUTC`` of 2013-01-01 00:00:00 (the binary protocol's time 0, a clock not set)
decodes to ``None``, as the binary protocol's does. Edge counters 0 (battery mV) and 1 (battery
level, hundredths of a percent) are the binary protocol's analogues 1 and 6 and are decoded as
those; other counters and the Edge analogues have no published meaning and are kept as sent.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from ._wire import EPOCH_2013, PRODUCT_NAMES
from .errors import RemoteProtocolError
from .records import (
    Analogue16,
    Analogue32,
    DigitalField,
    OdometerField,
    TripField,
    TripTypeField,
    log_reason_name,
)

__all__ = [
    "EDGE_BATTERY_COUNTERS",
    "EdgeValue",
    "OemBody",
    "OemDevice",
    "OemFormat",
    "OemJsonError",
    "OemPosition",
    "OemRecord",
    "OemUnknownField",
    "decode_oem_json",
]

_U8 = (0, 0xFF)
_U16 = (0, 0xFFFF)
_U32 = (0, 0xFFFFFFFF)
_I32 = (-(2**31), 2**31 - 1)
#: A 16-bit analogue as JSON may carry it: the wire's u16, or a signed value.
_A16 = (-0x8000, 0xFFFF)
#: Plain numbers (altitude, speed...): within what a double holds exactly.
_NUMBER = 2.0**53

#: Edge counter id -> the binary protocol's 16-bit analogue id with the same value and unit.
EDGE_BATTERY_COUNTERS: dict[int, int] = {0: 1, 1: 6}


class OemJsonError(RemoteProtocolError):
    """The body is not an OEM Server body fleetgate can decode. ``field`` names where (a path
    like ``Records[2].Fields[0].Lat``; ``$`` for the body itself); ``problem`` says what."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class OemFormat(StrEnum):
    TRADITIONAL = "traditional"
    EDGE = "edge"


@dataclass(frozen=True, slots=True, kw_only=True)
class OemDevice:
    """Who the body is about (what a binary device says in its HELLO)."""

    imei: str
    serial: int | None = None
    iccid: str | None = None
    product_id: int | None = None
    hardware_revision: int | None = None
    firmware: str | None = None

    @property
    def product(self) -> str | None:
        return None if self.product_id is None else PRODUCT_NAMES.get(self.product_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class OemPosition:
    """A position, in the units of ``fleetgate.records.v1``."""

    latitude: float
    longitude: float
    valid: bool
    altitude_m: float | None = None
    speed_m_s: float | None = None
    heading_deg: float | None = None
    accuracy_m: float | None = None
    pdop: float | None = None
    fix_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class EdgeValue:
    """An Edge analogue or counter with no published meaning: its id and value as sent."""

    id: int
    value: int | float


@dataclass(frozen=True, slots=True)
class OemUnknownField:
    """A traditional-format field whose ``FType`` is not decoded here, as its JSON text."""

    ftype: int
    json: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OemRecord:
    sequence: int
    log_reason: int
    device_time: datetime | None
    position: OemPosition | None = None
    digital: DigitalField | None = None
    #: 16-bit analogues (FType 6; Edge battery counters), wire values, u16.
    analogues: tuple[Analogue16, ...] = ()
    #: 32-bit analogues (FType 7).
    analogues32: tuple[Analogue32, ...] = ()
    trip_type: TripTypeField | None = None
    trip: TripField | None = None
    odometer: OdometerField | None = None
    edge_analogues: tuple[EdgeValue, ...] = ()
    edge_counters: tuple[EdgeValue, ...] = ()
    unknown: tuple[OemUnknownField, ...] = ()

    @property
    def log_reason_name(self) -> str | None:
        return log_reason_name(self.log_reason)


@dataclass(frozen=True, slots=True, kw_only=True)
class OemBody:
    format: OemFormat
    device: OemDevice
    records: tuple[OemRecord, ...]


# --- reading typed values -------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _object(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise OemJsonError(path, f"must be an object, got {_kind(value)}")
    return value


def _array(value: object, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise OemJsonError(path, f"must be an array, got {_kind(value)}")
    return value


def _path(base: str, key: str) -> str:
    return key if base == "$" else f"{base}.{key}"


def _required(obj: dict[str, Any], key: str, base: str) -> Any:
    if key not in obj or obj[key] is None:
        raise OemJsonError(_path(base, key), "is required")
    return obj[key]


def _int(value: object, path: str, bounds: tuple[int, int]) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise OemJsonError(path, f"must be an integer, got {_kind(value)}")
    low, high = bounds
    if not low <= value <= high:
        raise OemJsonError(path, f"{value} is outside {low}..{high}")
    return value


def _number(value: object, path: str, low: float = -_NUMBER, high: float = _NUMBER) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise OemJsonError(path, f"must be a number, got {_kind(value)}")
    if not low <= value <= high:
        raise OemJsonError(path, f"{value} is outside {low:g}..{high:g}")
    return float(value)


def _text(value: object, path: str, limit: int = 200) -> str:
    if not isinstance(value, str):
        raise OemJsonError(path, f"must be a string, got {_kind(value)}")
    if len(value) > limit:
        raise OemJsonError(path, f"is {len(value)} characters long, at most {limit} allowed")
    return value


def _imei(value: object, path: str) -> str:
    text = _text(value, path).strip()
    if not text.isascii() or not text.isdigit() or not 1 <= len(text) <= 20:
        raise OemJsonError(path, f"{text[:40]!r} is not an IMEI (1 to 20 digits)")
    return text


_FRACTION = re.compile(r"(\.\d{6})\d+")
_DM_EPOCH = datetime.fromtimestamp(EPOCH_2013, UTC)


def _time(value: object, path: str) -> datetime | None:
    """``2017-05-11 05:58:44`` or ISO 8601 (``2021-12-12T16:04:52.123456789Z``); no zone =
    UTC. The binary protocol's time 0 (2013-01-01 00:00:00) is a clock not set: None."""
    text = _text(value, path, 64).strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    text = _FRACTION.sub(r"\1", text)  # nanoseconds: Python keeps microseconds
    try:
        when = datetime.fromisoformat(text)
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except (ValueError, OverflowError):
        raise OemJsonError(path, f"{str(value)[:40]!r} is not a date and time (UTC)") from None
    return None if when == _DM_EPOCH else when


# --- the traditional format -----------------------------------------------------------------


def _gps(field: dict[str, Any], path: str) -> OemPosition:
    def opt(key: str, low: float = -_NUMBER, high: float = _NUMBER) -> float | None:
        value = field.get(key)
        return None if value is None else _number(value, _path(path, key), low, high)

    status = field.get("GpsStat")
    speed = opt("Spd", 0)
    pdop = opt("PDOP", 0)
    gps_utc = field.get("GpsUTC")
    return OemPosition(
        latitude=_number(_required(field, "Lat", path), _path(path, "Lat"), -90, 90),
        longitude=_number(_required(field, "Long", path), _path(path, "Long"), -180, 180),
        altitude_m=opt("Alt"),
        speed_m_s=None if speed is None else speed / 100,
        heading_deg=opt("Head", 0, 360),
        accuracy_m=opt("PosAcc", 0),
        pdop=None if pdop is None else pdop / 10,
        fix_time=None if gps_utc is None else _time(gps_utc, _path(path, "GpsUTC")),
        # As for the binary GPS field: a fix is valid when its status flags are not 0.
        valid=True if status is None else _int(status, _path(path, "GpsStat"), _U8) != 0,
    )


def _analogue_data(
    field: dict[str, Any], path: str, bounds: tuple[int, int]
) -> list[tuple[int, int]]:
    where = _path(path, "AnalogueData")
    data = _object(_required(field, "AnalogueData", path), where)
    values = []
    for key, raw in data.items():
        if not key.isascii() or not key.isdigit() or int(key) > 0xFF:
            raise OemJsonError(where, f"key {key[:40]!r} is not an analogue id (0..255)")
        values.append((int(key), _int(raw, f"{where}.{key}", bounds)))
    return sorted(values)


def _traditional_record(item: object, path: str) -> OemRecord:
    record = _object(item, path)
    fields: dict[str, Any] = {}
    analogues: list[Analogue16] = []
    analogues32: list[Analogue32] = []
    unknown: list[OemUnknownField] = []
    for j, raw_field in enumerate(_array(record.get("Fields", []), _path(path, "Fields"))):
        where = f"{_path(path, 'Fields')}[{j}]"
        field = _object(raw_field, where)
        ftype = _int(_required(field, "FType", where), _path(where, "FType"), _U8)
        if ftype == 0:
            fields["position"] = _gps(field, where)
        elif ftype == 2:
            fields["digital"] = DigitalField(
                inputs=_int(_required(field, "DIn", where), _path(where, "DIn"), _U32),
                outputs=_int(field.get("DOut", 0), _path(where, "DOut"), _U16),
                status=_int(field.get("DevStat", 0), _path(where, "DevStat"), _U16),
            )
        elif ftype == 6:
            analogues += [Analogue16(i, v & 0xFFFF) for i, v in _analogue_data(field, where, _A16)]
        elif ftype == 7:
            analogues32 += [Analogue32(i, v) for i, v in _analogue_data(field, where, _I32)]
        elif ftype == 15:
            trim = field.get("Trim")
            fields["trip_type"] = TripTypeField(
                trip_type=_int(_required(field, "TT", where), _path(where, "TT"), _U8),
                trim=None if trim is None else _int(trim, _path(where, "Trim"), _U8),
            )
        elif ftype == 26:
            fields["trip"] = TripField(
                distance_m=_int(_required(field, "Dist", where), _path(where, "Dist"), _U32),
                duration_s=_int(_required(field, "Dur", where), _path(where, "Dur"), _U32),
            )
        elif ftype == 27:
            fields["odometer"] = OdometerField(
                odometer=_int(_required(field, "Odo", where), _path(where, "Odo"), _U32),
                run_hours_s=_int(_required(field, "RH", where), _path(where, "RH"), _U32),
            )
        else:
            text = json.dumps(field, separators=(",", ":"), sort_keys=True)
            unknown.append(OemUnknownField(ftype, text))
    return OemRecord(
        sequence=_int(_required(record, "SeqNo", path), _path(path, "SeqNo"), _U32),
        log_reason=_int(_required(record, "Reason", path), _path(path, "Reason"), _U8),
        device_time=_time(_required(record, "DateUTC", path), _path(path, "DateUTC")),
        analogues=tuple(analogues),
        analogues32=tuple(analogues32),
        unknown=tuple(unknown),
        **fields,
    )


def _traditional(body: dict[str, Any]) -> OemBody:
    def opt_int(key: str, bounds: tuple[int, int]) -> int | None:
        value = body.get(key)
        return None if value is None else _int(value, key, bounds)

    def opt_text(key: str) -> str | None:
        value = body.get(key)
        return None if value is None else _text(value, key)

    device = OemDevice(
        imei=_imei(_required(body, "IMEI", "$"), "IMEI"),
        serial=opt_int("SerNo", _U32),
        iccid=opt_text("ICCID") or None,
        product_id=opt_int("ProdId", _U8),
        firmware=opt_text("FW"),
    )
    records = _array(_required(body, "Records", "$"), "Records")
    return OemBody(
        format=OemFormat.TRADITIONAL,
        device=device,
        records=tuple(_traditional_record(r, f"Records[{i}]") for i, r in enumerate(records)),
    )


# --- the Edge / LoRa format -----------------------------------------------------------------


def _pairs(body: dict[str, Any], key: str) -> list[tuple[int, int | float]]:
    values = []
    for i, item in enumerate(_array(body.get(key, []), key)):
        where = f"{key}[{i}]"
        pair = _object(item, where)
        ident = _int(_required(pair, "id", where), f"{where}.id", _U32)
        raw = _required(pair, "val", where)
        value: int | float
        if isinstance(raw, int) and not isinstance(raw, bool):
            value = _int(raw, f"{where}.val", (-(2**63), 2**63 - 1))
        else:
            value = _number(raw, f"{where}.val")
        values.append((ident, value))
    return values


def _edge(body: dict[str, Any]) -> OemBody:
    info = _object(body["device"], "device")

    def opt_int(key: str, bounds: tuple[int, int]) -> int | None:
        value = info.get(key)
        return None if value is None else _int(value, f"device.{key}", bounds)

    def opt_text(key: str) -> str | None:
        value = info.get(key)
        return None if value is None else _text(value, f"device.{key}")

    serial = info.get("sn")
    if isinstance(serial, str):  # the Edge format sends the serial as a string of digits
        if not serial.isascii() or not serial.isdigit():
            raise OemJsonError("device.sn", f"{serial[:40]!r} is not a serial number")
        serial = int(serial)
    device = OemDevice(
        imei=_imei(_required(info, "imei", "device"), "device.imei"),
        serial=None if serial is None else _int(serial, "device.sn", _U32),
        iccid=opt_text("iccid") or None,
        product_id=opt_int("prod", _U8),
        hardware_revision=opt_int("rev", _U8),
        firmware=opt_text("fw"),
    )
    when = _time(_required(body, "date", "$"), "date")
    position = None
    if body.get("lat") is not None or body.get("lng") is not None:
        pos_info = body.get("posInfo")
        pdop = None
        if pos_info is not None:
            value = _object(pos_info, "posInfo").get("PDOP")
            pdop = None if value is None else _number(value, "posInfo.PDOP", 0)
        accuracy = body.get("posAcc")
        position = OemPosition(
            latitude=_number(_required(body, "lat", "$"), "lat", -90, 90),
            longitude=_number(_required(body, "lng", "$"), "lng", -180, 180),
            accuracy_m=None if accuracy is None else _number(accuracy, "posAcc", 0),
            pdop=pdop,
            fix_time=when,
            valid=True,
        )
    digital = None
    bits = {k: body.get(k) for k in ("inputs", "outputs", "status")}
    if any(v is not None for v in bits.values()):
        inputs, outputs, status = (0 if v is None else _int(v, k, _U32) for k, v in bits.items())
        digital = DigitalField(inputs=inputs, outputs=outputs, status=status)
    analogues: list[Analogue16] = []
    counters: list[EdgeValue] = []
    for index, (ident, value) in enumerate(_pairs(body, "counters")):
        same = EDGE_BATTERY_COUNTERS.get(ident)
        if same is not None:
            raw = _int(value, f"counters[{index}].val", _U16)
            analogues.append(Analogue16(same, raw))
        else:
            counters.append(EdgeValue(ident, value))
    record = OemRecord(
        sequence=_int(_required(body, "sqn", "$"), "sqn", _U32),
        log_reason=_int(_required(body, "reason", "$"), "reason", _U8),
        device_time=when,
        position=position,
        digital=digital,
        analogues=tuple(analogues),
        edge_analogues=tuple(EdgeValue(i, v) for i, v in _pairs(body, "analogues")),
        edge_counters=tuple(counters),
    )
    return OemBody(format=OemFormat.EDGE, device=device, records=(record,))


def decode_oem_json(body: bytes | str) -> OemBody:
    """Decode one OEM Server JSON body (either format). :class:`OemJsonError` names the field
    when it does not decode: invalid JSON or UTF-8 (``$``), a field missing, of the wrong type
    or out of range."""
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        document = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except UnicodeDecodeError as exc:
        raise OemJsonError("$", f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    except RecursionError:
        raise OemJsonError("$", "nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, NaN, 1e999, an integer of 5000 digits
        raise OemJsonError("$", f"not JSON: {exc}") from None
    root = _object(document, "$")
    if "device" in root:
        return _edge(root)
    return _traditional(root)
