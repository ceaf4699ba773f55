"""Camera metrics. No per-device labels: results and cameras are small fixed sets. The edge's
metrics are labelled by ``protocol``; so are the camera's that a dashboard sets beside other
protocols' (CRC errors, resumes, transfer and durability times)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: This protocol's ``protocol`` label value (its name in the edge's registration table).
PROTOCOL = "camera"

file_bytes = Counter("fleetgate_ingestor_file_bytes_total", "File bytes received with a good CRC")
files = Counter(
    "fleetgate_ingestor_files_total", "Files received whole and durable in Kafka", ["camera"]
)
crc_mismatches = Counter(
    "fleetgate_ingestor_crc_mismatches_total", "DATA packets with a bad CRC", ["protocol"]
)
durable_seconds = Histogram(
    "fleetgate_ingestor_durable_seconds",
    "From a file's last byte to Kafka acknowledging all of it",
    ["protocol"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
transfer_seconds = Histogram(
    "fleetgate_ingestor_transfer_seconds",
    "From START to the file being durable",
    ["protocol"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)

resumes = Counter(
    "fleetgate_ingestor_resumes_total",
    "Transfers resumed from the progress topic: resumed (from the durable offset), complete "
    "(done already, only the last packet resent), lost (the chunk log was reset: restarted), "
    "differs (the device's bytes were another file's: started over under a new id)",
    ["protocol", "result"],
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
claim_seconds = Histogram(
    "fleetgate_ingestor_claim_seconds",
    "From sending a transfer's claim on the progress topic to reading it back (START waits)",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
claims = Counter(
    "fleetgate_ingestor_claims_total",
    "Claims of transfers on the progress topic: won, lost (another session writes it: the "
    "file started over under the next free id, or the session closed), failed (not "
    "acknowledged or read back in time: the session closed)",
    ["result"],
)
refused = Counter(
    "fleetgate_ingestor_transfers_refused_total",
    "Files refused at START: over the camera kind's size limit",
    ["camera"],
)

crc_mismatches.labels(PROTOCOL)
durable_seconds.labels(PROTOCOL)
transfer_seconds.labels(PROTOCOL)
for _result in ("resumed", "complete", "lost", "differs"):
    resumes.labels(PROTOCOL, _result)
for _result in ("won", "lost", "failed"):
    claims.labels(_result)
for _camera in ("dualcam", "dsm", "adas", "dashcam", "unknown"):
    files.labels(_camera)
    refused.labels(_camera)
