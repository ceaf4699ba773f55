"""Ingestor settings: the process's (``FLEETGATE_*``) and each listener's
(``FLEETGATE_<PROTOCOL>_*``, a :class:`ListenerSettings` subclass in the protocol's folder)."""

from __future__ import annotations

import socket

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from runtime import CommonSettings

__all__ = ["IngestorSettings", "ListenerSettings"]


class IngestorSettings(CommonSettings):
    """What the whole process shares, whichever protocols it hosts."""

    instance: str = Field(
        default_factory=socket.gethostname, description="this ingestor's name in session events"
    )
    max_connections: int = Field(
        20000, description="open device connections per process, all protocols together"
    )
    kafka_linger_ms: int = Field(5, description="producer linger")
    kafka_max_request_bytes: int = Field(8 * 1024 * 1024, description="producer max request")
    kafka_request_timeout_ms: int = Field(
        30000, description="producer request timeout: how long a batch may wait for the broker"
    )
    ack_timeout_seconds: float = Field(
        30.0, description="seconds to wait for Kafka to take or acknowledge a record"
    )
    enqueue_timeout_seconds: float = Field(
        120.0,
        description="longest a record waits for room in the producer while Kafka keeps taking "
        "records (a burst of sessions queues in turn); a producer that takes nothing fails "
        "its queue after kafka_request_timeout_ms",
    )
    registry_catchup_idle_seconds: float = Field(
        0.3,
        description="at start, the device registry (fleetgate.devices.v1) is read until a poll "
        "returns nothing for this many seconds",
    )
    registry_catchup_timeout_seconds: float = Field(
        15.0,
        description="longest wait at start for the device registry before accepting anyway "
        "(devices not read yet start from what their session tells)",
    )
    drain_timeout_seconds: float = Field(
        20.0, description="seconds SIGTERM lets sessions with work in flight finish it"
    )
    close_timeout_seconds: float = Field(
        5.0,
        description="seconds after the drain for cut sessions to reach a durable point "
        "and close (then sessions are cancelled)",
    )


class ListenerSettings(BaseSettings):
    """What every protocol's listener has. A protocol subclasses it with its defaults, its
    own fields and ``env_prefix="FLEETGATE_<PROTOCOL>_"``."""

    model_config = SettingsConfigDict(extra="ignore")

    enabled: bool = Field(True, description="listen for this protocol")
    host: str = Field("0.0.0.0", description="address the TCP port listens on")
    port: int = Field(0, description="TCP port (0: any free port)")
    max_connections: int = Field(
        0, description="open connections of this protocol; 0: only the process-wide limit"
    )
    max_connections_per_peer: int = Field(
        0,
        description="open connections per peer IP address; 0: no limit "
        "(devices behind carrier NAT share addresses)",
    )
    hello_timeout_seconds: float = Field(
        15.0, description="seconds a new connection has to identify itself"
    )
    idle_timeout_seconds: float = Field(60.0, description="seconds a session may stay silent")
    max_buffered_bytes: int = Field(
        4 * 1024 * 1024,
        description="bytes of one connection sent to Kafka but not yet acknowledged; "
        "reading the socket pauses above it",
    )
    imei_allow_list: str = Field(
        "",
        description="file of IMEIs allowed to connect, one a line, '#' comments; "
        "with imei_allow unset too, every IMEI may",
    )
    imei_allow: str = Field(
        "", description="IMEIs allowed to connect, comma-separated (added to imei_allow_list)"
    )
