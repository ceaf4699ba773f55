"""Data records: the payload of DATA_RECORDS (0x04) and FIXED_RECORDS (0x10) messages.

A 0x04 payload is a run of records ``len u16 | sequence u32 | time u32 | log reason u8 |
fields``, ``len`` counting the whole record. A field is ``id u8 | len u8 | data``; a length of
255 means a u16 length follows. Field layouts (Traccar's decoder, cross-checked with other
public implementations; see docs/digital-matter-protocol.md) are decoded into the dataclasses
below, which keep the wire values and offer scaled ones as properties. A field whose id is
unknown, or whose data is too short for its layout, is kept whole as a :class:`RawField`:
nothing a device sends is dropped.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from functools import partial
from typing import ClassVar, NamedTuple, TypeVar

from ._wire import from_dm_time

__all__ = [
    "ANALOGUES_16",
    "FIXED_RECORD_SIZE",
    "RECORD_HEADER_SIZE",
    "Analogue16",
    "Analogue16Field",
    "Analogue32",
    "Analogue32Field",
    "AnalogueKind",
    "DebugField",
    "DecodeError",
    "DigitalField",
    "DriverIdField",
    "Field",
    "FieldId",
    "FixedRecord",
    "GpsField",
    "LogReason",
    "OdometerField",
    "RawField",
    "Record",
    "TripField",
    "TripTypeField",
    "decode_field",
    "decode_fixed_records",
    "decode_message_records",
    "decode_records",
    "encode_fixed_record",
    "encode_record",
    "log_reason_name",
    "pack_fixed_time",
]

RECORD_HEADER_SIZE = 11
FIXED_RECORD_SIZE = 64
EXTENDED_LENGTH = 255

_RECORD_HEADER = struct.Struct("<HIIB")
_GPS = struct.Struct("<IiihHBBBBB")
_DIGITAL = struct.Struct("<IHH")
_DEBUG_CODE = struct.Struct("<H")
_PAIR = struct.Struct("<II")
_AN16 = struct.Struct("<BH")
_AN32 = struct.Struct("<Bi")
_FIXED = struct.Struct("<BIIiiHBhHBBBIH5hb3h8sHHH")


class DecodeError(ValueError):
    """A record that cannot be split off the payload (bad length); the connection says more."""


class FieldId(IntEnum):
    """Field ids decoded here. Others exist (Digital Matter's list is under NDA)."""

    GPS = 0
    DEBUG = 1
    DIGITAL = 2
    DRIVER_ID = 3
    ANALOGUE_16 = 6
    ANALOGUE_32 = 7
    TRIP_TYPE = 15
    TRIP = 26
    ODOMETER = 27


class LogReason(IntEnum):
    """Why the device logged a record (the header's log reason byte)."""

    RESERVED = 0
    START_OF_TRIP = 1
    END_OF_TRIP = 2
    ELAPSED_TIME = 3
    SPEED_CHANGE = 4
    HEADING_CHANGE = 5
    DISTANCE_TRAVELLED = 6
    MAXIMUM_SPEED = 7
    STATIONARY = 8
    DIGITAL_INPUT_CHANGED = 9
    DIGITAL_OUTPUT_CHANGED = 10
    HEARTBEAT = 11
    HARSH_BRAKE = 12
    HARSH_ACCELERATION = 13
    HARSH_CORNERING = 14
    EXTERNAL_POWER_CHANGE = 15
    SYSTEM_POWER_MONITORING = 16
    DRIVER_ID_TAG_READ = 17
    OVER_SPEED = 18
    FUEL_SENSOR_RECORD = 19
    TOWING_ALERT = 20
    DEBUG = 21
    SDI12_SENSOR_DATA = 22
    ACCIDENT = 23
    ACCIDENT_DATA = 24
    SENSOR_VALUE_ELAPSED_TIME = 25
    SENSOR_VALUE_CHANGE = 26
    SENSOR_ALARM = 27
    RAIN_GAUGE_TIPPED = 28
    TAMPER_ALERT = 29
    BLOB_NOTIFICATION = 30
    TIME_AND_ATTENDANCE = 31
    TRIP_RESTART = 32
    TAG_GAINED = 33
    TAG_UPDATE = 34
    TAG_LOST = 35
    RECOVERY_MODE_ON = 36
    RECOVERY_MODE_OFF = 37
    IMMOBILISER_ON = 38
    IMMOBILISER_OFF = 39
    GARMIN_FMI_STOP_RESPONSE = 40
    LONE_WORKER_ALARM = 41
    DEVICE_COUNTERS = 42
    CONNECTED_DEVICE_DATA = 43
    ENTERED_GEOFENCE = 44
    EXITED_GEOFENCE = 45
    HIGH_G_EVENT = 46
    THIRD_PARTY_DATA_RECORD = 47
    DURESS = 48
    CELL_TOWER_CONNECTION = 49
    BLUETOOTH_TAG_DATA = 50


_LOG_REASON_NAMES: dict[int, str] = {reason.value: reason.name.lower() for reason in LogReason}


def log_reason_name(code: int) -> str | None:
    """``start_of_trip`` for 1; None for a code not in the public list."""
    return _LOG_REASON_NAMES.get(code)


# --- fields -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class GpsField:
    """Field 0: the GPS fix. Wire units kept; properties give degrees, m/s, PDOP.

    ``status`` is the GPS status flags byte; like Traccar, a fix is taken as valid when it is
    not 0 (the bit meanings are not public).
    """

    field_id: ClassVar[int] = FieldId.GPS

    gps_time: int
    latitude_e7: int
    longitude_e7: int
    altitude_m: int
    speed_cm_s: int
    speed_accuracy: int
    heading_2deg: int
    pdop_tenths: int
    position_accuracy_m: int
    status: int
    extra: bytes = b""

    @property
    def fix_time(self) -> datetime | None:
        return from_dm_time(self.gps_time)

    @property
    def latitude(self) -> float:
        return self.latitude_e7 / 1e7

    @property
    def longitude(self) -> float:
        return self.longitude_e7 / 1e7

    @property
    def speed_m_s(self) -> float:
        return self.speed_cm_s / 100

    @property
    def heading(self) -> int:
        return self.heading_2deg * 2

    @property
    def pdop(self) -> float:
        return self.pdop_tenths / 10

    @property
    def valid(self) -> bool:
        return self.status != 0

    def encode(self) -> bytes:
        return (
            _GPS.pack(
                self.gps_time,
                self.latitude_e7,
                self.longitude_e7,
                self.altitude_m,
                self.speed_cm_s,
                self.speed_accuracy,
                self.heading_2deg,
                self.pdop_tenths,
                self.position_accuracy_m,
                self.status,
            )
            + self.extra
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class DebugField:
    """Field 1: a debug or event text with a u16 code (``RESET Dart 34.2.1.9 ...``)."""

    field_id: ClassVar[int] = FieldId.DEBUG

    code: int
    text: bytes

    @property
    def message(self) -> str:
        return self.text.rstrip(b"\x00").decode("ascii", "replace")

    def encode(self) -> bytes:
        return _DEBUG_CODE.pack(self.code) + self.text


@dataclass(frozen=True, slots=True, kw_only=True)
class DigitalField:
    """Field 2: digital inputs (bit 0 = ignition), outputs and device status bits."""

    field_id: ClassVar[int] = FieldId.DIGITAL

    inputs: int
    outputs: int
    status: int
    extra: bytes = b""

    @property
    def ignition(self) -> bool:
        return bool(self.inputs & 1)

    def encode(self) -> bytes:
        return _DIGITAL.pack(self.inputs, self.outputs, self.status) + self.extra


#: Driver id types whose data is shown as hex (1: 5 bytes, 2: 6 bytes, 7: all), or ASCII (3: 4
#: characters, 4: 5, 5 and 6: all); ``None`` = all of the data.
_DRIVER_ID_LAYOUTS: dict[int, tuple[str, int | None]] = {
    1: ("hex", 5),
    2: ("hex", 6),
    3: ("ascii", 4),
    4: ("ascii", 5),
    5: ("ascii", None),
    6: ("ascii", None),
    7: ("hex", None),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class DriverIdField:
    """Field 3: driver or operator id: a type byte and its data (see ``value``)."""

    field_id: ClassVar[int] = FieldId.DRIVER_ID

    id_type: int
    data: bytes

    @property
    def value(self) -> str:
        """The id as Traccar shows it: hex or ASCII by type; hex of all data for other types."""
        form, size = _DRIVER_ID_LAYOUTS.get(self.id_type, ("hex", None))
        data = self.data if size is None else self.data[:size]
        if form == "hex":
            return data.hex()
        return data.decode("ascii", "replace")

    def encode(self) -> bytes:
        return bytes([self.id_type]) + self.data


@dataclass(frozen=True, slots=True)
class AnalogueKind:
    """What an analogue id means: a name, a unit and the factor from the wire value."""

    name: str
    unit: str | None
    scale: float
    signed: bool = False

    def scaled(self, raw: int) -> float:
        """The value of a wire value (u16) of this kind."""
        if self.signed and raw & 0x8000:
            raw -= 0x10000
        return round(raw * self.scale, 6)


#: 16-bit analogue ids with a known meaning (Traccar; a third-party Digital Matter integration
#: for id 6). Units: V, degrees Celsius, ``CSQ`` (GSM signal quality 0-31), percent.
ANALOGUES_16: dict[int, AnalogueKind] = {
    1: AnalogueKind("battery_voltage", "V", 0.001),
    2: AnalogueKind("supply_voltage", "V", 0.01),
    3: AnalogueKind("temperature", "°C", 0.01, signed=True),
    4: AnalogueKind("signal_strength", "CSQ", 1),
    5: AnalogueKind("solar_voltage", "V", 0.001),
    6: AnalogueKind("battery_level", "%", 0.01),
}


class Analogue16(NamedTuple):
    """One 16-bit analogue: its id and the wire value (u16). A named tuple: records carry many."""

    id: int
    raw: int

    @property
    def kind(self) -> AnalogueKind | None:
        return ANALOGUES_16.get(self.id)

    @property
    def value(self) -> float:
        """Scaled by :data:`ANALOGUES_16` where the id is known; else the raw value."""
        kind = ANALOGUES_16.get(self.id)
        return self.raw if kind is None else kind.scaled(self.raw)


@dataclass(frozen=True, slots=True, kw_only=True)
class Analogue16Field:
    """Field 6: ``id u8, value u16`` repeated."""

    field_id: ClassVar[int] = FieldId.ANALOGUE_16

    values: tuple[Analogue16, ...]

    def get(self, analogue_id: int) -> Analogue16 | None:
        return next((a for a in self.values if a.id == analogue_id), None)

    def encode(self) -> bytes:
        return b"".join(_AN16.pack(a.id, a.raw) for a in self.values)


class Analogue32(NamedTuple):
    """One 32-bit analogue: its id and signed value (meanings not public)."""

    id: int
    value: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Analogue32Field:
    """Field 7: ``id u8, value i32`` repeated."""

    field_id: ClassVar[int] = FieldId.ANALOGUE_32

    values: tuple[Analogue32, ...]

    def encode(self) -> bytes:
        return b"".join(_AN32.pack(a.id, a.value) for a in self.values)


@dataclass(frozen=True, slots=True, kw_only=True)
class TripTypeField:
    """Field 15: trip type and movement-trip trim (JSON ``TT``, ``Trim``).

    The binary layout is not public: the first byte is read as the trip type and the second,
    if present, as the trim; anything after is kept in ``extra``.
    """

    field_id: ClassVar[int] = FieldId.TRIP_TYPE

    trip_type: int
    trim: int | None = None
    extra: bytes = b""

    def encode(self) -> bytes:
        trim = b"" if self.trim is None else bytes([self.trim])
        return bytes([self.trip_type]) + trim + self.extra


@dataclass(frozen=True, slots=True, kw_only=True)
class TripField:
    """Field 26: trip distance (m) and trip duration (s)."""

    field_id: ClassVar[int] = FieldId.TRIP

    distance_m: int
    duration_s: int
    extra: bytes = b""

    def encode(self) -> bytes:
        return _PAIR.pack(self.distance_m, self.duration_s) + self.extra


@dataclass(frozen=True, slots=True, kw_only=True)
class OdometerField:
    """Field 27: odometer and run hours (s).

    The odometer's unit is not settled in public sources (Traccar reads metres, a JSON
    integration divides by 100 for km): ``odometer`` is the wire value, unscaled.
    """

    field_id: ClassVar[int] = FieldId.ODOMETER

    odometer: int
    run_hours_s: int
    extra: bytes = b""

    def encode(self) -> bytes:
        return _PAIR.pack(self.odometer, self.run_hours_s) + self.extra


@dataclass(frozen=True, slots=True, kw_only=True)
class RawField:
    """A field kept as sent: an id not decoded here, or data too short for its layout
    (``problem`` then says why)."""

    field_id: int
    data: bytes
    problem: str | None = None

    def encode(self) -> bytes:
        return self.data


Field = (
    GpsField
    | DebugField
    | DigitalField
    | DriverIdField
    | Analogue16Field
    | Analogue32Field
    | TripTypeField
    | TripField
    | OdometerField
    | RawField
)
F = TypeVar("F", bound=Field)


def _gps(data: bytes) -> Field:
    values = _GPS.unpack_from(data)
    return GpsField(
        gps_time=values[0],
        latitude_e7=values[1],
        longitude_e7=values[2],
        altitude_m=values[3],
        speed_cm_s=values[4],
        speed_accuracy=values[5],
        heading_2deg=values[6],
        pdop_tenths=values[7],
        position_accuracy_m=values[8],
        status=values[9],
        extra=data[_GPS.size :],
    )


def _debug(data: bytes) -> Field:
    return DebugField(code=_DEBUG_CODE.unpack_from(data)[0], text=data[2:])


def _digital(data: bytes) -> Field:
    inputs, outputs, status = _DIGITAL.unpack_from(data)
    return DigitalField(inputs=inputs, outputs=outputs, status=status, extra=data[_DIGITAL.size :])


def _driver_id(data: bytes) -> Field:
    if not data:
        raise struct.error("no id type")
    return DriverIdField(id_type=data[0], data=data[1:])


def _repeated(data: bytes, layout: struct.Struct) -> Iterator[tuple[int, int]]:
    if len(data) % layout.size:
        raise struct.error(f"length {len(data)} is not a multiple of {layout.size}")
    return layout.iter_unpack(data)


# ``tuple.__new__`` on the class: ``_make`` without its Python-level length check (each
# unpacked tuple has the class's two fields by construction), called from C.
_new_analogue16 = partial(tuple.__new__, Analogue16)
_new_analogue32 = partial(tuple.__new__, Analogue32)


def _analogue16(data: bytes) -> Field:
    return Analogue16Field(values=tuple(map(_new_analogue16, _repeated(data, _AN16))))


def _analogue32(data: bytes) -> Field:
    return Analogue32Field(values=tuple(map(_new_analogue32, _repeated(data, _AN32))))


def _trip_type(data: bytes) -> Field:
    if not data:
        raise struct.error("empty")
    trim = data[1] if len(data) > 1 else None
    return TripTypeField(trip_type=data[0], trim=trim, extra=data[2:])


def _trip(data: bytes) -> Field:
    distance, duration = _PAIR.unpack_from(data)
    return TripField(distance_m=distance, duration_s=duration, extra=data[_PAIR.size :])


def _odometer(data: bytes) -> Field:
    odometer, hours = _PAIR.unpack_from(data)
    return OdometerField(odometer=odometer, run_hours_s=hours, extra=data[_PAIR.size :])


_FIELD_DECODERS: dict[int, Callable[[bytes], Field]] = {
    FieldId.GPS: _gps,
    FieldId.DEBUG: _debug,
    FieldId.DIGITAL: _digital,
    FieldId.DRIVER_ID: _driver_id,
    FieldId.ANALOGUE_16: _analogue16,
    FieldId.ANALOGUE_32: _analogue32,
    FieldId.TRIP_TYPE: _trip_type,
    FieldId.TRIP: _trip,
    FieldId.ODOMETER: _odometer,
}


def decode_field(field_id: int, data: bytes) -> Field:
    """One field's data, decoded if its id is known and the data fits its layout."""
    decoder = _FIELD_DECODERS.get(field_id)
    if decoder is None:
        return RawField(field_id=field_id, data=data)
    try:
        return decoder(data)
    except struct.error as exc:
        name = FieldId(field_id).name
        return RawField(
            field_id=field_id,
            data=data,
            problem=f"{name} field of {len(data)} bytes does not fit its layout: {exc}",
        )


# --- records ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """One data record (0x04).

    ``time`` is the wire time (seconds since 2013-01-01 UTC; 0 while the device's clock is not
    set). ``raw`` is the record's bytes exactly as received (empty for a record built in code);
    it does not take part in equality.
    """

    sequence: int
    time: int
    log_reason: int
    fields: tuple[Field, ...] = ()
    raw: bytes = field(default=b"", compare=False, repr=False)

    @property
    def device_time(self) -> datetime | None:
        return from_dm_time(self.time)

    @property
    def log_reason_name(self) -> str | None:
        return log_reason_name(self.log_reason)

    def get(self, kind: type[F]) -> F | None:
        """The first field of this type, if any."""
        return next((f for f in self.fields if isinstance(f, kind)), None)


def _field_header(field_id: int, size: int) -> bytes:
    if size < EXTENDED_LENGTH:
        return bytes([field_id, size])
    return bytes([field_id, EXTENDED_LENGTH]) + size.to_bytes(2, "little")


def encode_record(record: Record) -> bytes:
    """The record's wire bytes: ``raw`` if it came off the wire, else built from its fields."""
    if record.raw:
        return record.raw
    parts = []
    for item in record.fields:
        data = item.encode()
        parts.append(_field_header(item.field_id, len(data)) + data)
    body = b"".join(parts)
    size = RECORD_HEADER_SIZE + len(body)
    return _RECORD_HEADER.pack(size, record.sequence, record.time, record.log_reason) + body


def _decode_fields(data: bytes, start: int, end: int) -> tuple[Field, ...]:
    fields: list[Field] = []
    decoders = _FIELD_DECODERS
    pos = start
    while pos < end:
        field_id = data[pos]
        if pos + 2 > end:
            fields.append(RawField(field_id=field_id, data=b"", problem="field header cut short"))
            break
        size, pos = data[pos + 1], pos + 2
        if size == EXTENDED_LENGTH:
            if pos + 2 > end:
                fields.append(
                    RawField(
                        field_id=field_id,
                        data=data[pos:end],
                        problem="extended field length cut short",
                    )
                )
                break
            size, pos = int.from_bytes(data[pos : pos + 2], "little"), pos + 2
        if pos + size > end:
            fields.append(
                RawField(
                    field_id=field_id,
                    data=data[pos:end],
                    problem=f"field of {size} bytes runs {pos + size - end} bytes past its record",
                )
            )
            break
        # ``decode_field``, inlined: this runs for every field of every record.
        decoder = decoders.get(field_id)
        if decoder is None:
            fields.append(RawField(field_id=field_id, data=data[pos : pos + size]))
        else:
            try:
                fields.append(decoder(data[pos : pos + size]))
            except struct.error:
                fields.append(decode_field(field_id, data[pos : pos + size]))
        pos += size
    return tuple(fields)


def decode_records(payload: bytes) -> list[Record]:
    """Split a DATA_RECORDS payload into records. Raises DecodeError on a bad record length."""
    records: list[Record] = []
    pos, total = 0, len(payload)
    while pos < total:
        if total - pos < RECORD_HEADER_SIZE:
            raise DecodeError(
                f"record {len(records) + 1} starts with {total - pos} bytes left, less than "
                f"its {RECORD_HEADER_SIZE}-byte header"
            )
        size, sequence, time, reason = _RECORD_HEADER.unpack_from(payload, pos)
        if size < RECORD_HEADER_SIZE or pos + size > total:
            raise DecodeError(
                f"record {len(records) + 1} (sequence {sequence}) has length {size}; allowed "
                f"{RECORD_HEADER_SIZE}..{total - pos} here"
            )
        end = pos + size
        records.append(
            Record(
                sequence=sequence,
                time=time,
                log_reason=reason,
                fields=_decode_fields(payload, pos + RECORD_HEADER_SIZE, end),
                raw=payload[pos:end],
            )
        )
        pos = end
    return records


# --- fixed 64-byte records --------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FixedRecord:
    """One legacy fixed 64-byte record (0x10), fields as Traccar reads them.

    ``time_bits`` packs the date: year = 2000 + bits 0-5, month 6-9, day 10-14, hour 15-19,
    minute 20-25, second 26-31. The checksum is kept but not checked (its algorithm is not
    public). ``raw`` is the record's 64 bytes as received; it does not take part in equality.
    """

    record_type: int
    index: int
    time_bits: int
    longitude_e7: int
    latitude_e7: int
    speed_cm_s: int
    heading_2deg: int
    altitude_m: int
    position_accuracy_m: int
    speed_accuracy: int
    event: int
    status: int
    inputs: int
    outputs: int
    adc: tuple[int, int, int, int, int]
    temperature_c: int
    acceleration: tuple[int, int, int]
    device_id: bytes
    pdop_hundredths: int
    reserved: bytes = b"\x00\x00"
    checksum: int = 0
    raw: bytes = field(default=b"", compare=False, repr=False)

    @property
    def sequence(self) -> int:
        return self.index

    @property
    def log_reason(self) -> int:
        return self.event

    @property
    def log_reason_name(self) -> str | None:
        return log_reason_name(self.event)

    @property
    def device_time(self) -> datetime | None:
        """The packed date; None if it is not a valid date (all zero, say)."""
        bits = self.time_bits
        try:
            return datetime(
                2000 + (bits & 0x3F),
                bits >> 6 & 0xF,
                bits >> 10 & 0x1F,
                bits >> 15 & 0x1F,
                bits >> 20 & 0x3F,
                bits >> 26 & 0x3F,
                tzinfo=UTC,
            )
        except ValueError:
            return None

    @property
    def latitude(self) -> float:
        return self.latitude_e7 / 1e7

    @property
    def longitude(self) -> float:
        return self.longitude_e7 / 1e7

    @property
    def speed_m_s(self) -> float:
        return self.speed_cm_s / 100

    @property
    def heading(self) -> int:
        return self.heading_2deg * 2

    @property
    def pdop(self) -> float:
        return self.pdop_hundredths / 100

    @property
    def valid(self) -> bool:
        return bool(self.status & 1)

    @property
    def ignition(self) -> bool:
        return bool(self.inputs & 1)


def pack_fixed_time(when: datetime) -> int:
    """The packed date of a fixed record (years 2000-2063)."""
    return (
        (when.year - 2000)
        | when.month << 6
        | when.day << 10
        | when.hour << 15
        | when.minute << 20
        | when.second << 26
    )


def encode_fixed_record(record: FixedRecord) -> bytes:
    if record.raw:
        return record.raw
    return _FIXED.pack(
        record.record_type,
        record.index,
        record.time_bits,
        record.longitude_e7,
        record.latitude_e7,
        record.speed_cm_s,
        record.heading_2deg,
        record.altitude_m,
        record.position_accuracy_m,
        record.speed_accuracy,
        record.event,
        record.status,
        record.inputs,
        record.outputs,
        *record.adc,
        record.temperature_c,
        *record.acceleration,
        record.device_id,
        record.pdop_hundredths,
        *struct.unpack("<H", record.reserved),
        record.checksum,
    )


def decode_fixed_records(payload: bytes) -> list[FixedRecord]:
    """Split a FIXED_RECORDS payload. Raises DecodeError unless it is whole 64-byte records."""
    if not payload or len(payload) % FIXED_RECORD_SIZE:
        raise DecodeError(
            f"payload of {len(payload)} bytes is not a whole number of "
            f"{FIXED_RECORD_SIZE}-byte records"
        )
    records = []
    for pos in range(0, len(payload), FIXED_RECORD_SIZE):
        v = _FIXED.unpack_from(payload, pos)
        records.append(
            FixedRecord(
                record_type=v[0],
                index=v[1],
                time_bits=v[2],
                longitude_e7=v[3],
                latitude_e7=v[4],
                speed_cm_s=v[5],
                heading_2deg=v[6],
                altitude_m=v[7],
                position_accuracy_m=v[8],
                speed_accuracy=v[9],
                event=v[10],
                status=v[11],
                inputs=v[12],
                outputs=v[13],
                adc=(v[14], v[15], v[16], v[17], v[18]),
                temperature_c=v[19],
                acceleration=(v[20], v[21], v[22]),
                device_id=v[23],
                pdop_hundredths=v[24],
                reserved=payload[pos + 60 : pos + 62],
                checksum=v[26],
                raw=payload[pos : pos + FIXED_RECORD_SIZE],
            )
        )
    return records


_DATA_RECORDS = 0x04
_FIXED_RECORDS = 0x10


def decode_message_records(message: bytes) -> list[Record] | list[FixedRecord]:
    """Decode the records of a whole 0x04 or 0x10 message, header included (what
    ``RecordReceived.raw`` and the raw topic hold). Raises DecodeError for anything else."""
    if len(message) < 5 or message[:2] != b"\x02\x55":
        raise DecodeError("not a DMT message: it must start with 02 55 and a 5-byte header")
    size = int.from_bytes(message[3:5], "little")
    if len(message) != 5 + size:
        raise DecodeError(f"message length field says {size} bytes, {len(message) - 5} follow")
    if message[2] == _DATA_RECORDS:
        return decode_records(message[5:])
    if message[2] == _FIXED_RECORDS:
        return decode_fixed_records(message[5:])
    raise DecodeError(f"message type 0x{message[2]:02X} carries no records")
