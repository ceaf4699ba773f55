"""Failure paths real cameras take (issue 10): each ends in a request or a CLOSE, never a stall
or a loop. Every test here failed before the fix."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pytest

from camproto import (
    STATUS_ACTIONS,
    CameraDevice,
    CameraFile,
    DefaultPolicy,
    DelegatingPolicy,
    DeviceFile,
    DeviceStatus,
    DualCamSlot,
    EmptyFileMemory,
    Event,
    FileEmpty,
    FileGivenUp,
    FileOffered,
    PathEmpty,
    PolicyBase,
    ResumePoint,
    ServerConfig,
    ServerConnection,
    ServerPolicy,
    ServerState,
    SessionClosed,
    SessionInfo,
    SessionStarted,
    StatusAction,
    StatusKind,
    StatusReceived,
    TransferInfo,
    TransferStarted,
    status_action,
)
from tests.camproto.camproto_helpers import (
    COMMUNITY_IMEI,
    DSM_INIT,
    DSM_PATH,
    PHOTOF_INIT,
    DevicePair,
    bytewise,
    data_frame,
    frame,
    init_bytes,
    path_file,
    payload_bytes,
    server_in,
    slot_file,
    start_frame,
    u32,
)

h = bytes.fromhex
S = ServerState
NO_META = DefaultPolicy(metadata=False)
PHOTOF = CameraFile.for_slot(DualCamSlot.PHOTO_FRONT)
VIDEOR = CameraFile.for_slot(DualCamSlot.VIDEO_REAR)
DSM = CameraFile.for_path(DSM_PATH)
#: INIT offering %photof and %videor (settings bits 26 and 29).
TWO_INIT = init_bytes(settings=0x64000400)
REQUEST_PHOTOF = h("000800072570686f746f66")
REQUEST_VIDEOR = h("000800072576696465") + b"or"
CLOSE = h("00000000")
PATH_REQUEST = h("000c00020000")


def status(value: int) -> bytes:
    return frame(0x0005, u32(value))


def feed(server: ServerConnection, wire: bytes, now: float = 0.0) -> tuple[list[Event], bytes]:
    events = server.receive_data(wire, now)
    return events, server.data_to_send()


# --- a bare NUL path is "no file" ---------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"\0", b"\0\0"], ids=["nul", "two-nuls"])
@pytest.mark.parametrize("split", [False, True], ids=["whole", "bytewise"])
def test_bare_nul_path_closes(payload: bytes, split: bool) -> None:
    server = ServerConnection(NO_META)
    assert feed(server, DSM_INIT)[1] == PATH_REQUEST
    events: list[Event] = []
    for piece in bytewise([frame(0x000D, payload)]) if split else [frame(0x000D, payload)]:
        events += server.receive_data(piece, 0.0)
    reason = "device has no file ready (bare NUL path)"
    assert events == [PathEmpty(), SessionClosed(reason=reason, clean=True)]
    assert server.data_to_send() == CLOSE  # no FILE REQUEST for an empty name
    assert server.closed_reason == reason


def test_bare_nul_path_goes_on_to_the_offered_dualcam_files() -> None:
    server = ServerConnection(NO_META)
    init = init_bytes(settings=1 << 25 | 0x44000400)
    assert feed(server, init)[1] == PATH_REQUEST
    events, out = feed(server, frame(0x000D, b"\0"))
    assert events == [PathEmpty()]
    assert out == REQUEST_PHOTOF
    # After the photo the device still sets bit 25: the path is not asked for again.
    events, _ = feed(server, start_frame(1) + frame(0x0003, u32(1)) + data_frame(b"x"))
    assert server.state is S.AWAIT_CONFIRM
    server.confirm_file()
    assert server.data_to_send() == h("0009")
    events, out = feed(server, init_bytes(settings=1 << 25))
    assert out == CLOSE
    assert events[-1] == SessionClosed(reason="no more files", clean=True)


def test_bare_nul_path_is_not_asked_again_in_the_session() -> None:
    server = ServerConnection(NO_META)
    init = init_bytes(settings=1 << 25 | 0x44000400)
    feed(server, init)
    feed(server, frame(0x000D, b"\0"))
    events, out = feed(server, start_frame(0))  # the photo is empty too
    assert events == [FileEmpty(file=PHOTOF)]
    assert out == h("0009")
    events, out = feed(server, init)
    assert out == CLOSE
    assert events[-1] == SessionClosed(
        reason="%photof: came back empty (START 0) in this session", clean=True
    )


# --- START 0 is bounded ---------------------------------------------------------------------------


def test_empty_start_is_not_requested_again_in_the_session() -> None:
    server = ServerConnection(NO_META)
    assert feed(server, PHOTOF_INIT)[1] == REQUEST_PHOTOF
    assert feed(server, start_frame(0)) == ([FileEmpty(file=PHOTOF)], h("0009"))
    # The device INITs again with the same file: CLOSE instead of the same request forever.
    events, out = feed(server, PHOTOF_INIT)
    assert events == [
        FileOffered(file=PHOTOF),
        SessionClosed(reason="%photof: came back empty (START 0) in this session", clean=True),
    ]
    assert out == CLOSE
    assert server.state is S.CLOSED


def test_empty_start_moves_on_to_the_other_offered_file() -> None:
    server = ServerConnection(NO_META)
    assert feed(server, TWO_INIT)[1] == REQUEST_VIDEOR
    feed(server, start_frame(0))
    assert feed(server, TWO_INIT)[1] == REQUEST_PHOTOF


def test_empty_path_file_is_not_requested_again() -> None:
    server = ServerConnection(NO_META)
    feed(server, DSM_INIT)
    assert feed(server, frame(0x000D, DSM_PATH))[1] == h("0008001e") + DSM_PATH
    assert feed(server, start_frame(0))[1] == h("0009")
    assert feed(server, DSM_INIT)[1] == PATH_REQUEST  # maybe another file is ready now
    events, out = feed(server, frame(0x000D, DSM_PATH))  # no: the same one
    assert out == CLOSE
    assert events[-1] == SessionClosed(
        reason="dsm/picture/231020/231452.jpg: came back empty (START 0) in this session",
        clean=True,
    )


def _empty_session(policy: ServerPolicy, init: bytes = PHOTOF_INIT) -> list[Event]:
    server = ServerConnection(policy)
    events, out = feed(server, init)
    if out == CLOSE:
        return events
    more, _ = feed(server, start_frame(0))
    return events + more


def test_a_file_empty_in_several_sessions_in_a_row_is_given_up() -> None:
    memory = EmptyFileMemory(limit=3)
    policy = DefaultPolicy(metadata=False, empty_files=memory)
    assert FileGivenUp not in map(type, _empty_session(policy))
    assert FileGivenUp not in map(type, _empty_session(policy))
    third = _empty_session(policy)
    assert FileGivenUp(file=PHOTOF, sessions=3) in third
    # The fourth session is not asked for the file at all.
    server = ServerConnection(policy)
    events, out = feed(server, PHOTOF_INIT)
    assert out == CLOSE
    assert events[-1] == SessionClosed(
        reason="%photof: given up: it came back empty in too many sessions in a row", clean=True
    )
    # Until the device offers something else: then everything is asked for again.
    server = ServerConnection(policy)
    assert feed(server, TWO_INIT)[1] == REQUEST_VIDEOR
    assert memory.given_up(COMMUNITY_IMEI, [PHOTOF]) == frozenset()


def test_data_resets_the_empty_streak() -> None:
    memory = EmptyFileMemory(limit=2)
    policy = DefaultPolicy(metadata=False, empty_files=memory)
    _empty_session(policy)
    server = ServerConnection(policy)
    feed(server, PHOTOF_INIT)
    events, _ = feed(server, start_frame(1))
    assert isinstance(events[0], TransferStarted)
    assert FileGivenUp not in map(type, _empty_session(policy))  # the count starts again


def test_empty_file_memory_is_bounded_and_checked() -> None:
    memory = EmptyFileMemory(limit=1, max_devices=2)
    for imei in (1, 2, 3):
        assert memory.answered(imei, PHOTOF, [PHOTOF], empty=True) == 1
    assert memory.given_up(1, [PHOTOF]) == frozenset()  # the oldest device was dropped
    assert memory.given_up(3, [PHOTOF]) == {PHOTOF.identifier}
    assert memory.given_up(3, [PHOTOF]) == {PHOTOF.identifier}
    memory.answered(3, PHOTOF, [PHOTOF], empty=False)
    assert memory.given_up(3, [PHOTOF]) == frozenset()
    memory.answered(4, PHOTOF, [PHOTOF], empty=False)  # nothing known: nothing to forget
    assert memory.answered(2, VIDEOR, [VIDEOR], empty=True) == 1
    memory.answered(2, PHOTOF, [PHOTOF], empty=False)  # another file's streak stays
    assert memory.given_up(2, [VIDEOR]) == {VIDEOR.identifier}
    memory = EmptyFileMemory(limit=2)
    assert memory.answered(5, PHOTOF, [PHOTOF], empty=True) is None
    assert memory.answered(5, PHOTOF, [PHOTOF], empty=True) == 2
    assert memory.answered(5, PHOTOF, [PHOTOF], empty=True) is None  # given up once
    with pytest.raises(ValueError, match="at least 1"):
        EmptyFileMemory(limit=0)


# --- device STATUS --------------------------------------------------------------------------------


def test_every_state_and_status_kind_has_an_action() -> None:
    open_states = [s for s in S if s not in (S.CLOSED, S.ERROR)]
    assert set(STATUS_ACTIONS) == {(s, k) for s in open_states for k in StatusKind}
    assert status_action(S.AWAIT_START, DeviceStatus.FILE_NOT_AVAILABLE) is StatusAction.NEXT_FILE
    assert status_action(S.AWAIT_METADATA, 2) is StatusAction.WITHOUT_METADATA
    assert status_action(S.RECEIVING, 0) is StatusAction.NOTE


@pytest.mark.parametrize("code", [2, 3, 5])
def test_metadata_error_requests_the_file_without_metadata(code: int) -> None:
    server = server_in(S.AWAIT_METADATA)
    assert feed(server, status(code)) == ([StatusReceived(status=code)], REQUEST_PHOTOF)
    assert server.state is S.AWAIT_START
    events, _ = feed(server, start_frame(3))
    assert events == [
        TransferStarted(file=PHOTOF, size=None, packets=3, device_crc=None, resume_offset=0)
    ]


@pytest.mark.parametrize("state", [S.AWAIT_METADATA, S.AWAIT_START])
def test_file_not_available_goes_to_the_next_offered_file(state: ServerState) -> None:
    server = ServerConnection(DefaultPolicy(metadata=state is S.AWAIT_METADATA))
    feed(server, TWO_INIT)
    assert server.state is state
    events, out = feed(server, status(0x11))
    assert events == [StatusReceived(status=0x11)]
    assert out == (h("000a00072570686f746f66") if state is S.AWAIT_METADATA else REQUEST_PHOTOF)
    # And it is not asked for again in this session.
    server = ServerConnection(NO_META)
    feed(server, PHOTOF_INIT)
    events, out = feed(server, status(0x11))
    assert out == CLOSE
    assert events[-1] == SessionClosed(
        reason="%photof: not available (device STATUS 0x11)", clean=True
    )


def test_file_not_available_at_the_path_request() -> None:
    server = server_in(S.AWAIT_PATH)
    events, out = feed(server, status(0x11))
    assert out == CLOSE
    assert events[-1] == SessionClosed(
        reason="device STATUS 0x11: no file at the path request", clean=True
    )


@pytest.mark.parametrize(
    ("state", "path", "code", "reason"),
    [
        (S.AWAIT_INIT, False, 2, "device STATUS 0x02 in state AWAIT_INIT"),
        (S.AWAIT_PATH, True, 5, "device STATUS 0x05 in state AWAIT_PATH"),
        (S.AWAIT_START, False, 3, "device STATUS 0x03 about %photof in state AWAIT_START"),
        (S.AWAIT_SYNC, False, 0x11, "device STATUS 0x11 about %photof in state AWAIT_SYNC"),
        (S.RECEIVING, False, 2, "device STATUS 0x02 about %photof in state RECEIVING"),
    ],
)
def test_other_statuses_close_with_the_code(
    state: ServerState, path: bool, code: int, reason: str
) -> None:
    server = server_in(state, path=path)
    assert feed(server, status(code)) == (
        [StatusReceived(status=code), SessionClosed(reason=reason, clean=False)],
        CLOSE,
    )


def test_status_after_the_last_byte_is_only_noted() -> None:
    server = server_in(S.AWAIT_CONFIRM)
    assert feed(server, status(3)) == ([StatusReceived(status=3)], b"")
    server.confirm_file()
    assert server.data_to_send() == h("0009")


# --- deadlines ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "path", "awaited"),
    [
        (S.AWAIT_INIT, False, "INIT"),
        (S.AWAIT_PATH, True, "FILE PATH RESPONSE (0x000D)"),
        (S.AWAIT_METADATA, False, "FILE METADATA RESPONSE (0x000B)"),
        (S.AWAIT_START, False, "START (0x0001)"),
    ],
)
def test_each_request_has_a_deadline(state: ServerState, path: bool, awaited: str) -> None:
    server = server_in(state, path=path)
    deadline = server.next_deadline()
    assert deadline == 60.0
    assert server.handle_timeout(59.0) == []
    reason = f"no {awaited} within 60 s (state {state.name})"
    assert server.handle_timeout(deadline) == [SessionClosed(reason=reason, clean=False)]
    assert server.data_to_send() == CLOSE


def test_confirm_has_its_own_deadline() -> None:
    server = ServerConnection(NO_META, ServerConfig(confirm_timeout=5.0))
    feed(server, PHOTOF_INIT + start_frame(1), 10.0)
    feed(server, frame(0x0003, u32(1)) + data_frame(b"x"), 12.0)
    assert server.state is S.AWAIT_CONFIRM
    assert server.next_deadline() == 17.0
    reason = "no confirm_file() from the application within 5 s (state AWAIT_CONFIRM)"
    assert server.handle_timeout(17.0) == [SessionClosed(reason=reason, clean=False)]


def test_deadline_after_repeat_init() -> None:
    server = server_in(S.AWAIT_CONFIRM)
    server.receive_data(b"", 30.0)
    server.confirm_file()
    assert server.state is S.AWAIT_INIT
    assert server.next_deadline() == 90.0


# --- composable policies --------------------------------------------------------------------------


@dataclass
class Recording(DelegatingPolicy):
    base: ServerPolicy

    def resume_point(self, session: SessionInfo, transfer: TransferInfo) -> ResumePoint:
        return ResumePoint(1024, 7)


def test_delegating_policy_passes_every_question_to_its_base() -> None:
    memory = EmptyFileMemory(limit=1)
    base = DefaultPolicy(metadata=False, path_files=False, empty_files=memory)
    policy = Recording(base)
    session = SessionInfo(COMMUNITY_IMEI, 5, 0)
    assert policy.want_path_file(session) is False
    assert policy.want_metadata(session, PHOTOF) is False
    assert policy.choose_file(session, [PHOTOF, VIDEOR]) == VIDEOR
    assert policy.start_answered(session, PHOTOF, [PHOTOF], empty=True) == 1
    assert policy.given_up(session, [PHOTOF]) == {PHOTOF.identifier}
    assert Recording(NO_META).given_up(session, [PHOTOF]) == ()
    assert Recording(NO_META).start_answered(session, PHOTOF, [PHOTOF], empty=True) is None
    info = TransferInfo(file=PHOTOF, size=None, packets=3, device_crc=None, metadata=None)
    assert policy.resume_point(session, info) == ResumePoint(1024, 7)
    assert DelegatingPolicy.resume_point(Recording(NO_META), session, info) == ResumePoint()


def test_policy_base_defaults() -> None:
    policy = PolicyBase()
    session = SessionInfo(COMMUNITY_IMEI, 5, 0)
    assert policy.want_path_file(session) is True
    assert policy.want_metadata(session, PHOTOF) is False
    assert policy.choose_file(session, [PHOTOF, VIDEOR]) == PHOTOF
    assert policy.choose_file(session, []) is None
    assert policy.given_up(session, [PHOTOF]) == ()
    assert policy.start_answered(session, PHOTOF, [PHOTOF], empty=True) is None
    info = TransferInfo(file=PHOTOF, size=None, packets=3, device_crc=None, metadata=None)
    assert policy.resume_point(session, info) == ResumePoint()
    # A bare PolicyBase drives a whole session.
    server = ServerConnection(policy)
    events = server.receive_data(PHOTOF_INIT, 0.0)
    assert isinstance(events[0], SessionStarted)
    assert server.data_to_send() == REQUEST_PHOTOF


# --- the device role plays each failure; the server ends the session by itself ------------------


def _device(*files: DeviceFile, **faults: object) -> CameraDevice:
    return CameraDevice(imei=COMMUNITY_IMEI, files=list(files), **faults)  # type: ignore[arg-type]


PHOTO = slot_file(DualCamSlot.PHOTO_FRONT, payload_bytes(2500, seed=1))
VIDEO = slot_file(DualCamSlot.VIDEO_REAR, payload_bytes(5000, seed=2))
PICTURE = path_file(DSM_PATH, payload_bytes(1500, seed=3))


@pytest.mark.parametrize(
    ("device", "reason", "clean"),
    [
        (
            _device(empty_paths=1, extra_settings=0),
            "device has no file ready (bare NUL path)",
            True,
        ),
        (
            _device(PHOTO, VIDEO, stuck={b"%videor"}),
            "%videor: came back empty (START 0) in this session",
            True,
        ),
        (
            _device(PHOTO, VIDEO, gone={b"%videor"}),
            "%videor: not available (device STATUS 0x11)",
            True,
        ),
        (_device(PHOTO, gone={b"%photof"}), "%photof: not available (device STATUS 0x11)", True),
        (_device(PICTURE, metadata_status={DSM_PATH: 2}), "no more files", True),
        (
            _device(PHOTO, request_status={b"%photof": 3}),
            "device STATUS 0x03 about %photof in state AWAIT_START",
            False,
        ),
        (
            _device(PHOTO, protocol=9),
            f"INIT protocol id 9 unsupported (supported: 1, 2, 3, 4, 5, 6); IMEI {COMMUNITY_IMEI}",
            False,
        ),
    ],
    ids=["no-file", "empty", "gone-next", "gone-last", "metadata-error", "status", "protocol"],
)
def test_device_failure_paths_end_the_session(
    device: CameraDevice, reason: str, clean: bool
) -> None:
    device = copy.deepcopy(device)
    deliverable = {item.file.identifier: item.data for item in device.pending}
    if device.request_status or device.protocol == 9:
        deliverable = {}
    pair = DevicePair(device, ServerConnection(opened=0.0)).run()
    assert pair.server_closed
    assert pair.closed_event() == SessionClosed(reason=reason, clean=clean)
    assert pair.conn.closed  # the device heard CLOSE
    assert pair.store.files() == deliverable  # the rest came through intact
