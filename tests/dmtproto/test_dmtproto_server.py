"""Server role: conversations in, events and replies out (whole, one byte at a time, with
trailing data), every transition, the limits, and errors that name type, state and limit."""

from __future__ import annotations

import struct

import pytest

from dmtproto import (
    COMMIT_REPLY,
    TRANSITIONS,
    CommitRequested,
    DecodeError,
    HelloReceived,
    LocalInput,
    LocalProtocolError,
    MessageIgnored,
    MessageType,
    OtherMessage,
    ProtocolError,
    RecordReceived,
    RemoteProtocolError,
    RequestAnswered,
    ServerConfig,
    ServerState,
    SessionClosed,
    decode_message_records,
    encode,
)
from tests.dmtproto.dmtproto_helpers import (
    ASYNC_COMPLETE,
    COMMIT,
    DM_NOW,
    FIXED,
    VECTOR_ASYNC,
    VECTOR_DATA,
    VECTOR_HELLO,
    VERSION_REPLY,
    data_message,
    feed,
    h,
    hello_reply,
    kinds,
    new_server,
    of,
    record_bytes,
    server_three_ways,
)

S = ServerState
M = MessageType
HELLO_51 = encode(0x00, VECTOR_HELLO[5:] + h("abcd"))
TIME_REQUEST = encode(0x30)
VERSION_DATA = encode(0x14, struct.pack("<IIBI", 129336, 0xFFFFFFFF, 1, 0x01020304))
CLOSURE = encode(0x26)

# (name, device bytes, server event kinds, server replies, final state)
CONVERSATIONS: list[tuple[str, bytes, list[str], bytes, ServerState]] = [
    ("hello", VECTOR_HELLO, ["HelloReceived"], hello_reply(), S.READY),
    ("hello-51", HELLO_51, ["HelloReceived"], hello_reply(), S.READY),
    (
        "traccar-session",
        VECTOR_HELLO + VECTOR_DATA + COMMIT + VECTOR_ASYNC,
        ["HelloReceived", "RecordReceived", "RecordReceived", "CommitRequested", "RequestAnswered"],
        hello_reply() + ASYNC_COMPLETE,  # no commit reply until commit()
        S.COMMITTING,
    ),
    (
        "canned-requests",
        VECTOR_HELLO + VERSION_DATA + VERSION_DATA + VECTOR_ASYNC + TIME_REQUEST,
        ["HelloReceived", *["RequestAnswered"] * 4],
        hello_reply()
        + VERSION_REPLY * 2
        + ASYNC_COMPLETE
        + encode(0x31, struct.pack("<I", DM_NOW)),
        S.READY,
    ),
    (
        "ignored-types",
        VECTOR_HELLO + encode(0x7F, b"xyz") + encode(0x01, bytes(8)) + encode(0x21, b"r"),
        ["HelloReceived", "MessageIgnored", "MessageIgnored", "MessageIgnored"],
        hello_reply(),
        S.READY,
    ),
    (
        "empty-data-message",
        VECTOR_HELLO + data_message(),
        ["HelloReceived"],
        hello_reply(),
        S.READY,
    ),
    (
        "socket-closure",
        VECTOR_HELLO + CLOSURE + VECTOR_DATA,  # nothing after the closure is read
        ["HelloReceived", "SessionClosed"],
        hello_reply(),
        S.CLOSED,
    ),
    (
        "commit-without-records",
        VECTOR_HELLO + COMMIT,
        ["HelloReceived", "CommitRequested"],
        hello_reply(),
        S.COMMITTING,
    ),
]


@pytest.mark.parametrize(
    ("data", "expected", "replies", "state"),
    [c[1:] for c in CONVERSATIONS],
    ids=[c[0] for c in CONVERSATIONS],
)
def test_conversations(
    data: bytes, expected: list[str], replies: bytes, state: ServerState
) -> None:
    fed = server_three_ways(data)
    assert kinds(fed.events) == expected
    assert fed.replies == replies
    assert fed.server.state is state


