"""``fleetgate simulate --fail PATH``: each failure path of issue 10 played over real TCP against
the in-test camproto server. The server ends each such session by itself, says why, and every
real file of every device still arrives byte for byte."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from camproto import PathEmpty, StatusReceived
from simulator import DeviceKind, Faults
from simulator.faults import FailurePath
from tests.simulator.test_sim_fleet import assert_all_uploaded, run_fleet

if TYPE_CHECKING:
    from tests.simulator.conftest import FileServer

#: What the server's SessionClosed says for each path (a substring); None: no close of its own.
REASONS = {
    FailurePath.NO_FILE: "device has no file ready (bare NUL path)",
    FailurePath.EMPTY_FILE: ": came back empty (START 0) in this session",
    FailurePath.GONE_FILE: ": not available (device STATUS 0x11)",
    FailurePath.METADATA_ERROR: None,
    FailurePath.STATUS_ERROR: "device STATUS 0x03 about ",
    FailurePath.BAD_PROTOCOL: "INIT protocol id 9 unsupported",
}


@pytest.mark.parametrize("path", list(FailurePath))
async def test_failure_path(file_server: FileServer, path: FailurePath) -> None:
    fleet, report = await run_fleet(
        file_server, devices=4, faults=Faults(fail=(path,), fail_devices=2)
    )
    assert_all_uploaded(file_server, fleet, report)
    failing = [plan for plan in fleet.plans if plan.index < 2]
    assert {o.index for o in report.outcomes if o.failure_paths == [path.value]} == {0, 1}
    reason = REASONS[path]
    for plan in fleet.plans:
        closed = [c.reason for c in file_server.closed.get(plan.imei, [])]
        if path is FailurePath.BAD_PROTOCOL:  # closed before the session started: IMEI in it
            closed += [
                c.reason for c in file_server.closed.get(0, []) if str(plan.imei) in c.reason
            ]
        plays = plan in failing
        if reason is not None and not (
            path is FailurePath.NO_FILE and plan.kind is DeviceKind.DUALCAM
        ):
            assert any(reason in text for text in closed) is plays, (plan.index, closed)
        noted = file_server.noted.get(plan.imei, [])
        if path is FailurePath.NO_FILE:
            assert (PathEmpty() in noted) is plays
        if path is FailurePath.METADATA_ERROR:
            assert (StatusReceived(status=2) in noted) is plays
            # No metadata for the failing devices' files: they went without it.
            held = {key for key in file_server.metadata if key[0] == plan.imei}
            assert (held == set()) is plays
    # Nothing waited for a timeout: the run took far less than any deadline (60 s).
    assert report.duration < 10
    assert file_server.protocol_errors == []
