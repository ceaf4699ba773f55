"""Edge metrics, labelled by ``protocol`` (never by device): connections, refusals, session
endings, bytes and records received, records produced. A protocol's own metrics live in its
folder."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: Why the edge ends a session; a protocol adds its own to :data:`CLOSE_REASONS` through
#: ``Protocol.close_reasons`` (the camera: ``resume_reset``).
CLOSE_REASONS = (
    "clean",
    "device_closed",
    "protocol_error",
    "idle",
    "kafka_error",
    "shutdown",
    "not_allowed",
)
REFUSE_REASONS = ("max_connections", "max_connections_per_peer", "shutdown", "not_ready")

connections_open = Gauge(
    "fleetgate_ingestor_connections_open", "Device connections open now", ["protocol"]
)
connections = Counter(
    "fleetgate_ingestor_connections_total", "Device connections accepted", ["protocol"]
)
connections_refused = Counter(
    "fleetgate_ingestor_connections_refused_total",
    "Connections closed unserved: max_connections, max_connections_per_peer or shutdown",
    ["protocol", "reason"],
)
sessions_closed = Counter(
    "fleetgate_ingestor_sessions_closed_total", "Sessions ended, by reason", ["protocol", "reason"]
)
received_bytes = Counter(
    "fleetgate_ingestor_received_bytes_total",
    "Bytes read from device connections, whatever they held",
    ["protocol"],
)
records = Counter(
    "fleetgate_ingestor_records_total",
    "Device records received and handed to Kafka (telemetry records; camera files are "
    "fleetgate_ingestor_files_total)",
    ["protocol"],
)
kafka_records = Counter("fleetgate_ingestor_kafka_records_total", "Records produced", ["topic"])
kafka_produce_seconds = Histogram(
    "fleetgate_ingestor_kafka_produce_seconds",
    "From a session handing a record to the producer to Kafka acknowledging it (acks=all); "
    "sampled: the first record of each window of records a session awaits together",
    ["protocol"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
kafka_errors = Counter(
    "fleetgate_ingestor_kafka_errors_total",
    "Records Kafka did not take or did not acknowledge (timed out or refused)",
    ["protocol"],
)

registry_devices = Gauge(
    "fleetgate_ingestor_registry_devices",
    "Devices in this ingestor's view of the device registry (fleetgate.devices.v1)",
)
registry_errors = Counter(
    "fleetgate_ingestor_registry_errors_total",
    "Device registry records that were no device status, and failed reads of its topic",
)


def register(protocol: str, close_reasons: tuple[str, ...] = ()) -> None:
    """Create a protocol's series at zero, so dashboards see them before the first event."""
    connections_open.labels(protocol)
    connections.labels(protocol)
    received_bytes.labels(protocol)
    records.labels(protocol)
    kafka_produce_seconds.labels(protocol)
    kafka_errors.labels(protocol)
    for reason in CLOSE_REASONS + close_reasons:
        sessions_closed.labels(protocol, reason)
    for reason in REFUSE_REASONS:
        connections_refused.labels(protocol, reason)
