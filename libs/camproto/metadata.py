"""FILE METADATA RESPONSE (0x000B) payloads: DualCam, DSM, ADAS and protocol-6 JSON.

Layouts are big-endian. Timestamps are normalised to milliseconds since the Unix epoch (DualCam
sends milliseconds, DSM and ADAS seconds). A payload of a length no known layout has is kept as
:class:`RawMetadata`: metadata is informative, so an unknown layout is never a protocol error.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .files import Camera

__all__ = [
    "ADAS_TRIGGERS",
    "DSM_EVENTS",
    "DSM_TRIGGERS",
    "DUALCAM_TRIGGERS",
    "AdasMetadata",
    "DsmMetadata",
    "DualCamMetadata",
    "JsonMetadata",
    "Metadata",
    "RawMetadata",
    "decode_metadata",
]

DUALCAM_TRIGGERS = (
    "server_request", "din1", "din2", "crash", "towing", "idling", "geofence", "unplug",
    "green_driving", "periodic", "din3", "din4",
)  # fmt: skip
#: ADAS files share the DualCam trigger table (the older test server handled only these two).
ADAS_TRIGGERS = DUALCAM_TRIGGERS
DSM_TRIGGERS = (
    "none", "din1", "din2", "din3", "din4", "crash", "towing", "idling", "geofence", "unplug",
    "green_driving", "server_request", "periodic", "dsm_event", "file_retransmit",
)  # fmt: skip
DSM_EVENTS = (
    "drowsiness", "distraction", "yawning", "phone", "smoking", "driver_absence", "mask",
    "seat_belt", "g_sensor",
)  # fmt: skip
#: ADAS and DSM file-type byte.
ADAS_FILE_TYPES = ("video", "snapshot", "current_snapshot", "retransmitted_snapshot")

_DUALCAM = struct.Struct(">BBQBHBhdd")  # 32 bytes
_U64 = struct.Struct(">Q")
_DSM = struct.Struct(">IBBiiH10s")  # 26 bytes
_ADAS = struct.Struct(">IBBiiB")  # 15 bytes
_DRIVER = 10  # bytes of the DSM driver name
_NAMED_EVENTS = (1 << len(DSM_EVENTS)) - 1


def _name(table: tuple[str, ...], value: int) -> str:
    return table[value] if value < len(table) else f"unknown_{value}"


@dataclass(frozen=True, slots=True, kw_only=True)
class DualCamMetadata:
    """DualCam metadata (32 bytes; 40 with the trigger timestamp of 2024 firmware)."""

    version: int
    file_type: int  # 4 front photo, 8 rear photo, 16 front video, 32 rear video
    timestamp_ms: int
    trigger: int
    duration_s: int
    framerate: int
    timezone_min: int
    latitude: float
    longitude: float
    trigger_timestamp_ms: int | None = None

    camera = Camera.DUALCAM

    @property
    def trigger_name(self) -> str:
        return _name(DUALCAM_TRIGGERS, self.trigger)

    def encode(self) -> bytes:
        body = _DUALCAM.pack(
            self.version, self.file_type, self.timestamp_ms, self.trigger, self.duration_s,
            self.framerate, self.timezone_min, self.latitude, self.longitude,
        )  # fmt: skip
        if self.trigger_timestamp_ms is not None:
            body += _U64.pack(self.trigger_timestamp_ms)
        return body


@dataclass(frozen=True, slots=True, kw_only=True)
class DsmMetadata:
    """DSM metadata (26 bytes). The driver name arrives reversed; it is stored readable.

    ``events`` names bits 0-8 of the event mask; ``unnamed_events`` keeps bits 9-15, which no
    table names yet, as sent (a raw mask); ``events_mask`` is the whole u16.
    """

    timestamp_ms: int
    file_type: int
    trigger: int
    latitude: float
    longitude: float
    events: tuple[str, ...]
    driver_name: str
    unnamed_events: int = 0

    camera = Camera.DSM

    @property
    def trigger_name(self) -> str:
        return _name(DSM_TRIGGERS, self.trigger)

    @property
    def events_mask(self) -> int:
        mask = self.unnamed_events
        for name in self.events:
            mask |= 1 << DSM_EVENTS.index(name)
        return mask

    def encode(self) -> bytes:
        mask = self.events_mask
        # The name is reversed as text (then encoded), as the reference server reads it.
        driver = self.driver_name[::-1].encode("utf-8")
        if len(driver) > _DRIVER:
            driver = driver[:_DRIVER].decode("utf-8", "ignore").encode("utf-8")
        return _DSM.pack(
            self.timestamp_ms // 1000, self.file_type, self.trigger,
            round(self.latitude * 1e6), round(self.longitude * 1e6), mask, driver,
        )  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class AdasMetadata:
    """ADAS metadata (15 bytes); its trigger numbers are DualCam's."""

    timestamp_ms: int
    file_type: int
    trigger: int
    latitude: float
    longitude: float
    duration_s: int

    camera = Camera.ADAS

    @property
    def trigger_name(self) -> str:
        return _name(ADAS_TRIGGERS, self.trigger)

    def encode(self) -> bytes:
        return _ADAS.pack(
            self.timestamp_ms // 1000, self.file_type, self.trigger,
            round(self.latitude * 1e6), round(self.longitude * 1e6), self.duration_s,
        )  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class JsonMetadata:
    """Protocol 6 metadata: a JSON object (seen only in a third-party copy of the test server)."""

    fields: Mapping[str, Any] = field(default_factory=dict)

    camera = Camera.UNKNOWN

    def encode(self) -> bytes:
        return json.dumps(dict(self.fields), separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True, kw_only=True)
