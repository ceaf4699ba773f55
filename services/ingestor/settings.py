"""Ingestor settings, from ``FLEETGATE_*`` environment variables."""

from __future__ import annotations

import socket

from pydantic import Field

from runtime import CommonSettings


class IngestorSettings(CommonSettings):
    camera_host: str = Field("0.0.0.0", description="address the camera TCP port listens on")
    camera_port: int = Field(5232, description="camera TCP port (Traccar's port for DualCam)")
    instance: str = Field(
        default_factory=socket.gethostname, description="this ingestor's name in session events"
    )
    request_metadata: bool = Field(
        True, description="ask each file's metadata first (needed to resume across sessions)"
    )
    idle_timeout: float = Field(60.0, description="seconds a session may stay silent")
    init_timeout: float = Field(15.0, description="seconds a new connection has to send INIT")
    max_connections: int = Field(20000, description="open device connections per process")
    max_buffered_bytes: int = Field(
        4 * 1024 * 1024,
        description="bytes of one connection sent to Kafka but not yet acknowledged; "
        "reading the socket pauses above it",
    )
    record_bytes: int = Field(
        64 * 1024, description="file bytes coalesced into one Kafka chunk record"
    )
    kafka_linger_ms: int = Field(5, description="producer linger")
    kafka_max_request_bytes: int = Field(8 * 1024 * 1024, description="producer max request")
    kafka_request_timeout_ms: int = Field(
        30000, description="producer request timeout: how long a batch may wait for the broker"
    )
    ack_timeout: float = Field(30.0, description="seconds to wait for Kafka to acknowledge")
    drain_timeout: float = Field(
        20.0, description="seconds SIGTERM lets transfers in flight finish their file"
    )
    close_timeout: float = Field(
        5.0,
        description="seconds after drain_timeout for cut transfers to reach a durable point "
        "and close (then sessions are cancelled)",
    )
    progress_catchup_idle: float = Field(
        0.3,
        description="at start, the progress topic is read until a poll returns nothing for "
        "this many seconds",
    )
    progress_catchup_timeout: float = Field(
        30.0, description="longest wait at start for the progress topic before accepting anyway"
    )
    progress_max_age: float = Field(
        6 * 24 * 3600.0,
        description="seconds a transfer's progress is kept for a resume (keep it below the "
        "chunk topic's retention)",
    )
    imei_allow_list: str = Field(
        "",
        description="file of IMEIs allowed to upload, one a line, '#' comments; "
        "with imei_allow unset too, every IMEI may",
    )
    imei_allow: str = Field(
        "", description="IMEIs allowed to upload, comma-separated (added to imei_allow_list)"
    )
    max_connections_per_peer: int = Field(
        0,
        description="open connections per peer IP address; 0: no limit "
        "(devices behind carrier NAT share addresses)",
    )
