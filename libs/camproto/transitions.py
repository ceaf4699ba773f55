"""The server's transitions as data: which device command or local input may lead from which
state to which, and what each device STATUS does. ``server.py`` follows these tables; the docs'
diagram and STATUS table are generated from them (``python -m camproto.diagram``).
"""

from __future__ import annotations

from enum import Enum, IntEnum

from ._wire import CommandId

__all__ = [
    "AWAITED",
    "STATUS_ACTIONS",
    "TRANSITIONS",
    "DeviceStatus",
    "LocalInput",
    "ServerState",
    "StatusAction",
    "StatusKind",
    "status_action",
]


class ServerState(Enum):
    AWAIT_INIT = "await_init"
    AWAIT_PATH = "await_path"
    AWAIT_METADATA = "await_metadata"
    AWAIT_START = "await_start"
    AWAIT_SYNC = "await_sync"
    RECEIVING = "receiving"
    AWAIT_CONFIRM = "await_confirm"
    CLOSED = "closed"
    ERROR = "error"


class LocalInput(Enum):
    """Inputs that come from the application or the clock, not from the device."""

    CONFIRM_FILE = "confirm_file"
    TIMEOUT = "timeout"
    CLOSE = "close"
    EOF = "eof"


class DeviceStatus(IntEnum):
    """FILE TRANSFER STATUS (0x0005) values with a meaning of their own.

    Every other non-zero value is an error status of the device (Table 20 of the device
    documentation lists, among others, 2, 3 and 5); the server treats them alike.
    """

    #: No error. From the server, "nothing to download": the device hangs up.
    OK = 0x00
    #: The requested file is not (or no longer) on the device.
    FILE_NOT_AVAILABLE = 0x11


class StatusKind(Enum):
    OK = "ok"
    NOT_AVAILABLE = "not_available"
    ERROR = "error"

    @classmethod
    def of(cls, status: int) -> StatusKind:
        if status == DeviceStatus.OK:
            return cls.OK
        if status == DeviceStatus.FILE_NOT_AVAILABLE:
            return cls.NOT_AVAILABLE
        return cls.ERROR


class StatusAction(Enum):
    """What a device STATUS makes the server do."""

    #: Note it (StatusReceived) and keep waiting, within the state's deadline.
    NOTE = "note"
    #: The metadata request failed: request the file without metadata.
    WITHOUT_METADATA = "request the file without metadata"
    #: The file is not there: fetch the next offered file, or CLOSE if none is left.
    NEXT_FILE = "next offered file, or CLOSE"
    #: CLOSE, the status in the reason.
    CLOSE = "CLOSE"


S = ServerState
C = CommandId
K = StatusKind
A = StatusAction
#: Open states in definition order (a frozenset would iterate in a per-process hash order).
_OPEN = tuple(state for state in S if state not in (S.CLOSED, S.ERROR))

#: ``(state, kind of status) -> action``: the transition of every device STATUS.
STATUS_ACTIONS: dict[tuple[ServerState, StatusKind], StatusAction] = {
    (S.AWAIT_INIT, K.OK): A.NOTE,
    (S.AWAIT_INIT, K.NOT_AVAILABLE): A.CLOSE,
    (S.AWAIT_INIT, K.ERROR): A.CLOSE,
    (S.AWAIT_PATH, K.OK): A.NOTE,
    (S.AWAIT_PATH, K.NOT_AVAILABLE): A.NEXT_FILE,
    (S.AWAIT_PATH, K.ERROR): A.CLOSE,
    (S.AWAIT_METADATA, K.OK): A.NOTE,
    (S.AWAIT_METADATA, K.NOT_AVAILABLE): A.NEXT_FILE,
    (S.AWAIT_METADATA, K.ERROR): A.WITHOUT_METADATA,
    (S.AWAIT_START, K.OK): A.NOTE,
    (S.AWAIT_START, K.NOT_AVAILABLE): A.NEXT_FILE,
    (S.AWAIT_START, K.ERROR): A.CLOSE,
    # Mid-transfer the file's bytes so far are kept; CLOSE lets the caller settle them.
    (S.AWAIT_SYNC, K.OK): A.NOTE,
    (S.AWAIT_SYNC, K.NOT_AVAILABLE): A.CLOSE,
    (S.AWAIT_SYNC, K.ERROR): A.CLOSE,
    (S.RECEIVING, K.OK): A.NOTE,
    (S.RECEIVING, K.NOT_AVAILABLE): A.CLOSE,
    (S.RECEIVING, K.ERROR): A.CLOSE,
    # The file is whole: its confirmation still goes out; the status is only reported.
    (S.AWAIT_CONFIRM, K.OK): A.NOTE,
    (S.AWAIT_CONFIRM, K.NOT_AVAILABLE): A.NOTE,
    (S.AWAIT_CONFIRM, K.ERROR): A.NOTE,
}

