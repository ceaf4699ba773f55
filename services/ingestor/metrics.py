"""Ingestor metrics. No per-device labels: reasons and cameras are small fixed sets."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CLOSE_REASONS = ("clean", "device_closed", "protocol_error", "idle", "kafka_error", "shutdown")

connections_open = Gauge("fleetgate_ingestor_connections_open", "Device connections open now")
connections = Counter("fleetgate_ingestor_connections_total", "Device connections accepted")
connections_refused = Counter(
    "fleetgate_ingestor_connections_refused_total", "Connections refused at max_connections"
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

for _reason in CLOSE_REASONS:
    sessions_closed.labels(_reason)
for _camera in ("dualcam", "dsm", "adas", "dashcam", "unknown"):
    files.labels(_camera)
