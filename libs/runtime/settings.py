"""Settings every service shares, and the S3 settings the services that talk to S3 share.

Each service subclasses :class:`CommonSettings` (or :class:`S3Settings` when it uses S3) with
its own fields. Durations are in seconds and named ``..._seconds``.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from .kafka import KafkaSettings

__all__ = ["CommonSettings", "S3Settings", "split_s3_endpoint", "split_s3_url"]


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


def split_s3_endpoint(endpoint: str) -> tuple[str, bool]:
    """``host:port`` or ``http(s)://host:port[/...]`` -> (``host:port``, https named).

    The one place an S3 endpoint is parsed: the S3 clients (minio) take ``host:port`` and a
    TLS flag.
    """
    text = endpoint.strip()
    secure = False
    for scheme in ("https://", "http://"):
        if text.lower().startswith(scheme):
            secure = scheme == "https://"
            text = text[len(scheme) :]
    return text.split("/", 1)[0], secure


def split_s3_url(url: str, name: str = "s3_public_url") -> tuple[str, bool]:
    """``https://files.example.com:8443`` -> (``files.example.com:8443``, secure); a
    ValueError naming ``name`` unless it is exactly ``http(s)://host[:port]``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{name} {url!r} must be http(s)://host[:port]")
    if parts.path.strip("/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"{name} {url!r} must have no path, query or user")
    return parts.netloc, parts.scheme == "https"


class S3Settings(CommonSettings):
    """:class:`CommonSettings` plus where S3 is and how to sign in (``FLEETGATE_S3_*``), for
    the services that use S3."""

    s3_endpoint: str = Field(
        "127.0.0.1:9000",
        description="S3 endpoint, host:port or http(s)://host:port (https:// implies TLS)",
    )
    s3_access_key: str = Field("", description="S3 access key")
    s3_secret_key: SecretStr = Field(SecretStr(""), description="S3 secret key")
    s3_region: str = Field("us-east-1", description="S3 region (requests are signed for it)")
    s3_secure: bool = Field(False, description="TLS to the S3 endpoint")

    @property
    def s3_host(self) -> str:
        """The endpoint without scheme or path (minio takes host:port)."""
        return split_s3_endpoint(self.s3_endpoint)[0]

    @property
    def s3_tls(self) -> bool:
        return self.s3_secure or split_s3_endpoint(self.s3_endpoint)[1]
