"""Fault building blocks without sockets: pacing, write shaping, garbage, fault plans."""

from __future__ import annotations

import random

import pytest

from camproto import RemoteProtocolError, ServerConnection
from simulator.faults import (
    Faults,
    Interruption,
    InterruptionKind,
    TokenBucket,
    WriteShaper,
    garbage_bytes,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_paces_to_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1000.0, burst=100.0, clock=clock)
    assert bucket.reserve(100) == 0.0  # the burst goes at once
    assert bucket.reserve(500) == pytest.approx(0.5)  # then debt: wait until it is paid
    clock.now += 0.5
    assert bucket.reserve(10) == pytest.approx(0.01)
    clock.now += 10.0  # idle time refills no more than the burst
    assert bucket.reserve(100) == 0.0
    assert bucket.reserve(1) == pytest.approx(0.001)
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(rate=0, burst=1)


async def test_token_bucket_take_sleeps_off_the_debt() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1e6, burst=1.0, clock=clock)
    await bucket.take(1)  # within the burst: no wait
    await bucket.take(10_000)  # 10 ms of debt, slept for real
    assert bucket.reserve(0) == pytest.approx(0.01)  # the fake clock never moved


def test_shaper_splits_and_merges_reproducibly() -> None:
    data = random.Random(0).randbytes(200_000)
    first = WriteShaper(random.Random(5), 64 * 1024)
    second = WriteShaper(random.Random(5), 64 * 1024)
    pieces = first.split(data)
    assert pieces == second.split(data)
    assert b"".join(pieces) == data
    assert min(map(len, pieces)) <= 7 and max(map(len, pieces)) > 1500  # header cuts, big ones
    limits = [first.limit() for _ in range(200)]
    assert limits == [second.limit() for _ in range(200)]
    assert 1 in limits and max(limits) > 16 * 1024  # single commands and merged runs


def test_garbage_is_no_command_and_the_server_refuses_it() -> None:
    rng = random.Random(1)
    for _ in range(100):
        garbage = garbage_bytes(rng, 8)
        assert len(garbage) == 8 and int.from_bytes(garbage[:2], "big") > 0x000E
    server = ServerConnection()
    with pytest.raises(RemoteProtocolError, match="unknown command"):
        server.receive_data(garbage_bytes(rng, 32), 0.0)


def test_faults_plan_garbage_first_then_disconnects() -> None:
    assert Faults().interruptions() == ()
    assert Faults().active == ()
    faults = Faults(disconnect_at=5, disconnects=2, garbage_at=3, bad_crc_at=2, split=True)
    assert faults.interruptions() == (
        Interruption(InterruptionKind.GARBAGE, 3),
        Interruption(InterruptionKind.DISCONNECT, 5),
        Interruption(InterruptionKind.DISCONNECT, 5),
    )
    assert faults.active == ("bad_crc_at=2", "disconnect_at=5x2", "garbage_at=3", "split")
    assert Faults(slow=1e3, restart_crc_after_resume=False).active == (
        "slow=1000B/s",
        "continue_crc_after_resume",
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bad_crc_at": 0}, "start at 1"),
        ({"disconnect_at": -1}, "disconnect"),
        ({"disconnects": -1}, "disconnects"),
        ({"garbage_at": -2}, "garbage"),
        ({"garbage_size": 1}, "2 bytes"),
        ({"slow": 0.0}, "positive rate"),
    ],
)
def test_faults_refuse_nonsense(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Faults(**kwargs)  # type: ignore[arg-type]
