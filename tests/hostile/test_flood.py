"""Connection floods: thousands of connect/close cycles, connections past max_connections,
one address opening more than its share. Refused connections are closed at once, counted and
logged (at most once a second per reason); the fleet keeps uploading."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from collections.abc import MutableMapping
from typing import Any

import structlog

from contracts import models as wire
from simulator import simulate
from tests.hostile.hostile_helpers import (
    Hostile,
    Outcome,
    camera_metric,
    closed_by_server,
    healthy_fleet,
    read_sessions,
    wait_for,
)
from tests.ingestor.ingestor_helpers import running, settings

CYCLES = 5_000
FLOODERS = 8
MAX_CONNECTIONS = 400  # leaves room for the fleet beside the flood (~150 at once here)
OVER = 300


def refused(reason: str) -> float:
    return camera_metric("fleetgate_ingestor_connections_refused_total", reason=reason)


def accepted() -> float:
    return camera_metric("fleetgate_ingestor_connections_total")


async def connect_close(port: int, cycles: int, failures: list[str]) -> None:
    """Open a TCP connection and close it straight away, ``cycles`` times."""
    loop = asyncio.get_running_loop()
    for _ in range(cycles):
        with socket.socket() as sock:
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, ("127.0.0.1", port))
            except OSError as exc:
                failures.append(repr(exc))


def refusal_lines(logs: list[MutableMapping[str, Any]], reason: str) -> list[Any]:
    return [e for e in logs if e["event"] == "connections_refused" and e["reason"] == reason]


async def test_connection_flood_is_absorbed_and_the_fleet_still_uploads(kafka: str) -> None:
    config = settings(kafka, max_connections=MAX_CONNECTIONS, hello_timeout_seconds=5.0)
    refused_before = refused("max_connections")
    with structlog.testing.capture_logs() as logs:
        async with running(config) as ingestor:
            assert ingestor.port is not None
            port = ingestor.port

            # 1. connect/close as fast as a few tasks can, while a fleet uploads
            accepted_before, refused_start = accepted(), refused("max_connections")
            busiest = 0

            async def watch() -> None:
                nonlocal busiest
                while True:
                    busiest = max(busiest, len(ingestor.sessions))
                    await asyncio.sleep(0.01)

            watcher = asyncio.create_task(watch())
            fleet = asyncio.create_task(simulate(healthy_fleet(port)))
            failures: list[str] = []
            started = time.monotonic()
            await asyncio.gather(
                *(connect_close(port, CYCLES // FLOODERS, failures) for _ in range(FLOODERS))
            )
            flood_seconds = time.monotonic() - started
            report = await asyncio.wait_for(fleet, 45)
            fleet_connections = sum(o.connections for o in report.outcomes)
            # every cycle reached the server: served (and closed by the device) or refused
            await wait_for(
                lambda: accepted() - accepted_before
                + refused("max_connections") - refused_start
                >= CYCLES + fleet_connections,
                20, "the server took every flood connection",
            )  # fmt: skip
            served_seconds = time.monotonic() - started
            await wait_for(lambda: not ingestor.sessions, 20, "flood sessions finished")
            watcher.cancel()
            assert failures == []
            assert report.ok, report.summary()
            flood_accepted = accepted() - accepted_before - fleet_connections
            flood_refused = refused("max_connections") - refused_start

            # 2. fill max_connections with idle connections; the rest are closed at once
            held = [await Hostile.open(port) for _ in range(MAX_CONNECTIONS)]
            await wait_for(
                lambda: len(ingestor.sessions) == MAX_CONNECTIONS, 10, "max_connections open"
            )
            before_over = refused("max_connections")

            async def one_too_many() -> tuple[Outcome, float]:
                started = time.monotonic()
                conn = await Hostile.open(port)
                outcome = await closed_by_server(conn.reader, 3)
                conn.close()
                return outcome, time.monotonic() - started

            over = await asyncio.gather(*(one_too_many() for _ in range(OVER)))
            assert refused("max_connections") - before_over == OVER
            assert all(o.received == b"" and o.ending in ("eof", "reset") for o, _ in over)
            slowest = max(seconds for _, seconds in over)
            assert slowest < 1.0, slowest  # at once, not at init_timeout
            assert len(ingestor.sessions) == MAX_CONNECTIONS  # the held ones are untouched
            for conn in held:
                conn.close()
            await wait_for(lambda: not ingestor.sessions, 10, "held connections closed")

            # 3. a fleet connecting after the flood is served
            after = await simulate(healthy_fleet(port, seed=12))
            assert after.ok, after.summary()

    total_refused = refused("max_connections") - refused_before
    assert total_refused == flood_refused + OVER
    lines = refusal_lines(logs, "max_connections")
    # logged at once, then at most once a second, each line counting what it stands for
    assert lines and sum(line["count"] for line in lines) == total_refused
    assert lines[0]["detail"] == f"{MAX_CONNECTIONS} connections open (max_connections)"
    assert len(lines) <= 2 + served_seconds + 2, len(lines)

    # the held connections' sessions say why they ended
    peers = {conn.peer for conn in held}
    sessions = await read_sessions(kafka, lambda s: peers <= s.closed_by_peer().keys())
    closed = sessions.closed_by_peer()
    assert {closed[p].reason for p in peers} == {"device closed the connection"}
    flood_reasons = Counter(
        e.reason for e in sessions.of_type(wire.Closed) if e.imei is None and e.bytes_received == 0
    )
    print("flood close reasons:", dict(flood_reasons))
    print(
        f"flood: {CYCLES} connect/close cycles from {FLOODERS} tasks in {flood_seconds:.2f} s "
        f"({CYCLES / flood_seconds:.0f}/s); all taken by the server after "
        f"{served_seconds:.2f} s ({(flood_accepted + flood_refused) / served_seconds:.0f}/s): "
        f"{flood_accepted:.0f} served, {flood_refused:.0f} refused; at most {busiest} sessions "
        f"at once; {OVER} over max_connections {MAX_CONNECTIONS} closed within "
        f"{slowest * 1000:.0f} ms of connecting; {len(lines)} log lines for "
        f"{total_refused:.0f} refusals; "
        f"fleet during: {report.summary()}"
    )


async def test_one_address_cannot_take_more_than_its_share(kafka: str) -> None:
    per_peer, attempts = 50, 80
    config = settings(kafka, max_connections_per_peer=per_peer, hello_timeout_seconds=5.0)
    before = refused("max_connections_per_peer")
    with structlog.testing.capture_logs() as logs:
        async with running(config) as ingestor:
            assert ingestor.port is not None
            port = ingestor.port
            # 127.0.0.2 is another address on the loopback; the fleet comes from 127.0.0.1.
            flood = [await Hostile.open(port, source="127.0.0.2") for _ in range(attempts)]
            fleet = asyncio.create_task(simulate(healthy_fleet(port)))
            endings = await asyncio.gather(
                *(closed_by_server(conn.reader, 1.0) for conn in flood), return_exceptions=True
            )
            refused_now = [e for e in endings if not isinstance(e, BaseException)]
            still_open = [e for e in endings if isinstance(e, TimeoutError)]
            assert len(refused_now) == attempts - per_peer, endings
            assert len(still_open) == per_peer
            assert all(e.received == b"" for e in refused_now)
            report = await asyncio.wait_for(fleet, 45)
            assert report.ok, report.summary()
            for conn in flood:
                conn.close()
            await wait_for(lambda: not ingestor.sessions, 10, "sessions finished")
    assert refused("max_connections_per_peer") - before == attempts - per_peer
    lines = refusal_lines(logs, "max_connections_per_peer")
    assert sum(line["count"] for line in lines) == attempts - per_peer
    assert lines[0]["detail"] == "127.0.0.2 has 50 connections open (max_connections_per_peer)"
    assert lines[0]["peer"] == "127.0.0.2"
