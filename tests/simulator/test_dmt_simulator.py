"""Simulated Digital Matter trackers against a real TCP server running dmtproto's server role:
records committed only once received, resent after a lost commit, garbage refused."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from dmtproto import (
    CommitRequested,
    HelloReceived,
    Record,
    RecordReceived,
    RemoteProtocolError,
    ServerConnection,
)
from simulator import cli as simulate_cli
from simulator import dmt_cli
from simulator.dmt import DmtSimulationConfig, simulate_dmt


@dataclass
class Server:
    """A DMT server on a real socket that commits as soon as a commit request arrives."""

    port: int = 0
    received: dict[str, list[int]] = field(default_factory=dict)
    committed: dict[str, set[int]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    sessions: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        loop = asyncio.get_running_loop()
        conn = ServerConnection(now=loop.time(), unix_time=time.time())
        imei = ""
        pending: list[int] = []
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data, loop.time()):
                    if isinstance(event, HelloReceived):
                        imei = event.imei
                    elif isinstance(event, RecordReceived):
                        assert isinstance(event.record, Record)
                        self.received.setdefault(imei, []).append(event.record.sequence)
                        pending.append(event.record.sequence)
                    elif isinstance(event, CommitRequested):
                        self.committed.setdefault(imei, set()).update(pending)
                        pending.clear()
                        conn.commit()
                writer.write(conn.data_to_send())
                await writer.drain()
        except RemoteProtocolError as exc:
            self.errors.append(str(exc))
        finally:
            writer.close()


@pytest.fixture
async def dmt_server() -> AsyncIterator[Server]:
    state = Server()
    listener = await asyncio.start_server(state.handle, "127.0.0.1", 0)
    state.port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield state


def config(server: Server, **options: object) -> DmtSimulationConfig:
    return DmtSimulationConfig(port=server.port, timeout_seconds=30, **options)  # type: ignore[arg-type]


async def test_every_record_is_committed_once(dmt_server: Server) -> None:
    report = await simulate_dmt(config(dmt_server, devices=3, records=50, records_per_commit=20))
    assert report.ok, report.to_dict()
    assert report.committed == 150
    assert len(dmt_server.received) == 3
    for outcome in report.devices:
        assert dmt_server.received[outcome.imei] == list(range(1, 51))  # nothing twice
        assert dmt_server.committed[outcome.imei] == set(range(1, 51))
        assert outcome.resent == 0 and outcome.connections == 1
    assert "150/150 records committed" in report.summary()


async def test_disconnect_before_the_commit_response_resends(dmt_server: Server) -> None:
    report = await simulate_dmt(
        config(dmt_server, devices=2, records=30, records_per_commit=10, disconnect_before_commit=2)
    )
    assert report.ok, report.to_dict()
    for outcome in report.devices:
        assert outcome.disconnects_injected == 2 and outcome.connections == 3
        assert outcome.resent == 20  # the first batch, twice
        received = dmt_server.received[outcome.imei]
        assert received == list(range(1, 11)) * 3 + list(range(11, 31))
        assert dmt_server.committed[outcome.imei] == set(range(1, 31))


async def test_garbage_closes_the_session_and_the_device_comes_back(dmt_server: Server) -> None:
    report = await simulate_dmt(config(dmt_server, devices=2, records=10, garbage=True))
    assert report.ok, report.to_dict()
    assert len(dmt_server.errors) == 2
    assert all("sync bytes 02 55 (got 47)" in error for error in dmt_server.errors)
    assert all(o.garbage_sent and o.connections == 2 for o in report.devices)


async def test_records_at_a_rate_over_a_slow_link(dmt_server: Server) -> None:
    start = time.monotonic()
    report = await simulate_dmt(
        config(dmt_server, devices=2, records=12, rate=100, records_per_commit=4,
               link_bytes_per_second=8000)
    )  # fmt: skip
    elapsed = time.monotonic() - start
    assert report.ok, report.to_dict()
    # 12 records at 100/s take 0.11 s to log; 12 records (61 bytes each) plus HELLO and
    # commits take about 0.1 s at 8000 B/s.
    assert elapsed >= 0.1
    assert all(sorted(dmt_server.committed[o.imei]) == list(range(1, 13)) for o in report.devices)


async def test_a_dead_server_is_reported() -> None:
    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with listener:
        report = await simulate_dmt(
            DmtSimulationConfig(
                port=port, devices=1, records=3, max_reconnects=1, reconnect_backoff_seconds=0.01
            )
        )
    (outcome,) = report.devices
    assert not report.ok and outcome.committed == 0 and outcome.connections == 2
    assert outcome.errors[-1] == "gave up after 2 failed connections"


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="port"):
        DmtSimulationConfig(port=0)
    with pytest.raises(ValueError, match="at least one device"):
        DmtSimulationConfig(port=1, devices=0)
    with pytest.raises(ValueError, match="per commit"):
        DmtSimulationConfig(port=1, records_per_commit=0)
    with pytest.raises(ValueError, match="negative"):
        DmtSimulationConfig(port=1, rate=-1)


# --- the command line -------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    """``fleetgate simulate --protocol dmt`` with ``argv``."""
    parser = argparse.ArgumentParser()
    simulate_cli.add_arguments(parser)
    return parser.parse_args(["--protocol", "dmt", *argv])


def test_arguments_make_the_config() -> None:
    args = parse(
        "--port", "5999", "--devices", "3", "--records", "7", "--rate", "2.5",
        "--records-per-commit", "5", "--disconnect-before-commit", "1", "--garbage",
        "--slow", "4000", "--no-async-session", "--timeout", "9",
    )  # fmt: skip
    config = simulate_cli.dmt_config_from_args(args)
    assert (config.port, config.devices, config.records, config.rate) == (5999, 3, 7, 2.5)
    assert config.records_per_commit == 5 and config.disconnect_before_commit == 1
    assert config.garbage and config.link_bytes_per_second == 4000
    assert not config.async_session and config.timeout_seconds == 9


def test_bad_settings_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert simulate_cli.run(parse("--port", "5999", "--devices", "0")) == 2
    assert "at least one device" in capsys.readouterr().err


async def test_report_printing(dmt_server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    report = await simulate_dmt(config(dmt_server, devices=1, records=4))
    dmt_cli.print_report(report, as_json=False)
    out = capsys.readouterr().out
    assert ": 4/4 committed, 0 resent, 1 connections" in out
    assert "4/4 records committed" in out
    dmt_cli.print_report(report, as_json=True)
    assert json.loads(capsys.readouterr().out)["devices"][0]["committed"] == 4
