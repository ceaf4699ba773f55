"""``fleetgate simulate``: options, and whole runs as a subprocess against the in-test server."""

from __future__ import annotations

import asyncio
import json
import shlex
import socket
import sys
from typing import TYPE_CHECKING

import pytest

from fleetgate import cli as fleetgate_cli
from simulator.cli import config_from_args, parse_size, run

if TYPE_CHECKING:
    from tests.simulator.conftest import FileServer, ServerFactory

OPTIONS = (
    "--host", "--port", "--devices", "--dualcam-ratio", "--photo-size", "--video-size",
    "--photos", "--videos", "--bad-crc-at", "--disconnect-at", "--disconnects", "--slow",
    "--split", "--garbage", "--restart-crc", "--seed", "--timeout", "--io-timeout",
    "--max-reconnects", "--reconnect-backoff", "--concurrency", "--json", "--progress-interval",
    "--fail", "--fail-devices",
)  # fmt: skip


async def simulate(*args: str) -> tuple[int, str, str]:
    """Run ``python -m fleetgate simulate ARGS``; the test's loop keeps serving meanwhile."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fleetgate",
        "simulate",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def test_help_lists_every_option_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        fleetgate_cli.main(["simulate", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for option in OPTIONS:
        assert option in text
    assert "(default: 50K)" in text and "(default: 6M)" in text and "(default: 0.5)" in text


@pytest.mark.parametrize(
    ("text", "size"),
    [("1000", 1000), ("50K", 51200), ("50kb", 51200), ("6M", 6 * 1024**2), ("1.5KiB", 1536)],
)
def test_sizes_take_suffixes(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_arguments_become_the_config() -> None:
    parser = fleetgate_cli.build_parser(load="simulate")
    args = parser.parse_args(
        shlex.split(
            "simulate --port 7000 --devices 3 --dualcam-ratio 0.25 --photo-size 10K --video-size 1M"
            " --photos 2 --videos 0 --bad-crc-at 4 --disconnect-at 9 --disconnects 2 --garbage"
            " --slow 200K --split --no-restart-crc --seed 5 --timeout 9"
        )
    )
    config = config_from_args(args)
    assert (config.port, config.devices, config.dualcam_ratio, config.seed) == (7000, 3, 0.25, 5)
    assert (config.content.photo_size, config.content.video_size) == (10240, 1024**2)
    assert (config.content.photos, config.content.videos, config.timeout) == (2, 0, 9.0)
    faults = config.faults
    assert (faults.bad_crc_at, faults.disconnect_at, faults.disconnects) == (4, 9, 2)
    assert (faults.garbage_at, faults.slow, faults.split) == (8, 200 * 1024, True)
    assert faults.restart_crc_after_resume is False
    defaults = config_from_args(parser.parse_args(["simulate"]))
    assert defaults.faults.active == () and defaults.content.video_size == 6 * 1024**2


def test_bad_settings_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    parser = fleetgate_cli.build_parser(load="simulate")
    assert run(parser.parse_args(["simulate", "--dualcam-ratio", "2"])) == 2
    assert "DualCam ratio must be between 0 and 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        parser.parse_args(["simulate", "--photo-size", "lots"])
    assert done.value.code == 2
    assert "not a size: 'lots'" in capsys.readouterr().err


async def test_end_to_end_success(file_server: FileServer) -> None:
    code, out, err = await simulate(
        "--port", str(file_server.port), "--devices", "6", "--photo-size", "20K",
        "--video-size", "100K", "--bad-crc-at", "5", "--disconnect-at", "12", "--split",
        "--progress-interval", "0.05", "--reconnect-backoff", "0.01",
    )  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 7 and all(" ok " in line for line in lines[:6])
    assert sum(line.startswith("dualcam") for line in lines) == 3
    assert lines[-1].startswith("6 devices: 6 ok, 0 failed; 12/12 files accepted")
    assert f"6 devices -> 127.0.0.1:{file_server.port}" in err
    assert "bad_crc_at=5" in err and "FAILED" not in err
    assert len(file_server.files) == 12 and file_server.problems == []


def test_failure_path_options() -> None:
    parser = fleetgate_cli.build_parser(load="simulate")
    args = parser.parse_args(
        shlex.split("simulate --fail no-file --fail bad-protocol --fail-devices 2")
    )
    faults = config_from_args(args).faults
    assert [path.value for path in faults.fail] == ["no-file", "bad-protocol"]
    assert faults.fail_devices == 2
    assert faults.active == ("fail=no-file+bad-protocol x2".replace(" ", ""),)
    with pytest.raises(SystemExit):
        parser.parse_args(["simulate", "--fail", "explode"])
    assert run(parser.parse_args(["simulate", "--fail", "no-file", "--fail-devices", "-1"])) == 2


async def test_end_to_end_every_failure_path(file_server: FileServer) -> None:
    # Each device plays every failure path at once; every real file still arrives.
    paths = ["no-file", "empty-file", "gone-file", "metadata-error", "status-error",
             "bad-protocol"]  # fmt: skip
    code, out, err = await simulate(
        "--port", str(file_server.port), "--devices", "4", "--photo-size", "20K",
        "--video-size", "60K", "--fail-devices", "4", "--progress-interval", "0",
        "--reconnect-backoff", "0.01", *(arg for path in paths for arg in ("--fail", path)),
    )  # fmt: skip
    assert code == 0, err
    assert out.splitlines()[-1].startswith("4 devices: 4 ok, 0 failed; 8/8 files accepted")
    assert "fail=no-file+empty-file+gone-file+metadata-error+status-error+bad-protocolx4" in err
    assert len(file_server.files) == 8 and file_server.problems == []
    reasons = [c.reason for closed in file_server.closed.values() for c in closed]
    for reason in ("INIT protocol id 9 unsupported", "device STATUS 0x03 about",
                   "device has no file ready", "came back empty", "not available"):  # fmt: skip
        assert any(reason in r for r in reasons), (reason, reasons)
    assert file_server.protocol_errors == []


async def test_end_to_end_json(file_server: FileServer) -> None:
    code, out, _ = await simulate(
        "--port", str(file_server.port), "--devices", "2", "--photo-size", "8K",
        "--video-size", "16K", "--json", "--progress-interval", "0",
    )  # fmt: skip
    assert code == 0
    report = json.loads(out)
    assert report["ok"] is True and report["files_accepted"] == 4
    assert [o["ok"] for o in report["outcomes"]] == [True, True]
    assert {o["kind"] for o in report["outcomes"]} == {"dualcam", "dsm"}


async def test_nothing_listening_exits_non_zero() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, out, err = await simulate(
        "--port", str(port), "--devices", "2", "--max-reconnects", "1",
        "--reconnect-backoff", "0.01", "--progress-interval", "0",
    )  # fmt: skip
    assert code == 1
    assert "FAIL" in out
    assert f"FAILED: 2 of 2 devices did not get every file accepted by 127.0.0.1:{port}" in err
    assert f"cannot connect to 127.0.0.1:{port}" in err


async def test_a_server_closing_every_session_exits_non_zero(make_server: ServerFactory) -> None:
    server = await make_server(close_at_once=True)
    code, _, err = await simulate(
        "--port", str(server.port), "--devices", "3", "--max-reconnects", "2",
        "--reconnect-backoff", "0.01", "--progress-interval", "0",
    )  # fmt: skip
    assert code == 1
    assert "FAILED: 3 of 3 devices" in err and "files left" in err
    assert "gave up after 3 failed connections in a row" in err
