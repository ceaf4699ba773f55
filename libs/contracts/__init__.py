"""fleetgate's public contract: topic names, record layouts and versioned message models.

JSON Schemas generated from these models live in ``libs/contracts/schemas``
(``python -m contracts.schemas --write``); a test fails when they drift.
"""

from .chunks import ChunkHeaderError, ChunkMeta
from .models import (
    CaptureInfo,
    DeadLetter,
    FileEvent,
    FileFailed,
    FileInfo,
    FileStored,
    ReplayOutcome,
    SessionEvent,
    StoredFileData,
    TransferEnd,
    TransferProgress,
    TransferStart,
    WebhookBody,
    decode,
    encode,
    transfer_id,
)
from .topics import (
    CHUNK_HEADERS,
    DEFAULT_RETRY_SCHEDULE,
    TOPIC_CONFIGS,
    ChunkHeader,
    RecordKind,
    RetryHeader,
    Topic,
    retry_topic,
)

__all__ = [
    "CHUNK_HEADERS",
    "DEFAULT_RETRY_SCHEDULE",
    "TOPIC_CONFIGS",
    "CaptureInfo",
    "ChunkHeader",
    "ChunkHeaderError",
    "ChunkMeta",
    "DeadLetter",
    "FileEvent",
    "FileFailed",
    "FileInfo",
    "FileStored",
    "RecordKind",
    "ReplayOutcome",
    "RetryHeader",
    "SessionEvent",
    "StoredFileData",
    "Topic",
    "TransferEnd",
    "TransferProgress",
    "TransferStart",
    "WebhookBody",
    "decode",
    "encode",
    "retry_topic",
    "transfer_id",
]
