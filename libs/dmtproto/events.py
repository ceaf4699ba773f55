"""Events the protocol machines return. Frozen, slotted, keyword-only; don't subclass them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from ._wire import PRODUCT_NAMES, MessageType, from_dm_time
from .records import FixedRecord, Record

__all__ = [
    "AsyncSessionCompleted",
    "CommitAcknowledged",
    "CommitRequested",
    "Event",
    "HelloAcknowledged",
    "HelloReceived",
    "MessageIgnored",
    "RecordReceived",
    "RequestAnswered",
    "SessionClosed",
    "TimeReceived",
    "VersionDataAcknowledged",
]


class Event:
    """Base class of every event."""

    __slots__ = ()


# Server side: what the device did.


@dataclass(frozen=True, slots=True, kw_only=True)
class HelloReceived(Event):
    """The device's HELLO: who it is. The hello response is already queued.

    ``imei`` and ``iccid`` are strings of digits as the device sent them; ``extra`` holds the
    bytes past the 49 known ones (51-byte variant). ``raw`` is the whole message.
    """

    serial: int
    imei: str
    iccid: str
    product_id: int
    hardware_revision: int
    firmware_major: int
    firmware_minor: int
    flags: int
    extra: bytes = b""
    raw: bytes = field(default=b"", repr=False)

    @property
    def firmware(self) -> str:
        return f"{self.firmware_major}.{self.firmware_minor}"

    @property
    def product(self) -> str | None:
        """The product's name where known (:data:`dmtproto.PRODUCT_NAMES`)."""
        return PRODUCT_NAMES.get(self.product_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordReceived(Event):
    """One record, decoded, with ``raw``: the record alone as a complete DMT message
    (``02 55 | type | length | the record's bytes as received``), decodable again by this
    package. For a message that carried one record it is the message exactly as sent.

    ``index`` counts the records of the session (from 0), so a service can tell which records a
    later :class:`CommitRequested` covers.
    """

    record: Record | FixedRecord
    message_type: MessageType
    raw: bytes = field(repr=False)
    index: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitRequested(Event):
    """The device asks us to commit: it deletes what it sent once we answer.

    Call ``commit()`` only when every record before this event (``records`` of them in the
    session so far, ``new_records`` since the previous commit request) is durable.
    """

    records: int
    new_records: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestAnswered(Event):
    """A request the core answers by itself: version data (0x14), async session (0x22) or
    time (0x30). The reply is queued."""

    request: MessageType
    reply: MessageType


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageIgnored(Event):
    """A message type the server does not act on (counted, then dropped)."""

    message_type: int
    length: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionClosed(Event):
    """The session ended: ``clean`` when the device finished normally, else ``reason`` says
    why. ``uncommitted`` records were received but not committed: the device sends them again."""

    reason: str
    clean: bool
    uncommitted: int = 0


# Device side: what the server answered.


@dataclass(frozen=True, slots=True, kw_only=True)
class HelloAcknowledged(Event):
    """The hello response: the server's time (2013 epoch) and flags."""

    time: int
    flags: int

    @property
    def server_time(self) -> datetime | None:
        return from_dm_time(self.time)


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitAcknowledged(Event):
    """The commit response. ``status`` 1: the server has the ``records`` (now dropped by the
    device); anything else: they stay to be sent again."""

    status: int
    records: int

    @property
    def ok(self) -> bool:
        return self.status == 1


@dataclass(frozen=True, slots=True, kw_only=True)
class VersionDataAcknowledged(Event):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class AsyncSessionCompleted(Event):
    """ASYNC SESSION COMPLETE: the server has nothing queued for the device."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TimeReceived(Event):
    time: int
