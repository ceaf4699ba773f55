"""Hostile bytes over TCP: each connection is closed with a clear reason, the rest go on.

Every case runs on its own connection, all at once and alongside a healthy fleet, against one
in-process ingestor on a real broker. The reason each gets is read back from its ``closed``
session event (the same text the ``session_closed`` log line carries as ``detail``).
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter
from dataclasses import dataclass

from assembler.keys import object_name
from camproto import (
    CameraDevice,
    CameraFile,
    DefaultPolicy,
    DeviceFile,
    DualCamSlot,
    RemoteProtocolError,
    ServerConnection,
)
from simulator import simulate
from tests.hostile.hostile_helpers import (
    CLOSE,
    INIT,
    PATH_READY,
    Hostile,
    Outcome,
    camera_metric,
    closed_by_server,
    closed_for,
    healthy_fleet,
    read_sessions,
    upload,
    wait_for,
)
from tests.ingestor.ingestor_helpers import read_published, running, settings

INIT_TIMEOUT = 1.0
IMEI = 352094089990001
PHOTO = 1 << DualCamSlot.PHOTO_FRONT.value
IDLE_REASON = f"no INIT within {INIT_TIMEOUT:g} s"

#: What a clear reason looks like: it names the command, the limit or the state.
CLEAR = re.compile(
    r"unknown command id 0x[0-9A-F]{4} from the device \(state \w+\)"
    r"|[A-Z_]+\(0x[0-9A-F]{4}\) length \d+, allowed (exactly \d+|\d+\.\.\d+) \(state \w+\)"
    r"|[A-Z_]+\(0x[0-9A-F]{4}\) is not a command the device sends \(state \w+\)"
    r"|device sent [A-Z_]+\(0x[0-9A-F]{4}\) in state \w+; expected .+"
    r"|INIT protocol id \d+ unsupported \(supported: 1, 2, 3, 4, 5, 6\); IMEI \d+"
    r"|INIT IMEI \d+ has more than 15 digits"
    r"|device STATUS 0x[0-9A-F]+ in state AWAIT_INIT"
    r"|" + re.escape(IDLE_REASON)
)


def expected_reason(data: bytes) -> str:
    """What camproto makes of ``data`` from a device (the oracle for random bytes)."""
    conn = ServerConnection(DefaultPolicy())
    try:
        conn.receive_data(data, 0.0)
    except RemoteProtocolError as exc:
        return str(exc)
    if conn.closed_reason is not None:  # refused with CLOSE (an unsupported protocol id)
        return conn.closed_reason
    return IDLE_REASON  # a valid prefix: the device then says nothing more


def refused_with_close(reason: str) -> bool:
    """camproto answers an unsupported protocol id, or an error STATUS before INIT, with CLOSE
    at once, not a bare hang-up (nor, for the STATUS, a wait for the idle timeout)."""
    return "unsupported (supported:" in reason or reason.startswith("device STATUS")


@dataclass
class Case:
    name: str
    data: bytes
    reason: str
    #: A valid INIT first: the server answers it before the hostile part.
    after_init: bool = False


def frame(command: int, length: int, body: bytes = b"") -> bytes:
    return command.to_bytes(2, "big") + length.to_bytes(2, "big") + body


def init(protocol: int = 5, imei: int = IMEI, settings: int = PHOTO) -> bytes:
    return INIT.pack(0, protocol, imei, settings)


FIXED = [
    Case("DATA length 5000", frame(0x0004, 5000, bytes(64)),
         "DATA(0x0004) length 5000, allowed 3..1026 (state AWAIT_INIT)"),
    Case("PATH length 2000", frame(0x000D, 2000, b"/" * 100),
         "PATH(0x000D) length 2000, allowed 1..512 (state AWAIT_INIT)"),
    Case("START length 7", frame(0x0001, 7, bytes(7)),
         "START(0x0001) length 7, allowed exactly 6 (state AWAIT_INIT)"),
    Case("METADATA length 65535", frame(0x000B, 0xFFFF),
         "METADATA(0x000B) length 65535, allowed 1..1024 (state AWAIT_INIT)"),
    Case("DATA length 65535 after INIT", init() + frame(0x0004, 0xFFFF),
         "DATA(0x0004) length 65535, allowed 3..1026 (state AWAIT_METADATA)", after_init=True),
    Case("unknown protocol id 7", init(protocol=7),
         f"INIT protocol id 7 unsupported (supported: 1, 2, 3, 4, 5, 6); IMEI {IMEI}"),
    Case("unknown protocol id 0xFFFF", init(protocol=0xFFFF),
         f"INIT protocol id 65535 unsupported (supported: 1, 2, 3, 4, 5, 6); IMEI {IMEI}"),
    Case("IMEI of 16 digits", init(imei=10**15),
         "INIT IMEI 1000000000000000 has more than 15 digits"),
    Case("IMEI of 20 digits", init(imei=2**64 - 1),
         "INIT IMEI 18446744073709551615 has more than 15 digits"),
    Case("unknown command id", frame(0xFFFF, 16, b"garbage"),
         "unknown command id 0xFFFF from the device (state AWAIT_INIT)"),
    Case("server-only command", frame(0x0009, 0),
         "REPEAT_INIT(0x0009) is not a command the device sends (state AWAIT_INIT)"),
    Case("command out of state", frame(0x0003, 4, bytes(4)),
         "device sent SYNC(0x0003) in state AWAIT_INIT; expected INIT(0x0000), STATUS(0x0005)"),
    Case("half a header, then nothing", b"\x00", IDLE_REASON),
]  # fmt: skip


#: Command ids a device may send, with the lengths they may have (INIT has no length field).
DEVICE_COMMANDS = {
    0x0001: (6, 6), 0x0003: (4, 4), 0x0004: (3, 1026), 0x0005: (4, 4),
    0x000B: (1, 1024), 0x000D: (1, 512), 0x000E: (7, 1030),
}  # fmt: skip


def random_cases(seed: int = 20240607) -> list[Case]:
    """Seeded random blobs of several sizes: bare, behind a real command id and a random
    length (past the first two bytes, where bare noise is always stopped), after a valid INIT.
    """
    rng = random.Random(seed)
    cases = []
    for size in (1, 3, 4, 16, 17, 64, 1024, 4096, 65_536, 1 << 20):
        for n in range(3):
            blob = rng.randbytes(size)
            cases.append(Case(f"random {size} B #{n}", blob, expected_reason(blob)))
    for n in range(3):
        blob = b"\x00\x00" + rng.randbytes(14)
        cases.append(Case(f"INIT of random bytes #{n}", blob, expected_reason(blob)))
    for command, (low, high) in DEVICE_COMMANDS.items():
        head = command.to_bytes(2, "big")
        blob = head + rng.randbytes(2 + rng.randrange(3000))  # a random length
        cases.append(Case(f"0x{command:04X}, random length", blob, expected_reason(blob)))
        length = rng.randint(low, high)
        blob = head + length.to_bytes(2, "big") + rng.randbytes(length)  # whole, out of state
        cases.append(Case(f"0x{command:04X}, valid length", blob, expected_reason(blob)))
        blob = blob[: 4 + length // 2]  # and cut short
        cases.append(Case(f"0x{command:04X}, cut short", blob, expected_reason(blob)))
    for size in (5, 100, 4096):
        data = init() + rng.randbytes(size)
        cases.append(Case(f"INIT + random {size} B", data, expected_reason(data), True))
    return cases


async def hostile(port: int, case: Case) -> tuple[Hostile, Outcome]:
    conn = await Hostile.open(port)
    writing = asyncio.create_task(conn.send(case.data))
    outcome = await closed_by_server(conn.reader, within=INIT_TIMEOUT + 10)
    await writing
    conn.close()
    return conn, outcome


async def test_hostile_bytes_get_a_clear_reason_and_a_closed_socket(kafka: str) -> None:
    cases = FIXED + random_cases()
    assert all(CLEAR.fullmatch(case.reason) for case in cases), [c.reason for c in cases]
    before = {
        reason: camera_metric("fleetgate_ingestor_sessions_closed_total", reason=reason)
        for reason in ("protocol_error", "idle", "device_closed")
    }
    async with running(settings(kafka, hello_timeout_seconds=INIT_TIMEOUT)) as ingestor:
        assert ingestor.port is not None
        port = ingestor.port
        fleet = asyncio.create_task(simulate(healthy_fleet(port)))
        results = await asyncio.gather(*(hostile(port, case) for case in cases))
        report = await asyncio.wait_for(fleet, 45)
        assert report.ok, report.summary()
        # and a fleet arriving after all that is served too
        after = await simulate(healthy_fleet(port, devices=2, seed=12))
        assert after.ok, after.summary()
        await wait_for(lambda: not ingestor.sessions, 10, "every session finished")

    peers = {conn.peer for conn, _ in results}
    closed = (await read_sessions(kafka, closed_for(peers))).closed_by_peer()
    for case, (conn, outcome) in zip(cases, results, strict=True):
        event = closed[conn.peer]
        assert (case.name, event.reason) == (case.name, case.reason)
        assert not event.clean
        # The socket is closed: EOF, or RST when our unread bytes were still in its buffer.
        idle = case.reason == IDLE_REASON
        assert outcome.ending == "eof" or (outcome.ending == "reset" and not idle), case.name
        if idle:  # CLOSE SESSION, then EOF, after init_timeout
            assert outcome.received == CLOSE and outcome.seconds >= INIT_TIMEOUT * 0.9
        elif refused_with_close(case.reason):  # CLOSE before the hang-up, at once
            assert outcome.received == CLOSE and outcome.seconds < INIT_TIMEOUT, case.name
        elif case.after_init:  # the server had asked for metadata before the bad bytes
            assert outcome.received in (b"", frame(0x000A, 7, b"%photof")), case.name
        else:  # refused at once, nothing sent
            assert outcome.received == b"" and outcome.seconds < INIT_TIMEOUT, case.name
    counts = Counter(
        "idle"
        if c.reason == IDLE_REASON
        else "device_closed"
        if refused_with_close(c.reason)
        else "protocol_error"
        for c in cases
    )
    for reason, count in counts.items():
        delta = (
            camera_metric("fleetgate_ingestor_sessions_closed_total", reason=reason)
            - before[reason]
        )
        assert delta == count, (reason, delta, count)
    print(f"{len(cases)} hostile connections: {dict(counts)}")


PASSWD = b"../../etc/passwd\x00"
#: Exactly MAX_PATH bytes: traversal both ways, NULs inside, bytes that are not UTF-8.
LONGEST = b"..\\..\\windows\\" + b"../" * 150 + b"etc/\x00passwd\xff\xfe.jpg"
LONGEST += b"x" * (511 - len(LONGEST)) + b"\x00"


async def test_device_paths_are_carried_as_data_and_never_reach_a_key(kafka: str) -> None:
    assert len(LONGEST) == 512
    devices = [
        CameraDevice(
            imei=IMEI + i,
            files=[DeviceFile(CameraFile.for_path(path), random.Random(i).randbytes(3000), b"m")],
        )
        for i, path in enumerate((PASSWD, LONGEST))
    ]
    async with running(settings(kafka, hello_timeout_seconds=INIT_TIMEOUT)) as ingestor:
        assert ingestor.port is not None
        port = ingestor.port
        fleet = asyncio.create_task(simulate(healthy_fleet(port)))
        # One byte more than a path may have: refused, whatever the state.
        too_long = await Hostile.open(port)
        await too_long.send(init(settings=PATH_READY))
        assert await too_long.reader.readexactly(6) == frame(0x000C, 2, b"\x00\x00")
        await too_long.send(frame(0x000D, 513, b"A" * 513))
        outcome = await closed_by_server(too_long.reader, within=5)
        too_long.close()
        assert outcome.received == b"" and outcome.ending in ("eof", "reset")
        accepted = await asyncio.gather(*(upload(port, device) for device in devices))
        assert [[a.file for a in got] for got in accepted] == [
            [d.uploaded[0].file] for d in devices
        ]
        report = await asyncio.wait_for(fleet, 45)
        assert report.ok, report.summary()

    published = await read_published(kafka, ends=2 + report.files)
    closed = (await read_sessions(kafka, closed_for({too_long.peer}))).closed_by_peer()
    assert closed[too_long.peer].reason == (
        "PATH(0x000D) length 513, allowed 1..512 (state AWAIT_PATH)"
    )
    for device in devices:
        item = device.uploaded[0]
        imei = f"{device.imei:015d}"
        (start,) = (s for s in published.starts.values() if s.imei == imei)
        # carried as data, as the device named it (trailing NUL dropped, bad UTF-8 escaped)
        assert start.file.identifier == item.file.path
        assert bytes(published.files[start.transfer_id]) == item.data
        key = object_name(start).key
        assert re.fullmatch(
            r"\d{15}/\d{4}/\d{2}/\d{2}/\d{8}T\d{6}Z_[a-z0-9_]+_[a-z0-9_]+_[0-9a-f]{12}\.[a-z0-9]+",
            key,
        ), key
        for fragment in ("..", "\x00", "\\", "etc", "passwd", "windows"):
            assert fragment not in key, (fragment, key)
