"""ServerConnection on its own: limits, wrong states, errors, timeouts, EOF, local API."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest

from camproto import (
    CameraFile,
    ChunkReceived,
    CrcMismatch,
    DefaultPolicy,
    DsmMetadata,
    DualCamSlot,
    Event,
    FileEmpty,
    FileOffered,
    LocalProtocolError,
    MetadataReceived,
    PolicyBase,
    ProtocolError,
    RemoteProtocolError,
    ResumePoint,
    ServerConfig,
    ServerConnection,
    ServerState,
    SessionClosed,
    SessionInfo,
    SessionStarted,
    StatusReceived,
    TransferComplete,
    TransferInfo,
    TransferStarted,
    crc16,
)
from tests.camproto.camproto_helpers import (
    COMMUNITY_IMEI,
    DSM_INIT,
    DSM_PATH,
    DUALCAM_META,
    PHOTOF_INIT,
    data_frame,
    frame,
    init_bytes,
    payload_bytes,
    server_in,
    start_frame,
    sync_frame,
    u32,
)

h = bytes.fromhex
S = ServerState
NO_META = DefaultPolicy(metadata=False)
PHOTOF = CameraFile.for_slot(DualCamSlot.PHOTO_FRONT)
DSM = CameraFile.for_path(DSM_PATH)


# --- limits: each names the command, the state and the limit ----------------------------------


@pytest.mark.parametrize(
    ("state", "path", "wire", "message"),
    [
        (
            S.AWAIT_PATH,
            True,
            h("000d0201") + b"p" * 513,
            "PATH(0x000D) length 513, allowed 1..512 (state AWAIT_PATH)",
        ),
        (
            S.RECEIVING,
            False,
            h("00040403") + b"d" * 1027,
            "DATA(0x0004) length 1027, allowed 3..1026 (state RECEIVING)",
        ),
        (
            S.RECEIVING,
            True,
            h("000e0407") + b"d" * 1031,
            "ENHANCED_DATA(0x000E) length 1031, allowed 7..1030 (state RECEIVING)",
        ),
        (
            S.AWAIT_METADATA,
            False,
            h("000b0401") + b"m" * 1025,
            "METADATA(0x000B) length 1025, allowed 1..1024 (state AWAIT_METADATA)",
        ),
        (
            S.AWAIT_INIT,
            False,
            h("001000000000"),
            "unknown command id 0x0010 from the device (state AWAIT_INIT)",
        ),
        (
            S.AWAIT_START,
            False,
            h("00010004") + u32(3),
            "START(0x0001) length 4, allowed exactly 6 (state AWAIT_START)",
        ),
        (
            S.AWAIT_SYNC,
            False,
            h("00030002") + b"\0\1",
            "SYNC(0x0003) length 2, allowed exactly 4 (state AWAIT_SYNC)",
        ),
        (
            S.RECEIVING,
            False,
            h("00050008") + bytes(8),
            "STATUS(0x0005) length 8, allowed exactly 4 (state RECEIVING)",
        ),
        (
            S.AWAIT_SYNC,
            False,
            h("0002000400000001"),
            "RESUME(0x0002) is not a command the device sends (state AWAIT_SYNC)",
        ),
        (
            S.AWAIT_START,
            False,
            h("000800072570686f746f66"),
            "FILE_REQUEST(0x0008) is not a command the device sends (state AWAIT_START)",
        ),
        (
            S.AWAIT_INIT,
            False,
            h("00090000"),
            "REPEAT_INIT(0x0009) is not a command the device sends (state AWAIT_INIT)",
        ),
        (
            S.AWAIT_METADATA,
            False,
            h("000a0000"),
            "METADATA_REQUEST(0x000A) is not a command the device sends (state AWAIT_METADATA)",
        ),
        (
            S.AWAIT_PATH,
            True,
            h("000c00020000"),
            "PATH_REQUEST(0x000C) is not a command the device sends (state AWAIT_PATH)",
        ),
    ],
)
def test_limits(state: ServerState, path: bool, wire: bytes, message: str) -> None:
    server = server_in(state, path=path)
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(wire, 0.0)
    assert str(info.value) == message
    assert server.state is S.ERROR
    # After an error the connection refuses further use.
    with pytest.raises(LocalProtocolError, match="connection already failed"):
        server.receive_data(init_bytes(), 0.0)
    assert server.receive_eof() == []
    assert server.close("bye") == []
    with pytest.raises(LocalProtocolError, match="cannot send STATUS in state ERROR"):
        server.send_status(0)
    with pytest.raises(LocalProtocolError, match="CONFIRM_FILE not allowed in state ERROR"):
        server.confirm_file()
    assert server.data_to_send() == b""


def test_limit_found_one_byte_at_a_time() -> None:
    # The length field alone is enough to reject an oversized PATH.
    server = server_in(S.AWAIT_PATH, path=True)
    wire = h("000d0201") + b"p" * 513
    for byte in wire[:3]:
        assert server.receive_data(bytes([byte]), 0.0) == []
    with pytest.raises(RemoteProtocolError, match=r"PATH\(0x000D\) length 513, allowed 1\.\.512"):
        server.receive_data(wire[3:4], 0.0)


def test_imei_limit() -> None:
    assert ServerConnection().receive_data(init_bytes(imei=10**15 - 1, settings=0), 0.0)
    server = ServerConnection()
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(init_bytes(imei=10**15, settings=0x44000400), 0.0)
    assert str(info.value) == "INIT IMEI 1000000000000000 has more than 15 digits"
    assert server.state is S.ERROR
    assert server.data_to_send() == b""


@pytest.mark.parametrize("protocol", [0, 7, 0xFFFF])
def test_unsupported_protocol_gets_close(protocol: int) -> None:
    # The device hears CLOSE ("server will respond by sending close command") before the
    # hang-up, and the reason names the id; before issue 10 the server just hung up.
    server = ServerConnection()
    events = server.receive_data(init_bytes(protocol=protocol), 0.0)
    reason = (
        f"INIT protocol id {protocol} unsupported (supported: 1, 2, 3, 4, 5, 6); "
        f"IMEI {COMMUNITY_IMEI}"
    )
    assert events == [SessionClosed(reason=reason, clean=False)]
    assert server.data_to_send() == h("00000000")
    assert server.state is S.CLOSED
    assert server.closed_reason == reason


@pytest.mark.parametrize("protocol", [1, 2, 3, 4, 5, 6])
def test_older_protocol_ids_with_the_same_init_layout_are_accepted(protocol: int) -> None:
    server = ServerConnection(NO_META)
    events = server.receive_data(init_bytes(protocol=protocol), 0.0)
    assert isinstance(events[0], SessionStarted) and events[0].protocol == protocol
    assert server.data_to_send() == h("000800072570686f746f66")


def test_supported_protocols_are_configurable() -> None:
    server = ServerConnection(config=ServerConfig(supported_protocols=frozenset({7})))
    assert server.receive_data(init_bytes(protocol=7), 0.0)
    refused = ServerConnection(config=ServerConfig(supported_protocols=frozenset({7})))
    [closed] = refused.receive_data(init_bytes(protocol=5), 0.0)
    assert isinstance(closed, SessionClosed)
    assert "unsupported (supported: 7)" in closed.reason


@pytest.mark.parametrize(
    ("state", "wire", "message"),
    [
        (
            S.AWAIT_INIT,
            start_frame(3),
            "device sent START(0x0001) in state AWAIT_INIT; expected INIT(0x0000), STATUS(0x0005)",
        ),
        (
            S.AWAIT_METADATA,
            PHOTOF_INIT,
            "device sent INIT(0x0000) in state AWAIT_METADATA; expected METADATA(0x000B), "
            "STATUS(0x0005)",
        ),
        (
            S.AWAIT_START,
            sync_frame(1),
            "device sent SYNC(0x0003) in state AWAIT_START; expected START(0x0001), STATUS(0x0005)",
        ),
        (
            S.AWAIT_CONFIRM,
            data_frame(b"x"),
            "device sent DATA(0x0004) in state AWAIT_CONFIRM; expected STATUS(0x0005)",
        ),
        (
            S.RECEIVING,
            start_frame(3),
            "device sent START(0x0001) in state RECEIVING; expected DATA(0x0004), "
            "ENHANCED_DATA(0x000E), STATUS(0x0005), SYNC(0x0003)",
        ),
    ],
)
def test_command_in_wrong_state(state: ServerState, wire: bytes, message: str) -> None:
    server = server_in(state)
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(wire, 0.0)
    assert str(info.value) == message
    assert server.state is S.ERROR
    with pytest.raises(LocalProtocolError):
        server.receive_data(b"", 0.0)


def test_path_in_wrong_state() -> None:
    server = server_in(S.AWAIT_METADATA, path=True)
    with pytest.raises(RemoteProtocolError, match=r"PATH\(0x000D\) in state AWAIT_METADATA"):
        server.receive_data(frame(0x000D, DSM_PATH), 0.0)


def test_imei_change_on_repeated_init() -> None:
    server = server_in(S.AWAIT_CONFIRM)
    server.confirm_file()
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(init_bytes(imei=123), 0.0)
    assert str(info.value) == "INIT IMEI changed from 350612071913857 to 123"


def test_events_before_an_error_in_the_same_read_are_lost() -> None:
    server = ServerConnection(NO_META)
    with pytest.raises(RemoteProtocolError):
        server.receive_data(PHOTOF_INIT + h("0002000400000001"), 0.0)
    # The FILE REQUEST queued before the error is still there; the caller closes anyway.
    assert server.data_to_send() == h("000800072570686f746f66")


def test_dualcam_short_packet_before_the_last() -> None:
    server = server_in(S.RECEIVING)
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(data_frame(b"x" * 1000), 0.0)
    assert str(info.value) == (
        "DATA packet 1 of 3 has 1000 bytes; only the last may be shorter than 1024 "
        "(state RECEIVING)"
    )


def test_path_data_past_the_announced_size() -> None:
    server = server_in(S.RECEIVING, path=True, size=1000)
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(data_frame(b"x" * 1001), 0.0)
    assert str(info.value) == (
        "DATA of 1001 bytes at byte 0 runs past the 1000 bytes START announced (state RECEIVING)"
    )


def test_protocol_error_is_abstract() -> None:
    with pytest.raises(TypeError):
        ProtocolError("x")
    assert isinstance(RemoteProtocolError("x"), ProtocolError)


# --- status, close, EOF -----------------------------------------------------------------------


@pytest.mark.parametrize("state", [s for s in S if s not in (S.CLOSED, S.ERROR)])
def test_status_ok_allowed_in_every_open_state(state: ServerState) -> None:
    server = server_in(state)
    assert server.receive_data(h("0005000400000000"), 0.0) == [StatusReceived(status=0)]
    assert server.state is state
    server.send_status(2)
    assert server.data_to_send() == h("0005000400000002")


@pytest.mark.parametrize(
    ("state", "path", "reason"),
    [
        (S.AWAIT_INIT, False, "device closed the connection before INIT"),
        (S.AWAIT_PATH, True, "device closed the connection in state AWAIT_PATH"),
        (S.AWAIT_METADATA, False, "device closed the connection in state AWAIT_METADATA"),
        (S.AWAIT_START, False, "device closed the connection in state AWAIT_START"),
        (
            S.AWAIT_SYNC,
            False,
            "device closed the connection mid-transfer: %photof at byte 0 of 3 packets",
        ),
        (
            S.RECEIVING,
            True,
            "device closed the connection mid-transfer: dsm/picture/231020/231452.jpg at byte 0 "
            "of 3000 bytes",
        ),
        (S.AWAIT_CONFIRM, False, "device closed the connection before %photof was confirmed"),
    ],
)
def test_eof_reasons(state: ServerState, path: bool, reason: str) -> None:
    server = server_in(state, path=path)
    assert server.receive_eof() == [SessionClosed(reason=reason, clean=False)]
    assert server.state is S.CLOSED
    assert server.next_deadline() is None
    assert server.handle_timeout(1e9) == []
    assert server.receive_eof() == []
    assert server.receive_data(init_bytes(), 0.0) == []  # closed: input ignored
    assert server.data_to_send() == b""


def test_eof_mid_transfer_names_the_offset() -> None:
    server = server_in(S.RECEIVING)
    data = payload_bytes(3000)
    server.receive_data(data_frame(data[:1024]), 0.0)
    assert server.transfer_offset == 1024
    [closed] = server.receive_eof()
    assert isinstance(closed, SessionClosed)
    assert closed.reason.endswith("%photof at byte 1024 of 3 packets")


@pytest.mark.parametrize("state", [s for s in S if s not in (S.CLOSED, S.ERROR)])
def test_close(state: ServerState) -> None:
    server = server_in(state)
    assert server.close("shutting down") == [SessionClosed(reason="shutting down", clean=False)]
    assert server.data_to_send() == h("00000000")
    assert server.state is S.CLOSED
    assert server.next_deadline() is None
    assert server.close("again") == []
    with pytest.raises(LocalProtocolError, match="cannot send STATUS in state CLOSED"):
        server.send_status(0)


def test_transfer_offset_none_without_transfer() -> None:
    assert ServerConnection().transfer_offset is None


# --- confirm_file -----------------------------------------------------------------------------


@pytest.mark.parametrize("state", [s for s in S if s not in (S.AWAIT_CONFIRM, S.ERROR)])
def test_confirm_only_after_transfer_complete(state: ServerState) -> None:
    server = server_in(state) if state is not S.CLOSED else ServerConnection()
    if state is S.CLOSED:
        server.close("x")
    with pytest.raises(LocalProtocolError, match=f"CONFIRM_FILE not allowed in state {state.name}"):
        server.confirm_file()


def test_nothing_sent_after_transfer_complete_until_confirm() -> None:
    server = server_in(S.RECEIVING)
    data = payload_bytes(3000)
    chunks = [data[k : k + 1024] for k in range(0, 3000, 1024)]
    events = server.receive_data(
        b"".join(data_frame(c, crc16(data[: i * 1024])) for i, c in enumerate(chunks)), 0.0
    )
    assert isinstance(events[-1], TransferComplete)
    assert events[-1] == TransferComplete(
        file=PHOTOF, size=3000, file_crc=crc16(data), device_crc_ok=None
    )
    assert server.data_to_send() == b""
    assert server.state is S.AWAIT_CONFIRM
    assert server.receive_data(h("0005000400000001"), 0.0) == [StatusReceived(status=1)]
    assert server.data_to_send() == b""
    server.confirm_file()
    assert server.data_to_send() == h("0009")
    assert server.state_name == "AWAIT_INIT"
    assert server.transfer_offset is None


# --- START --------------------------------------------------------------------------------------


def test_start_zero_is_an_empty_file() -> None:
    server = server_in(S.AWAIT_START)
    assert server.receive_data(start_frame(0), 0.0) == [FileEmpty(file=PHOTOF)]
    assert server.data_to_send() == h("0009")
    assert server.state is S.AWAIT_INIT
    # The device repeats INIT with nothing left: CLOSE.
    events = server.receive_data(init_bytes(settings=0x40000400), 0.0)
    assert events == [SessionClosed(reason="no more files", clean=True)]
    assert server.data_to_send() == h("00000000")


def test_start_for_a_path_file_reports_size_and_crc() -> None:
    server = server_in(S.AWAIT_START, path=True)
    events = server.receive_data(start_frame(3000, 0xABCD), 0.0)
    assert events == [
        TransferStarted(file=DSM, size=3000, packets=None, device_crc=0xABCD, resume_offset=0)
    ]
    assert server.data_to_send() == h("0002000400000000")


# --- SYNC ---------------------------------------------------------------------------------------


def test_sync_at_another_offset_gets_a_new_resume() -> None:
    server = server_in(S.AWAIT_SYNC)
    assert server.receive_data(sync_frame(3), 0.0) == []
    assert server.data_to_send() == h("0002000400000001")
    assert server.state_name == "AWAIT_SYNC"
    assert server.receive_data(sync_frame(1), 0.0) == []
    assert server.state_name == "RECEIVING"
    assert server.next_deadline() == 60.0  # the device's silence deadline, no more RESUMEs


def test_sync_mismatch_gives_up_after_max_resumes() -> None:
    server = ServerConnection(NO_META, ServerConfig(max_resume_attempts=3))
    server.receive_data(PHOTOF_INIT + start_frame(3), 0.0)
    server.data_to_send()
    assert server.receive_data(sync_frame(2), 0.0) == []
    assert server.receive_data(sync_frame(2), 0.0) == []
    assert server.data_to_send() == h("0002000400000001") * 2
    events = server.receive_data(sync_frame(2), 0.0)
    assert events == [
        SessionClosed(reason="SYNC offsets never matched after 3 RESUMEs", clean=False)
    ]
    assert server.data_to_send() == h("00000000")


def test_sync_while_receiving() -> None:
    data = payload_bytes(3000)
    server = server_in(S.RECEIVING)
    server.receive_data(data_frame(data[:1024]), 0.0)
    # A SYNC at the current offset is accepted as is; elsewhere it gets a RESUME.
    assert server.receive_data(sync_frame(2), 0.0) == []
    assert server.state_name == "RECEIVING"
    assert server.data_to_send() == b""
    assert server.receive_data(sync_frame(1), 0.0) == []
    assert server.state_name == "AWAIT_SYNC"
    assert server.data_to_send() == h("0002000400000002")


def test_data_before_sync_is_ignored() -> None:
    data = payload_bytes(3000)
    server = server_in(S.AWAIT_SYNC)
    assert server.receive_data(data_frame(data[:1024]), 0.0) == []
    assert (
        server.receive_data(frame(0x000E, u32(0) + b"abc" + crc16(b"abc").to_bytes(2, "big")), 0.0)
        == []
    )
    assert server.transfer_offset == 0
    assert server.receive_data(sync_frame(1) + data_frame(data[:1024]), 0.0) == [
        ChunkReceived(
            file=PHOTOF,
            offset=0,
            data=data[:1024],
            crc=crc16(data[:1024]),
            crc_init=0,
            file_crc=crc16(data[:1024]),
            last=False,
            resume_end=1024,
            resume_crc=crc16(data[:1024]),
        )
    ]


# --- ENHANCED_DATA (protocol 6 copy of the test server) -----------------------------------------


def enhanced(offset: int, chunk: bytes, init: int = 0) -> bytes:
    return frame(0x000E, u32(offset) + chunk + crc16(chunk, init).to_bytes(2, "big"))


def test_enhanced_data() -> None:
    data = payload_bytes(3000)  # the file server_in announced
    server = server_in(S.RECEIVING, path=True)
    events = server.receive_data(enhanced(0, data[:1000]), 0.0)
    assert [type(e) for e in events] == [ChunkReceived]
    # Wrong offset: RESUME from what we have.
    assert server.receive_data(enhanced(0, data[1000:2000]), 0.0) == []
    assert server.data_to_send() == h("00020004000003e8")
    assert server.state is S.AWAIT_SYNC
    server.receive_data(sync_frame(1000), 0.0)
    events = server.receive_data(
        enhanced(1000, data[1000:2000], crc16(data[:1000]))
        + enhanced(2000, data[2000:], crc16(data[:2000])),
        0.0,
    )
    assert [e.offset for e in events if isinstance(e, ChunkReceived)] == [1000, 2000]
    assert isinstance(events[-1], TransferComplete)
    assert events[-1].device_crc_ok is True


# --- timeouts -------------------------------------------------------------------------------------


def test_resume_resent_every_two_seconds_then_close() -> None:
    server = ServerConnection(NO_META)
    server.receive_data(PHOTOF_INIT + start_frame(3), 100.0)
    assert server.data_to_send() == h("000800072570686f746f66") + h("0002000400000001")
    resumes = 1
    now = 100.0
    while True:
        deadline = server.next_deadline()
        assert deadline == now + 2.0
        assert server.handle_timeout(deadline - 0.001) == []
        assert server.data_to_send() == b""
        now = deadline
        events = server.handle_timeout(now)
        if events:
            break
        assert server.data_to_send() == h("0002000400000001")
        resumes += 1
    assert resumes == 10  # ServerConfig.max_resume_attempts
    assert events == [SessionClosed(reason="no SYNC after 10 RESUMEs", clean=False)]
    assert server.data_to_send() == h("00000000")
    assert server.next_deadline() is None
    assert server.state is S.CLOSED


def test_silence_mid_file_has_a_deadline() -> None:
    # Before issue 10 a silent device mid-file left the server with no deadline at all.
    server = server_in(S.RECEIVING)
    assert server.next_deadline() == 60.0
    assert server.handle_timeout(59.9) == []
    assert server.state is S.RECEIVING
    assert server.handle_timeout(60.0) == [
        SessionClosed(reason="no DATA within 60 s (state RECEIVING)", clean=False)
    ]
    assert server.data_to_send() == h("00000000")
    assert server.closed_reason == "no DATA within 60 s (state RECEIVING)"
    assert server.handle_timeout(1e9) == []


def test_sync_answers_a_resent_resume() -> None:
    server = ServerConnection(NO_META, ServerConfig(resume_interval=5.0, max_resume_attempts=2))
    server.receive_data(PHOTOF_INIT + start_frame(3), 0.0)
    assert server.next_deadline() == 5.0
    assert server.handle_timeout(5.0) == []
    assert server.next_deadline() == 10.0
    server.receive_data(sync_frame(1), 6.0)
    assert server.next_deadline() == 66.0  # ServerConfig.response_timeout after the SYNC
    assert server.state is S.RECEIVING


# --- policies -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChoosePolicy(PolicyBase):
    """DefaultPolicy with a fixed choice and resume point."""

    choice: CameraFile | None = None
    point: ResumePoint = field(default_factory=ResumePoint)
    paths: bool = True

    def want_path_file(self, session: SessionInfo) -> bool:
        return self.paths

    def choose_file(self, session: SessionInfo, offered: Sequence[CameraFile]) -> CameraFile | None:
        return self.choice

    def resume_point(self, session: SessionInfo, transfer: TransferInfo) -> ResumePoint:
        return self.point


def test_policy_declines() -> None:
    server = ServerConnection(ChoosePolicy(None))
    events = server.receive_data(PHOTOF_INIT, 0.0)
    assert events[-1] == SessionClosed(reason="policy declined", clean=True)
    assert server.data_to_send() == h("00000000")


def test_policy_declines_a_path_file() -> None:
    server = ServerConnection(ChoosePolicy(None))
    server.receive_data(DSM_INIT, 0.0)
    events = server.receive_data(frame(0x000D, DSM_PATH), 0.0)
    assert events == [FileOffered(file=DSM), SessionClosed(reason="policy declined", clean=True)]


def test_policy_skips_path_files() -> None:
    server = ServerConnection(ChoosePolicy(PHOTOF, paths=False))
    server.receive_data(init_bytes(settings=1 << 25 | 1 << 26), 0.0)
    assert server.data_to_send() == h("000800072570686f746f66")
    server = ServerConnection(ChoosePolicy(PHOTOF, paths=False))
    events = server.receive_data(DSM_INIT, 0.0)
    assert events[-1] == SessionClosed(reason="no more files", clean=True)


def test_policy_choosing_a_file_not_offered_is_a_local_error() -> None:
    server = ServerConnection(ChoosePolicy(CameraFile.for_slot(DualCamSlot.VIDEO_REAR)))
    with pytest.raises(
        LocalProtocolError, match="policy chose %videor, which the device did not offer"
    ):
        server.receive_data(PHOTOF_INIT, 0.0)


@pytest.mark.parametrize(
    ("point", "path", "resume_wire", "offset"),
    [
        (ResumePoint(2048, 0x1111), False, h("0002000400000003"), 2048),
        (ResumePoint(1000, 0x1111), False, h("0002000400000001"), 0),  # not packet aligned
        (ResumePoint(3072, 0x1111), False, h("0002000400000001"), 0),  # past 3 packets
        (ResumePoint(-1024, 0), False, h("0002000400000001"), 0),  # negative
        (ResumePoint(1000, 0x1111), True, h("00020004000003e8"), 1000),  # bytes: any offset
        (ResumePoint(3000, 0x1111), True, h("0002000400000000"), 0),  # the whole file
    ],
)
def test_resume_point_validation(
    point: ResumePoint, path: bool, resume_wire: bytes, offset: int
) -> None:
    file = DSM if path else PHOTOF
    server = ServerConnection(ChoosePolicy(file, point))
    server.receive_data(DSM_INIT if path else PHOTOF_INIT, 0.0)
    if path:
        server.receive_data(frame(0x000D, DSM_PATH), 0.0)
    server.data_to_send()
    events = server.receive_data(start_frame(3000 if path else 3), 0.0)
    assert isinstance(events[-1], TransferStarted)
    assert events[-1].resume_offset == offset
    assert server.data_to_send() == resume_wire
    assert server.transfer_offset == offset


# --- whole sessions as tables: device bytes in -> server events and bytes out ------------------

Step = tuple[bytes | None, list[Event], bytes]  # None: the application calls confirm_file()


def dualcam_script() -> list[Step]:
    data = payload_bytes(2500, seed=11)
    p1, p2, p3 = data[:1024], data[1024:2048], data[2048:]
    c1 = crc16(p1)
    meta = DUALCAM_META.encode()
    return [
        (
            PHOTOF_INIT,
            [
                SessionStarted(
                    imei=COMMUNITY_IMEI,
                    protocol=5,
                    settings=0x44000400,
                    offered=(PHOTOF,),
                    path_file_ready=False,
                ),
                FileOffered(file=PHOTOF),
            ],
            h("000a00072570686f746f66"),
        ),
        (
            frame(0x000B, meta),
            [MetadataReceived(file=PHOTOF, metadata=DUALCAM_META)],
            h("000800072570686f746f66"),
        ),
        (
            start_frame(3),
            [TransferStarted(file=PHOTOF, size=None, packets=3, device_crc=None, resume_offset=0)],
            h("0002000400000001"),
        ),
        (sync_frame(1), [], b""),
        (
            data_frame(p1),
            [
                ChunkReceived(
                    file=PHOTOF,
                    offset=0,
                    data=p1,
                    crc=c1,
                    crc_init=0,
                    file_crc=c1,
                    last=False,
                    resume_end=1024,
                    resume_crc=c1,
                )
            ],
            b"",
        ),
        (
            data_frame(p2, c1 ^ 0x0F0F),
            [
                CrcMismatch(
                    file=PHOTOF,
                    offset=1024,
                    expected=crc16(p2, c1),
                    received=crc16(p2, c1 ^ 0x0F0F),
                )
            ],
            h("0002000400000002"),
        ),
        (data_frame(p3, crc16(p2, c1)), [], b""),  # sent before the device saw RESUME: dropped
        (sync_frame(2), [], b""),
        (
            data_frame(p2),  # the device restarted its chain at 0 after RESUME
            [
                ChunkReceived(
                    file=PHOTOF,
                    offset=1024,
                    data=p2,
                    crc=crc16(p2),
                    crc_init=0,
                    file_crc=crc16(data[:2048]),
                    last=False,
                    resume_end=2048,
                    resume_crc=crc16(data[:2048]),
                )
            ],
            b"",
        ),
        (
            data_frame(p3, crc16(p2)),
            [
                ChunkReceived(
                    file=PHOTOF,
                    offset=2048,
                    data=p3,
                    crc=crc16(p3, crc16(p2)),
                    crc_init=crc16(p2),
                    file_crc=crc16(data),
                    last=True,  # the resumable end stays at its start: inside the file
                    resume_end=2048,
                    resume_crc=crc16(data[:2048]),
                ),
                TransferComplete(file=PHOTOF, size=2500, file_crc=crc16(data), device_crc_ok=None),
            ],
            b"",
        ),
        (None, [], h("0009")),
        (
            init_bytes(settings=0x40000400),
            [SessionClosed(reason="no more files", clean=True)],
            h("00000000"),
        ),
    ]


def dsm_script() -> list[Step]:
    data = payload_bytes(1500, seed=12)
    dsm_meta = bytes(16) + b"SANOJ\0\0\0\0\0"
    return [
        (
            DSM_INIT,
            [
                SessionStarted(
                    imei=COMMUNITY_IMEI,
                    protocol=5,
                    settings=1 << 25,
                    offered=(),
                    path_file_ready=True,
                )
            ],
            h("000c00020000"),
        ),
        (frame(0x000D, DSM_PATH), [FileOffered(file=DSM)], h("000a0000")),
        (
            frame(0x000B, dsm_meta),
            [
                MetadataReceived(
                    file=DSM,
                    metadata=DsmMetadata(
                        timestamp_ms=0,
                        file_type=0,
                        trigger=0,
                        latitude=0.0,
                        longitude=0.0,
                        events=(),
                        driver_name="JONAS",
                    ),
                )
            ],
            h("0008001e") + DSM_PATH,
        ),
        (
            start_frame(1500, crc16(data)),
            [
                TransferStarted(
                    file=DSM, size=1500, packets=None, device_crc=crc16(data), resume_offset=0
                )
            ],
            h("0002000400000000"),
        ),
        (
            sync_frame(0) + data_frame(data[:1000]) + data_frame(data[1000:], crc16(data[:1000])),
            [
                ChunkReceived(
                    file=DSM,
                    offset=0,
                    data=data[:1000],
                    crc=crc16(data[:1000]),
                    crc_init=0,
                    file_crc=crc16(data[:1000]),
                    last=False,
                    resume_end=1000,
                    resume_crc=crc16(data[:1000]),
                ),
                ChunkReceived(
                    file=DSM,
                    offset=1000,
                    data=data[1000:],
                    crc=crc16(data),
                    crc_init=crc16(data[:1000]),
                    file_crc=crc16(data),
                    last=True,
                    resume_end=1000,
                    resume_crc=crc16(data[:1000]),
                ),
                TransferComplete(file=DSM, size=1500, file_crc=crc16(data), device_crc_ok=True),
            ],
            b"",
        ),
        (h("0005000400000001"), [StatusReceived(status=1)], b""),
        (None, [], h("0009")),
        (
            init_bytes(settings=0),
            [SessionClosed(reason="no more files", clean=True)],
            h("00000000"),
        ),
    ]


@pytest.mark.parametrize("script", [dualcam_script, dsm_script], ids=["dualcam", "dsm"])
@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_session_tables(script: Callable[[], list[Step]], bytewise: bool) -> None:
    server = ServerConnection()
    for wire, expected, out in script():
        if wire is None:
            server.confirm_file()
            events = []
        elif bytewise:
            events = [
                e for i in range(len(wire)) for e in server.receive_data(wire[i : i + 1], 0.0)
            ]
        else:
            events = server.receive_data(wire, 0.0)
        assert events == expected
        assert server.data_to_send() == out
    assert server.state is S.CLOSED
