"""One Digital Matter connection's adapter: ``dmtproto.ServerConnection`` events <-> Kafka.

Each record goes out twice, keyed by the IMEI: decoded on ``fleetgate.records.v1`` (the
shared telemetry layout, :class:`contracts.dmt.TelemetryJson`) and as the device sent
it on ``fleetgate.dmt.raw.v1`` (headers :class:`contracts.records.RawHeader`). A commit
request is answered only after the ledger's barrier: Kafka acknowledged (``acks=all``) every
record received before it. The device deletes what we commit, so when Kafka fails there is
no reply; the session closes (``kafka_error``) and the device sends the records again on its
next connection, with the same ``record_id``.

The device registry (``fleetgate.devices.v1``) gets the device's status at HELLO (its last
known status, :mod:`ingestor.registry`, with this connection and the HELLO's identity) and,
when records came since, before each commit's barrier and at the end of the session. Session
events (connected, hello, closed) go to ``fleetgate.dmt.sessions.v1``.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from contracts import Topic
from contracts.dmt import (
    DmtClosed,
    DmtConnected,
    DmtHello,
    TelemetryJson,
    device_identity,
    telemetry_record,
)
from contracts.models import encode
from contracts.records import DeviceStatus, RawHeader, apply_record
from dmtproto import (
    CommitRequested,
    Event,
    FixedRecord,
    GpsField,
    HelloReceived,
    MessageIgnored,
    Record,
    RecordReceived,
    RemoteProtocolError,
    ServerConfig,
    ServerConnection,
    ServerState,
    SessionClosed,
)

from .. import metrics as edge_metrics
from ..adapter import Link, PeerError, Session
from . import metrics
from .settings import DmtSettings

__all__ = ["DmtSession"]

_HELLO_TYPE = b"0"
#: Bytes of a read fed to the protocol core at a time (about 80 records of 48 bytes).
_SLICE = 4096
# Topics as plain str (aiokafka and the sink take str; an enum member costs more per lookup).
_RECORDS = str(Topic.RECORDS)
_DMT_RAW = str(Topic.DMT_RAW)
# aiokafka takes header names of type str exactly (not a StrEnum).
_RECORD_ID = RawHeader.RECORD_ID.value
_SESSION = RawHeader.SESSION.value
_INGESTOR = RawHeader.INGESTOR.value
_RECEIVED_AT = RawHeader.RECEIVED_AT.value
_MESSAGE_TYPE = RawHeader.MESSAGE_TYPE.value
_HELLO = RawHeader.HELLO.value
#: A raw record's ``fg-message-type`` header value, per message type.
_TYPE_HEADERS: dict[int, tuple[str, bytes]] = {}


def _type_header(message_type: int) -> tuple[str, bytes]:
    header = _TYPE_HEADERS.get(message_type)
    if header is None:
        header = _TYPE_HEADERS[message_type] = (_MESSAGE_TYPE, str(int(message_type)).encode())
    return header


def _has_fix(record: Record | FixedRecord) -> bool:
    if isinstance(record, FixedRecord):
        return record.valid
    for field in record.fields:  # noqa: SIM110 (per record: a loop costs less than any())
        if isinstance(field, GpsField) and field.valid:
            return True
    return False


def _newer(record: Record | FixedRecord, than: Record | FixedRecord | None) -> bool:
    if than is None:
        return True
    if isinstance(record, Record) and isinstance(than, Record):
        # Wire times order as device times do; 0: the device's clock was not set.
        mine_s, theirs_s = record.time, than.time
        return not mine_s or not theirs_s or mine_s >= theirs_s
    mine, theirs = record.device_time, than.device_time
    return mine is None or theirs is None or mine >= theirs


class DmtSession(Session):
    """A Digital Matter connection: feeds ``dmtproto``, publishes records, commits what
    Kafka acknowledged."""

    def __init__(self, link: Link, settings: DmtSettings) -> None:
        self.link = link
        self.settings = settings
        loop = asyncio.get_running_loop()
        self._conn = ServerConnection(
            ServerConfig(
                max_message_length=settings.max_message_length,
                hello_timeout_seconds=settings.hello_timeout_seconds,
                idle_timeout_seconds=settings.idle_timeout_seconds,
                max_ignored_messages=settings.max_ignored_messages,
            ),
            now=loop.time(),
            unix_time=time.time(),
        )
        self._hello: HelloReceived | None = None
        self._json: TelemetryJson | None = None
        self._key = b""
        self._raw_headers: list[tuple[str, bytes]] = []
        #: A record's headers also carry the session's HELLO (forwarding needs it).
        self._record_headers: list[tuple[str, bytes]] = []
        #: The device's status as last published, and the records since that tell more.
        self._status: DeviceStatus | None = None
        self._latest: Record | FixedRecord | None = None
        self._latest_fix: Record | FixedRecord | None = None
        self._detail = "session closed"
        self._opened = time.monotonic()
        self._records = edge_metrics.records.labels(link.protocol)
        #: Records published since the counter was last moved (once per batch of events).
        self._counted = 0

    # What the edge asks ---------------------------------------------------------------

    @property
    def identified(self) -> bool:
        return self._hello is not None

    @property
    def busy(self) -> bool:
        """Records received and not committed: a drain waits for the device's commit."""
        return self._conn.uncommitted > 0 and self._conn.state is not ServerState.CLOSED

    @property
    def closed(self) -> bool:
        return self._conn.state is ServerState.CLOSED

    @property
    def detail(self) -> str:
        return self._detail

    def next_deadline(self) -> float | None:
        return self._conn.next_deadline()

    def data_to_send(self) -> bytes:
        return self._conn.data_to_send()

    def summary(self) -> dict[str, Any]:
        conn = self._conn
        return {"records": conn.records, "committed": conn.committed, "ignored": conn.ignored}

    # What the edge feeds --------------------------------------------------------------

    async def start(self) -> None:
        await self._session_event(DmtConnected, peer=self.link.peer)

    async def receive_data(self, data: bytes, now: float) -> None:
        """Feed a read to the protocol core a slice at a time, letting the other sessions
        run between slices: a read of a big batch (up to 64 KiB, over a thousand records)
        is decoded and published in bounded steps, so another device's commit reply does
        not wait behind all of it."""
        size = len(data)
        for start in range(0, size, _SLICE):
            if start:
                await asyncio.sleep(0)
                if self.closed:
                    return
            piece = data if size <= _SLICE else data[start : start + _SLICE]
            try:
                events = self._conn.receive_data(piece, now)
            except RemoteProtocolError as exc:
                # Records before the error are not committed: the device sends them again.
                raise PeerError(str(exc)) from exc
            await self._handle(events)

    async def receive_eof(self) -> None:
        await self._handle(self._conn.receive_eof())

    async def handle_timeout(self, now: float) -> None:
        events = self._conn.handle_timeout(now)
        await self._handle(events)
        if events:
            self.link.close_reason = "idle"

    async def close(self, detail: str) -> None:
        """The protocol has no goodbye: hang up; uncommitted records come again."""
        self._detail = detail
        self._conn.close(detail)

    async def finish(self, detail: str) -> None:
        await self._publish_status()
        conn = self._conn
        await self._session_event(
            DmtClosed,
            reason=self.link.close_reason,
            detail=detail,
            clean=self.link.close_reason == "clean",
            records=conn.records,
            committed=conn.committed,
            ignored_messages=conn.ignored,
            duration_seconds=round(time.monotonic() - self._opened, 6),
        )
        await self.link.ledger.barrier()

    # Events ---------------------------------------------------------------------------

    async def _handle(self, events: list[Event]) -> None:
        if not events:
            return
        try:
            await self._events(events)
        finally:
            if self._counted:  # the records counter moves once per batch of events
                self._records.inc(self._counted)
                self._counted = 0

    async def _events(self, events: list[Event]) -> None:
        received_at = datetime.now(UTC)
        millis = str(int(received_at.timestamp() * 1000)).encode()
        #: A raw record's headers after its id, but for its message type (after the HELLO).
        shared: tuple[tuple[str, bytes], ...] | None = None
        for event in events:
            if isinstance(event, RecordReceived):
                if shared is None:
                    shared = (*self._record_headers, (_RECEIVED_AT, millis))
                # Inline, not a coroutine per record; awaits only when the producer has no
                # room for a record at once (``Ledger.put``).
                to_json = self._json
                assert to_json is not None  # records come only after the HELLO
                record = event.record
                ledger, key = self.link.ledger, self._key
                rid, value = to_json.with_id(record, received_at)
                if not ledger.put(_RECORDS, key, value, []):
                    await ledger.publish(_RECORDS, key, value)
                headers = [(_RECORD_ID, rid.encode()), *shared, _type_header(event.message_type)]
                if not ledger.put(_DMT_RAW, key, event.raw, headers):
                    await ledger.publish(_DMT_RAW, key, event.raw, headers)
                if _newer(record, self._latest):
                    self._latest = record
                if _newer(record, self._latest_fix) and _has_fix(record):
                    self._latest_fix = record
                self._counted += 1
            elif isinstance(event, CommitRequested):
                await self._on_commit()
            elif isinstance(event, HelloReceived):
                await self._on_hello(event, received_at, millis)
            elif isinstance(event, MessageIgnored):
                metrics.ignored.inc()
            elif isinstance(event, SessionClosed):
                self._detail = event.reason
                if event.clean:
                    self.link.close_reason = "clean"

    async def _on_hello(self, event: HelloReceived, received_at: datetime, millis: bytes) -> None:
        link = self.link
        link.identify(event.imei)  # NotAllowed: nothing of the device is published
        self._hello = event
        self._json = TelemetryJson(event, session_id=link.session_id, ingestor=link.instance)
        self._key = event.imei.encode()
        self._raw_headers = [
            (_SESSION, link.session_id.encode()),
            (_INGESTOR, link.instance.encode()),
        ]
        self._record_headers = [*self._raw_headers, (_HELLO, event.raw.hex().encode())]
        identity = device_identity(event)
        link.log = link.log.bind(product=identity.product or event.product_id)
        await link.ledger.publish(
            Topic.DMT_RAW,
            self._key,
            event.raw,
            [
                *self._raw_headers,
                (_RECEIVED_AT, millis),
                (_MESSAGE_TYPE, _HELLO_TYPE),
            ],
        )
        await self._session_event(DmtHello, device=identity)
        self._status = link.registry.connected(event.imei, link.connection(received_at), identity)
        await link.registry.publish(link.ledger, self._status)

    async def _on_commit(self) -> None:
        started = time.monotonic()
        await self._publish_status()
        await self.link.ledger.barrier()  # every record before the request is in Kafka
        if self._conn.commit():
            await self.link.transmit()
            metrics.commits.inc()
            metrics.commit_seconds.observe(time.monotonic() - started)

    async def _publish_status(self) -> None:
        """Fold the records since the last status into the device's newest status (this
        session's, or another ingestor's since) and publish it."""
        hello, status = self._hello, self._status
        if hello is None or status is None or self._latest is None:
            return
        registry = self.link.registry
        status = registry.refreshed(status)
        received_at = datetime.now(UTC)
        for record in (self._latest_fix, self._latest):
            if record is not None:
                model = telemetry_record(
                    record,
                    hello,
                    session_id=self.link.session_id,
                    ingestor=self.link.instance,
                    received_at=received_at,
                )
                status = apply_record(status, model)
        self._status = status
        self._latest = self._latest_fix = None
        await registry.publish(self.link.ledger, status)

    async def _session_event(self, model: type[Any], **fields: Any) -> None:
        link = self.link
        event = model(
            session_id=link.session_id,
            ingestor=link.instance,
            imei=link.imei,
            at=datetime.now(UTC),
            **fields,
        )
        key = (link.imei or link.session_id).encode()
        await link.ledger.publish(Topic.DMT_SESSIONS, key, encode(event))
