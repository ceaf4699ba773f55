"""Assembler metrics. No per-device labels: results and failure categories are small fixed sets."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from .state import FAILURE_CATEGORIES

RESULTS = ("stored", "failed", "duplicate")
RECORD_KINDS = ("start", "chunk", "end", "malformed")

files = Counter(
    "fleetgate_assembler_files_total",
    "Files finished, by result (duplicate: an identical object was stored already)",
    ["result"],
)
failures = Counter(
    "fleetgate_assembler_failures_total", "Transfers that could not be stored, by category",
    ["category"],
)  # fmt: skip
file_bytes = Counter("fleetgate_assembler_file_bytes_total", "Bytes of files stored")
records = Counter("fleetgate_assembler_records_total", "Chunk-topic records read", ["kind"])
duplicate_records = Counter(
    "fleetgate_assembler_duplicate_records_total",
    "Chunk records skipped (wholly or partly) because their bytes were held already",
)
ignored_records = Counter(
    "fleetgate_assembler_ignored_records_total",
    "Records of transfers already stored or failed",
)
rewinds = Counter(
    "fleetgate_assembler_rewinds_total",
    "Times a transfer's records were read again from Kafka (state lost or incomplete)",
)
rewind_records = Counter(
    "fleetgate_assembler_rewind_records_total", "Records read again while rewinding"
)
device_crc_mismatches = Counter(
    "fleetgate_assembler_device_crc_mismatches_total",
    "Files whose CRC differs from the one the device announced in START (stored anyway)",
)
expired = Counter(
    "fleetgate_assembler_expired_transfers_total",
    "Transfers dropped after transfer_idle_timeout without a record",
)
s3_upload_seconds = Histogram(
    "fleetgate_assembler_s3_upload_seconds",
    "Time to store one file in S3 (existence check included)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
assembly_seconds = Histogram(
    "fleetgate_assembler_assembly_seconds",
    "From the transfer's START at the ingestor to its file stored in S3 (wall clocks of both)",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 14400),
)
s3_errors = Counter("fleetgate_assembler_s3_errors_total", "Failed S3 attempts (each is retried)")
kafka_errors = Counter(
    "fleetgate_assembler_kafka_errors_total",
    "Failed attempts to produce a files event or to rewind (each is retried)",
)
internal_errors = Counter(
    "fleetgate_assembler_internal_errors_total",
    "Records whose handling raised unexpectedly (a bug; the record is retried, then failed)",
)
uploads_in_progress = Gauge(
    "fleetgate_assembler_uploads_in_progress", "Files being stored in S3 now"
)
transfers_in_progress = Gauge(
    "fleetgate_assembler_transfers_in_progress", "Transfers being assembled on this instance"
)
spool_bytes = Gauge(
    "fleetgate_assembler_spool_bytes", "Bytes of unfinished files held in the spool directory"
)

for _result in RESULTS:
    files.labels(_result)
for _category in FAILURE_CATEGORIES:
    failures.labels(_category)
for _kind in RECORD_KINDS:
    records.labels(_kind)
