"""Versioned JSON message models of the Kafka topics and the webhook body.

Consumers should ignore fields they do not know: new optional fields are added without a new
topic version. IMEIs are strings of digits (JSON numbers would lose leading zeros).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

__all__ = [
    "CaptureInfo",
    "FileEvent",
    "FileFailed",
    "FileInfo",
    "FileStored",
    "SessionEvent",
    "StoredFileData",
    "TransferEnd",
    "TransferStart",
    "WebhookBody",
    "decode",
    "encode",
    "transfer_id",
]

Camera = Literal["dualcam", "dsm", "adas", "dashcam", "unknown"]
Media = Literal["photo", "video", "unknown"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class FileInfo(_Model):
    """A file as the camera names it."""

    identifier: str = Field(description="`%photof`-style DualCam slot or the device's path")
    slot: str | None = Field(None, description="DualCam slot: photo_front, video_rear, ...")
    camera: Camera
    media: Media


class CaptureInfo(_Model):
    """What the camera's metadata (0x000B) says about the file, normalised across cameras."""

    captured_at: datetime | None = None
    trigger: str | None = Field(None, description="e.g. din1, crash, periodic, dsm_event")
    latitude: float | None = None
    longitude: float | None = None
    duration_s: int | None = None
    framerate: int | None = None
    timezone_min: int | None = None
    dsm_events: list[str] = Field(default_factory=list, description="DSM events by name")
    driver_name: str | None = None
    file_type: int | None = Field(None, description="the metadata's raw file-type byte")
    raw: dict[str, Any] | None = Field(None, description="protocol 6 JSON metadata as sent")


class TransferStart(_Model):
    """``fleetgate.camera.chunks.v1`` record of kind ``start``: a device began (or resumed)
    sending a file."""

    schema_: Literal["transfer.start.v1"] = Field("transfer.start.v1", alias="schema")
    transfer_id: str
    session_id: str
    imei: str
    file: FileInfo
    capture: CaptureInfo | None = None
    size: int | None = Field(None, description="bytes (DSM/ADAS); None for DualCam")
    packets: int | None = Field(None, description="1024-byte packets (DualCam)")
    device_crc: int | None = Field(None, description="whole-file CRC-16 announced in START")
    resume_offset: int = 0
    started_at: datetime


class TransferEnd(_Model):
    """``fleetgate.camera.chunks.v1`` record of kind ``end``: every byte was sent."""

    schema_: Literal["transfer.end.v1"] = Field("transfer.end.v1", alias="schema")
    transfer_id: str
    session_id: str
    imei: str
    size: int
    file_crc: int
    device_crc_ok: bool | None = None
    ended_at: datetime


class _SessionBase(_Model):
    session_id: str
    ingestor: str = Field(description="the ingestor instance that holds the session")
    imei: str | None = None
    at: datetime


class Connected(_SessionBase):
    type: Literal["connected"] = "connected"
    peer: str


class SessionStarted(_SessionBase):
    type: Literal["session_started"] = "session_started"
    protocol: int
    settings: int
    offered: list[FileInfo]
    path_file_ready: bool


class FileOffered(_SessionBase):
    type: Literal["file_offered"] = "file_offered"
    file: FileInfo


class MetadataReceived(_SessionBase):
    type: Literal["metadata"] = "metadata"
    file: FileInfo
    capture: CaptureInfo


class TransferStarted(_SessionBase):
    type: Literal["transfer_started"] = "transfer_started"
    transfer_id: str
    file: FileInfo
    size: int | None = None
    packets: int | None = None
    resume_offset: int = 0


class CrcMismatch(_SessionBase):
    type: Literal["crc_mismatch"] = "crc_mismatch"
    transfer_id: str
    offset: int
    expected: int
    received: int


class TransferComplete(_SessionBase):
    type: Literal["transfer_complete"] = "transfer_complete"
    transfer_id: str
    size: int
    file_crc: int
    device_crc_ok: bool | None = None
    durable_seconds: float = Field(description="from the last byte to Kafka's acknowledgement")


class Closed(_SessionBase):
    type: Literal["closed"] = "closed"
    reason: str
    clean: bool
    bytes_received: int
    duration_seconds: float


SessionEvent = Annotated[
    Connected
    | SessionStarted
    | FileOffered
    | MetadataReceived
    | TransferStarted
    | CrcMismatch
    | TransferComplete
    | Closed,
    Field(discriminator="type"),
]


class _FileEventBase(_Model):
    event_id: str = Field(description="stable across redeliveries: use it to de-duplicate")
    transfer_id: str
    imei: str
    file: FileInfo
    capture: CaptureInfo | None = None
    started_at: datetime


class FileStored(_FileEventBase):
    """A file verified and stored in object storage."""

    type: Literal["file.stored"] = "file.stored"
    size: int
    sha256: str
    crc16: int = Field(description="CRC-16 of the whole file, as the device computes it")
    bucket: str
    key: str
    content_type: str
    stored_at: datetime


class FileFailed(_FileEventBase):
    """A transfer that could not be stored; ``reason`` says why."""

    type: Literal["file.failed"] = "file.failed"
    reason: str
    failed_at: datetime


FileEvent = Annotated[FileStored | FileFailed, Field(discriminator="type")]


class StoredFileData(FileStored):
    """A stored file as a webhook carries it: the event plus a presigned download URL."""

    download_url: str = Field(description="presigned GET URL of the object")
    download_url_expires_at: datetime


class WebhookBody(_Model):
    """What the connector POSTs: a Standard Webhooks style envelope around a file event."""

    type: Literal["file.stored", "file.failed"]
    timestamp: datetime
    data: Annotated[StoredFileData | FileFailed, Field(discriminator="type")]


def transfer_id(
    imei: str,
    identifier: bytes,
    total: int,
    device_crc: int | None,
    captured_ms: int | None,
    nonce: str = "",
) -> str:
    """Recognise a transfer across reconnects and ingestors.

    The same camera file gives the same id: IMEI, the file's identifier or path, its size or
    packet count, the file CRC the device announces (DSM/ADAS) and the capture time from its
    metadata. Without a capture time two different photos of one DualCam slot could look the
    same, so callers then pass a session-unique ``nonce`` and the transfer is not resumed
    across sessions.
    """
    key = f"{imei}|{identifier.hex()}|{total}|{device_crc}|{captured_ms}|{nonce}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def encode(model: BaseModel) -> bytes:
    return orjson.dumps(model.model_dump(mode="json", by_alias=True, exclude_none=False))


_ADAPTERS: dict[Any, TypeAdapter[Any]] = {}


def decode(kind: Any, data: bytes) -> Any:
    """Parse ``data`` as ``kind`` (a model or an annotated union such as ``SessionEvent``)."""
    adapter = _ADAPTERS.get(kind)
    if adapter is None:
        adapter = _ADAPTERS[kind] = TypeAdapter(kind)
    return adapter.validate_json(data)