def test_hello_event_carries_identity_and_raw_message() -> None:
    (hello,) = feed(HELLO_51).events
    assert hello == HelloReceived(
        serial=129336,
        imei="353323081669730",
        iccid="89610185001824844630",
        product_id=34,
        hardware_revision=2,
        firmware_major=1,
        firmware_minor=9,
        flags=0,
        extra=h("abcd"),
        raw=HELLO_51,
    )
    assert hello.firmware == "1.9" and hello.product == "Dart"


def test_hello_response_tells_the_time_passed_in() -> None:
    server = new_server(now=100.0)  # unix_time = UNIX + 100 at now = 100
    server.receive_data(VECTOR_HELLO, 160.0)  # a minute later
    assert server.data_to_send() == hello_reply(DM_NOW + 160)


def test_hello_flags_and_traccar_long_hello_reply() -> None:
    assert feed(VECTOR_HELLO, config=ServerConfig(hello_flags=1)).replies == hello_reply(flags=1)
    traccar = ServerConfig(traccar_long_hello_reply=True)
    assert feed(HELLO_51, config=traccar).replies == h("0255010500") + bytes(5)
    assert feed(VECTOR_HELLO, config=traccar).replies == hello_reply()


def test_commit_reply_only_on_commit() -> None:
    server = new_server()
    events = server.receive_data(VECTOR_HELLO + VECTOR_DATA + COMMIT, 0.0)
    assert server.data_to_send() == hello_reply()  # nothing for the commit yet
    assert of(events, CommitRequested) == [CommitRequested(records=2, new_records=2)]
    assert server.uncommitted == 2
    assert server.commit() is True
    assert server.data_to_send() == COMMIT_REPLY == h("025506010001")
    assert server.state is S.READY
    assert (server.records, server.committed, server.uncommitted) == (2, 2, 0)
    with pytest.raises(LocalProtocolError, match="COMMIT not allowed in state READY"):
        server.commit()


def test_commits_are_answered_in_order_each_covering_what_came_before() -> None:
    server = new_server()
    one = data_message(record_bytes(1, 0, 3))
    events = server.receive_data(VECTOR_HELLO + one + COMMIT + one + one + COMMIT + COMMIT, 0.0)
    assert of(events, CommitRequested) == [
        CommitRequested(records=1, new_records=1),
        CommitRequested(records=3, new_records=2),
        CommitRequested(records=3, new_records=0),
    ]
    server.data_to_send()
    assert server.commit() and server.committed == 1 and server.state is S.COMMITTING
    assert server.commit() and server.committed == 3 and server.state is S.COMMITTING
    more = server.receive_data(one + COMMIT, 0.0)  # the device goes on meanwhile
    assert of(more, CommitRequested) == [CommitRequested(records=4, new_records=1)]
    assert server.commit() and server.commit()
    assert server.state_name == "READY" and server.committed == 4
    assert server.data_to_send() == COMMIT_REPLY * 4


def test_record_events_carry_each_record_as_a_message() -> None:
    fed = feed(VECTOR_HELLO + VECTOR_DATA + data_message(record_bytes(9, 0, 11)))
    records = of(fed.events, RecordReceived)
    assert [r.index for r in records] == [0, 1, 2]
    assert [r.record.sequence for r in records] == [565, 566, 9]
    assert all(r.message_type is M.DATA_RECORDS for r in records)
    # Two records in one message: each alone, re-framed; one record: the message as sent.
    assert records[0].raw == encode(0x04, VECTOR_DATA[5:66])
    assert records[1].raw == encode(0x04, VECTOR_DATA[66:])
    assert records[2].raw == data_message(record_bytes(9, 0, 11))
    again = feed(VECTOR_HELLO + records[0].raw + records[1].raw).events
    assert [r.record for r in of(again, RecordReceived)] == [r.record for r in records[:2]]
    assert [decode_message_records(r.raw) for r in records] == [[r.record] for r in records]
    assert decode_message_records(VECTOR_DATA) == [r.record for r in records[:2]]


