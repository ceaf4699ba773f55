"""The device registry, ``fleetgate.devices.v1`` (compacted, key = IMEI), as sessions feed it.

Every protocol publishes a device's :class:`~contracts.records.DeviceStatus` when its
session starts (the camera at INIT, Digital Matter at HELLO, the OEM JSON intake per request)
and, for telemetry, as records tell more (power, temperature, signal, position). In a
compacted topic a device's latest record is all a consumer sees, so each status carries
forward what earlier sessions learnt, on any ingestor:

* :class:`RegistryBook`: IMEI -> the newest status known to this process, kept as the JSON
  the topic holds (about 1 KB a device; decoded only when a session of that device starts).
  Newest means the latest ``updated_at``, not the latest to arrive: a status this ingestor
  published and reads back later, or an older one another ingestor wrote, never replaces a
  newer one.
* :class:`RegistryReader`: a :class:`~ingestor.follow.TopicFollower` that fills the book at
  start and then follows the topic (other ingestors' statuses of a device arrive within a
  poll).
* :class:`DeviceRegistry`: the book and its reader, shared by every protocol of the process.
  Before the listeners accept it reads the topic until a poll returns nothing for
  ``registry_catchup_idle_seconds``, for at most ``registry_catchup_timeout_seconds``: then it
  accepts anyway (a device the reader has not reached yet starts from what its session tells,
  as before the registry was read; its later statuses are derived from the newest one known
  at the time).

A session starts from the device's newest status (:meth:`DeviceRegistry.connected`, by
:func:`contracts.records.apply_session`) and each status it publishes is derived from the
newest known at that moment (:meth:`DeviceRegistry.refreshed`), so a status another
ingestor published meanwhile (the device moved) is carried on, not rolled back.
"""

from __future__ import annotations

from datetime import datetime

import orjson
import structlog
from pydantic import ValidationError

from contracts import Topic
from contracts.models import encode
from contracts.records import (
    DeviceIdentity,
    DeviceStatus,
    LastConnection,
    apply_session,
    rebase,
)

from . import metrics
from .follow import TopicFollower
from .settings import IngestorSettings
from .sink import Ledger

__all__ = ["DeviceRegistry", "RegistryBook", "RegistryReader"]

_log = structlog.get_logger("fleetgate.ingestor")


def _stamp(value: bytes) -> tuple[str, float] | None:
    """(IMEI, ``updated_at`` as unix seconds) of an encoded status; None if it is none."""
    try:
        data = orjson.loads(value)
        imei, updated_at = data["imei"], data["updated_at"]
        when = datetime.fromisoformat(updated_at).timestamp()
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if not isinstance(imei, str) or not imei:
        return None
    return imei, when


class RegistryBook:
    """IMEI -> the newest :class:`DeviceStatus` known (by ``updated_at``), encoded."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, bytes]] = {}
        #: Records read that were no device status (counted, skipped).
        self.malformed = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, imei: str) -> DeviceStatus | None:
        """The newest status of ``imei`` known, or None."""
        entry = self._entries.get(imei)
        if entry is None:
            return None
        try:
            return DeviceStatus.model_validate_json(entry[1])
        except ValidationError as exc:  # it parsed as JSON with a stamp, but is no status
            del self._entries[imei]
            self.malformed += 1
            metrics.registry_errors.inc()
            _log.warning("registry_malformed", imei=imei, error=str(exc)[:200])
            return None

    def newer(self, status: DeviceStatus) -> DeviceStatus | None:
        """The device's status known here if it is newer than ``status`` (decoded only
        then: a session asks before each status it publishes)."""
        entry = self._entries.get(status.imei)
        if entry is None or entry[0] <= status.updated_at.timestamp():
            return None
        return self.get(status.imei)

    def put(self, status: DeviceStatus) -> bytes:
        """Enter a status a session of this process publishes (derived from the newest
        known, it is at least as new: unless a newer one was read meanwhile, as the OEM
        intake awaits Kafka between the two) and return it encoded, as it goes to the
        topic."""
        value = encode(status)
        when = status.updated_at.timestamp()
        known = self._entries.get(status.imei)
        if known is None or known[0] <= when:
            self._entries[status.imei] = (when, value)
        return value

    def offer(self, key: bytes | None, value: bytes | None) -> bool:
        """A record of the topic: taken if newer than what is known (strictly: the same
        ``updated_at`` is the same status read back); a tombstone forgets the device."""
        if not value:
            if key:
                self._entries.pop(key.decode("ascii", "replace"), None)
            return False
        stamp = _stamp(value)
        if stamp is None:
            self.malformed += 1
            metrics.registry_errors.inc()
            _log.warning("registry_malformed", key=repr(key)[:80])
            return False
        imei, when = stamp
        known = self._entries.get(imei)
        if known is not None and known[0] >= when:
            return False
        self._entries[imei] = (when, value)
        return True


class RegistryReader(TopicFollower):
    """Reads ``fleetgate.devices.v1`` into a :class:`RegistryBook` and follows it."""

    def __init__(self, settings: IngestorSettings, book: RegistryBook) -> None:
        super().__init__(
            settings,
            Topic.DEVICES,
            "registry",
            idle=settings.registry_catchup_idle_seconds,
            within=settings.registry_catchup_timeout_seconds,
        )
        self.book = book

    def take(self, key: bytes | None, value: bytes | None) -> None:
        self.book.offer(key, value)

    def describe(self) -> dict[str, object]:
        return {"devices": len(self.book), "malformed": self.book.malformed}

    def failed(self, exc: Exception) -> None:
        metrics.registry_errors.inc()
        super().failed(exc)


class DeviceRegistry:
    """The process's view of the registry; with ``read``, filled from the topic at
    :meth:`start` and kept following it until :meth:`stop`."""

    def __init__(self, settings: IngestorSettings, *, read: bool = True) -> None:
        self.book = RegistryBook()
        self.reader = RegistryReader(settings, self.book) if read else None
        book = self.book
        metrics.registry_devices.set_function(lambda: len(book))

    async def start(self) -> None:
        """Read the topic (bounded: see the module), then follow it in the background."""
        if self.reader is not None:
            await self.reader.open()

    async def stop(self) -> None:
        if self.reader is not None:
            await self.reader.close()

    def latest(self, imei: str) -> DeviceStatus | None:
        """The newest status of ``imei`` known to this process."""
        return self.book.get(imei)

    def connected(
        self, imei: str, connection: LastConnection, identity: DeviceIdentity | None = None
    ) -> DeviceStatus:
        """The status of ``imei`` as of a session's start: its newest known status, with
        this connection and what the device said of itself."""
        return apply_session(self.latest(imei), imei, connection, identity)

    def refreshed(self, status: DeviceStatus) -> DeviceStatus:
        """The base to fold a session's news into: the newest status known of the device
        (another ingestor's, if the device moved there since: :func:`~contracts.records.rebase`
        keeps the later connection of the two), else ``status``."""
        newest = self.book.newer(status)
        return status if newest is None else rebase(status, newest)

    async def publish(self, ledger: Ledger, status: DeviceStatus) -> None:
        """Enter ``status`` in the book and hand it to ``ledger`` (a later barrier covers
        it)."""
        await ledger.publish(Topic.DEVICES, status.imei.encode(), self.book.put(status))
