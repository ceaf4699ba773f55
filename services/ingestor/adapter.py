"""The contract between the edge and a protocol adapter.

The edge (:mod:`ingestor.server`, :mod:`ingestor.connection`) owns the sockets, the
admission limits, the read loop and its timeouts, backpressure against Kafka, the drain on
SIGTERM, the session's summary log line and the edge metrics. A protocol brings:

* a :class:`Protocol`: its name, its settings class (``FLEETGATE_<NAME>_*``), what must happen
  before its listener accepts and after its sessions drained, and a factory of sessions;
* a :class:`Session` per connection: an adapter around the protocol's sans-I/O core that
  feeds it bytes and time, turns its events into records published through the
  :class:`Link`'s :class:`~ingestor.sink.Ledger`, and tells the core "done" (a camera
  file confirmed, telemetry records committed) only after :meth:`Ledger.barrier`.

A session raises :class:`PeerError` when the device breaks its protocol,
:class:`~ingestor.allowlist.NotAllowed` (from :meth:`Link.identify`) for a refused IMEI and
:class:`~ingestor.sink.KafkaFailed` when Kafka fails it; the edge closes it with the matching
reason. Registering a protocol is one line in :mod:`ingestor.protocols`.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from contracts.records import LastConnection

from .allowlist import check_imei
from .registry import DeviceRegistry
from .settings import IngestorSettings, ListenerSettings
from .sink import Ledger, Sink

__all__ = ["Link", "PeerError", "Protocol", "Session"]


async def _nothing_to_write() -> None:
    return None


class PeerError(Exception):
    """The device broke its protocol (the core raised its RemoteProtocolError): the session
    closes with ``protocol_error`` and this text as the detail."""


@dataclass(slots=True, eq=False)
class Link:
    """What the edge gives one session: who it is, where to log, where records go, and how
    the session ended (``close_reason``, a metric label the session may set)."""

    protocol: str
    settings: ListenerSettings
    instance: str  # this ingestor's name, for session events
    peer: str  # "ip:port"
    ledger: Ledger
    log: Any  # a structlog logger bound to the session; a session may bind more to it
    #: The process's device registry (``fleetgate.devices.v1``), shared by every protocol.
    registry: DeviceRegistry
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    close_reason: str = "device_closed"
    #: The device's IMEI once :meth:`identify` accepted it.
    imei: str | None = None
    #: Writes the session's :meth:`Session.data_to_send` now, mid-step (set by the edge;
    #: after each step the edge writes anyway).
    transmit: Callable[[], Awaitable[None]] = _nothing_to_write

    def identify(self, imei: str) -> None:
        """The device named itself: bind its IMEI to the log; raise
        :class:`~ingestor.allowlist.NotAllowed` if the listener's allow-list excludes it
        (before anything of it is published)."""
        self.imei = imei
        self.log = self.log.bind(imei=imei)
        check_imei(self.settings, imei)

    def connection(self, at: datetime | None = None) -> LastConnection:
        """This session as the registry's ``last_connection`` (``at``: its start; now)."""
        return LastConnection(
            session_id=self.session_id,
            ingestor=self.instance,
            protocol=self.protocol,
            peer=self.peer,
            connected_at=at or datetime.now(UTC),
        )


class Session(ABC):
    """One connection of a protocol, driven by the edge's read loop.

    The loop reads while :meth:`next_deadline` and the idle limits allow, passing bytes to
    :meth:`receive_data`, EOF to :meth:`receive_eof` and expired deadlines to
    :meth:`handle_timeout`, and writes :meth:`data_to_send` after each step. Those steps may
    publish and wait for Kafka through ``link.ledger``; the loop pauses reading while more
    than ``max_buffered_bytes`` are unacknowledged.
    """

    link: Link

    @property
    @abstractmethod
    def identified(self) -> bool:
        """The device named itself (the idle timeout applies, not the hello timeout)."""

    @property
    @abstractmethod
    def busy(self) -> bool:
        """Work in flight that a drain lets finish (a file mid-transfer)."""

    @property
    @abstractmethod
    def closed(self) -> bool:
        """The core is done: the loop ends the session with :attr:`detail`."""

    @property
    @abstractmethod
    def detail(self) -> str:
        """Why the session ended, once :attr:`closed` (the log line's ``detail``)."""

    @abstractmethod
    def next_deadline(self) -> float | None:
        """When the core wants :meth:`handle_timeout` (loop time), if it does."""

    @abstractmethod
    def data_to_send(self) -> bytes:
        """Bytes the core wants written to the device."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """The connection is accepted (publish a "connected" event, say)."""

    @abstractmethod
    async def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes from the device; raise :class:`PeerError` on a protocol violation."""

    @abstractmethod
    async def receive_eof(self) -> None:
        """The device closed its side."""

    @abstractmethod
    async def handle_timeout(self, now: float) -> None:
        """:meth:`next_deadline` passed."""

    @abstractmethod
    async def close(self, detail: str) -> None:
        """Say goodbye the protocol's way (idle, shutdown): the loop writes and ends."""

    async def cut(self) -> str:
        """The drain deadline passed while :attr:`busy`: reach a durable point (publish
        how far the work got) and return the detail to close with."""
        await self.link.ledger.barrier()
        return "ingestor shutting down"

    @abstractmethod
    async def finish(self, detail: str) -> None:
        """The session is over (not called after ``kafka_error``): make what arrived
        durable and publish the session's end. May raise
        :class:`~ingestor.sink.KafkaFailed`."""

    def summary(self) -> dict[str, Any]:
        """Fields for the session's summary log line."""
        return {}


class Protocol(ABC):
    """One protocol the ingestor hosts: one listener, process-wide state, a session factory."""

    #: Its name: the ``protocol`` metric label, ``FLEETGATE_<NAME>_*`` settings, log field.
    name: ClassVar[str]
    #: What the device's first message is called, in "no <hello> within N s".
    hello: ClassVar[str] = "hello"
    #: Close reasons of its own, besides the edge's (:data:`ingestor.metrics.CLOSE_REASONS`).
    close_reasons: ClassVar[tuple[str, ...]] = ()
    #: Its listener settings (reads ``FLEETGATE_<NAME>_*``).
    settings_class: ClassVar[type[ListenerSettings]]

    def __init__(self, settings: ListenerSettings, edge: IngestorSettings, sink: Sink) -> None:
        self.settings = settings
        self.edge = edge
        self.sink = sink

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Before the listener accepts (read what sessions need from Kafka, say)."""

    @abstractmethod
    def session(self, link: Link) -> Session:
        """A session for a new connection."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """After every session ended (flush what the protocol publishes on its own)."""

    def describe(self) -> dict[str, Any]:
        """Fields for the ``listening`` log line."""
        return {}