def test_fixed_records_are_record_events_too() -> None:

    fed = feed(VECTOR_HELLO + encode(0x10, FIXED) + encode(0x10, FIXED * 2) + COMMIT)
    records = of(fed.events, RecordReceived)
    assert len(records) == 3 and all(r.message_type is M.FIXED_RECORDS for r in records)
    assert records[0].raw == encode(0x10, FIXED) == records[2].raw
    assert of(fed.events, CommitRequested) == [CommitRequested(records=3, new_records=3)]


def test_request_answered_events() -> None:
    fed = feed(VECTOR_HELLO + VERSION_DATA + VECTOR_ASYNC + TIME_REQUEST)
    assert of(fed.events, RequestAnswered) == [
        RequestAnswered(request=M.VERSION_DATA, reply=M.VERSION_DATA_RESPONSE),
        RequestAnswered(request=M.ASYNC_SESSION_REQUEST, reply=M.ASYNC_SESSION_COMPLETE),
        RequestAnswered(request=M.TIME_REQUEST, reply=M.TIME_RESPONSE),
    ]


def test_ignored_messages_are_counted_then_limited() -> None:
    config = ServerConfig(max_ignored_messages=2)
    other = encode(0x99, b"abc")
    fed = feed(VECTOR_HELLO + other + other, config=config)
    assert of(fed.events, MessageIgnored) == [MessageIgnored(message_type=0x99, length=3)] * 2
    assert fed.server.ignored == 2
    with pytest.raises(RemoteProtocolError) as info:
        fed.server.receive_data(other, 0.0)
    assert str(info.value) == (
        "0x99: more than 2 ignored messages (limit max_ignored_messages; state READY)"
    )
    assert info.value.message_type == 0x99 and info.value.state == "READY"


# --- errors -----------------------------------------------------------------------------------

# (name, bytes after nothing, message, type)
ERRORS: list[tuple[str, bytes, str, int | None]] = [
    (
        "records-before-hello",
        VECTOR_DATA,
        "device sent DATA_RECORDS(0x04) in state AWAIT_HELLO; expected HELLO(0x00)",
        0x04,
    ),
    (
        "commit-before-hello",
        COMMIT,
        "device sent COMMIT_REQUEST(0x05) in state AWAIT_HELLO; expected HELLO(0x00)",
        5,
    ),
    (
        "unknown-before-hello",
        encode(0x7F),
        "device sent 0x7F in state AWAIT_HELLO; expected HELLO(0x00)",
        0x7F,
    ),
    (
        "second-hello",
        VECTOR_HELLO + VECTOR_HELLO,
        "device sent HELLO(0x00) in state READY; expected ASYNC_SESSION_REQUEST(0x22), "
        "COMMIT_REQUEST(0x05), DATA_RECORDS(0x04), FIXED_RECORDS(0x10), SOCKET_CLOSURE(0x26), "
        "TIME_REQUEST(0x30), VERSION_DATA(0x14)",
        0,
    ),
    (
        "short-hello",
        encode(0x00, VECTOR_HELLO[5:-1]),
        "HELLO(0x00) payload of 48 bytes; at least 49 required (state AWAIT_HELLO)",
        0,
    ),
    (
        "hello-imei-not-digits",
        VECTOR_HELLO[:9] + b"35332308166973X" + VECTOR_HELLO[24:],
        "HELLO(0x00) IMEI '35332308166973X' is not a string of digits (state AWAIT_HELLO)",
        0,
    ),
    (
        "hello-empty-imei",
        VECTOR_HELLO[:9] + bytes(16) + VECTOR_HELLO[25:],
        "HELLO(0x00) IMEI '' is not a string of digits (state AWAIT_HELLO)",
        0,
    ),
    (
        "bad-sync",
        b"GET / HTTP/1.1\r\n",
        "message does not start with sync bytes 02 55 (got 47) (state AWAIT_HELLO)",
        None,
    ),
    (
        "over-the-cap",
        VECTOR_HELLO + h("0255040140"),
        "DATA_RECORDS(0x04) payload of 16385 bytes exceeds the 16384-byte message limit "
        "(state READY)",
        4,
    ),
    (
        "bad-record-length",
        VECTOR_HELLO + data_message(h("0a00") + bytes(9)),
        "DATA_RECORDS(0x04): record 1 (sequence 0) has length 10; allowed 11..11 here "
        "(state READY)",
        4,
    ),
    (
        "fixed-records-not-whole",
        VECTOR_HELLO + encode(0x10, bytes(65)),
        "FIXED_RECORDS(0x10): payload of 65 bytes is not a whole number of 64-byte records "
        "(state READY)",
        0x10,
    ),
]


