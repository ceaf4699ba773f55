"""What the connector delivers: file events (``fleetgate.files.v1``) and telemetry records
(``fleetgate.records.v1``), as one kind of thing to decode, filter and wrap in a webhook.

Both carry ``type`` (``file.stored``, ``file.failed`` or ``record``), ``event_id`` (the
``webhook-id``: stable across retries, replays and, for a record, resends by the device) and
``imei``. A record has no camera or media, so an endpoint that filters on those gets no
records.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, overload

import orjson

from contracts import FileEvent, FileFailed, FileStored, StoredFileData, Topic, WebhookBody, decode
from contracts.records import RecordWebhook, TelemetryRecord

from .config import Endpoint
from .presign import Presigner

__all__ = ["Deliverable", "accepts", "decode_event", "source_topics", "webhook_body"]

Deliverable = FileStored | FileFailed | TelemetryRecord


def decode_event(value: bytes | None) -> Deliverable:
    """A file event or a telemetry record (``schema: record.v1``); ValueError (or a
    pydantic ValidationError, a ValueError) if it is neither."""
    if value is None:
        raise ValueError("no value")
    raw: Any = orjson.loads(value)
    if isinstance(raw, dict) and raw.get("schema") == "record.v1":
        return TelemetryRecord.model_validate(raw)
    event: FileStored | FileFailed = decode(FileEvent, value)
    return event


def accepts(endpoint: Endpoint, event: Deliverable) -> bool:
    """Whether the endpoint's filter lets ``event`` through."""
    if isinstance(event, TelemetryRecord):
        return endpoint.accepts(event.type, event.imei, None, None)
    return endpoint.accepts(event.type, event.imei, event.file.camera, event.file.media)


def source_topics(endpoint: Endpoint) -> list[str]:
    """The topics of new events for ``endpoint``: the files, and the records unless its
    filter can never let one through."""
    topics = [str(Topic.FILES)]
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
    event: Deliverable, presigner: Presigner, now: datetime | None = None
) -> WebhookBody | RecordWebhook: ...
def webhook_body(
    event: Deliverable, presigner: Presigner, now: datetime | None = None
) -> WebhookBody | RecordWebhook:
    """The envelope POSTed for ``event``; a stored file gets a fresh presigned URL."""
    if isinstance(event, TelemetryRecord):
        return RecordWebhook(timestamp=event.device_time or event.received_at, data=event)
    if isinstance(event, FileStored):
        url, expires = presigner.url(event.bucket, event.key, now)
        data = StoredFileData.model_validate(
            {**event.model_dump(), "download_url": url, "download_url_expires_at": expires}
        )
        return WebhookBody(type=event.type, timestamp=event.stored_at, data=data)
    return WebhookBody(type=event.type, timestamp=event.failed_at, data=event)