_CHOOSING = frozenset({S.AWAIT_PATH, S.AWAIT_METADATA, S.AWAIT_START, S.CLOSED})


def status_action(state: ServerState, status: int) -> StatusAction:
    """The transition a device STATUS of value ``status`` takes in ``state``."""
    return STATUS_ACTIONS[state, StatusKind.of(status)]


def _status_targets(state: ServerState) -> frozenset[ServerState]:
    targets: set[ServerState] = set()
    for kind in StatusKind:
        action = STATUS_ACTIONS[state, kind]
        if action is A.NOTE:
            targets.add(state)
        elif action is A.WITHOUT_METADATA:
            targets.add(S.AWAIT_START)
        elif action is A.NEXT_FILE:
            targets |= _CHOOSING - {S.AWAIT_PATH}
        else:
            targets.add(S.CLOSED)
    return frozenset(targets)


#: ``(state, input) -> states the input may lead to``. Anything absent is a protocol error.
TRANSITIONS: dict[tuple[ServerState, CommandId | LocalInput], frozenset[ServerState]] = {
    (S.AWAIT_INIT, C.INIT): _CHOOSING,
    (S.AWAIT_PATH, C.PATH): _CHOOSING - {S.AWAIT_PATH},
    (S.AWAIT_METADATA, C.METADATA): frozenset({S.AWAIT_START}),
    (S.AWAIT_START, C.START): frozenset({S.AWAIT_SYNC, S.AWAIT_INIT, S.CLOSED}),
    (S.AWAIT_SYNC, C.SYNC): frozenset({S.RECEIVING, S.AWAIT_SYNC, S.CLOSED}),
    (S.AWAIT_SYNC, C.DATA): frozenset({S.AWAIT_SYNC}),  # stale data before the SYNC: dropped
    (S.AWAIT_SYNC, C.ENHANCED_DATA): frozenset({S.AWAIT_SYNC}),
    (S.AWAIT_SYNC, LocalInput.TIMEOUT): frozenset({S.AWAIT_SYNC, S.CLOSED}),
    (S.RECEIVING, C.DATA): frozenset({S.RECEIVING, S.AWAIT_SYNC, S.AWAIT_CONFIRM, S.CLOSED}),
    (S.RECEIVING, C.ENHANCED_DATA): frozenset(
        {S.RECEIVING, S.AWAIT_SYNC, S.AWAIT_CONFIRM, S.CLOSED}
    ),
    (S.RECEIVING, C.SYNC): frozenset({S.RECEIVING, S.AWAIT_SYNC}),
    (S.AWAIT_CONFIRM, LocalInput.CONFIRM_FILE): frozenset({S.AWAIT_INIT}),
    # Every other state waits for the device with a deadline; missing it closes the session.
    **{
        (state, LocalInput.TIMEOUT): frozenset({S.CLOSED})
        for state in _OPEN
        if state is not S.AWAIT_SYNC
    },
    **{(state, C.STATUS): _status_targets(state) for state in _OPEN},
    **{(state, LocalInput.CLOSE): frozenset({S.CLOSED}) for state in _OPEN},
    **{(state, LocalInput.EOF): frozenset({S.CLOSED}) for state in _OPEN},
}

#: What the server waits for in each state, for the reason a missed deadline gives.
AWAITED = {
    S.AWAIT_INIT: "INIT",
    S.AWAIT_PATH: "FILE PATH RESPONSE (0x000D)",
    S.AWAIT_METADATA: "FILE METADATA RESPONSE (0x000B)",
    S.AWAIT_START: "START (0x0001)",
    S.RECEIVING: "DATA",
    S.AWAIT_CONFIRM: "confirm_file() from the application",
}