@pytest.mark.parametrize(
    ("data", "message", "message_type"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS]
)
def test_errors_name_type_state_and_limit(
    data: bytes, message: str, message_type: int | None
) -> None:
    for cuts in (None, range(1, len(data))):
        server = new_server()
        with pytest.raises(RemoteProtocolError) as info:
            start = 0
            for end in [*(cuts or ()), len(data)]:
                server.receive_data(data[start:end], 0.0)
                start = end
        assert str(info.value) == message
        assert info.value.message_type == message_type
        assert server.state is S.ERROR
        with pytest.raises(LocalProtocolError, match="already failed"):
            server.receive_data(b"", 0.0)
        assert server.receive_eof() == []
        assert server.close("x") == []
        assert server.commit() is False
        assert server.next_deadline() is None


def test_error_keeps_the_events_before_it() -> None:
    server = new_server()
    with pytest.raises(RemoteProtocolError) as info:
        server.receive_data(VECTOR_HELLO + VECTOR_DATA + encode(0x10, bytes(3)), 0.0)
    assert kinds(info.value.events) == ["HelloReceived", "RecordReceived", "RecordReceived"]
    assert info.value.state == "READY"


def test_message_cap_is_configurable() -> None:
    config = ServerConfig(max_message_length=60)
    with pytest.raises(RemoteProtocolError, match="payload of 122 bytes exceeds the 60-byte"):
        feed(VECTOR_HELLO + VECTOR_DATA, config=config)
    with pytest.raises(
        RemoteProtocolError, match=r"HELLO.* payload of 49 bytes exceeds the 10-byte"
    ):
        feed(VECTOR_HELLO, config=ServerConfig(max_message_length=10))


def test_protocol_error_base_is_abstract() -> None:
    with pytest.raises(TypeError):
        ProtocolError("x")


# --- time: hello deadline and idle timeout ----------------------------------------------------


def test_hello_required_within_the_deadline() -> None:
    server = new_server(ServerConfig(hello_timeout_seconds=10), now=50.0)
    assert server.next_deadline() == 60.0
    assert server.handle_timeout(59.9) == []
    server.receive_data(VECTOR_HELLO[:20], 55.0)  # bytes, but no HELLO yet: deadline stays
    assert server.next_deadline() == 60.0
    assert server.handle_timeout(60.0) == [
        SessionClosed(reason="no HELLO within 10 s of connecting", clean=False)
    ]
    assert server.state is S.CLOSED and server.next_deadline() is None
    assert server.handle_timeout(100.0) == []
    assert server.receive_data(VECTOR_HELLO[20:], 61.0) == []  # closed: nothing more is read


def test_idle_timeout_counts_from_the_last_bytes() -> None:
    server = new_server(ServerConfig(idle_timeout_seconds=120))
    server.receive_data(VECTOR_HELLO, 1.0)
    assert server.next_deadline() == 121.0
    server.receive_data(VECTOR_DATA[:10], 100.0)
    assert server.next_deadline() == 220.0
    assert server.handle_timeout(219.0) == []
    server.receive_data(VECTOR_DATA[10:] + COMMIT, 200.0)
    assert server.state is S.COMMITTING and server.next_deadline() == 320.0
    (closed,) = server.handle_timeout(320.0)
    assert closed == SessionClosed(
        reason="idle for 120 s (idle timeout) in state COMMITTING", clean=False, uncommitted=2
    )
    assert server.commit() is False  # Kafka acknowledged too late: nothing sent
    assert server.data_to_send() == hello_reply(DM_NOW + 1)


# --- end of session ---------------------------------------------------------------------------

