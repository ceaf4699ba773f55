"""Topic names and record layouts: the public Kafka contract, version 1.

Every topic name ends in its major version. A change that could break a consumer gets a new
topic (``...v2``) published next to the old one for a deprecation period; additive changes
(a new optional field, a new event type) stay on the same topic.

Transfer progress
-----------------
Each ingestor publishes, on ``fleetgate.camera.progress.v1`` (key = transfer id), how far a
camera transfer is durable in ``fleetgate.camera.chunks.v1``: every byte of the file in
``[0, offset)`` is in chunk records Kafka acknowledged (``acks=all``), ``crc`` is the CRC-16 of
those bytes, and ``origin`` is the Kafka offset, in partition ``partition`` of the chunk
topic, of the transfer's first ``start`` record, from which all those bytes can be read
again. A record is published after each chunk record is acknowledged, and one with
``complete`` set after the ``end`` record is. ``offset`` stops at the start of the file's last
DATA packet (a RESUME must point inside the file, and DualCam offsets stay multiples of
1024). Every ingestor reads the whole topic at start and follows it, so a device that
reconnects to any of them resumes from the last durable offset instead of from zero; a reader
keeps, per transfer, the complete record, else the furthest one of the same ``origin``, else
the newest. Records may repeat, come late or go missing: a resume from an older offset only
makes the device resend bytes that consumers already drop as duplicates.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "CHUNK_HEADERS",
    "DEFAULT_RETRY_SCHEDULE",
    "TOPIC_CONFIGS",
    "ChunkHeader",
    "RecordKind",
    "RetryHeader",
    "Topic",
    "retry_topic",
]


class Topic(StrEnum):
    #: Camera session events, JSON (:class:`contracts.sessions.SessionEvent`), key = IMEI.
    SESSIONS = "fleetgate.camera.sessions.v1"
    #: Raw file transfer records, key = transfer id. Kind in header ``fg-kind``:
    #: ``start`` (JSON TransferStart), ``chunk`` (raw file bytes), ``end`` (JSON TransferEnd).
    CHUNKS = "fleetgate.camera.chunks.v1"
    #: Files stored or failed, JSON (:class:`contracts.files.FileEvent`), key = IMEI.
    FILES = "fleetgate.files.v1"
    #: How far each camera transfer is durable, JSON (:class:`contracts.TransferProgress`),
    #: key = transfer id; compacted (:data:`TOPIC_CONFIGS`). See "Transfer progress" above.
    PROGRESS = "fleetgate.camera.progress.v1"
    #: Webhooks the connector gave up on, JSON (:class:`contracts.models.DeadLetter`),
    #: key = endpoint name.
    DEADLETTER = "fleetgate.connector.deadletter.v1"
    #: What ``fleetgate connector replay`` delivered or not, JSON
    #: (:class:`contracts.models.ReplayOutcome`), key = endpoint name.
    REPLAYS = "fleetgate.connector.replays.v1"
    #: Decoded telemetry records of every telemetry protocol, JSON
    #: (:class:`contracts.records.TelemetryRecord`), key = IMEI.
    RECORDS = "fleetgate.records.v1"
    #: Digital Matter messages exactly as the device sent them (HELLO, and each record as a
    #: complete message), key = IMEI; headers :class:`contracts.records.RawHeader`.
    DMT_RAW = "fleetgate.dmt.raw.v1"
    #: The device registry, JSON (:class:`contracts.records.DeviceStatus`), key = IMEI;
    #: compacted (:data:`TOPIC_CONFIGS`).
    DEVICES = "fleetgate.devices.v1"
    #: Digital Matter session events, JSON (:data:`contracts.dmt.DmtSessionEvent`: connected,
    #: hello, closed), key = IMEI (the session id before the HELLO). One topic per protocol:
    #: the events say what only that protocol knows; what every protocol shares about a
    #: device is in the registry (``fleetgate.devices.v1``).
    DMT_SESSIONS = "fleetgate.dmt.sessions.v1"
    #: Bodies the OEM Server's JSON HTTP connector posted to the ingestor, exactly as received
    #: (JSON, either format), key = IMEI; headers :class:`contracts.records.RawHeader`
    #: (``fg-session`` = the request's id, ``fg-format``, ``fg-records``...). Only bodies that
    #: decoded; their records are on ``fleetgate.records.v1``.
    DMT_OEM_RAW = "fleetgate.dmt.oem.raw.v1"


class RecordKind(StrEnum):
    START = "start"
    CHUNK = "chunk"
    END = "end"


class ChunkHeader(StrEnum):
    """Kafka headers on ``fleetgate.camera.chunks.v1`` records (values are ASCII)."""

    #: ``start`` | ``chunk`` | ``end``.
    KIND = "fg-kind"
    #: Transfer id (also the record key).
    TRANSFER = "fg-transfer"
    #: Offset in the file of the chunk's first byte (chunk records).
    OFFSET = "fg-offset"
    #: CRC-16 the device chained this chunk from: the previous packet's, or 0 after a restart.
    CRC_INIT = "fg-crc-init"
    #: The CRC field of the chunk's last packet: crc16(data, crc-init).
    CRC = "fg-crc"
    #: CRC-16 of the whole file from byte 0 to the end of this chunk.
    FILE_CRC = "fg-file-crc"
    #: Kafka offset (same partition) of the ``start`` record from which every byte of this
    #: transfer can be read again: a consumer that lost its state rewinds there.
    ORIGIN = "fg-origin"


CHUNK_HEADERS = tuple(ChunkHeader)

#: Topic configuration that is part of the contract (create the topics with it). The progress
#: topic needs only each transfer's latest record: compacted, and deleted after 7 days (a
#: transfer left longer than the chunk topic's retention cannot be resumed anyway). The device
#: registry keeps each device's latest status for as long as the device exists: compacted.
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    Topic.PROGRESS: {"cleanup.policy": "compact,delete", "retention.ms": str(7 * 24 * 3600 * 1000)},
    Topic.DEVICES: {"cleanup.policy": "compact"},
}


#: The connector's default retry schedule, in seconds after the failed attempt. The last step
#: repeats until the maximum age. Each step has its own topic, see :func:`retry_topic`.
DEFAULT_RETRY_SCHEDULE: tuple[float, ...] = (5, 30, 120, 600, 1800, 3600)


def retry_topic(delay_seconds: float) -> str:
    """The connector's retry topic of one schedule step, e.g. ``fleetgate.connector.retry.5s.v1``.

    Every record in it waits the same delay, so due times grow with the offset. Value = the
    original ``fleetgate.files.v1`` event, unchanged; key = ``{endpoint}/{imei}``; the retry
    state is in the :class:`RetryHeader` headers. The name spells the delay in the largest
    whole unit: ``200ms``, ``5s``, ``90s``, ``2m``, ``1h``, ``36h``.
    """
    millis = round(delay_seconds * 1000)
    if millis <= 0 or abs(millis - delay_seconds * 1000) > 1e-6:
        raise ValueError(f"a retry delay must be a positive whole number of ms: {delay_seconds}")
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if millis % size == 0:
            return f"fleetgate.connector.retry.{millis // size}{unit}.v1"
    return f"fleetgate.connector.retry.{millis}ms.v1"


class RetryHeader(StrEnum):
    """Kafka headers on the connector's retry records (values are ASCII, times in unix ms)."""

    #: The endpoint the record waits for (its consumer group is the only one that acts on it).
    ENDPOINT = "fg-endpoint"
    #: POSTs made so far (0 when the endpoint's circuit was open at the first try).
    ATTEMPTS = "fg-attempts"
    #: When the connector first handled the event for this endpoint.
    FIRST_ATTEMPT = "fg-first-attempt"
    #: Not to be attempted before this time (the step's delay with jitter, or Retry-After).
    DUE = "fg-due"
    #: HTTP status of the last attempt; absent when there was no answer.
    LAST_STATUS = "fg-last-status"
    #: Why the last attempt failed (UTF-8, at most 500 bytes).
    LAST_ERROR = "fg-last-error"
    #: When the last attempt was made.
    LAST_ATTEMPT = "fg-last-attempt"
    #: ``topic/partition/offset`` of the event in ``fleetgate.files.v1``.
    SOURCE = "fg-source"
    #: Kafka timestamp of the event in ``fleetgate.files.v1``.
    SOURCE_TIME = "fg-source-time"
    #: Which connector process queued the record (for its backlog gauge).
    QUEUED_BY = "fg-queued-by"
