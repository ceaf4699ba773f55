"""Hypothesis invariants: garbage never escapes as anything but RemoteProtocolError, every
transition is in TRANSITIONS, and no fault schedule ends with a wrong file."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from camproto import (
    TRANSITIONS,
    CameraDevice,
    CameraFile,
    CommandId,
    DefaultPolicy,
    DeviceFile,
    DualCamSlot,
    Event,
    FileSizeLimits,
    LocalInput,
    LocalProtocolError,
    PolicyBase,
    RemoteProtocolError,
    ServerConfig,
    ServerConnection,
    ServerPolicy,
    ServerState,
    SessionClosed,
    SessionInfo,
    crc16,
)
from tests.camproto.camproto_helpers import (
    ADAS_PATH,
    COMMUNITY_IMEI,
    DSM_PATH,
    DevicePair,
    Store,
    StorePolicy,
    data_frame,
    drive,
    frame,
    init_bytes,
    path_file,
    random_cuts,
    slot_file,
    u32,
)

S = ServerState
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- (a) garbage in: events or RemoteProtocolError, nothing else ------------------------------


@dataclass
class Outcome:
    events: list[Event]
    error: str | None


def feed_server(chunks: list[bytes], eof: bool) -> Outcome:
    server = ServerConnection()
    events: list[Event] = []
    try:
        for chunk in chunks:
            events += server.receive_data(chunk, 0.0)
    except RemoteProtocolError as exc:
        assert server.state is S.ERROR
        with_local = False
        try:
            server.receive_data(b"", 0.0)
        except LocalProtocolError:
            with_local = True
        assert with_local
        return Outcome(events, str(exc))
    if eof:
        events += server.receive_eof()
    return Outcome(events, None)


def assert_same(whole: Outcome, pieces: Outcome) -> None:
    """Fed whole or byte by byte: the same error, or the same events."""
    assert whole.error == pieces.error
    if whole.error is None:
        assert whole.events == pieces.events


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


@FAST
@given(data=st.binary(max_size=300), eof=st.booleans())
def test_server_garbage(data: bytes, eof: bool) -> None:
    assert_same(feed_server([data], eof), feed_server(bytewise(data), eof))


@FAST
@given(data=st.binary(max_size=300), settings_=st.integers(0, 2**32 - 1))
def test_server_garbage_after_valid_init(data: bytes, settings_: int) -> None:
    stream = init_bytes(settings=settings_) + data
    assert_same(feed_server([stream], False), feed_server(bytewise(stream), False))


def any_frame() -> st.SearchStrategy[bytes]:
    """A header with a plausible command id and length, and a payload of that length."""

    def build(command: int, payload: bytes, lie: int | None) -> bytes:
        if command == 0 and lie is None:
            return init_bytes(settings=int.from_bytes(payload[:4].ljust(4, b"\0"), "big"))
        length = len(payload) if lie is None else lie
        return command.to_bytes(2, "big") + length.to_bytes(2, "big") + payload

    return st.builds(
        build,
        st.integers(0, 15),
        st.binary(max_size=40)
        | st.sampled_from([DSM_PATH, bytes(26), bytes(32), u32(1) + b"\0\0", u32(0)]),
        st.none() | st.integers(0, 2000),
    )


@FAST
@given(frames=st.lists(any_frame(), max_size=8), eof=st.booleans())
def test_server_frame_soup(frames: list[bytes], eof: bool) -> None:
    stream = b"".join(frames)
    assert_same(feed_server([stream], eof), feed_server(bytewise(stream), eof))


def feed_device(chunks: list[bytes], eof: bool) -> Outcome:
    device = CameraDevice(
        imei=COMMUNITY_IMEI,
        files=[
            slot_file(DualCamSlot.PHOTO_FRONT, bytes(2000)),
            path_file(DSM_PATH, bytes(1500)),
        ],
    )
    conn = device.connect()
    events: list[Event] = []
    try:
        for chunk in chunks:  # (no data_to_send() between reads: sending changes the outcome)
            events += conn.receive_data(chunk)
        if eof:
            events += conn.receive_data(b"", eof=True)
    except RemoteProtocolError as exc:
        return Outcome(events, str(exc))
    return Outcome(events, None)


SERVER_COMMANDS = st.sampled_from(
    [
        bytes.fromhex("00000000"),
        bytes.fromhex("0000"),
        bytes.fromhex("0009"),
        bytes.fromhex("00090000"),
        bytes.fromhex("000c00020000"),
        bytes.fromhex("000a0000"),
        bytes.fromhex("000a00072570686f746f66"),
        bytes.fromhex("000800072570686f746f66"),
        bytes.fromhex("0008001e") + DSM_PATH,
        bytes.fromhex("0002000400000001"),
        bytes.fromhex("0002000400000400"),
        bytes.fromhex("0005000400000000"),
    ]
)


@FAST
@given(data=st.binary(max_size=200), eof=st.booleans())
def test_device_garbage(data: bytes, eof: bool) -> None:
    assert_same(feed_device([data], eof), feed_device(bytewise(data), eof))


@FAST
@given(frames=st.lists(SERVER_COMMANDS | st.binary(max_size=6), max_size=10), eof=st.booleans())
def test_device_command_soup(frames: list[bytes], eof: bool) -> None:
    # Real server commands (bare and with lengths) mixed with a little garbage.
    stream = b"".join(frames)
    assert_same(feed_device([stream], eof), feed_device(bytewise(stream), eof))


# --- (b) every transition is in TRANSITIONS -----------------------------------------------------

Input = CommandId | LocalInput
INPUTS: list[Input] = [*CommandId, *LocalInput]


def test_transition_table_shape() -> None:
    open_states = set(S) - {S.CLOSED, S.ERROR}
    for (state, trigger), targets in TRANSITIONS.items():
        assert state in open_states, (state, trigger)
        assert targets and S.ERROR not in targets
    # Every open state can be left by EOF and CLOSE, and tolerates STATUS.
    for state in open_states:
        for trigger in (LocalInput.EOF, LocalInput.CLOSE, CommandId.STATUS):
            assert (state, trigger) in TRANSITIONS
    # Server->device commands are never device inputs.
    for command in (
        CommandId.RESUME,
        CommandId.FILE_REQUEST,
        CommandId.REPEAT_INIT,
        CommandId.METADATA_REQUEST,
        CommandId.PATH_REQUEST,
    ):
        assert all(trigger is not command for _, trigger in TRANSITIONS)


def wire_for(command: CommandId, server: ServerConnection, variant: int) -> bytes:
    """Bytes of ``command`` shaped by ``variant`` (right or wrong offsets, CRCs, sizes)."""
    offset = server.transfer_offset or 0
    chunk = bytes([variant]) * (1024 if variant % 2 else 10)
    if command is CommandId.INIT:
        settings_ = (0x44000400, 1 << 25, 0x40000400, 0x3C000000)[variant]
        return init_bytes(settings=settings_)
    if command is CommandId.START:
        return frame(command, u32((0, 3, 3000, 1)[variant]) + b"\0\0")
    if command is CommandId.SYNC:
        return frame(command, u32((0, 1, offset, offset // 1024 + 1)[variant]))
    if command is CommandId.DATA:
        return data_frame(chunk, 0 if variant < 2 else 0xBEEF)
    if command is CommandId.ENHANCED_DATA:
        at = offset + 1 if variant == 2 else offset
        crc = 0xBEEF if variant == 3 else crc16(chunk)
        return frame(command, u32(at) + chunk + crc.to_bytes(2, "big"))
    if command is CommandId.METADATA:
        return frame(command, bytes((32, 26, 15, 3)[variant]))
    if command is CommandId.PATH:
        return frame(command, (DSM_PATH, ADAS_PATH, b"x", b"%photof")[variant])
    if command is CommandId.REPEAT_INIT:
        return bytes.fromhex("00090000")
    if command is CommandId.STATUS:  # OK, two errors, file not available
        return frame(command, u32((0, 1, 3, 0x11)[variant]))
    return frame(command, u32(variant) if command is not CommandId.PATH_REQUEST else b"\0\0")


def apply(server: ServerConnection, trigger: Input, variant: int) -> list[Event]:
    if isinstance(trigger, CommandId):
        return server.receive_data(wire_for(trigger, server, variant), 0.0)
    if trigger is LocalInput.CONFIRM_FILE:
        server.confirm_file()
        return []
    if trigger is LocalInput.TIMEOUT:
        deadline = server.next_deadline()
        return server.handle_timeout(1e6 if deadline is None else deadline)
    if trigger is LocalInput.CLOSE:
        return server.close("test")
    return server.receive_eof()


def assert_deadline(server: ServerConnection) -> None:
    """No waiting without a deadline: a session is closed, or it says when to time it out."""
    if server.state not in (S.CLOSED, S.ERROR):
        assert server.next_deadline() is not None, server.state
    else:
        assert server.next_deadline() is None, server.state


def check_step(server: ServerConnection, trigger: Input, variant: int) -> bool:
    """Apply one input; check it against TRANSITIONS. Return whether the connection lives."""
    assert_deadline(server)
    before = server.state
    key = (before, trigger)
    had_deadline = server.next_deadline() is not None
    try:
        events = apply(server, trigger, variant)
    except RemoteProtocolError:
        # The peer broke the protocol: by the table, or by a payload check of an allowed
        # input (a size, an IMEI, a protocol id). Either way the connection is dead.
        assert isinstance(trigger, CommandId)
        assert before not in (S.CLOSED, S.ERROR)
        assert server.state is S.ERROR
        return False
    except LocalProtocolError:
        # The application asked for something the table does not allow now.
        assert key not in TRANSITIONS
        assert server.state is before
        return True
    assert_deadline(server)
    if key in TRANSITIONS:
        assert server.state in TRANSITIONS[key], (key, server.state)
        return True
    # Not in the table and no error: only the documented no-ops.
    assert server.state is before
    assert events == []
    if isinstance(trigger, CommandId):
        assert before is S.CLOSED  # a closed connection ignores input
    elif trigger is LocalInput.TIMEOUT:
        assert not had_deadline
    else:
        assert trigger in (LocalInput.CLOSE, LocalInput.EOF)
        assert before in (S.CLOSED, S.ERROR)
    return True


@dataclass(frozen=True)
class DeclinePolicy(PolicyBase):
    """Wants nothing the device offers."""

    def choose_file(self, session: SessionInfo, offered: Sequence[CameraFile]) -> CameraFile | None:
        return None


#: The last refuses files over 2 KiB (every START of the 3000-byte file).
POLICIES: list[ServerPolicy] = [
    DefaultPolicy(),
    DefaultPolicy(metadata=False),
    DeclinePolicy(),
    DefaultPolicy(max_file_bytes=FileSizeLimits(dualcam=2048, dsm=2048)),
]
#: One RESUME only: an unanswered or mismatched one closes at once.
CONFIGS = [ServerConfig(), ServerConfig(max_resume_attempts=1)]


def test_every_state_and_input() -> None:
    # Exhaustive: every state (reached with each policy, config, file kind and size) and every
    # input in every variant. Together they must take every edge of the table.
    taken: set[tuple[ServerState, Input, ServerState]] = set()
    for state, path, more, policy, config, size in itertools.product(
        S, (False, True), (False, True), POLICIES, CONFIGS, (1024, 3000)
    ):
        for trigger, variant in itertools.product(INPUTS, range(4)):
            server = drive(state, path=path, size=size, policy=policy, config=config, more=more)
            if server is None:
                continue
            check_step(server, trigger, variant)
            taken.add((state, trigger, server.state))
    edges = {(s, t, target) for (s, t), targets in TRANSITIONS.items() for target in targets}
    assert edges - taken == set()


@settings(max_examples=200, deadline=None)
@given(
    start=st.sampled_from(list(S)),
    path=st.booleans(),
    policy=st.sampled_from(POLICIES),
    config=st.sampled_from(CONFIGS),
    steps=st.lists(st.tuples(st.sampled_from(INPUTS), st.integers(0, 3)), min_size=1, max_size=12),
)
def test_every_transition_is_in_the_table(
    start: ServerState,
    path: bool,
    policy: ServerPolicy,
    config: ServerConfig,
    steps: list[tuple[Input, int]],
) -> None:
    # Random walks: after any sequence of inputs each step still obeys the table.
    server = drive(start, path=path, policy=policy, config=config)
    if server is None:
        return
    for trigger, variant in steps:
        if not check_step(server, trigger, variant):
            return


# --- (c) fault schedules: the right file or a reported failure, never a wrong file -------------


def make_file(kind: str, size: int, seed: int) -> DeviceFile:
    data = random.Random(seed).randbytes(size)
    if kind == "dualcam":
        return slot_file(DualCamSlot.PHOTO_REAR, data)
    return path_file(DSM_PATH if kind == "dsm" else ADAS_PATH, data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kinds=st.lists(
        st.sampled_from(["dualcam", "dsm", "adas"]), min_size=1, max_size=2, unique=True
    ),
    size=st.integers(2048, 7 * 1024) | st.integers(2048, 7 * 1024) | st.integers(0, 2047),
    bad=st.sets(st.integers(1, 7), max_size=3),
    disconnects=st.lists(st.integers(0, 7), max_size=3),
    unconfirmed=st.booleans(),
    restart=st.booleans(),
    first=st.sampled_from([0, 1]),
    metadata=st.booleans(),
    write_limit=st.sampled_from([1, 1500, 64 * 1024]),
    seed=st.integers(0, 2**32 - 1),
)
def test_fault_schedule(
    kinds: list[str],
    size: int,
    bad: set[int],
    disconnects: list[int],
    unconfirmed: bool,
    restart: bool,
    first: int,
    metadata: bool,
    write_limit: int,
    seed: int,
) -> None:
    rng = random.Random(seed)
    files = [make_file(kind, size + 100 * i, seed + i) for i, kind in enumerate(kinds)]
    expected = {item.file.identifier: item.data for item in files}
    device = CameraDevice(
        imei=COMMUNITY_IMEI,
        files=list(files),
        bad_crc_packets=set(bad),
        restart_crc_after_resume=restart,
    )
    store = Store()
    failures: list[str] = []
    schedule: list[int | None] = [*disconnects, None]
    for attempt, max_packets in enumerate(schedule):
        server = ServerConnection(
            StorePolicy(store, DefaultPolicy(metadata=metadata)),
            ServerConfig(dualcam_first_resume=first),
        )
        pair = DevicePair(
            device,
            server,
            store,
            up=random_cuts(rng, rng.choice([1, 50, 3000])),
            down=random_cuts(rng, rng.choice([1, 3, 100])),
            auto_confirm=not (unconfirmed and attempt == 0 and len(schedule) > 1),
            max_packets=max_packets,
            write_limit=write_limit,
            writes_per_step=rng.choice([1, 4]),
        )
        try:
            pair.run()
        except RemoteProtocolError as exc:  # a reported failure
            failures.append(str(exc))
            continue
        if not pair.server_closed:
            [closed] = pair.disconnect()
            assert isinstance(closed, SessionClosed) and not closed.clean
        elif max_packets is None:
            assert pair.closed_event().clean
    # Never a wrong file.
    for file, data in store.completed:
        assert data == expected[file.identifier]
    # These faults are all recoverable: the last, unhindered connection finishes the job.
    assert failures == []
    assert device.files == []
    assert {f.identifier for f, _ in store.completed} == {
        item.file.identifier for item in files if item.data
    }
