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

from .records import TelemetryRecord

__all__ = [
    "CaptureInfo",
    "DeadLetter",
    "FileEvent",
    "FileFailed",
    "FileInfo",
    "FileStored",
    "ReplayOutcome",
    "SessionEvent",
    "StoredFileData",
    "TransferEnd",
    "TransferProgress",
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


class TransferProgress(_Model):
    """``fleetgate.camera.progress.v1`` record (key = transfer id): how far a transfer is
    durable in ``fleetgate.camera.chunks.v1``. Compacted: only the latest per transfer
    matters. Readers keep, per transfer, the complete record, else the furthest one of the
    same ``origin``, else the newest (``updated_at``)."""

    schema_: Literal["transfer.progress.v1"] = Field("transfer.progress.v1", alias="schema")
    transfer_id: str
    imei: str
    identifier: str = Field(description="`%videor`-style DualCam slot or the device's path")
    total: int = Field(
        description="as START announced: bytes (DSM/ADAS) or 1024-byte packets (DualCam)"
    )
    offset: int = Field(
        description="bytes [0, offset) of the file are in acknowledged chunk records; it "
        "stops at the start of the last DATA packet, so it is a valid RESUME point"
    )
    crc: int = Field(description="CRC-16 of bytes [0, offset), as the device chains it")
    origin: int = Field(
        description="Kafka offset, in chunk-topic partition `partition`, of the transfer's "
        "first start record: every durable byte can be read again from there"
    )
    partition: int = Field(description="chunk-topic partition of the transfer's records")
    last_offset: int | None = Field(
        None,
        description="Kafka offset of the last chunk record `offset` counts: a later start "
        "record of the transfer must lie beyond it, or the log was reset",
    )
    check_offset: int | None = Field(
        None,
        description="start of the last DATA packet before `offset`: a resume restarts here, "
        "and the bytes the device resends up to `offset` must give `crc` again (the device "
        "still holds the same file)",
    )
    check_crc: int | None = Field(
        None, description="CRC-16 of bytes [0, check_offset), as the device chains it"
    )
    complete: bool = Field(False, description="every byte and the end record are durable")
    size: int | None = Field(None, description="file size in bytes, once complete")
    file_crc: int | None = Field(None, description="CRC-16 of the whole file, once complete")
    session_id: str = Field(description="the session that made this progress")
    ingestor: str = Field(description="the ingestor instance that published it")
    updated_at: datetime
    claim: Literal["start", "takeover"] | None = Field(
        None,
        description="set on the record a session publishes before it writes the transfer "
        "(its claim to be the one writer): `start` for a transfer it starts or resumes, "
        "`takeover` when it resumes from a point that proves the file while another session "
        "still holds it. In each partition's order, a claim wins when nobody holds the "
        "transfer (none yet, or the last holder's record was complete), when it is a "
        "takeover, when it comes from the holder's own ingestor, or when the holder published "
        "nothing for the claimant's `claim_stale_seconds`; a session writes only after "
        "reading its own claim back as the winner. Absent (older writers): progress",
    )
    stale_seconds: float | None = Field(
        None,
        description="on a claim: the claimant's `claim_stale_seconds`, so that every reader "
        "judges a silent holder the same way",
    )


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
    timestamp: datetime = Field(
        description="when the event happened (stored_at or failed_at), not when it was sent: "
        "the same on every retry and replay"
    )
    data: Annotated[StoredFileData | FileFailed, Field(discriminator="type")]


class DeadLetter(_Model):
    """``fleetgate.connector.deadletter.v1``: an event the connector gave up delivering to one
    endpoint, with why. ``fleetgate connector replay --dead-letters`` delivers it again."""

    schema_: Literal["connector.deadletter.v1"] = Field("connector.deadletter.v1", alias="schema")
    endpoint: str
    event_id: str = Field(description="the event's id, sent as webhook-id on every attempt")
    reason: str = Field(
        description="rejected (a 4xx other than 408/429), expired (still failing at the "
        "maximum age), refused (the destination is a private address), invalid (no webhook "
        "can be made of the event)"
    )
    attempts: int = Field(description="POSTs made (0: none, e.g. refused)")
    first_attempt_at: datetime
    last_attempt_at: datetime | None = None
    last_status: int | None = Field(None, description="HTTP status of the last answer")
    last_error: str | None = None
    dead_lettered_at: datetime
    source: str | None = Field(None, description="topic/partition/offset of the event")
    event: FileStored | FileFailed | TelemetryRecord = Field(
        description="the file event, or the telemetry record (schema record.v1)"
    )
    raw_hex: str | None = Field(
        None,
        description="raw TCP forwarding (format dmt): the record's message exactly as the "
        "device sent it, hex",
    )
    hello_hex: str | None = Field(
        None, description="raw TCP forwarding: the HELLO message it was forwarded with, hex"
    )


class ReplayOutcome(_Model):
    """``fleetgate.connector.replays.v1``: one event that ``fleetgate connector replay`` sent."""

    schema_: Literal["connector.replay.v1"] = Field("connector.replay.v1", alias="schema")
    endpoint: str
    event_id: str
    mode: Literal["dead-letters", "since"]
    delivered: bool
    attempts: int
    status: int | None = None
    error: str | None = None
    replayed_at: datetime
    dead_letter: str | None = Field(None, description="partition/offset of the dead letter")


def transfer_id(
    imei: str,
    identifier: bytes,
    total: int,
    device_crc: int | None,
    captured_ms: int | None,
    nonce: str = "",
    generation: int = 0,
) -> str:
    """Recognise a transfer across reconnects and ingestors.

    The same camera file gives the same id: IMEI, the file's identifier or path, its size or
    packet count, the file CRC the device announces (DSM/ADAS) and the capture time from its
    metadata. Without a capture time two different photos of one DualCam slot could look the
    same, so callers then pass a session-unique ``nonce`` and the transfer is not resumed
    across sessions.

    Two different files can still agree on all of that (a camera whose clock is stuck):
    ``generation`` 1, 2 ... names the second, third ... of them (0, the first, keeps the id
    it always had). The ingestor moves to the next generation when the bytes a device sends
    do not continue the ones Kafka holds, or when another session owns the transfer.
    """
    key = f"{imei}|{identifier.hex()}|{total}|{device_crc}|{captured_ms}|{nonce}"
    if generation:
        key += f"|g{generation}"
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
