"""Settings every service shares. Each service subclasses this with its own fields."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from .kafka import KafkaSettings


class CommonSettings(KafkaSettings):
    """Read from ``FLEETGATE_*`` environment variables (``FLEETGATE_KAFKA_BOOTSTRAP`` ...)."""

    model_config = SettingsConfigDict(
        env_prefix="FLEETGATE_", env_nested_delimiter="__", extra="ignore"
    )

    # kafka_*: the shared Kafka client settings, see runtime.kafka.KafkaSettings.
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    log_json: bool | None = Field(
        None, description="JSON log lines; default: JSON unless stderr is a terminal"
    )
    metrics_host: str = Field("0.0.0.0", description="address of the Prometheus /metrics server")
    metrics_port: int = Field(0, description="port of the /metrics server; 0 disables it")
