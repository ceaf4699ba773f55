"""Raw TCP forwarding metrics; the endpoint is the only label besides a session's result.

The connector's own series (retries, dead letters, circuit state, last success, filtered,
skipped) count for a forwarding endpoint too.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: success: everything of the session committed; failure: the session ended first (no
#: connection, timeout, server closed, commit refused, protocol error); refused: not
#: connected, the destination is a private address.
RESULTS = ("success", "failure", "refused")

sessions = Counter(
    "fleetgate_connector_forward_sessions_total",
    "Forwarding connections to a raw TCP endpoint by result",
    ["endpoint", "result"],
)
records = Counter(
    "fleetgate_connector_forward_records_total",
    "Records the raw TCP endpoint committed (commit response status 1)",
    ["endpoint"],
)
sent_bytes = Counter(
    "fleetgate_connector_forward_sent_bytes_total",
    "Bytes written to the raw TCP endpoint (HELLO, records, commit requests)",
    ["endpoint"],
)
session_seconds = Histogram(
    "fleetgate_connector_forward_session_seconds",
    "Duration of each forwarding connection, whatever its result",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
connections = Gauge(
    "fleetgate_connector_forward_connections",
    "Forwarding connections open now",
    ["endpoint"],
)


def init(endpoint: str) -> None:
    """Create every series of ``endpoint`` at zero."""
    for result in RESULTS:
        sessions.labels(endpoint, result)
    for metric in (records, sent_bytes, session_seconds, connections):
        metric.labels(endpoint)
