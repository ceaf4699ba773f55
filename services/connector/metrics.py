"""Connector metrics. The endpoint name is the only label besides a delivery's result."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RESULTS = ("success", "failure")

deliveries = Counter(
    "fleetgate_connector_deliveries_total",
    "POST attempts by endpoint and result (success = 2xx; failure = anything else)",
    ["endpoint", "result"],
)
delivery_seconds = Histogram(
    "fleetgate_connector_delivery_seconds",
    "Duration of each POST attempt, whatever its result",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
retries = Counter(
    "fleetgate_connector_retries_total",
    "Attempts after an event's first failed attempt",
    ["endpoint"],
)
last_success = Gauge(
    "fleetgate_connector_last_success_timestamp_seconds",
    "Unix time of the endpoint's last 2xx answer",
    ["endpoint"],
)
skipped = Counter(
    "fleetgate_connector_skipped_total",
    "Records that are no webhook: unknown event type or undecodable",
    ["endpoint"],
)


def init(endpoint: str) -> None:
    """Create every series of ``endpoint`` at zero, so dashboards and alerts see it at once."""
    for result in RESULTS:
        deliveries.labels(endpoint, result)
    delivery_seconds.labels(endpoint)
    retries.labels(endpoint)
    last_success.labels(endpoint)
    skipped.labels(endpoint)