# (name, bytes before EOF, commits made, reason, clean, uncommitted)
EOFS: list[tuple[str, bytes, int, str, bool, int]] = [
    ("before-hello", b"", 0, "device closed the connection before HELLO", False, 0),
    ("after-hello", VECTOR_HELLO, 0, "device closed the connection", True, 0),
    (
        "records-no-commit",
        VECTOR_HELLO + VECTOR_DATA,
        0,
        "device closed the connection with 2 records not committed",
        False,
        2,
    ),
    (
        "before-commit-response",
        VECTOR_HELLO + VECTOR_DATA + COMMIT,
        0,
        "device closed the connection before the commit response (2 records not committed)",
        False,
        2,
    ),
    (
        "after-commit",
        VECTOR_HELLO + VECTOR_DATA + COMMIT,
        1,
        "device closed the connection",
        True,
        0,
    ),
]


@pytest.mark.parametrize(
    ("data", "commits", "reason", "clean", "uncommitted"),
    [c[1:] for c in EOFS],
    ids=[c[0] for c in EOFS],
)
def test_eof(data: bytes, commits: int, reason: str, clean: bool, uncommitted: int) -> None:
    server = new_server()
    server.receive_data(data, 0.0)
    for _ in range(commits):
        server.commit()
    assert server.receive_eof() == [
        SessionClosed(reason=reason, clean=clean, uncommitted=uncommitted)
    ]
    assert server.state is S.CLOSED
    assert server.receive_eof() == []
    assert server.close("again") == []


def test_socket_closure_with_records_not_committed() -> None:
    fed = feed(VECTOR_HELLO + VECTOR_DATA + CLOSURE)
    assert fed.events[-1] == SessionClosed(
        reason="device announced socket closure (0x26) with 2 records not committed",
        clean=False,
        uncommitted=2,
    )
    clean = feed(VECTOR_HELLO + CLOSURE).events[-1]
    assert clean == SessionClosed(reason="device announced socket closure (0x26)", clean=True)


def test_close_by_the_service() -> None:
    server = new_server()
    server.receive_data(VECTOR_HELLO + VECTOR_DATA + COMMIT, 0.0)
    assert server.close("kafka unavailable") == [
        SessionClosed(reason="kafka unavailable", clean=False, uncommitted=2)
    ]
    assert server.state is S.CLOSED and server.commit() is False
    assert server.data_to_send() == hello_reply()  # never a commit reply


# --- the table --------------------------------------------------------------------------------


def test_transition_table_shape() -> None:
    open_states = {S.AWAIT_HELLO, S.READY, S.COMMITTING}
    for state in open_states:
        for local in (LocalInput.CLOSE, LocalInput.EOF, LocalInput.TIMEOUT):
            assert TRANSITIONS[(state, local)] == {S.CLOSED}
    assert not any(state in (S.CLOSED, S.ERROR) for state, _ in TRANSITIONS)
    assert {t for (s, t) in TRANSITIONS if s is S.AWAIT_HELLO} == {
        M.HELLO, LocalInput.CLOSE, LocalInput.EOF, LocalInput.TIMEOUT,
    }  # fmt: skip
    assert TRANSITIONS[(S.READY, OtherMessage.ANY)] == {S.READY}
    assert (S.READY, LocalInput.COMMIT) not in TRANSITIONS


def test_local_inputs_not_allowed_say_so() -> None:
    server = new_server()
    with pytest.raises(LocalProtocolError, match="COMMIT not allowed in state AWAIT_HELLO"):
        server.commit()


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (h("0255"), "not a DMT message"),
        (h("0355040000"), "not a DMT message"),
        (h("02550402000b"), "length field says 2 bytes, 1 follow"),
        (VECTOR_HELLO, "message type 0x00 carries no records"),
    ],
)
def test_decode_message_records_refuses_other_bytes(message: bytes, error: str) -> None:
    with pytest.raises(DecodeError, match=error):
        decode_message_records(message)


def test_decode_message_records_fixed() -> None:
    (record,) = decode_message_records(encode(0x10, FIXED))
    assert record.raw == FIXED
