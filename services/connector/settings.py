"""Connector settings, from ``FLEETGATE_*`` environment variables or the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from runtime import S3Settings
from runtime.settings import split_s3_url

#: The longest a SigV4 presigned URL may live (7 days).
MAX_PRESIGN_SECONDS = 7 * 24 * 3600


class ConnectorSettings(S3Settings):
    connector_config: Path | None = Field(
        None, description="YAML file of the webhook endpoints (docs/connector.md)"
    )
    s3_public_url: str | None = Field(
        None,
        description="scheme://host[:port] that webhook receivers reach S3 at, when it differs "
        "from s3_endpoint (URLs are signed for this host)",
    )
    presign_expiry_seconds: int = Field(
        MAX_PRESIGN_SECONDS,
        ge=1,
        le=MAX_PRESIGN_SECONDS,
        description="lifetime of the download URLs in webhooks (at most 7 days)",
    )
    connector_group_prefix: str = Field(
        "fleetgate-connector", description="consumer group of an endpoint: {prefix}-{name}"
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="where a new endpoint's group starts reading"
    )
    kafka_session_timeout_ms: int = Field(10000, description="consumer group session timeout")
    kafka_heartbeat_interval_ms: int = Field(3000, description="consumer group heartbeat")
    max_batch: int = Field(
        500, ge=1, description="events fetched at once per endpoint (spread over partitions)"
    )
    connector_create_topics: bool = Field(
        True, description="create missing retry, dead-letter and replay topics at start"
    )
    connector_topic_partitions: int = Field(
        4, ge=1, description="partitions of the topics the connector creates"
    )
    connector_topic_replication: int = Field(
        1, ge=1, description="replication factor of the topics the connector creates"
    )
    shutdown_grace_seconds: float = Field(
        5.0, ge=0, description="on SIGTERM, how long an in-flight POST may still finish"
    )
    lag_interval_seconds: float = Field(
        15.0,
        gt=0,
        description="seconds between readings of the consumer lag "
        "(fleetgate_consumer_lag_records), the first one interval after the start",
    )

    @field_validator("s3_public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        split_s3_url(value)  # raises ValueError with the reason
        return value
