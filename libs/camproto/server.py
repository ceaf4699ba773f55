"""Server role: what an ingestor drives. Bytes in, events out, bytes to send, time passed in.

Use::

    conn = ServerConnection(policy)
    events = conn.receive_data(data, now)   # may raise RemoteProtocolError: log it, close
    sock.send(conn.data_to_send())
    ... on TransferComplete, make the file durable, then conn.confirm_file()
    ... when now >= conn.next_deadline(): events = conn.handle_timeout(now)

Every transition the device can trigger is in :data:`TRANSITIONS`; a command that is not
allowed in the current state is a :class:`RemoteProtocolError` naming both.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ._crc import crc16
from ._wire import DATA_CHUNK, CommandId, FrameError, ServerFrameReader, encode
from .errors import LocalProtocolError, RemoteProtocolError
from .events import (
    CrcMismatch,
    Event,
    FileEmpty,
    FileGivenUp,
    FileOffered,
    MetadataReceived,
    PathEmpty,
    SessionClosed,
    SessionStarted,
    StatusReceived,
    TransferComplete,
    TransferRefused,
    TransferRestarted,
    TransferStarted,
    chunk_received,
)
from .files import PATH_FILE_READY_BIT, CameraFile, offered_slots
from .metadata import Metadata, decode_metadata
from .policy import (
    DefaultPolicy,
    PolicyBase,
    ResumePoint,
    ServerPolicy,
    SessionInfo,
    TransferInfo,
)
from .transitions import (
    AWAITED,
    STATUS_ACTIONS,
    TRANSITIONS,
    DeviceStatus,
    LocalInput,
    ServerState,
    StatusAction,
    StatusKind,
    status_action,
)

__all__ = [
    "STATUS_ACTIONS",
    "SUPPORTED_PROTOCOLS",
    "TRANSITIONS",
    "DefaultPolicy",
    "DeviceStatus",
    "LocalInput",
    "PolicyBase",
    "ResumePoint",
    "ServerConfig",
    "ServerConnection",
    "ServerPolicy",
    "ServerState",
    "SessionInfo",
    "StatusAction",
    "StatusKind",
    "TransferInfo",
    "status_action",
]

_INIT = struct.Struct(">HQI")
_START = struct.Struct(">IH")
_U32 = struct.Struct(">I")
_MAX_IMEI = 10**15
S = ServerState
C = CommandId
A = StatusAction
#: Where a plain DATA packet may take a session that is receiving a file.
_DATA_WHILE_RECEIVING = TRANSITIONS[(S.RECEIVING, C.DATA)]

#: Protocol ids accepted in INIT. 5: FMx firmware 03.27.00.Rev.100 and up; 1-4: older firmware,
#: whose 16-byte INIT has the same layout (Teltonika's test server and Traccar read every id
#: below 6 as 5 does); 6: the path flow for every camera (a third-party copy of the test server).
SUPPORTED_PROTOCOLS = frozenset({1, 2, 3, 4, 5, 6})


@dataclass(frozen=True, slots=True)
class ServerConfig:
    #: Protocol ids accepted in INIT; others get CLOSE (see :data:`SUPPORTED_PROTOCOLS`).
    supported_protocols: frozenset[int] = SUPPORTED_PROTOCOLS
    #: First RESUME of a DualCam file: 1 (Traccar and others) or 0 (Teltonika's test server).
    dualcam_first_resume: int = 1
    #: Seconds between RESUMEs while no SYNC answers one.
    resume_interval: float = 2.0
    #: RESUMEs sent without a SYNC, or CRC mismatches in a row, before the session is closed.
    max_resume_attempts: int = 10
    #: Seconds the device may take to answer a request, or stay silent mid-file, before the
    #: session is closed (the ingestor's idle timeout is the same by default).
    response_timeout: float = 60.0
    #: Seconds the application may take to call ``confirm_file()`` after TransferComplete.
    confirm_timeout: float = 300.0


@dataclass(slots=True)
class _Transfer:
    file: CameraFile
    by_packets: bool
    total: int  # packets or bytes
    device_crc: int | None
    received: int  # bytes
    chain: int  # the device's running CRC: the last CRC field accepted
    file_crc: int  # CRC of bytes [0, received)
    after_sync: bool = True
    ignored: int = 0  # DATA packets dropped while waiting for SYNC
    failures: int = 0  # CRC mismatches since the last good chunk
    #: The resume point the policy gave (0: from the start): what arrives there is checked.
    resumed_at: int = 0
    #: CRC of the whole file kept already (a resume at its last packet), to compare.
    expected_file_crc: int | None = None
    #: Bytes up to here are kept already, with CRC ``verify_crc`` at their end, to compare.
    verify_at: int | None = None
    verify_crc: int = 0

    def wire_offset(self, offset: int, first: int) -> int:
        if not self.by_packets:
            return offset
        return first if offset == 0 else offset // DATA_CHUNK + 1

    def byte_offset(self, wire: int) -> int:
        return (max(wire, 1) - 1) * DATA_CHUNK if self.by_packets else wire

    def describe(self) -> str:
        unit = "packets" if self.by_packets else "bytes"
        return f"{self.file} at byte {self.received} of {self.total} {unit}"


@dataclass(slots=True)
class _Resume:
    deadline: float
    attempts: int = 0


@dataclass(slots=True)
class ServerConnection:
    """One device session, server side.

    ``opened`` is when the connection opened (monotonic seconds); with it, INIT is due within
    ``config.response_timeout`` like every other answer. Without it the caller times the first
    INIT itself, and deadlines start with the first bytes.
    """

    policy: ServerPolicy = field(default_factory=DefaultPolicy)
    config: ServerConfig = field(default_factory=ServerConfig)
    opened: float | None = None
    state: ServerState = ServerState.AWAIT_INIT
    session: SessionInfo | None = None
    #: Why the session closed (the reason of its SessionClosed), once it has.
    closed_reason: str | None = None
    _reader: ServerFrameReader = field(default_factory=ServerFrameReader)
    _out: bytearray = field(default_factory=bytearray)
    _file: CameraFile | None = None
    _metadata: Metadata | None = None
    _transfer: _Transfer | None = None
    _resume: _Resume | None = None
    _deadline: float | None = None
    _now: float = 0.0
    #: DualCam files the last INIT offered: the "next offered file" after one fails.
    _offer: tuple[CameraFile, ...] = ()
    #: Files not to ask for again in this session, and why.
    _skip: dict[bytes, str] = field(default_factory=dict)
    #: The device answered a path request with a bare NUL: do not ask again this session.
    _no_path: bool = False
    _handlers: dict[CommandId, Callable[[bytes, float, list[Event]], None]] = field(
        init=False, repr=False
    )

    def __post_init__(self) -> None:
        self._handlers = {
            C.INIT: self._on_init,
            C.PATH: self._on_path,
            C.METADATA: self._on_metadata,
            C.START: self._on_start,
            C.SYNC: self._on_sync,
            C.DATA: self._on_data,
            C.ENHANCED_DATA: self._on_enhanced_data,
            C.STATUS: self._on_status,
        }
        if self.opened is not None:
            self._now = self.opened
            self._arm()

    # Public API -------------------------------------------------------------------------

    @property
    def transfer_offset(self) -> int | None:
        """Bytes of the current file received and checked so far."""
        return None if self._transfer is None else self._transfer.received

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes from the device; return what they meant.

        Raises RemoteProtocolError on anything the protocol does not allow; the connection is
        then in ERROR and should be closed. The events of the same call before the error ride
        on the exception (``exc.events``).
        """
        if self.state is S.ERROR:
            raise LocalProtocolError("connection already failed")
        if self.state is S.CLOSED:
            return []
        self._now = max(self._now, now)
        self._reader.feed(data)
        events: list[Event] = []
        reader = self._reader
        armed = True  # (no packet taken without arming)
        try:
            while not self._closed():
                # DATA while receiving, the bulk of a transfer, skips the general dispatch
                # (the table allows it: _DATA_WHILE_RECEIVING); the deadline, the same for
                # every packet of the call, is armed when the state changes or at the end.
                if self.state is S.RECEIVING and (packet := reader.next_data()):
                    self._on_chunk(packet[0], packet[1], now, events)
                    if self.state is S.RECEIVING:
                        armed = False
                        continue
                    assert self.state in _DATA_WHILE_RECEIVING, self.state
                    self._arm()
                    armed = True
                    continue
                frame = reader.next_frame()
                if frame is None:
                    break
                allowed = self._input(frame.command, events)
                self._handlers[frame.command](frame.payload, now, events)
                assert self.state in allowed, (frame.command, self.state)
                self._arm()
                armed = True
        except FrameError as exc:
            message = f"{exc} (state {self.state_name})"
            self._fail()
            raise RemoteProtocolError(message, events) from None
        except RemoteProtocolError as exc:
            self._fail()
            raise RemoteProtocolError(str(exc), events) from None
        if not armed:
            self._arm()
        return events

    def _fail(self) -> None:
        self.state = S.ERROR
        self._resume = None
        self._deadline = None

    def receive_eof(self) -> list[Event]:
        """The device closed its side."""
        if self.state in (S.CLOSED, S.ERROR):
            return []
        reason = self._eof_reason()
        self._input(LocalInput.EOF, [])
        self._resume = self._deadline = None
        self.state = S.CLOSED
        self.closed_reason = reason
        return [SessionClosed(reason=reason, clean=False)]

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_deadline(self) -> float | None:
        """When ``handle_timeout`` wants to be called, if at all."""
        if self._resume is not None:
            return self._resume.deadline
        return self._deadline

    def handle_timeout(self, now: float) -> list[Event]:
        """Re-send an unanswered RESUME, giving up after ``max_resume_attempts``; close a
        session whose device (or application) missed its deadline."""
        self._now = max(self._now, now)
        resume = self._resume
        if resume is None:
            deadline = self._deadline
            if deadline is None or now < deadline:
                return []
            events: list[Event] = []
            self._input(LocalInput.TIMEOUT, events)
            limit = self.config.confirm_timeout
            if self.state is not S.AWAIT_CONFIRM:
                limit = self.config.response_timeout
            why = f"no {AWAITED[self.state]} within {limit:g} s (state {self.state_name})"
            self._close(why, False, events)
            return events
        if now < resume.deadline:
            return []
        events = []
        self._input(LocalInput.TIMEOUT, events)
        if resume.attempts + 1 >= self.config.max_resume_attempts:
            self._close(f"no SYNC after {resume.attempts + 1} RESUMEs", False, events)
        else:
            self._send_resume(now, retry=True)
        return events

    def confirm_file(self) -> None:
        """The completed file is durable: tell the device (REPEAT INIT) and go on."""
        self._input(LocalInput.CONFIRM_FILE, [])
        self._out += b"\x00\x09"  # bare two bytes, as Teltonika's test server and Traccar send
        self._transfer = None
        self.state = S.AWAIT_INIT
        self._arm()

    def close(self, reason: str) -> list[Event]:
        """Send CLOSE SESSION; the device will come back later for what is left."""
        if self.state in (S.CLOSED, S.ERROR):
            return []
        events: list[Event] = []
        self._input(LocalInput.CLOSE, events)
        self._close(reason, False, events)
        return events

    def send_status(self, status: int) -> None:
        if self.state in (S.CLOSED, S.ERROR):
            raise LocalProtocolError(f"cannot send STATUS in state {self.state_name}")
        self._out += encode(C.STATUS, _U32.pack(status))

    def _closed(self) -> bool:
        return self.state is S.CLOSED

    @property
    def state_name(self) -> str:
        return self.state.name

    # Transitions ------------------------------------------------------------------------

    def _input(
        self, trigger: CommandId | LocalInput, events: list[Event]
    ) -> frozenset[ServerState]:
        allowed = TRANSITIONS.get((self.state, trigger))
        if allowed is not None:
            return allowed
        name = trigger.label() if isinstance(trigger, CommandId) else trigger.name
        if isinstance(trigger, LocalInput):
            raise LocalProtocolError(f"{name} not allowed in state {self.state_name}")
        expected = sorted(
            t.label() for (s, t) in TRANSITIONS if s is self.state and isinstance(t, CommandId)
        )
        raise RemoteProtocolError(
            f"device sent {name} in state {self.state_name}; expected {', '.join(expected)}"
        )

    def _arm(self) -> None:
        """(Re)start the deadline of the state the session is in, from the latest time seen."""
        if self.state in (S.CLOSED, S.ERROR):
            self._deadline = None
        elif self.state is S.AWAIT_CONFIRM:
            self._deadline = self._now + self.config.confirm_timeout
        else:
            self._deadline = self._now + self.config.response_timeout

    def _close(self, reason: str, clean: bool, events: list[Event]) -> None:
        self._out += encode(C.INIT)  # 0000 0000: CLOSE SESSION
        self._resume = self._deadline = None
        self.state = S.CLOSED
        self.closed_reason = reason
        events.append(SessionClosed(reason=reason, clean=clean))

    def _eof_reason(self) -> str:
        if self.session is None:
            return "device closed the connection before INIT"
        transfer = self._transfer
        if self.state is S.AWAIT_CONFIRM and transfer is not None:
            return f"device closed the connection before {transfer.file} was confirmed"
        if transfer is not None:
            return f"device closed the connection mid-transfer: {transfer.describe()}"
        return f"device closed the connection in state {self.state_name}"

    def _on_init(self, payload: bytes, now: float, events: list[Event]) -> None:
        protocol, imei, settings = _INIT.unpack(payload)
        if protocol not in self.config.supported_protocols:
            supported = ", ".join(map(str, sorted(self.config.supported_protocols)))
            self._close(
                f"INIT protocol id {protocol} unsupported (supported: {supported}); IMEI {imei}",
                False,
                events,
            )
            return
        if imei >= _MAX_IMEI:
            raise RemoteProtocolError(f"INIT IMEI {imei} has more than 15 digits")
        if self.session is not None and imei != self.session.imei:
            raise RemoteProtocolError(f"INIT IMEI changed from {self.session.imei} to {imei}")
        first = self.session is None
        session = self.session = SessionInfo(imei, protocol, settings)
        files = tuple(CameraFile.for_slot(slot) for slot in offered_slots(settings))
        path_ready = bool(settings >> PATH_FILE_READY_BIT & 1)
        if first:
            events.append(
                SessionStarted(
                    imei=imei,
                    protocol=protocol,
                    settings=settings,
                    offered=files,
                    path_file_ready=path_ready,
                )
            )
        events.extend(FileOffered(file=file) for file in files)
        self._offer = files
        if path_ready and not self._no_path and self.policy.want_path_file(session):
            self._out += encode(C.PATH_REQUEST, b"\x00\x00")
            self.state = S.AWAIT_PATH
            return
        self._choose(files, events)

    def _on_path(self, payload: bytes, now: float, events: list[Event]) -> None:
        if not payload.strip(b"\0"):
            # ``000D 0001 00``: the path is "<file path, or \0>", and this is the \0.
            events.append(PathEmpty())
            self._no_path = True
            self._choose(self._offer, events, "device has no file ready (bare NUL path)")
            return
        file = CameraFile.for_path(payload)
        events.append(FileOffered(file=file))
        self._choose((file, *self._offer), events)

    def _choose(
        self, offered: Sequence[CameraFile], events: list[Event], why: str | None = None
    ) -> None:
        """Request the next of ``offered`` the session has not given up on, or CLOSE."""
        session = self.session
        assert session is not None
        if offered:
            given_up = self.policy.given_up(session, offered)
            for file in offered:
                if file.identifier in given_up and file.identifier not in self._skip:
                    self._skip[file.identifier] = (
                        "given up: it came back empty in too many sessions in a row"
                    )
        candidates = [file for file in offered if file.identifier not in self._skip]
        chosen = self.policy.choose_file(session, candidates) if candidates else None
        if chosen is None:
            if candidates:
                reason = "policy declined"
            else:
                skipped = [f"{file}: {self._skip[file.identifier]}" for file in offered]
                reasons = ([why] if why else []) + skipped
                reason = "; ".join(reasons) if reasons else "no more files"
            self._close(reason, True, events)
            return
        if chosen not in candidates:
            raise LocalProtocolError(f"policy chose {chosen}, which the device did not offer")
        self._file, self._metadata = chosen, None
        if self.policy.want_metadata(session, chosen):
            identifier = b"" if chosen.by_path else chosen.identifier
            self._out += encode(C.METADATA_REQUEST, identifier)
            self.state = S.AWAIT_METADATA
        else:
            self._request_file(chosen)

    def _next_file(self, why: str, events: list[Event]) -> None:
        """The current file failed for ``why``: go on with the rest of the offer, or CLOSE."""
        file = self._file
        if file is not None:
            self._skip[file.identifier] = why
        self._file, self._metadata, self._transfer = None, None, None
        remaining = tuple(f for f in self._offer if f != file)
        self._choose(remaining, events, why if file is None else f"{file}: {why}")

    def _request_file(self, file: CameraFile) -> None:
        self._out += encode(C.FILE_REQUEST, file.identifier)
        self.state = S.AWAIT_START

    def _on_metadata(self, payload: bytes, now: float, events: list[Event]) -> None:
        assert self._file is not None and self.session is not None
        metadata = decode_metadata(payload, self._file.camera, self.session.protocol)
        self._metadata = metadata
        events.append(MetadataReceived(file=self._file, metadata=metadata))
        self._request_file(self._file)

    def _on_start(self, payload: bytes, now: float, events: list[Event]) -> None:
        file, session = self._file, self.session
        assert file is not None and session is not None
        value, extra = _START.unpack(payload)
        given_up = self.policy.start_answered(session, file, self._offer, empty=value == 0)
        if value == 0:
            events.append(FileEmpty(file=file))
            # Not asked for again in this session: a device that offers it again is closed.
            self._skip[file.identifier] = "came back empty (START 0) in this session"
            if given_up is not None:
                events.append(FileGivenUp(file=file, sessions=given_up))
            self._out += b"\x00\x09"
            self.state = S.AWAIT_INIT
            return
        by_packets = not file.by_path
        size = None if by_packets else value
        packets = value if by_packets else None
        device_crc = None if by_packets else extra
        info = TransferInfo(
            file=file, size=size, packets=packets, device_crc=device_crc, metadata=self._metadata
        )
        refusal = self.policy.refuse_transfer(session, info)
        if refusal is not None:
            events.append(TransferRefused(file=file, size=size, packets=packets, reason=refusal))
            self._close(f"{file} refused: {refusal}", False, events)
            return
        point = self.policy.resume_point(session, info)
        limit = value * DATA_CHUNK if by_packets else value
        aligned = point.offset % DATA_CHUNK == 0 or not by_packets
        if not (0 <= point.offset < limit and aligned):
            point = ResumePoint()  # unusable: fetch the whole file again
        self._transfer = _Transfer(
            file=file,
            by_packets=by_packets,
            total=value,
            device_crc=device_crc,
            received=point.offset,
            chain=point.crc,
            file_crc=point.crc,
            resumed_at=point.offset,
            expected_file_crc=point.file_crc if point.offset else None,
        )
        verify = point.verify_offset
        if verify is not None and point.offset < verify <= limit:
            self._transfer.verify_at, self._transfer.verify_crc = verify, point.verify_crc
        events.append(
            TransferStarted(
                file=file,
                size=size,
                packets=packets,
                device_crc=device_crc,
                resume_offset=point.offset,
            )
        )
        self._send_resume(now, retry=False)

    def _send_resume(self, now: float, *, retry: bool) -> None:
        transfer = self._transfer
        assert transfer is not None
        wire = transfer.wire_offset(transfer.received, self.config.dualcam_first_resume)
        self._out += encode(C.RESUME, _U32.pack(wire))
        attempts = self._resume.attempts + 1 if retry and self._resume is not None else 0
        self._resume = _Resume(deadline=now + self.config.resume_interval, attempts=attempts)
        self.state = S.AWAIT_SYNC

    def _on_sync(self, payload: bytes, now: float, events: list[Event]) -> None:
        transfer = self._transfer
        assert transfer is not None
        offset = transfer.byte_offset(_U32.unpack(payload)[0])
        if offset == transfer.received:
            transfer.after_sync = True
            self._resume = None
            self.state = S.RECEIVING
            return
        # The device will send from somewhere else than asked: ask again.
        resume = self._resume
        if resume is not None and resume.attempts + 1 >= self.config.max_resume_attempts:
            self._close(
                f"SYNC offsets never matched after {resume.attempts + 1} RESUMEs", False, events
            )
            return
        self._send_resume(now, retry=True)

    def _on_data(self, payload: bytes, now: float, events: list[Event]) -> None:
        # While RECEIVING every plain DATA packet takes receive_data's fast path (the same
        # framing rules as next_frame); here only the packets ignored until the SYNC.
        assert self.state is S.AWAIT_SYNC and self._transfer is not None, self.state
        self._transfer.ignored += 1

    def _on_enhanced_data(self, payload: bytes, now: float, events: list[Event]) -> None:
        transfer = self._transfer
        assert transfer is not None
        if self.state is S.AWAIT_SYNC:
            transfer.ignored += 1
            return
        if _U32.unpack_from(payload)[0] != transfer.received:
            self._send_resume(now, retry=False)
            return
        crc = payload[-2] << 8 | payload[-1]
        self._on_chunk(payload[4:-2], crc, now, events)

    def _on_chunk(self, data: bytes, crc: int, now: float, events: list[Event]) -> None:
        transfer = self._transfer
        assert transfer is not None
        size = len(data)
        offset = transfer.received
        if transfer.by_packets:
            index = offset // DATA_CHUNK
            if size != DATA_CHUNK and index != transfer.total - 1:
                raise RemoteProtocolError(
                    f"DATA packet {index + 1} of {transfer.total} has {size} bytes; only the "
                    f"last may be shorter than {DATA_CHUNK} (state {self.state_name})"
                )
            last = index == transfer.total - 1
        else:
            if offset + size > transfer.total:
                raise RemoteProtocolError(
                    f"DATA of {size} bytes at byte {offset} runs past the {transfer.total} "
                    f"bytes START announced (state {self.state_name})"
                )
            last = offset + size == transfer.total
        before = transfer.file_crc
        file_crc = crc16(data, before)
        chained = file_crc if transfer.chain == before else crc16(data, transfer.chain)
        if crc == chained:
            crc_init = transfer.chain
        elif transfer.after_sync and crc == crc16(data):
            crc_init = 0  # the device restarted its chain after RESUME/SYNC
        else:
            events.append(
                CrcMismatch(file=transfer.file, offset=offset, expected=chained, received=crc)
            )
            transfer.failures += 1
            if offset == transfer.resumed_at > 0 and transfer.failures >= min(
                2, self.config.max_resume_attempts
            ):
                # A device that chains its CRC across RESUME computes it over its own bytes
                # before the point: mismatching there again, they are not the bytes kept.
                self._restart(
                    f"the device's CRC chain at byte {offset} does not continue the CRC of "
                    f"the {offset} bytes kept ({transfer.failures} times): another file",
                    now,
                    events,
                )
                return
            if transfer.failures >= self.config.max_resume_attempts:
                reason = f"{transfer.failures} CRC mismatches in a row at byte {offset}"
                self._close(reason, False, events)
                return
            self._send_resume(now, retry=False)
            return
        verify = transfer.verify_at
        if verify is not None and offset < verify <= offset + size:
            kept = file_crc if verify == offset + size else crc16(data[: verify - offset], before)
            if kept != transfer.verify_crc:
                self._restart(
                    f"the bytes resent before byte {verify} have CRC {kept:#06x}, the ones "
                    f"kept {transfer.verify_crc:#06x}: another file",
                    now,
                    events,
                )
                return
            transfer.verify_at = None
        expected = transfer.expected_file_crc
        if last and expected is not None and file_crc != expected:
            self._restart(
                f"the resent file ends with CRC {file_crc:#06x}, the file kept has "
                f"{expected:#06x}: another file",
                now,
                events,
            )
            return
        events.append(
            chunk_received(  # ChunkReceived(...), without the frozen __init__'s cost
                transfer.file,
                offset,
                data,
                crc,
                crc_init,
                file_crc,
                last,
                # A RESUME must point inside the file: never past the start of its last chunk.
                offset if last else offset + size,
                transfer.file_crc if last else file_crc,
            )
        )
        transfer.chain, transfer.file_crc = crc, file_crc
        transfer.received = offset + size
        transfer.after_sync = False
        transfer.failures = 0
        if last:
            device_ok = None if transfer.device_crc is None else transfer.device_crc == file_crc
            events.append(
                TransferComplete(
                    file=transfer.file,
                    size=transfer.received,
                    file_crc=file_crc,
                    device_crc_ok=device_ok,
                )
            )
            self.state = S.AWAIT_CONFIRM

    def _restart(self, reason: str, now: float, events: list[Event]) -> None:
        """What came from the resume point belongs to another file: fetch it all again."""
        transfer = self._transfer
        assert transfer is not None
        events.append(
            TransferRestarted(
                file=transfer.file,
                size=None if transfer.by_packets else transfer.total,
                packets=transfer.total if transfer.by_packets else None,
                device_crc=transfer.device_crc,
                offset=transfer.resumed_at,
                reason=reason,
            )
        )
        transfer.received = transfer.chain = transfer.file_crc = transfer.resumed_at = 0
        transfer.expected_file_crc = transfer.verify_at = None
        transfer.failures = 0
        self._send_resume(now, retry=False)

    def _on_status(self, payload: bytes, now: float, events: list[Event]) -> None:
        status = _U32.unpack(payload)[0]
        events.append(StatusReceived(status=status))
        action = status_action(self.state, status)
        if action is A.NOTE:
            return
        file = self._file
        if action is A.WITHOUT_METADATA:
            assert file is not None
            self._request_file(file)
        elif action is A.NEXT_FILE:
            if self.state is S.AWAIT_PATH:
                self._no_path = True
                self._next_file(
                    f"device STATUS 0x{status:02X}: no file at the path request", events
                )
            else:
                self._next_file(f"not available (device STATUS 0x{status:02X})", events)
        else:
            about = f" about {file}" if file is not None and self.state is not S.AWAIT_INIT else ""
            self._close(
                f"device STATUS 0x{status:02X}{about} in state {self.state_name}", False, events
            )
