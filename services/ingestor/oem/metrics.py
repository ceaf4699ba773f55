"""OEM JSON intake metrics, labelled by body format and answer (never by device). Records and
bytes received are the edge's ``fleetgate_ingestor_records_total`` and
``fleetgate_ingestor_received_bytes_total`` with ``protocol="dmt_oem"``."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from .. import metrics as edge_metrics

#: The edge metrics' ``protocol`` label of the intake.
PROTOCOL = "dmt_oem"
#: ``format`` label values: the body's format, or ``none`` when it was not decoded.
FORMATS = ("traditional", "edge", "none")
STATUSES = ("200", "400", "401", "413", "503")

requests = Counter(
    "fleetgate_ingestor_oem_requests_total",
    "OEM Server JSON requests answered, by body format and HTTP status",
    ["format", "status"],
)
request_seconds = Histogram(
    "fleetgate_ingestor_oem_request_seconds",
    "From an OEM Server request's arrival to its answer (200: Kafka acknowledged every record)",
    ["format"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


def register() -> None:
    """The series at zero, so dashboards see them before the first request."""
    edge_metrics.received_bytes.labels(PROTOCOL)
    edge_metrics.records.labels(PROTOCOL)
    edge_metrics.kafka_produce_seconds.labels(PROTOCOL)
    edge_metrics.kafka_errors.labels(PROTOCOL)
    for fmt in FORMATS:
        request_seconds.labels(fmt)
        for status in STATUSES:
            requests.labels(fmt, status)
