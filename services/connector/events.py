"""What the connector delivers: file events (``fleetgate.files.v1``) and telemetry records
(``fleetgate.records.v1``), as one kind of thing to decode, filter and wrap in a webhook.

Both carry ``type`` (``file.stored``, ``file.failed`` or ``record``), ``event_id`` (the
``webhook-id``: stable across retries, replays and, for a record, resends by the device) and
``imei``. A record has no camera or media, so an endpoint that filters on those gets no
records. A :class:`~.batch.RecordBatch` (records of one device in one POST) is one too.

:func:`render` makes the body in the endpoint's ``format``: fleetgate's envelope, or the OEM
Server's JSON (:mod:`.oem`), which carries records only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, overload

import orjson

from contracts import (
    FileEvent,
    FileFailed,
    FileStored,
    StoredFileData,
    Topic,
    WebhookBody,
    decode,
    encode,
)
from contracts.records import RecordWebhook, TelemetryRecord

from .batch import RecordBatch
from .config import Endpoint
from .oem import oem_json
from .presign import Presigner

__all__ = [
    "Deliverable",
    "accepts",
    "decode_event",
    "dynamic_fields",
    "render",
    "source_topics",
    "webhook_body",
]

Event = FileStored | FileFailed | TelemetryRecord
Deliverable = Event | RecordBatch


def decode_event(value: bytes | None) -> Deliverable:
    """A file event or a telemetry record (``schema: record.v1``); ValueError (or a
    pydantic ValidationError, a ValueError) if it is neither."""
    if value is None:
        raise ValueError("no value")
    raw: Any = orjson.loads(value)
    if isinstance(raw, dict) and raw.get("schema") == "record.v1":
        return TelemetryRecord.model_validate(raw)
    if isinstance(raw, dict) and raw.get("schema") == "record-batch.v1":
        return RecordBatch.model_validate(raw)
    event: FileStored | FileFailed = decode(FileEvent, value)
    return event


def accepts(endpoint: Endpoint, event: Deliverable) -> bool:
    """Whether the endpoint's filter (and format) lets ``event`` through."""
    if isinstance(event, TelemetryRecord | RecordBatch):
        return endpoint.accepts(event.type, event.imei, None, None)
    if endpoint.format == "oem":
        return False
    return endpoint.accepts(event.type, event.imei, event.file.camera, event.file.media)


def source_topics(endpoint: Endpoint) -> list[str]:
    """The topics of new events for ``endpoint``: the files, and the records unless its
    filter can never let one through."""
    topics = [] if endpoint.format == "oem" else [str(Topic.FILES)]
    f = endpoint.filter
    if (f.types is None or "record" in f.types) and f.cameras is None and f.media is None:
        topics.append(str(Topic.RECORDS))
    return topics


@overload
def webhook_body(
    event: FileStored | FileFailed, presigner: Presigner, now: datetime | None = None
) -> WebhookBody: ...
@overload
def webhook_body(
    event: TelemetryRecord, presigner: Presigner, now: datetime | None = None
) -> RecordWebhook: ...
@overload
def webhook_body(
    event: Event, presigner: Presigner, now: datetime | None = None
) -> WebhookBody | RecordWebhook: ...
def webhook_body(
    event: Event, presigner: Presigner, now: datetime | None = None
) -> WebhookBody | RecordWebhook:
    """The envelope POSTed for ``event``; a stored file gets a fresh presigned URL."""
    if isinstance(event, TelemetryRecord):
        return RecordWebhook(timestamp=event.device_time or event.received_at, data=event)
    if isinstance(event, FileStored):
        url, expires = presigner.url(event.bucket, event.key, now)
        # The event was validated when decoded: its fields carry over as they are.
        data = StoredFileData.model_construct(
            **dict(event), download_url=url, download_url_expires_at=expires
        )
        return WebhookBody(type=event.type, timestamp=event.stored_at, data=data)
    return WebhookBody(type=event.type, timestamp=event.failed_at, data=event)


def render(endpoint: Endpoint, event: Deliverable, presigner: Presigner) -> bytes:
    """The body POSTed for ``event`` in ``endpoint``'s format; ValueError if none can be made
    (a bucket name S3 refuses, a file event for an OEM-format endpoint)."""
    if endpoint.format == "oem":
        if isinstance(event, RecordBatch):
            return oem_json(event.records)
        if isinstance(event, TelemetryRecord):
            return oem_json([event])
        raise ValueError(f"format 'oem' carries records only, not {event.type}")
    if isinstance(event, RecordBatch):
        raise ValueError("a batch of records has no fleetgate-format body")
    return encode(webhook_body(event, presigner))


def dynamic_fields(event: Deliverable) -> dict[str, str]:
    """The OEM connector's ``[IMEI]``, ``[SERIAL]`` and ``[ICCID]`` of ``event`` ("" when the
    device did not say; a camera's file event has only its IMEI)."""
    device = None
    if isinstance(event, TelemetryRecord):
        device = event.device
    elif isinstance(event, RecordBatch):
        device = event.records[-1].device
    serial = "" if device is None or device.serial is None else str(device.serial)
    iccid = "" if device is None or device.iccid is None else device.iccid
    return {"[IMEI]": event.imei, "[SERIAL]": serial, "[ICCID]": iccid}
