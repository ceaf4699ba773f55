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
    "Transfers whose spool was freed after transfer_idle_seconds without a record",
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
spool_quota_bytes = Gauge(
    "fleetgate_assembler_spool_quota_bytes", "Bytes the spool may hold (spool_quota_bytes)"
)
spool_paused = Gauge(
    "fleetgate_assembler_spool_paused",
    "1 while consumption waits for room in the spool (quota reached)",
)
spool_full = Counter(
    "fleetgate_assembler_spool_full_total",
    "Times consumption paused because an end record would rebuild a file past the spool quota",
)
spool_set_aside = Counter(
    "fleetgate_assembler_spool_set_aside_total",
    "Chunk records skipped (their transfer's spool freed, read again from Kafka later) because "
    "they would pass the spool quota",
)
S3_OPERATIONS = ("stat", "put", "bucket")
s3_request_seconds = Histogram(
    "fleetgate_assembler_s3_request_seconds",
    "Duration of one S3 call (a put of a large file is one call of several requests)",
    ["operation"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
s3_oldest_request_seconds = Gauge(
    "fleetgate_assembler_s3_oldest_request_seconds",
    "Age of the oldest S3 call in flight (0: none); grows within seconds when S3 hangs",
)
s3_requests_in_flight = Gauge("fleetgate_assembler_s3_requests_in_flight", "S3 calls in flight")
s3_slow_requests = Counter(
    "fleetgate_assembler_s3_slow_requests_total",
    "S3 calls still in flight after s3_slow_seconds (each counted once)",
)
s3_ready = Gauge(
    "fleetgate_assembler_s3_ready",
    "1 when S3 answers (no call in flight for s3_slow_seconds, the last call did not fail)",
)

for _result in RESULTS:
    files.labels(_result)
for _category in FAILURE_CATEGORIES:
    failures.labels(_category)
for _kind in RECORD_KINDS:
    records.labels(_kind)
for _operation in S3_OPERATIONS:
    s3_request_seconds.labels(_operation)
