"""fleetgate's public contract: topic names, record layouts and versioned message models.

JSON Schemas generated from these models live in ``libs/contracts/schemas``
(``python -m contracts.schemas --write``); a test fails when they drift.
"""

from .models import (
    CaptureInfo,
    FileEvent,
    FileFailed,
    FileInfo,
    FileStored,
    SessionEvent,
    StoredFileData,
    TransferEnd,
    TransferStart,
    WebhookBody,
    decode,
    encode,
    transfer_id,
)
from .topics import CHUNK_HEADERS, ChunkHeader, RecordKind, Topic

__all__ = [
    "CHUNK_HEADERS",
    "CaptureInfo",
    "ChunkHeader",
    "FileEvent",
    "FileFailed",
    "FileInfo",
    "FileStored",
    "RecordKind",
    "SessionEvent",
    "StoredFileData",
    "Topic",
    "TransferEnd",
    "TransferStart",
    "WebhookBody",
    "decode",
    "encode",
    "transfer_id",
]
