"""OEM JSON intake settings, from ``FLEETGATE_HTTP_*`` environment variables."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["HttpSettings"]


class HttpSettings(BaseSettings):
    """The HTTP listener the OEM Server's JSON connector posts to. Off unless a port is set."""

    model_config = SettingsConfigDict(env_prefix="FLEETGATE_HTTP_", extra="ignore")

    port: int | None = Field(
        None, description="HTTP(S) port of the OEM JSON intake; unset: no intake; 0: any free port"
    )
    host: str = Field("0.0.0.0", description="address the intake listens on")
    max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="largest request body accepted (413 above it)"
    )
    publish_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="longest a request waits for Kafka to acknowledge its records "
        "(then 503: the OEM Server keeps them and posts again)",
    )
    auth: Literal["none", "basic", "bearer", "header"] = Field(
        "none",
        description="how the OEM Server authenticates: none, basic (user and password), "
        "bearer (a token) or header (a named header with a secret value)",
    )
    username: str = Field("", description="basic auth: the user")
    password: SecretStr = Field(SecretStr(""), description="basic auth: the password")
    token: SecretStr = Field(SecretStr(""), description="bearer auth: the token")
    header_name: str = Field("", description="header auth: the header's name, e.g. X-Api-Key")
    header_value: SecretStr = Field(SecretStr(""), description="header auth: the secret value")
    tls_certfile: Path | None = Field(
        None, description="PEM certificate (chain) to serve HTTPS with; unset: plain HTTP"
    )
    tls_keyfile: Path | None = Field(None, description="PEM key of tls_certfile")

    @model_validator(mode="after")
    def _consistent(self) -> HttpSettings:
        if self.auth == "basic" and not (self.username and self.password.get_secret_value()):
            raise ValueError("http auth basic needs http_username and http_password")
        if self.auth == "bearer" and not self.token.get_secret_value():
            raise ValueError("http auth bearer needs http_token")
        if self.auth == "header" and not (
            self.header_name and self.header_value.get_secret_value()
        ):
            raise ValueError("http auth header needs http_header_name and http_header_value")
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("http_tls_certfile and http_tls_keyfile go together")
        return self

    @property
    def enabled(self) -> bool:
        return self.port is not None

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server's TLS context (None: plain HTTP)."""
        if self.tls_certfile is None or self.tls_keyfile is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls_certfile, self.tls_keyfile)
        return context
