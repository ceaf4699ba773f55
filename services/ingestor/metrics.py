"""Ingestor metrics. No per-device labels: reasons and cameras are small fixed sets."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CLOSE_REASONS = (
    "clean",
    "device_closed",
    "protocol_error",
    "idle",
    "kafka_error",
    "shutdown",
    "not_allowed",
    "resume_reset",
)
REFUSE_REASONS = ("max_connections", "max_connections_per_peer", "shutdown")

connections_open = Gauge("fleetgate_ingestor_connections_open", "Device connections open now")
connections = Counter("fleetgate_ingestor_connections_total", "Device connections accepted")
connections_refused = Counter(
    "fleetgate_ingestor_connections_refused_total",
    "Connections closed unserved: max_connections, max_connections_per_peer or shutdown",
    ["reason"],
)
sessions_closed = Counter(
    "fleetgate_ingestor_sessions_closed_total", "Sessions ended, by reason", ["reason"]
)
file_bytes = Counter("fleetgate_ingestor_file_bytes_total", "File bytes received with a good CRC")
files = Counter(
    "fleetgate_ingestor_files_total", "Files received whole and durable in Kafka", ["camera"]
)
crc_mismatches = Counter("fleetgate_ingestor_crc_mismatches_total", "DATA packets with a bad CRC")
kafka_records = Counter("fleetgate_ingestor_kafka_records_total", "Records produced", ["topic"])
durable_seconds = Histogram(
    "fleetgate_ingestor_durable_seconds",
    "From a file's last byte to Kafka acknowledging all of it",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
transfer_seconds = Histogram(
    "fleetgate_ingestor_transfer_seconds",
    "From START to the file being durable",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)

resumes = Counter(
    "fleetgate_ingestor_resumes_total",
    "Transfers resumed from the progress topic: resumed (from the durable offset), complete "
    "(done already, only the last packet resent), lost (the chunk log was reset: restarted)",
    ["result"],
)
resumed_bytes = Counter(
    "fleetgate_ingestor_resumed_bytes_total", "File bytes devices did not resend thanks to resumes"
)
progress_entries = Gauge(
    "fleetgate_ingestor_progress_transfers", "Transfers known from the progress topic"
)
progress_errors = Counter(
    "fleetgate_ingestor_progress_errors_total",
    "Progress records not sent, not acknowledged, malformed, or failed reads",
)

for _reason in CLOSE_REASONS:
    sessions_closed.labels(_reason)
for _reason in REFUSE_REASONS:
    connections_refused.labels(_reason)
for _result in ("resumed", "complete", "lost"):
    resumes.labels(_result)
for _camera in ("dualcam", "dsm", "adas", "dashcam", "unknown"):
    files.labels(_camera)
