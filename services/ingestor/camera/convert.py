"""camproto events and metadata -> contract models."""

from __future__ import annotations

from datetime import UTC, datetime

import contracts
from camproto import (
    AdasMetadata,
    CameraFile,
    DsmMetadata,
    DualCamMetadata,
    JsonMetadata,
    Metadata,
    RawMetadata,
)


def file_info(file: CameraFile) -> contracts.FileInfo:
    return contracts.FileInfo(
        identifier=file.path,
        slot=None if file.slot is None else file.slot.name.lower(),
        camera=file.camera.value,
        media=file.media.value,
    )


def _time(ms: int) -> datetime | None:
    if ms <= 0:
        return None
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def capture_info(metadata: Metadata) -> contracts.CaptureInfo:
    if isinstance(metadata, DualCamMetadata):
        return contracts.CaptureInfo(
            captured_at=_time(metadata.timestamp_ms),
            trigger=metadata.trigger_name,
            latitude=metadata.latitude,
            longitude=metadata.longitude,
            duration_s=metadata.duration_s,
            framerate=metadata.framerate,
            timezone_min=metadata.timezone_min,
            file_type=metadata.file_type,
        )
    if isinstance(metadata, DsmMetadata):
        return contracts.CaptureInfo(
            captured_at=_time(metadata.timestamp_ms),
            trigger=metadata.trigger_name,
            latitude=metadata.latitude,
            longitude=metadata.longitude,
            dsm_events=list(metadata.events),
            driver_name=metadata.driver_name or None,
            file_type=metadata.file_type,
        )
    if isinstance(metadata, AdasMetadata):
        return contracts.CaptureInfo(
            captured_at=_time(metadata.timestamp_ms),
            trigger=metadata.trigger_name,
            latitude=metadata.latitude,
            longitude=metadata.longitude,
            duration_s=metadata.duration_s,
            file_type=metadata.file_type,
        )
    if isinstance(metadata, JsonMetadata):
        return contracts.CaptureInfo(raw=dict(metadata.fields))
    assert isinstance(metadata, RawMetadata)
    return contracts.CaptureInfo(raw={"hex": metadata.payload.hex()})


def capture_ms(metadata: Metadata | None) -> int | None:
    """The capture time that identifies a transfer across sessions, if the metadata has one."""
    if isinstance(metadata, DualCamMetadata | DsmMetadata | AdasMetadata):
        return metadata.timestamp_ms or None
    return None


__all__ = ["capture_info", "capture_ms", "file_info"]
