"""Telemetry records and the device registry: ``fleetgate.records.v1``, ``fleetgate.devices.v1``.

Every telemetry protocol publishes the same :class:`TelemetryRecord` (key = IMEI) on
``fleetgate.records.v1``, and the message exactly as the device sent it on its own raw topic
(``fleetgate.dmt.raw.v1`` for Digital Matter; key = IMEI; value = the raw bytes; headers
:class:`RawHeader`), so any record can be decoded again later.

Records from Digital Matter's OEM Server JSON HTTP connector (the ingestor's HTTP intake) are
the same records with ``source`` ``oem_http`` or ``oem_http_edge``; each request body goes
whole to ``fleetgate.dmt.oem.raw.v1`` (key = IMEI, headers :class:`RawHeader`).

A device sends a record again when it did not get the commit for it (a connection lost, a
Kafka outage): the same IMEI, sequence number and device time, hence the same
:func:`record_id`. Consumers de-duplicate on ``record_id``.

``fleetgate.devices.v1`` is compacted, key = IMEI: the latest :class:`DeviceStatus` of each
device (identity, last connection, last power, temperature, signal and position), folded from
sessions and records by :func:`apply_session` and :func:`apply_record`, each starting from the
device's last known status, so the latest record carries everything known.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DebugText",
    "DeviceIdentity",
    "DeviceStatus",
    "LastConnection",
    "LogReason",
    "Measurement",
    "Position",
    "RawHeader",
    "RecordSource",
    "RecordWebhook",
    "TelemetryRecord",
    "UnknownField",
    "apply_record",
    "apply_session",
    "rebase",
    "record_id",
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class RawHeader(StrEnum):
    """Kafka headers on raw per-protocol records (``fleetgate.dmt.raw.v1``; ASCII values)."""

    #: The :func:`record_id` of the record the message carries (absent for a HELLO).
    RECORD_ID = "fg-record-id"
    #: The session that received it.
    SESSION = "fg-session"
    #: The ingestor instance.
    INGESTOR = "fg-ingestor"
    #: When the ingestor received it, unix milliseconds.
    RECEIVED_AT = "fg-received-at"
    #: The protocol's message type, decimal (DMT: 0 hello, 4 data records, 16 fixed records).
    MESSAGE_TYPE = "fg-message-type"
    #: ``fleetgate.dmt.oem.raw.v1``: the body's format, ``traditional`` or ``edge``.
    FORMAT = "fg-format"
    #: ``fleetgate.dmt.oem.raw.v1``: how many records the body holds, decimal.
    RECORDS = "fg-records"
    #: On a record: the HELLO message of the session that carried it, exactly as the device
    #: sent it, in hex (DMT). With it each record can be forwarded on its own, as the device
    #: would send it (raw TCP forwarding), wherever a consumer starts reading.
    HELLO = "fg-hello"


class RecordSource(StrEnum):
    """How a record reached fleetgate (``TelemetryRecord.source``)."""

    #: The protocol's own binary session over TCP: the device itself, or the OEM Server's raw
    #: TCP connector speaking for it (records written before this field existed).
    TCP = "tcp"
    #: Digital Matter's OEM Server JSON HTTP connector, traditional format.
    OEM_HTTP = "oem_http"
    #: Digital Matter's OEM Server JSON HTTP connector, Edge / LoRa format.
    OEM_HTTP_EDGE = "oem_http_edge"


def record_id(protocol: str, imei: str, sequence: int, device_time: datetime | None) -> str:
    """The stable id of a record: the same for every resend of it, from any ingestor.

    Sequence numbers wrap and restart after a factory reset; the device time tells those
    apart (it is part of the record the device stored, so a resend carries the same).
    """
    when = "-" if device_time is None else str(int(device_time.timestamp()))
    key = f"{protocol}|{imei}|{sequence}|{when}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


class DeviceIdentity(_Model):
    """Who the device says it is (DMT: its HELLO)."""

    imei: str = Field(description="digits, as a string")
    serial: int | None = Field(None, description="the manufacturer's serial number")
    product_id: int | None = Field(None, description="the manufacturer's product code")
    product: str | None = Field(None, description="the product's name where known")
    hardware_revision: int | None = None
    firmware: str | None = Field(None, description='e.g. "1.9"')
    iccid: str | None = Field(None, description="the SIM card's ICCID")


class LogReason(_Model):
    code: int = Field(description="the protocol's reason code")
    name: str | None = Field(None, description="e.g. start_of_trip, heartbeat; None if unknown")


class Position(_Model):
    latitude: float = Field(description="degrees, WGS 84")
    longitude: float = Field(description="degrees, WGS 84")
    altitude_m: float | None = None
    speed_m_s: float | None = Field(None, description="ground speed in m/s")
    heading_deg: float | None = Field(None, description="0-360, clockwise from north")
    accuracy_m: float | None = Field(None, description="estimated position accuracy")
    pdop: float | None = None
    fix_time: datetime | None = Field(None, description="when the GNSS fix was taken")
    valid: bool = Field(description="the device considers the fix valid")


class Measurement(_Model):
    """An analogue value or counter, scaled where its meaning is known."""

    id: int | None = Field(None, description="the protocol's id of the value")
    name: str = Field(description="e.g. battery_voltage, odometer; analogue_<id> if unknown")
    value: float
    unit: str | None = Field(None, description="V, °C, %, CSQ, m, s; None if not known")
    raw: int | None = Field(None, description="the value as sent")


class DebugText(_Model):
    code: int
    text: str


class UnknownField(_Model):
    """A field not decoded (unknown id, or a layout that did not fit), as sent."""

    id: int
    data_hex: str
    problem: str | None = None


class TelemetryRecord(_Model):
    """``fleetgate.records.v1`` (key = IMEI): one record of a telemetry device, decoded."""

    schema_: Literal["record.v1"] = Field("record.v1", alias="schema")
    record_id: str = Field(description="stable across resends: use it to de-duplicate")
    protocol: str = Field(description="source protocol: dmt, ...")
    source: RecordSource = Field(
        RecordSource.TCP,
        description="how the record reached fleetgate: tcp (the protocol's own session), "
        "oem_http or oem_http_edge (the OEM Server's JSON HTTP connector)",
    )
    session_id: str = Field(
        description="the session that received it (the HTTP intake: the request's id)"
    )
    ingestor: str = Field(description="the ingestor instance")
    device: DeviceIdentity
    sequence: int = Field(description="the device's sequence number of the record")
    device_time: datetime | None = Field(None, description="None while the clock is not set")
    received_at: datetime
    log_reason: LogReason
    position: Position | None = None
    ignition: bool | None = None
    inputs: int | None = Field(None, description="digital input bits")
    outputs: int | None = Field(None, description="digital output bits")
    status: int | None = Field(None, description="device status bits")
    driver_id: str | None = None
    trip_type: int | None = None
    trip_trim: int | None = None
    analogues: list[Measurement] = Field(default_factory=list)
    counters: list[Measurement] = Field(
        default_factory=list, description="odometer, run hours, trip distance and duration"
    )
    debug: list[DebugText] = Field(default_factory=list)
    unknown_fields: list[UnknownField] = Field(default_factory=list)

    # What the connector needs of any event it delivers (file events have these as fields).
    @property
    def type(self) -> Literal["record"]:
        """The webhook event type (an endpoint's ``filter.types``)."""
        return "record"

    @property
    def event_id(self) -> str:
        """The webhook id: the record id, the same for every resend of the record."""
        return self.record_id

    @property
    def imei(self) -> str:
        return self.device.imei


class RecordWebhook(_Model):
    """What the connector POSTs for a record: the same Standard Webhooks style envelope as for
    file events, ``type`` ``record``."""

    type: Literal["record"] = "record"
    timestamp: datetime = Field(
        description="when the record was logged (device time; else when it was received): "
        "the same on every retry and replay"
    )
    data: TelemetryRecord


class LastConnection(_Model):
    session_id: str
    ingestor: str
    protocol: str
    peer: str | None = None
    connected_at: datetime


class DeviceStatus(_Model):
    """``fleetgate.devices.v1`` (compacted, key = IMEI): what fleetgate last knew of a device.

    Cameras appear too (protocol ``camera``), with what their sessions tell."""

    schema_: Literal["device.v1"] = Field("device.v1", alias="schema")
    imei: str
    protocols: list[str] = Field(description="protocols the device was seen with")
    last_seen: datetime = Field(description="last session start or record received")
    last_connection: LastConnection | None = None
    serial: int | None = None
    product_id: int | None = None
    product: str | None = Field(None, description="the product's name where known")
    hardware_revision: int | None = None
    firmware: str | None = None
    iccid: str | None = None
    battery_voltage: float | None = Field(None, description="V, from the last record with it")
    supply_voltage: float | None = Field(None, description="V, external power")
    temperature_c: float | None = None
    signal: float | None = Field(None, description="signal strength (DMT: GSM CSQ 0-31)")
    last_position: Position | None = Field(None, description="the last valid position")
    last_record_id: str | None = None
    last_record_time: datetime | None = Field(None, description="device time of that record")
    updated_at: datetime = Field(
        description="when this status was made (the writer's clock), never before the status "
        "it was derived from: of two statuses of a device, the later updated_at is the newer"
    )


def _updated(previous: DeviceStatus | None, at: datetime) -> datetime:
    """A status derived from ``previous`` is never older than it: readers keep the newest by
    ``updated_at`` (ingestors' clocks differ a little)."""
    return at if previous is None else max(at, previous.updated_at)


def _protocols(previous: DeviceStatus | None, protocol: str) -> list[str]:
    known = [] if previous is None else list(previous.protocols)
    return known if protocol in known else [*known, protocol]


def apply_session(
    previous: DeviceStatus | None,
    imei: str,
    connection: LastConnection,
    identity: DeviceIdentity | None = None,
) -> DeviceStatus:
    """The registry entry after a session started (with the identity the device sent).

    Starts from ``previous``, the device's last known status: what this session does not tell
    (position, power, an identity a camera session never sends) carries over; the identity
    fields it does send replace the old ones; ``last_connection`` is this session's.
    """
    base = previous.model_dump() if previous is not None else {}
    at = connection.connected_at
    update = {
        "imei": imei,
        "protocols": _protocols(previous, connection.protocol),
        "last_seen": at if previous is None else max(at, previous.last_seen),
        "last_connection": connection,
        "updated_at": _updated(previous, at),
    }
    if identity is not None:
        update |= identity.model_dump(exclude={"imei"}, exclude_none=True)
    return DeviceStatus.model_validate(base | update)


def rebase(own: DeviceStatus, newest: DeviceStatus) -> DeviceStatus:
    """``newest`` (another writer's status of the device, newer than ``own``) as the base a
    session folds its news into, keeping what ``own`` knows that ``newest`` may not: the
    later-started connection, and the protocols seen. (Two writers that published within
    one read of each other: each took the other's status for the newer.)"""
    update: dict[str, object] = {}
    mine, theirs = own.last_connection, newest.last_connection
    if mine is not None and (theirs is None or mine.connected_at > theirs.connected_at):
        update["last_connection"] = mine
    missing = [p for p in own.protocols if p not in newest.protocols]
    if missing:
        update["protocols"] = [*newest.protocols, *missing]
    return newest.model_copy(update=update) if update else newest


_MEASURED = {
    "battery_voltage": "battery_voltage",
    "supply_voltage": "supply_voltage",
    "temperature": "temperature_c",
    "signal_strength": "signal",
}


def apply_record(previous: DeviceStatus | None, record: TelemetryRecord) -> DeviceStatus:
    """The registry entry after a record: identity, power, temperature, signal, position.

    Records can arrive out of order (a resend of old records): a record older (by device
    time) than the last one applied only refreshes ``last_seen``. A newer record replaces
    the values it carries, ``last_position`` only with a valid fix (else the last one
    stays); it only fills identity fields not known (they are its session's, entered by
    :func:`apply_session`); ``last_connection`` is the session's business and stays.
    """
    base = previous.model_dump() if previous is not None else {}
    update: dict[str, object] = {
        "imei": record.device.imei,
        "protocols": _protocols(previous, record.protocol),
        "last_seen": max(record.received_at, previous.last_seen)
        if previous is not None
        else record.received_at,
        "updated_at": _updated(previous, record.received_at),
    }
    last = previous.last_record_time if previous is not None else None
    newer = last is None or record.device_time is None or record.device_time >= last
    # The identity a record carries is its session's (DMT: the HELLO), which apply_session
    # entered when that session started; a session that started since (on another ingestor,
    # say) told a newer one. A record only fills what is not known.
    for name, value in record.device.model_dump(exclude={"imei"}, exclude_none=True).items():
        if base.get(name) is None:
            update[name] = value
    if newer:
        update |= {"last_record_id": record.record_id, "last_record_time": record.device_time}
        for measurement in record.analogues:
            if measurement.name in _MEASURED:
                update[_MEASURED[measurement.name]] = measurement.value
        if record.position is not None and record.position.valid:
            update["last_position"] = record.position
    return DeviceStatus.model_validate(base | update)
