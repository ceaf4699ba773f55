"""Camera listener settings, from ``FLEETGATE_CAMERA_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from ..settings import ListenerSettings

__all__ = ["CameraSettings"]


class CameraSettings(ListenerSettings):
    """The Teltonika camera listener: the edge's listener settings with the camera's
    defaults, plus what the camera adapter needs."""

    model_config = SettingsConfigDict(env_prefix="FLEETGATE_CAMERA_", extra="ignore")

    port: int = Field(5232, description="camera TCP port (Traccar's port for DualCam)")
    hello_timeout_seconds: float = Field(
        15.0, description="seconds a new connection has to send INIT"
    )
    request_metadata: bool = Field(
        True, description="ask each file's metadata first (needed to resume across sessions)"
    )
    record_bytes: int = Field(
        64 * 1024, description="file bytes coalesced into one Kafka chunk record"
    )
    progress_catchup_idle_seconds: float = Field(
        0.3,
        description="at start, the progress topic is read until a poll returns nothing for "
        "this many seconds",
    )
    progress_catchup_timeout_seconds: float = Field(
        30.0, description="longest wait at start for the progress topic before accepting anyway"
    )
    progress_max_age_seconds: float = Field(
        6 * 24 * 3600.0,
        description="seconds a transfer's progress is kept for a resume (keep it below the "
        "chunk topic's retention)",
    )
