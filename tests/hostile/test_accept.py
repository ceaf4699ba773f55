"""The accept path: nothing a connection does, nor a bug in a session, escapes the server."""

from __future__ import annotations

from typing import Any

import pytest

from ingestor import server
from simulator import simulate
from tests.hostile.hostile_helpers import (
    Hostile,
    closed_by_server,
    healthy_fleet,
    metric,
    wait_for,
)
from tests.ingestor.ingestor_helpers import running, settings


class Broken:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug in the session")


async def test_a_crashing_session_is_closed_and_forgotten(
    kafka: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = settings(kafka, max_connections=5, max_connections_per_peer=3)
    open_before = metric("fleetgate_ingestor_connections_open")
    async with running(config) as ingestor:
        assert ingestor.port is not None
        with monkeypatch.context() as patch:
            patch.setattr(server, "CameraSession", Broken)
            # more crashes than either limit: each one's slot is given back
            for _ in range(10):
                conn = await Hostile.open(ingestor.port)
                outcome = await closed_by_server(conn.reader, 2)
                conn.close()
                assert outcome.received == b""
            await wait_for(lambda: not ingestor.sessions, 5, "crashed sessions forgotten")
        assert metric("fleetgate_ingestor_connections_open") == open_before
        report = await simulate(healthy_fleet(ingestor.port))
        assert report.ok, report.summary()
