"""Fixtures of the operations tests (services as processes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ops.ops_helpers import Services


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    """Start fleetgate services as processes; whatever is still running is killed after."""
    running = Services(tmp_path)
    try:
        yield running
    finally:
        running.stop()
