"""Assembler settings, from ``FLEETGATE_*`` environment variables."""

from __future__ import annotations

import tempfile
from pathlib import Path

from pydantic import Field

from runtime import S3Settings

MIN_PART_SIZE = 5 * 1024 * 1024  # S3's smallest multipart part (but the last)


#: Defaults of ``max_file_bytes``: a DualCam video is 20 s of 720p H.265, about 6 MB (photos
#: about 50 KB); DSM/ADAS clips are of the same order. 64 MiB leaves a wide margin for longer
#: clips and higher bit rates while bounding what one device can make the spool hold.
DEFAULT_MAX_FILE_BYTES: dict[str, int] = {
    "dualcam": 64 * 1024**2,
    "dsm": 64 * 1024**2,
    "adas": 64 * 1024**2,
    "dashcam": 256 * 1024**2,
    "unknown": 64 * 1024**2,
}


def _default_spool() -> Path:
    return Path(tempfile.gettempdir()) / "fleetgate-assembler"


class AssemblerSettings(S3Settings):
    s3_bucket: str = Field("fleetgate", description="bucket for the files (created if missing)")
    s3_part_size: int = Field(
        8 * 1024 * 1024,
        ge=MIN_PART_SIZE,
        description="files larger than this go up in multipart parts of this size "
        "(memory per upload: about 2 parts)",
    )
    s3_concurrency: int = Field(
        4, ge=1, description="files stored in S3 at once (each holds up to 2 parts in memory)"
    )
    s3_timeout_seconds: float = Field(30.0, description="seconds an S3 request may take")
    s3_retry_max_seconds: float = Field(
        30.0, description="longest pause between retries while S3 (or Kafka) fails"
    )
    spool_dir: Path = Field(
        default_factory=_default_spool,
        description="local directory for files being assembled (one file per transfer)",
    )
    app_id: str = Field("fleetgate-assembler", description="faust app id: the Kafka consumer group")
    transfer_idle_seconds: float = Field(
        120.0,
        ge=0,
        description="seconds a transfer in progress may see no record before its spool is "
        "freed (a device that comes back later resumes: its records are read again from "
        "Kafka, from the start record its fg-origin header names)",
    )
    spool_quota_bytes: int = Field(
        2 * 1024**3,
        gt=0,
        description="bytes the spool may hold across transfers; a chunk that would pass it "
        "sets its transfer aside (spool freed, its records read again from Kafka once there "
        "is room), an end record that would waits (consumption stops) until uploads or idle "
        "expiry free room; nothing is dropped; a transfer alone in the spool always proceeds",
    )
    max_file_bytes: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_MAX_FILE_BYTES),
        description="largest file per camera kind (dualcam, dsm, adas, dashcam, unknown); a "
        "START announcing more fails the transfer (file.failed, category size). JSON object",
    )
    s3_slow_seconds: float = Field(
        5.0,
        gt=0,
        description="an S3 request in flight longer than this is logged (s3_slow) and makes "
        "S3 not ready",
    )
    remember_transfers: int = Field(
        100_000, description="finished transfer ids remembered to ignore their late records"
    )
    drain_timeout_seconds: float = Field(
        10.0, description="seconds SIGTERM lets uploads in progress finish"
    )
    broker_session_timeout_seconds: float = Field(
        10.0, description="Kafka consumer session timeout"
    )
    broker_heartbeat_interval_seconds: float = Field(1.0, description="Kafka heartbeat interval")
    broker_rebalance_timeout_seconds: float = Field(10.0, description="Kafka rebalance timeout")
    broker_commit_interval_seconds: float = Field(1.0, description="seconds between offset commits")
    stream_buffer: int = Field(
        1024,
        ge=16,
        description="records fetched ahead of processing (memory: this many x 64 KiB at most; "
        "256 halved the throughput measured)",
    )
    max_record_bytes: int = Field(
        8 * 1024 * 1024, description="largest Kafka record fetched or produced"
    )
    lag_interval_seconds: float = Field(
        15.0,
        gt=0,
        description="seconds between readings of the consumer lag "
        "(fleetgate_consumer_lag_records), the first one interval after the start",
    )
