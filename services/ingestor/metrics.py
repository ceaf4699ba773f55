"""Ingestor metrics. No per-device labels: reasons and cameras are small fixed sets.

Every edge metric carries a ``protocol`` label (the device protocol of the listener). The
families are defined with it; the module-level names below are views bound to the camera
protocol, the one protocol the ingestor hosts today, so call sites keep ``.inc()`` and
``.labels(reason)``. Another protocol takes its own view with :func:`bound`.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from prometheus_client import Counter, Gauge, Histogram

M = TypeVar("M", Counter, Gauge, Histogram)

#: The ``protocol`` label of the Teltonika camera file-transfer protocol.
CAMERA = "camera"

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
REFUSE_REASONS = ("max_connections", "max_connections_per_peer", "shutdown", "not_ready")


class Bound(Generic[M]):
    """A metric family with its ``protocol`` label filled in: ``labels()`` takes the rest."""

    def __init__(self, family: M, protocol: str) -> None:
        self.family: M = family
        self.protocol = protocol

    def labels(self, *values: str) -> M:
        child: M = self.family.labels(self.protocol, *values)
        return child


def bound(family: M, protocol: str) -> Any:
    """``family`` for ``protocol``: the child itself when ``protocol`` is its only label."""
    if family._labelnames == ("protocol",):
        return family.labels(protocol)
    return Bound(family, protocol)


def _edge(kind: type[M], name: str, doc: str, labels: tuple[str, ...] = (), **kw: Any) -> M:
    return kind(name, doc, ["protocol", *labels], **kw)


# --- families (labelled by protocol) ---------------------------------------------------------

connections_open_family = _edge(
    Gauge, "fleetgate_ingestor_connections_open", "Device connections open now"
)
connections_family = _edge(
    Counter, "fleetgate_ingestor_connections_total", "Device connections accepted"
)
connections_refused_family = _edge(
    Counter,
    "fleetgate_ingestor_connections_refused_total",
    "Connections closed unserved: max_connections, max_connections_per_peer, shutdown, or "
    "not_ready (Kafka unreachable)",
    ("reason",),
)
sessions_closed_family = _edge(
    Counter, "fleetgate_ingestor_sessions_closed_total", "Sessions ended, by reason", ("reason",)
)
file_bytes_family = _edge(
    Counter, "fleetgate_ingestor_file_bytes_total", "File bytes received with a good CRC"
)
files_family = _edge(
    Counter,
    "fleetgate_ingestor_files_total",
    "Files received whole and durable in Kafka",
    ("camera",),
)
crc_mismatches_family = _edge(
    Counter, "fleetgate_ingestor_crc_mismatches_total", "DATA packets with a bad CRC"
)
kafka_records_family = _edge(
    Counter, "fleetgate_ingestor_kafka_records_total", "Records produced", ("topic",)
)
kafka_produce_seconds_family = _edge(
    Histogram,
    "fleetgate_ingestor_kafka_produce_seconds",
    "From handing a record to the producer to Kafka acknowledging it (acks=all)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
kafka_errors_family = _edge(
    Counter,
    "fleetgate_ingestor_kafka_errors_total",
    "Records Kafka did not acknowledge (timed out or refused)",
)
durable_seconds_family = _edge(
    Histogram,
    "fleetgate_ingestor_durable_seconds",
    "From a file's last byte to Kafka acknowledging all of it",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
transfer_seconds_family = _edge(
    Histogram,
    "fleetgate_ingestor_transfer_seconds",
    "From START to the file being durable",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
resumes_family = _edge(
    Counter,
    "fleetgate_ingestor_resumes_total",
    "Transfers resumed from the progress topic: resumed (from the durable offset), complete "
    "(done already, only the last packet resent), lost (the chunk log was reset: restarted)",
    ("result",),
)
resumed_bytes_family = _edge(
    Counter,
    "fleetgate_ingestor_resumed_bytes_total",
    "File bytes devices did not resend thanks to resumes",
)

# Process-wide, not per protocol.
progress_entries = Gauge(
    "fleetgate_ingestor_progress_transfers", "Transfers known from the progress topic"
)
progress_errors = Counter(
    "fleetgate_ingestor_progress_errors_total",
    "Progress records not sent, not acknowledged, malformed, or failed reads",
)

# --- the camera protocol's views (what the call sites use) ------------------------------------

connections_open = bound(connections_open_family, CAMERA)
connections = bound(connections_family, CAMERA)
connections_refused = bound(connections_refused_family, CAMERA)
sessions_closed = bound(sessions_closed_family, CAMERA)
file_bytes = bound(file_bytes_family, CAMERA)
files = bound(files_family, CAMERA)
crc_mismatches = bound(crc_mismatches_family, CAMERA)
kafka_records = bound(kafka_records_family, CAMERA)
kafka_produce_seconds = bound(kafka_produce_seconds_family, CAMERA)
kafka_errors = bound(kafka_errors_family, CAMERA)
durable_seconds = bound(durable_seconds_family, CAMERA)
transfer_seconds = bound(transfer_seconds_family, CAMERA)
resumes = bound(resumes_family, CAMERA)
resumed_bytes = bound(resumed_bytes_family, CAMERA)

# Every series at zero from start-up, so dashboards and alerts see it at once.
for _reason in CLOSE_REASONS:
    sessions_closed.labels(_reason)
for _reason in REFUSE_REASONS:
    connections_refused.labels(_reason)
for _result in ("resumed", "complete", "lost"):
    resumes.labels(_result)
for _camera in ("dualcam", "dsm", "adas", "dashcam", "unknown"):
    files.labels(_camera)
