"""The fleet over real TCP against the in-test server: clean, each fault, all faults, failures."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import TYPE_CHECKING, Any

from camproto import DATA_CHUNK, crc16
from simulator import ContentSpec, DeviceKind, Faults, Fleet, FleetReport, SimulationConfig

if TYPE_CHECKING:
    from tests.simulator.conftest import FileServer, ServerFactory

KIB = 1024
#: Small files keep the suite fast; every file still spans many DATA packets.
SMALL = ContentSpec(photos=1, videos=1, photo_size=20 * KIB, video_size=120 * KIB)


async def run_fleet(
    server: FileServer, *, devices: int = 6, content: ContentSpec = SMALL, **settings: Any
) -> tuple[Fleet, FleetReport]:
    settings.setdefault("timeout", 20.0)
    settings.setdefault("io_timeout", 5.0)
    settings.setdefault("reconnect_backoff", 0.01)
    config = SimulationConfig(
        port=server.port, devices=devices, content=content, seed=11, **settings
    )
    fleet = Fleet(config)
    return fleet, await fleet.run()


def assert_all_uploaded(server: FileServer, fleet: Fleet, report: FleetReport) -> None:
    """Every device passed and the server holds every file byte for byte."""
    assert report.ok, [(o.index, o.errors) for o in report.failed]
    assert server.missing(fleet.plans, fleet.config.content) == []
    assert server.problems == []
    spec = fleet.config.content
    for outcome in report.outcomes:
        assert outcome.files_accepted == outcome.files == spec.files_per_device
        assert outcome.payload_bytes == spec.bytes_per_device
        assert outcome.files_sent == outcome.files and outcome.finished


async def test_clean_fleet_of_twenty(file_server: FileServer) -> None:
    content = ContentSpec(photos=2, videos=1, photo_size=30 * KIB, video_size=200 * KIB)
    fleet, report = await run_fleet(file_server, devices=20, content=content)
    assert_all_uploaded(file_server, fleet, report)
    assert {plan.kind for plan in fleet.plans} == {DeviceKind.DUALCAM, DeviceKind.DSM}
    assert report.files_accepted == report.files == 60
    # One connection each, nothing resumed, no faults.
    assert file_server.sessions == 20 and report.bytes_sent < report.payload_bytes * 1.01
    assert all(o.reconnects == 0 and o.crc_faults == 0 and not o.errors for o in report.outcomes)
    assert {r.offset for r in file_server.resumes} == {0}
    assert file_server.crc_mismatches == 0 and file_server.protocol_errors == []
    # The metadata the server decoded is the metadata each file was made with.
    for plan in fleet.plans:
        for item in plan.files(content):
            got = file_server.metadata[(plan.imei, item.file.identifier)]
            assert item.metadata in [metadata.encode() for metadata in got]
    json.dumps(report.to_dict())  # the report is JSON as it stands


async def test_bad_crc_is_resent(file_server: FileServer) -> None:
    fleet, report = await run_fleet(file_server, faults=Faults(bad_crc_at=3))
    assert_all_uploaded(file_server, fleet, report)
    assert all(o.crc_faults == 2 for o in report.outcomes)  # once per file
    assert file_server.crc_mismatches == 12
    # The server resumed each file at the bad packet: byte offset 2048.
    assert all(o.resumed_from == [2 * DATA_CHUNK] * 2 for o in report.outcomes)


async def test_disconnect_then_resume_from_what_the_server_holds(file_server: FileServer) -> None:
    fleet, report = await run_fleet(file_server, faults=Faults(disconnect_at=7, disconnects=2))
    assert_all_uploaded(file_server, fleet, report)
    assert all(o.disconnects == 2 and o.reconnects == 2 for o in report.outcomes)
    # Each connection sent 7 packets: the server resumed from the 7, then 14 it held, not
    # from 0, and saw the device send from there.
    held = [7 * DATA_CHUNK, 14 * DATA_CHUNK]
    for plan, outcome in zip(fleet.plans, report.outcomes, strict=True):
        assert [r.offset for r in file_server.resumes if r.imei == plan.imei and r.offset] == held
        assert outcome.resumed_from == held
    assert sorted(chunk.offset for chunk in file_server.first_chunks) == sorted(held * 6)
    # By default the device restarts its CRC chain at 0 after RESUME.
    assert {chunk.crc_init for chunk in file_server.first_chunks} == {0}


async def test_resume_with_the_crc_chain_continued(file_server: FileServer) -> None:
    faults = Faults(disconnect_at=5, restart_crc_after_resume=False)
    fleet, report = await run_fleet(file_server, faults=faults)
    assert_all_uploaded(file_server, fleet, report)
    assert len(file_server.first_chunks) == 6
    files = {
        (plan.imei, item.file.identifier): item.data
        for plan in fleet.plans
        for item in plan.files(SMALL)
    }
    for chunk in file_server.first_chunks:
        data = files[(chunk.imei, chunk.identifier)]
        assert chunk.crc_init == crc16(data[: chunk.offset]) != 0


async def test_split_and_merged_writes(file_server: FileServer) -> None:
    fleet, report = await run_fleet(file_server, faults=Faults(split=True))
    assert_all_uploaded(file_server, fleet, report)
    assert all(o.reconnects == 0 for o in report.outcomes)


async def test_garbage_makes_the_server_close_and_the_device_resumes(
    file_server: FileServer,
) -> None:
    fleet, report = await run_fleet(file_server, faults=Faults(garbage_at=4))
    assert_all_uploaded(file_server, fleet, report)
    assert all(o.garbage == 1 and o.reconnects == 1 for o in report.outcomes)
    assert len(file_server.protocol_errors) == 6
    assert all("unknown command id" in error for error in file_server.protocol_errors)
    # No resume assertion: the garbage comes in the same read as the packets before it, and
    # camproto drops the events of a receive_data() call that raises, so the server holds none.


async def test_slow_link_is_paced(file_server: FileServer) -> None:
    rate = 400 * KIB
    content = ContentSpec(photos=1, videos=0, photo_size=80 * KIB)
    fleet, report = await run_fleet(
        file_server, devices=3, content=content, faults=Faults(slow=rate)
    )
    assert_all_uploaded(file_server, fleet, report)
    for outcome in report.outcomes:
        # All but the initial burst (50 ms worth) went at the rate, at most.
        assert outcome.duration >= (outcome.bytes_sent / rate - 0.05) * 0.9


async def test_all_faults_at_once(file_server: FileServer) -> None:
    faults = Faults(
        bad_crc_at=2,
        disconnect_at=9,
        disconnects=2,
        garbage_at=3,
        slow=8 * 1024 * KIB,
        split=True,
        restart_crc_after_resume=False,
    )
    content = ContentSpec(photos=2, videos=2, photo_size=10 * KIB, video_size=60 * KIB)
    fleet, report = await run_fleet(file_server, devices=8, content=content, faults=faults)
    assert_all_uploaded(file_server, fleet, report)
    assert all(o.garbage == 1 and o.disconnects == 2 for o in report.outcomes)
    assert all(o.crc_faults == 4 for o in report.outcomes)
    assert any(r.offset for r in file_server.resumes)


async def test_several_files_queue_in_one_dualcam_slot(file_server: FileServer) -> None:
    content = ContentSpec(photos=3, videos=2, photo_size=5 * KIB, video_size=9 * KIB)
    fleet, report = await run_fleet(file_server, devices=2, dualcam_ratio=1.0, content=content)
    assert_all_uploaded(file_server, fleet, report)
    plan = fleet.plans[0]
    assert len(file_server.received(plan.imei, b"%photof")) == 2


async def test_concurrency_limits_connections(file_server: FileServer) -> None:
    fleet, report = await run_fleet(file_server, devices=6, concurrency=2)
    assert_all_uploaded(file_server, fleet, report)
    assert file_server.max_active <= 2


async def test_progress_counts_up(file_server: FileServer) -> None:
    config = SimulationConfig(port=file_server.port, devices=3, content=SMALL)
    fleet = Fleet(config)
    before = fleet.progress()
    assert (before.devices, before.devices_done, before.files_accepted) == (3, 0, 0)
    await fleet.run()
    after = fleet.progress()
    assert (after.devices_done, after.devices_failed, after.files_accepted) == (3, 0, 6)
    assert after.files == 6 and after.bytes_sent > 3 * SMALL.bytes_per_device
    assert "devices 3/3 done" in after.line()


async def test_a_server_that_closes_every_session_fails_the_devices(
    make_server: ServerFactory,
) -> None:
    server = await make_server(close_at_once=True)
    _, report = await run_fleet(server, devices=3, max_reconnects=2)
    assert not report.ok and len(report.failed) == 3
    for outcome in report.outcomes:
        assert outcome.files_accepted == 0 and outcome.connections == 3
        # EOF, or a reset when the close beats the device's INIT: both are "no files taken".
        assert outcome.errors[0].endswith("with 2 files left")
        assert outcome.errors[-1] == "gave up after 3 failed connections in a row"
    assert server.sessions == 9


async def test_nothing_listening_fails_fast() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = SimulationConfig(
        port=port, devices=2, content=SMALL, max_reconnects=1, reconnect_backoff=0.01
    )
    report = await Fleet(config).run()
    assert not report.ok and report.duration < 5
    for outcome in report.outcomes:
        assert outcome.connections == 2
        assert outcome.errors[0].startswith(f"cannot connect to 127.0.0.1:{port}")


async def test_a_silent_server_times_out(make_server: ServerFactory) -> None:
    server = await make_server(silent=True)
    _, report = await run_fleet(server, devices=2, io_timeout=0.2, max_reconnects=0)
    assert not report.ok
    assert all(o.errors[0].startswith("server silent for 0.2s") for o in report.outcomes)
    _, report = await run_fleet(server, devices=1, timeout=0.3, io_timeout=5.0)
    assert report.outcomes[0].errors == ["timed out after 0.3s with 2 of 2 files not accepted"]
    assert report.duration < 2


async def test_a_device_without_faults_needs_no_sleeping(file_server: FileServer) -> None:
    """Prompt answers: one small device uploads in well under the 2 s RESUME interval."""
    content = ContentSpec(photos=1, videos=0, photo_size=4 * KIB)
    loop = asyncio.get_running_loop()
    started = loop.time()
    _, report = await run_fleet(file_server, devices=1, content=content)
    assert report.ok and loop.time() - started < 1.0
