"""The accept path: nothing a connection does, nor a bug in a session, escapes the server."""

from __future__ import annotations

import pytest

from ingestor.adapter import Link, Session
from ingestor.camera import CameraProtocol
from simulator import simulate
from tests.hostile.hostile_helpers import (
    Hostile,
    camera_metric,
    closed_by_server,
    healthy_fleet,
    wait_for,
)
from tests.ingestor.ingestor_helpers import running, settings


def broken(self: CameraProtocol, link: Link) -> Session:
    raise RuntimeError("a bug in the session")


async def test_a_crashing_session_is_closed_and_forgotten(
    kafka: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = settings(kafka, max_connections=5, max_connections_per_peer=3)
    open_before = camera_metric("fleetgate_ingestor_connections_open")
    async with running(config) as ingestor:
        assert ingestor.port is not None
        with monkeypatch.context() as patch:
            patch.setattr(CameraProtocol, "session", broken)
            # more crashes than either limit: each one's slot is given back
            for _ in range(10):
                conn = await Hostile.open(ingestor.port)
                outcome = await closed_by_server(conn.reader, 2)
                conn.close()
                assert outcome.received == b""
            await wait_for(lambda: not ingestor.sessions, 5, "crashed sessions forgotten")
        assert camera_metric("fleetgate_ingestor_connections_open") == open_before
        report = await simulate(healthy_fleet(ingestor.port))
        assert report.ok, report.summary()
