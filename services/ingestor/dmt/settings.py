"""Digital Matter listener settings, from ``FLEETGATE_DMT_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from dmtproto import DEFAULT_MAX_MESSAGE

from ..settings import ListenerSettings

__all__ = ["DEFAULT_PORT", "DmtSettings"]

#: Next to the camera's 5232; not a port Digital Matter prescribes (a device is pointed at
#: any host and port in its "direct to 3rd party" server settings).
DEFAULT_PORT = 5233


class DmtSettings(ListenerSettings):
    """The Digital Matter listener: the edge's listener settings with Digital Matter's
    defaults, plus what the adapter needs."""

    model_config = SettingsConfigDict(env_prefix="FLEETGATE_DMT_", extra="ignore")

    port: int = Field(DEFAULT_PORT, description="Digital Matter TCP port")
    hello_timeout_seconds: float = Field(
        30.0, description="seconds a new connection has to send its HELLO"
    )
    idle_timeout_seconds: float = Field(
        300.0, description="seconds a session may stay silent (devices pause between uploads)"
    )
    max_message_length: int = Field(
        DEFAULT_MAX_MESSAGE,
        ge=64,
        le=65535,
        description="longest message payload accepted, bytes (the wire allows 65535)",
    )
    max_ignored_messages: int = Field(
        100,
        description="messages of types the server does not act on, per session, before "
        "the session is closed",
    )
