"""Connector metrics. The endpoint name is the only label besides a delivery's result."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: success: 2xx; failure: worth retrying (no answer, 5xx, 408, 429, 3xx); rejected: another
#: 4xx (dead letter at once); refused: not sent, the destination is a private address.
RESULTS = ("success", "failure", "rejected", "refused")

deliveries = Counter(
    "fleetgate_connector_deliveries_total",
    "POST attempts by endpoint and result (success = 2xx, failure = to be retried, "
    "rejected = 4xx other than 408/429, refused = private destination, not sent)",
    ["endpoint", "result"],
)
delivery_seconds = Histogram(
    "fleetgate_connector_delivery_seconds",
    "Duration of each POST attempt, whatever its result",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
delivered_age_seconds = Histogram(
    "fleetgate_connector_delivered_age_seconds",
    "From the event's arrival in fleetgate.files.v1 to the endpoint's 2xx, retries included",
    ["endpoint"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400),
)
retries = Counter(
    "fleetgate_connector_retries_total",
    "Events put in a retry topic (each later retry counts again)",
    ["endpoint"],
)
dead_letters = Counter(
    "fleetgate_connector_dead_letters_total",
    "Events given up on and written to fleetgate.connector.deadletter.v1",
    ["endpoint"],
)
backlog = Gauge(
    "fleetgate_connector_backlog",
    "Events of the endpoint waiting in the retry topics (as this process knows them)",
    ["endpoint"],
)
circuit_state = Gauge(
    "fleetgate_connector_circuit_state",
    "The endpoint's circuit breaker: 0 closed, 1 half-open (probing), 2 open",
    ["endpoint"],
)
last_success = Gauge(
    "fleetgate_connector_last_success_timestamp_seconds",
    "Unix time of the endpoint's last 2xx answer",
    ["endpoint"],
)
filtered = Counter(
    "fleetgate_connector_filtered_total",
    "Events the endpoint's filter left out (not sent)",
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
    for metric in (
        delivery_seconds,
        delivered_age_seconds,
        retries,
        dead_letters,
        backlog,
        circuit_state,
        last_success,
        filtered,
        skipped,
    ):
        metric.labels(endpoint)
