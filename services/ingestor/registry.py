"""The device registry, ``fleetgate.devices.v1`` (compacted, key = IMEI), as sessions feed it.

Every protocol publishes a device's :class:`~contracts.records.DeviceStatus` when its
session starts (the camera at INIT, Digital Matter at HELLO) and, for telemetry, as records
tell more (power, temperature, signal, position). A session folds what it learns into the
status it last published (:func:`contracts.records.apply_session`,
:func:`~contracts.records.apply_record`); it does not read the topic, so the first status of
a session carries only what that session has told so far.
"""

from __future__ import annotations

from datetime import UTC, datetime

from contracts import Topic
from contracts.models import encode
from contracts.records import DeviceIdentity, DeviceStatus, LastConnection, apply_session

from .adapter import Link

__all__ = ["connected", "publish"]


def connected(
    link: Link, identity: DeviceIdentity | None = None, at: datetime | None = None
) -> DeviceStatus:
    """The status of the device ``link`` identified, as of its session's start."""
    assert link.imei is not None
    connection = LastConnection(
        session_id=link.session_id,
        ingestor=link.instance,
        protocol=link.protocol,
        peer=link.peer,
        connected_at=at or datetime.now(UTC),
    )
    return apply_session(None, link.imei, connection, identity)


async def publish(link: Link, status: DeviceStatus) -> None:
    """Hand ``status`` to the session's ledger (a later barrier covers it)."""
    await link.ledger.publish(Topic.DEVICES, status.imei.encode(), encode(status))
