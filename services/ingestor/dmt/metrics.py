"""Digital Matter metrics. No per-device labels. Records received are the edge's
``fleetgate_ingestor_records_total{protocol="dmt"}``."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

commits = Counter(
    "fleetgate_ingestor_dmt_commits_total",
    "Commit requests answered (every record before them acknowledged by Kafka)",
)
commit_seconds = Histogram(
    "fleetgate_ingestor_dmt_commit_seconds",
    "From a commit request to its reply: waiting for Kafka to acknowledge the records",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
ignored = Counter(
    "fleetgate_ingestor_dmt_ignored_messages_total",
    "Messages of types the server does not act on",
)