class RawMetadata:
    """A metadata payload of no known layout, kept as bytes."""

    payload: bytes

    camera = Camera.UNKNOWN

    def encode(self) -> bytes:
        return self.payload


Metadata = DualCamMetadata | DsmMetadata | AdasMetadata | JsonMetadata | RawMetadata


def _decode_dualcam(payload: bytes) -> DualCamMetadata:
    version, file_type, ts, trigger, duration, fps, tz, lat, lon = _DUALCAM.unpack_from(payload)
    trigger_ts = _U64.unpack_from(payload, 32)[0] if len(payload) >= 40 else None
    return DualCamMetadata(
        version=version, file_type=file_type, timestamp_ms=ts, trigger=trigger,
        duration_s=duration, framerate=fps, timezone_min=tz, latitude=lat, longitude=lon,
        trigger_timestamp_ms=trigger_ts,
    )  # fmt: skip


def _decode_dsm(payload: bytes) -> DsmMetadata:
    ts, file_type, trigger, lat, lon, mask, driver = _DSM.unpack(payload)
    return DsmMetadata(
        timestamp_ms=ts * 1000, file_type=file_type, trigger=trigger,
        latitude=lat / 1e6, longitude=lon / 1e6,
        events=tuple(name for bit, name in enumerate(DSM_EVENTS) if mask >> bit & 1),
        unnamed_events=mask & ~_NAMED_EVENTS,
        # Decoded first, then reversed as text (the reference server's order): a multi-byte
        # UTF-8 name survives; reversing the bytes first would tear its characters apart.
        driver_name=driver.decode("utf-8", "replace")[::-1].strip("\0 "),
    )  # fmt: skip


def _decode_adas(payload: bytes) -> AdasMetadata:
    ts, file_type, trigger, lat, lon, duration = _ADAS.unpack(payload)
    return AdasMetadata(
        timestamp_ms=ts * 1000, file_type=file_type, trigger=trigger,
        latitude=lat / 1e6, longitude=lon / 1e6, duration_s=duration,
    )  # fmt: skip


def decode_metadata(payload: bytes, camera: Camera, protocol: int) -> Metadata:
    """Decode a 0x000B payload for a file of ``camera``, sent under ``protocol``."""
    if protocol >= 6 and payload[:1] == b"{":
        try:
            fields = json.loads(payload)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the stack
            return RawMetadata(payload=payload)
        return (
            JsonMetadata(fields=fields)
            if isinstance(fields, dict)
            else RawMetadata(payload=payload)
        )
    size = len(payload)
    if size in (32, 40) and camera in (Camera.DUALCAM, Camera.UNKNOWN):
        return _decode_dualcam(payload)
    if size == _DSM.size and camera in (Camera.DSM, Camera.UNKNOWN):
        return _decode_dsm(payload)
    if size == _ADAS.size and camera in (Camera.ADAS, Camera.UNKNOWN):
        return _decode_adas(payload)
    return RawMetadata(payload=payload)
