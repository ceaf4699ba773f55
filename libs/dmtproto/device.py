"""Device role: a Digital Matter tracker uploading records, as the simulator, the tests and a
raw-TCP forwarder drive it.

A :class:`DmtDevice` outlives connections: it keeps the records it logged and drops them only
when a server commits them. Each TCP connection gets a :class:`DeviceConnection` from
:meth:`DmtDevice.connect`, which sends HELLO, waits for the hello response, then sends the
pending records in batches, each followed by a commit request whose response it waits for.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from ._wire import (
    COMMIT_OK,
    Frame,
    FrameError,
    FrameReader,
    Hello,
    MessageType,
    encode,
    encode_hello,
    type_label,
)
from .errors import LocalProtocolError, RemoteProtocolError
from .events import (
    AsyncSessionCompleted,
    CommitAcknowledged,
    Event,
    HelloAcknowledged,
    TimeReceived,
    VersionDataAcknowledged,
)
from .records import Field, FixedRecord, Record, encode_fixed_record, encode_record

__all__ = ["DeviceConnection", "DeviceState", "DmtDevice"]

_U32 = struct.Struct("<I")
_HELLO_RESPONSE = struct.Struct("<II")
M = MessageType


@dataclass(slots=True)
class DmtDevice:
    """A tracker and the records it still holds. ``committed`` counts records servers
    committed over all connections.

    ``hello_message``, when given, is the whole HELLO message as a real device sent it; each
    connection sends it instead of encoding ``hello`` (a forwarder replays the device's own
    bytes, trailing and padding bytes included).
    """

    hello: Hello
    pending: list[Record | FixedRecord] = field(default_factory=list)
    next_sequence: int = 1
    committed: int = 0
    hello_message: bytes = b""

    def log(self, *, time: int, log_reason: int, fields: Sequence[Field] = ()) -> Record:
        """Log a record with the next sequence number; it waits in ``pending``."""
        record = Record(
            sequence=self.next_sequence, time=time, log_reason=log_reason, fields=tuple(fields)
        )
        self.next_sequence = (self.next_sequence + 1) & 0xFFFFFFFF
        self.pending.append(record)
        return record

    def connect(
        self,
        *,
        records_per_message: int = 16,
        records_per_commit: int = 256,
        auto_upload: bool = True,
    ) -> DeviceConnection:
        """A new connection; its HELLO is already queued in ``data_to_send()``."""
        return DeviceConnection(
            self,
            records_per_message=records_per_message,
            records_per_commit=records_per_commit,
            auto_upload=auto_upload,
        )


class DeviceState(Enum):
    AWAIT_HELLO_RESPONSE = "await_hello_response"
    #: Nothing in flight: ``upload()`` may start a batch.
    IDLE = "idle"
    AWAIT_COMMIT_RESPONSE = "await_commit_response"
    CLOSED = "closed"


def _batch_messages(records: Sequence[Record | FixedRecord], per_message: int) -> bytes:
    out = bytearray()
    run: list[bytes] = []
    run_type: MessageType | None = None
    for record in records:
        if isinstance(record, FixedRecord):
            kind, data = M.FIXED_RECORDS, encode_fixed_record(record)
        else:
            kind, data = M.DATA_RECORDS, encode_record(record)
        if run and (kind is not run_type or len(run) >= per_message):
            out += encode(run_type or kind, b"".join(run))
            run = []
        run_type = kind
        run.append(data)
    out += encode(run_type or M.DATA_RECORDS, b"".join(run))  # callers pass >= 1 record
    return bytes(out)


class DeviceConnection:
    """One connection of a tracker, device side."""

    def __init__(
        self,
        device: DmtDevice,
        *,
        records_per_message: int = 16,
        records_per_commit: int = 256,
        auto_upload: bool = True,
    ) -> None:
        if records_per_message < 1 or records_per_commit < 1:
            raise LocalProtocolError("records per message and per commit must be at least 1")
        self.device = device
        self.records_per_message = records_per_message
        self.records_per_commit = records_per_commit
        self.auto_upload = auto_upload
        self.state = DeviceState.AWAIT_HELLO_RESPONSE
        self.in_flight = 0  # records sent and not yet committed
        self.server_time: int | None = None
        self._reader = FrameReader(0xFFFF)
        self._out = bytearray(device.hello_message or encode_hello(device.hello))

    @property
    def closed(self) -> bool:
        return self.state is DeviceState.CLOSED

    @property
    def finished(self) -> bool:
        """Everything the device holds is committed and nothing waits for an answer."""
        return self.state is DeviceState.IDLE and not self.device.pending

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the server. Raises RemoteProtocolError if the server misbehaves."""
        if self.closed:
            return []
        self._reader.feed(data)
        events: list[Event] = []
        try:
            while not self.closed and (frame := self._reader.next_frame()):
                self._handle(frame, events)
        except (FrameError, RemoteProtocolError) as exc:
            self.state = DeviceState.CLOSED
            raise RemoteProtocolError(str(exc), events) from None
        return events

    def upload(self) -> int:
        """Send the next batch of pending records and a commit request; return how many.

        Only when IDLE (the previous batch was answered). With ``auto_upload`` this runs by
        itself after the hello response and after each successful commit.
        """
        if self.state is not DeviceState.IDLE:
            raise LocalProtocolError(f"cannot upload in state {self.state.name}")
        batch = self.device.pending[: self.records_per_commit]
        if not batch:
            return 0
        self._out += _batch_messages(batch, self.records_per_message)
        self._out += encode(M.COMMIT_REQUEST)
        self.in_flight = len(batch)
        self.state = DeviceState.AWAIT_COMMIT_RESPONSE
        return len(batch)

    def send(self, message_type: int, payload: bytes = b"") -> None:
        """Queue any other message: VERSION_DATA, ASYNC_SESSION_REQUEST, TIME_REQUEST,
        SOCKET_CLOSURE, or bytes a test wants the server to see."""
        if self.closed:
            raise LocalProtocolError("connection closed")
        self._out += encode(message_type, payload)

    def close(self) -> None:
        if self.closed:
            raise LocalProtocolError("connection already closed")
        self.state = DeviceState.CLOSED

    def _unexpected(self, frame: Frame) -> RemoteProtocolError:
        return RemoteProtocolError(
            f"server sent {type_label(frame.type)} of {len(frame.payload)} bytes in state "
            f"{self.state.name}"
        )

    def _handle(self, frame: Frame, events: list[Event]) -> None:
        payload = frame.payload
        if frame.type == M.HELLO_RESPONSE and self.state is DeviceState.AWAIT_HELLO_RESPONSE:
            if len(payload) == _HELLO_RESPONSE.size:
                server_time, flags = _HELLO_RESPONSE.unpack(payload)
            elif len(payload) == 5:  # Traccar's answer to a 51-byte HELLO
                server_time, flags = 0, 0
            else:
                raise self._unexpected(frame)
            self.server_time = server_time
            events.append(HelloAcknowledged(time=server_time, flags=flags))
            self.state = DeviceState.IDLE
            if self.auto_upload:
                self.upload()
        elif frame.type == M.COMMIT_RESPONSE and self.state is DeviceState.AWAIT_COMMIT_RESPONSE:
            if len(payload) != 1:
                raise self._unexpected(frame)
            status, count = payload[0], self.in_flight
            if status == COMMIT_OK:
                del self.device.pending[:count]
                self.device.committed += count
            self.in_flight = 0
            self.state = DeviceState.IDLE
            events.append(CommitAcknowledged(status=status, records=count))
            if status == COMMIT_OK and self.auto_upload:
                self.upload()
        elif frame.type == M.VERSION_DATA_RESPONSE:
            events.append(VersionDataAcknowledged())
        elif frame.type == M.ASYNC_SESSION_COMPLETE:
            events.append(AsyncSessionCompleted())
        elif frame.type == M.TIME_RESPONSE and len(payload) == _U32.size:
            events.append(TimeReceived(time=_U32.unpack(payload)[0]))
        else:
            raise self._unexpected(frame)
