"""Server role: what an ingestor drives. Bytes in, events out, bytes to send, time passed in.

Use::

    conn = ServerConnection(ServerConfig(), now=loop.time(), unix_time=time.time())
    events = conn.receive_data(data, now)   # may raise RemoteProtocolError: log it, close
    sock.send(conn.data_to_send())          # hello response, canned replies
    ... on CommitRequested: once every record before it is durable, conn.commit()
    ... when now >= conn.next_deadline(): events = conn.handle_timeout(now)

Every transition the device can trigger is in :data:`TRANSITIONS`; a message that is not
allowed in the current state is a :class:`RemoteProtocolError` naming both.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from ._wire import (
    COMMIT_OK,
    DEFAULT_MAX_MESSAGE,
    HELLO_SIZE,
    Frame,
    FrameError,
    FrameReader,
    Hello,
    MessageType,
    decode_hello,
    encode,
    to_dm_time,
    type_label,
)
from .errors import LocalProtocolError, RemoteProtocolError
from .events import (
    CommitRequested,
    Event,
    HelloReceived,
    MessageIgnored,
    RecordReceived,
    RequestAnswered,
    SessionClosed,
)
from .records import DecodeError, decode_fixed_records, decode_records

__all__ = [
    "COMMIT_REPLY",
    "TRANSITIONS",
    "LocalInput",
    "OtherMessage",
    "ServerConfig",
    "ServerConnection",
    "ServerState",
]

_U32 = struct.Struct("<I")
_HELLO_RESPONSE = struct.Struct("<II")
#: The commit response: status 1, success.
COMMIT_REPLY = encode(MessageType.COMMIT_RESPONSE, bytes([COMMIT_OK]))


class ServerState(Enum):
    AWAIT_HELLO = "await_hello"
    READY = "ready"
    #: At least one commit request waits for ``commit()``.
    COMMITTING = "committing"
    CLOSED = "closed"
    ERROR = "error"


class LocalInput(Enum):
    """Inputs that come from the application or the clock, not from the device."""

    COMMIT = "commit"
    TIMEOUT = "timeout"
    CLOSE = "close"
    EOF = "eof"


class OtherMessage(Enum):
    """Any message type the server does not act on: replies the device should not send, types
    this core does not implement, unknown bytes. Ignored and counted after HELLO."""

    ANY = "other"


S = ServerState
M = MessageType
_OPEN = (S.AWAIT_HELLO, S.READY, S.COMMITTING)
_SESSION = (S.READY, S.COMMITTING)
_STAY = (
    M.DATA_RECORDS,
    M.FIXED_RECORDS,
    M.VERSION_DATA,
    M.ASYNC_SESSION_REQUEST,
    M.TIME_REQUEST,
    OtherMessage.ANY,
)
Trigger = MessageType | OtherMessage | LocalInput

#: ``(state, input) -> states the input may lead to``. Anything absent is a protocol error.
TRANSITIONS: dict[tuple[ServerState, Trigger], frozenset[ServerState]] = {
    (S.AWAIT_HELLO, M.HELLO): frozenset({S.READY}),
    **{(state, trigger): frozenset({state}) for state in _SESSION for trigger in _STAY},
    **{(state, M.COMMIT_REQUEST): frozenset({S.COMMITTING}) for state in _SESSION},
    **{(state, M.SOCKET_CLOSURE): frozenset({S.CLOSED}) for state in _SESSION},
    (S.COMMITTING, LocalInput.COMMIT): frozenset({S.READY, S.COMMITTING}),
    **{(state, LocalInput.TIMEOUT): frozenset({S.CLOSED}) for state in _OPEN},
    **{(state, LocalInput.CLOSE): frozenset({S.CLOSED}) for state in _OPEN},
    **{(state, LocalInput.EOF): frozenset({S.CLOSED}) for state in _OPEN},
}

#: Message types the device sends and the server acts on.
DEVICE_MESSAGES = frozenset(
    {
        M.HELLO,
        M.DATA_RECORDS,
        M.COMMIT_REQUEST,
        M.FIXED_RECORDS,
        M.VERSION_DATA,
        M.ASYNC_SESSION_REQUEST,
        M.SOCKET_CLOSURE,
        M.TIME_REQUEST,
    }
)
_TRIGGERS: dict[int, MessageType | OtherMessage] = {
    raw: (MessageType(raw) if raw in DEVICE_MESSAGES else OtherMessage.ANY) for raw in range(256)
}


@dataclass(frozen=True, slots=True)
class ServerConfig:
    #: Longest message payload accepted, in bytes (the wire allows 65535).
    max_message_length: int = DEFAULT_MAX_MESSAGE
    #: A device must send HELLO within this many seconds of connecting.
    hello_timeout_seconds: float = 30.0
    #: The session closes after this many seconds without a byte from the device.
    idle_timeout_seconds: float = 300.0
    #: Messages of types the server does not act on, per session, before it gives up.
    max_ignored_messages: int = 100
    #: Flags of the hello response (Traccar sends 1 for a device it does not know).
    hello_flags: int = 0
    #: Answer a HELLO longer than 49 bytes as Traccar does, with the 5 bytes ``00 00000000``,
    #: instead of the time and flags. Off by default: the meaning is not public.
    traccar_long_hello_reply: bool = False


class ServerConnection:
    """One device session, server side.

    ``now`` is the clock the deadlines use (monotonic seconds); ``unix_time`` is the wall clock
    at the same instant, from which the hello and time responses tell the device the time.
    """

    __slots__ = (
        "_commits",
        "_last_activity",
        "_out",
        "_reader",
        "_started",
        "_unix_offset",
        "committed",
        "config",
        "hello",
        "ignored",
        "records",
        "state",
    )

    def __init__(self, config: ServerConfig | None = None, *, now: float, unix_time: float) -> None:
        self.config = config = config if config is not None else ServerConfig()
        self.state = S.AWAIT_HELLO
        self.hello: Hello | None = None
        #: Records received in this session, and how many of them are committed.
        self.records = 0
        self.committed = 0
        #: Messages ignored in this session.
        self.ignored = 0
        self._reader = FrameReader(config.max_message_length)
        self._out = bytearray()
        self._started = self._last_activity = now
        self._unix_offset = unix_time - now
        self._commits: list[int] = []  # records covered by each unanswered request

    # Public API -------------------------------------------------------------------------

    @property
    def state_name(self) -> str:
        return self.state.name

    @property
    def uncommitted(self) -> int:
        """Records received but not committed (the device still holds them)."""
        return self.records - self.committed

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes from the device; return what they meant.

        Raises RemoteProtocolError on anything the protocol does not allow; the connection is
        then in ERROR and should be closed. The events of the same call before the error ride
        on the exception (``exc.events``); nothing of them is committed.
        """
        if self.state is S.ERROR:
            raise LocalProtocolError("connection already failed")
        if self.state is S.CLOSED:
            return []
        self._last_activity = now
        self._reader.feed(data)
        events: list[Event] = []
        try:
            while not self._closed() and (frame := self._reader.next_frame()):
                trigger = _TRIGGERS[frame.type]
                allowed = self._input(trigger, frame.type)
                _HANDLERS[trigger](self, frame, events)
                assert self.state in allowed, (trigger, self.state)
        except FrameError as exc:
            state = self.state_name
            self._fail()
            raise RemoteProtocolError(
                f"{exc} (state {state})", events, message_type=exc.message_type, state=state
            ) from None
        except RemoteProtocolError as exc:
            state = self.state_name
            self._fail()
            raise RemoteProtocolError(
                str(exc), events, message_type=exc.message_type, state=state
            ) from None
        return events

    def receive_eof(self) -> list[Event]:
        """The device closed its side."""
        if self.state in (S.CLOSED, S.ERROR):
            return []
        self._input(LocalInput.EOF)
        uncommitted = self.uncommitted
        if self.state is S.AWAIT_HELLO:
            reason, clean = "device closed the connection before HELLO", False
        elif self.state is S.COMMITTING:
            reason = (
                f"device closed the connection before the commit response "
                f"({uncommitted} records not committed)"
            )
            clean = False
        elif uncommitted:
            reason = f"device closed the connection with {uncommitted} records not committed"
            clean = False
        else:
            reason, clean = "device closed the connection", True
        self.state = S.CLOSED
        return [SessionClosed(reason=reason, clean=clean, uncommitted=uncommitted)]

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_deadline(self) -> float | None:
        """When ``handle_timeout`` wants to be called, if at all."""
        if self.state is S.AWAIT_HELLO:
            return self._started + self.config.hello_timeout_seconds
        if self.state in _SESSION:
            return self._last_activity + self.config.idle_timeout_seconds
        return None

    def handle_timeout(self, now: float) -> list[Event]:
        """Close the session if the device sent no HELLO in time, or went quiet."""
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return []
        if self.state is S.AWAIT_HELLO:
            reason = f"no HELLO within {self.config.hello_timeout_seconds:g} s of connecting"
        else:
            reason = (
                f"idle for {self.config.idle_timeout_seconds:g} s (idle timeout) in state "
                f"{self.state_name}"
            )
        self._input(LocalInput.TIMEOUT)
        return [self._close(reason)]

    def commit(self) -> bool:
        """Every record before the oldest unanswered commit request is durable: answer it.

        Returns False (and sends nothing) if the session has already closed: the device will
        send those records again. Raises LocalProtocolError if no commit request waits.
        """
        if self.state in (S.CLOSED, S.ERROR):
            return False
        self._input(LocalInput.COMMIT)
        self.committed = self._commits.pop(0)
        self._out += COMMIT_REPLY
        self.state = S.COMMITTING if self._commits else S.READY
        return True

    def close(self, reason: str) -> list[Event]:
        """End the session (Kafka failed, the ingestor drains...). The protocol has no close
        message: the caller hangs up; uncommitted records come again on the next connection."""
        if self.state in (S.CLOSED, S.ERROR):
            return []
        self._input(LocalInput.CLOSE)
        return [self._close(reason)]

    # Transitions ------------------------------------------------------------------------

    def _input(self, trigger: Trigger, raw: int | None = None) -> frozenset[ServerState]:
        allowed = TRANSITIONS.get((self.state, trigger))
        if allowed is not None:
            return allowed
        if isinstance(trigger, LocalInput):
            raise LocalProtocolError(f"{trigger.name} not allowed in state {self.state_name}")
        assert raw is not None
        expected = sorted(
            t.label() for (s, t) in TRANSITIONS if s is self.state and isinstance(t, MessageType)
        )
        raise RemoteProtocolError(
            f"device sent {type_label(raw)} in state {self.state_name}; expected "
            f"{', '.join(expected)}",
            message_type=raw,
        )

    def _closed(self) -> bool:
        return self.state is S.CLOSED

    def _fail(self) -> None:
        self.state = S.ERROR

    def _close(self, reason: str) -> SessionClosed:
        self.state = S.CLOSED
        return SessionClosed(reason=reason, clean=False, uncommitted=self.uncommitted)

    def _unix_now(self) -> int:
        return to_dm_time(self._last_activity + self._unix_offset)

    # Handlers ---------------------------------------------------------------------------

    def _on_hello(self, frame: Frame, events: list[Event]) -> None:
        payload = frame.payload
        if len(payload) < HELLO_SIZE:
            raise RemoteProtocolError(
                f"{M.HELLO.label()} payload of {len(payload)} bytes; at least {HELLO_SIZE} "
                f"required (state {self.state_name})",
                message_type=frame.type,
            )
        hello = decode_hello(payload)
        if not (hello.imei.isdigit() and hello.imei.isascii()):
            raise RemoteProtocolError(
                f"{M.HELLO.label()} IMEI {hello.imei!r} is not a string of digits "
                f"(state {self.state_name})",
                message_type=frame.type,
            )
        self.hello = hello
        if self.config.traccar_long_hello_reply and len(payload) > HELLO_SIZE:
            reply = bytes(5)
        else:
            reply = _HELLO_RESPONSE.pack(self._unix_now(), self.config.hello_flags)
        self._out += encode(M.HELLO_RESPONSE, reply)
        self.state = S.READY
        events.append(
            HelloReceived(
                serial=hello.serial,
                imei=hello.imei,
                iccid=hello.iccid,
                product_id=hello.product_id,
                hardware_revision=hello.hardware_revision,
                firmware_major=hello.firmware_major,
                firmware_minor=hello.firmware_minor,
                flags=hello.flags,
                extra=hello.extra,
                raw=frame.raw,
            )
        )

    def _decode_error(self, frame: Frame, exc: DecodeError) -> RemoteProtocolError:
        return RemoteProtocolError(
            f"{type_label(frame.type)}: {exc} (state {self.state_name})", message_type=frame.type
        )

    def _on_data_records(self, frame: Frame, events: list[Event]) -> None:
        try:
            records = decode_records(frame.payload)
        except DecodeError as exc:
            raise self._decode_error(frame, exc) from None
        single = len(records) == 1
        for record in records:
            raw = frame.raw if single else encode(M.DATA_RECORDS, record.raw)
            events.append(
                RecordReceived(
                    record=record, message_type=M.DATA_RECORDS, raw=raw, index=self.records
                )
            )
            self.records += 1

    def _on_fixed_records(self, frame: Frame, events: list[Event]) -> None:
        try:
            records = decode_fixed_records(frame.payload)
        except DecodeError as exc:
            raise self._decode_error(frame, exc) from None
        single = len(records) == 1
        for record in records:
            raw = frame.raw if single else encode(M.FIXED_RECORDS, record.raw)
            events.append(
                RecordReceived(
                    record=record, message_type=M.FIXED_RECORDS, raw=raw, index=self.records
                )
            )
            self.records += 1

    def _on_commit_request(self, frame: Frame, events: list[Event]) -> None:
        previous = self._commits[-1] if self._commits else self.committed
        self._commits.append(self.records)
        self.state = S.COMMITTING
        events.append(CommitRequested(records=self.records, new_records=self.records - previous))

    def _answer(
        self, frame: Frame, reply: MessageType, payload: bytes, events: list[Event]
    ) -> None:
        self._out += encode(reply, payload)
        events.append(RequestAnswered(request=MessageType(frame.type), reply=reply))

    def _on_version_data(self, frame: Frame, events: list[Event]) -> None:
        self._answer(frame, M.VERSION_DATA_RESPONSE, bytes(12), events)

    def _on_async_session(self, frame: Frame, events: list[Event]) -> None:
        self._answer(frame, M.ASYNC_SESSION_COMPLETE, b"", events)

    def _on_time_request(self, frame: Frame, events: list[Event]) -> None:
        self._answer(frame, M.TIME_RESPONSE, _U32.pack(self._unix_now()), events)

    def _on_socket_closure(self, frame: Frame, events: list[Event]) -> None:
        uncommitted = self.uncommitted
        self.state = S.CLOSED
        reason = "device announced socket closure (0x26)"
        if uncommitted:
            reason += f" with {uncommitted} records not committed"
        events.append(SessionClosed(reason=reason, clean=not uncommitted, uncommitted=uncommitted))

    def _on_other(self, frame: Frame, events: list[Event]) -> None:
        self.ignored += 1
        if self.ignored > self.config.max_ignored_messages:
            raise RemoteProtocolError(
                f"{type_label(frame.type)}: more than {self.config.max_ignored_messages} "
                f"ignored messages (limit max_ignored_messages; state {self.state_name})",
                message_type=frame.type,
            )
        events.append(MessageIgnored(message_type=frame.type, length=len(frame.raw) - 5))


#: What each message does; one table for all connections (it costs no memory per session).
_HANDLERS: dict[MessageType | OtherMessage, Callable[[ServerConnection, Frame, list[Event]], None]]
_HANDLERS = {
    M.HELLO: ServerConnection._on_hello,
    M.DATA_RECORDS: ServerConnection._on_data_records,
    M.FIXED_RECORDS: ServerConnection._on_fixed_records,
    M.COMMIT_REQUEST: ServerConnection._on_commit_request,
    M.VERSION_DATA: ServerConnection._on_version_data,
    M.ASYNC_SESSION_REQUEST: ServerConnection._on_async_session,
    M.TIME_REQUEST: ServerConnection._on_time_request,
    M.SOCKET_CLOSURE: ServerConnection._on_socket_closure,
    OtherMessage.ANY: ServerConnection._on_other,
}
