"""Camera listener settings, from ``FLEETGATE_CAMERA_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from camproto import FileSizeLimits

from ..settings import ListenerSettings

__all__ = ["CameraSettings"]

_MIB = 1024 * 1024


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
    claim_stale_seconds: float = Field(
        60.0,
        description="seconds without a progress record after which the session holding a "
        "transfer (on another ingestor, killed) is taken to be gone: another session may "
        "then claim the transfer without proving the file. Until then it starts over under "
        "the next free transfer id instead (or takes over with a resume point that proves "
        "the file). A holder publishes at least every third of this while connected",
        gt=0,
    )
    claim_timeout_seconds: float = Field(
        10.0,
        description="longest a START waits for its claim on the progress topic to be "
        "acknowledged and read back; past it the session closes (the device comes back)",
    )
    max_file_bytes_dualcam: int = Field(
        32 * _MIB,
        description="largest DualCam file a START may announce (packets x 1024), in bytes; "
        "0: no limit. A 20 s 720p video is about 6 MB, a photo about 50 KB",
    )
    max_file_bytes_dsm: int = Field(
        32 * _MIB, description="largest DSM file a START may announce, in bytes; 0: no limit"
    )
    max_file_bytes_adas: int = Field(
        32 * _MIB, description="largest ADAS file a START may announce, in bytes; 0: no limit"
    )
    max_file_bytes_other: int = Field(
        32 * _MIB,
        description="largest file of another camera (dashcam, unknown path) a START may "
        "announce, in bytes; 0: no limit",
    )
    transfer_max_seconds: float = Field(
        1800.0,
        description="seconds one file may take in one session, from START to its last packet; "
        "then the session is closed (what is durable stays, the device resumes later)",
    )
    transfer_min_bytes_per_second: int = Field(
        2048,
        description="slowest average rate of a file, from START, once "
        "transfer_rate_grace_seconds have passed; a slower one (a trickle) is closed. 0: none",
    )
    transfer_rate_grace_seconds: float = Field(
        60.0, description="seconds after START before transfer_min_bytes_per_second applies"
    )

    def file_size_limits(self) -> FileSizeLimits:
        """The ``max_file_bytes_*`` settings as camproto's limits (0 is no limit)."""
        return FileSizeLimits(
            dualcam=self.max_file_bytes_dualcam or None,
            dsm=self.max_file_bytes_dsm or None,
            adas=self.max_file_bytes_adas or None,
            other=self.max_file_bytes_other or None,
        )

    def transfer_deadline(self, started: float, received: int) -> float:
        """When a file started at ``started`` (monotonic seconds) that has sent ``received``
        bytes since is too slow: the device earns time by sending, at the minimum rate,
        after the grace period, up to ``transfer_max_seconds``."""
        allowed = self.transfer_rate_grace_seconds
        if self.transfer_min_bytes_per_second > 0:
            allowed = max(allowed, received / self.transfer_min_bytes_per_second)
        else:
            allowed = self.transfer_max_seconds
        return started + min(allowed, self.transfer_max_seconds)
