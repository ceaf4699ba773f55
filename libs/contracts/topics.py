"""Topic names and record layouts: the public Kafka contract, version 1.

Every topic name ends in its major version. A change that could break a consumer gets a new
topic (``...v2``) published next to the old one for a deprecation period; additive changes
(a new optional field, a new event type) stay on the same topic.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["CHUNK_HEADERS", "ChunkHeader", "RecordKind", "Topic"]


class Topic(StrEnum):
    #: Camera session events, JSON (:class:`contracts.sessions.SessionEvent`), key = IMEI.
    SESSIONS = "fleetgate.camera.sessions.v1"
    #: Raw file transfer records, key = transfer id. Kind in header ``fg-kind``:
    #: ``start`` (JSON TransferStart), ``chunk`` (raw file bytes), ``end`` (JSON TransferEnd).
    CHUNKS = "fleetgate.camera.chunks.v1"
    #: Files stored or failed, JSON (:class:`contracts.files.FileEvent`), key = IMEI.
    FILES = "fleetgate.files.v1"


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
