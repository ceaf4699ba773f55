"""The devstack's pure parts: restart backoff, consumer lag."""

from __future__ import annotations

import base64
import sys
import uuid

import pytest
from aiokafka import TopicPartition

from devstack.infra import Process
from devstack.kafka import new_cluster_id
from devstack.lag import GroupLag, StallWatch, describe, lag_of
from devstack.supervisor import Backoff, Supervised, restart_delay


@pytest.mark.parametrize(
    ("exits", "delay"), [(1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (7, 30.0), (50, 30.0)]
)
def test_restart_delay_doubles_up_to_the_maximum(exits: int, delay: float) -> None:
    assert restart_delay(exits, Backoff(0.5, 30.0)) == delay


def test_a_supervised_service_is_restarted_after_its_pause_and_counted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    started: list[Process] = []

    def make() -> Process:
        process = Process("svc", [sys.executable, "-c", "pass"], 0).start()
        started.append(process)
        return process

    service = Supervised("svc", make, Backoff(1.0, 4.0, stable_seconds=60.0))
    service.start(0.0)
    assert started[0].popen is not None
    started[0].popen.wait(10)
    service.check(5.0)  # noticed: restart in 1 s
    assert service.restart_at == 6.0 and len(started) == 1
    service.check(5.5)
    assert len(started) == 1
    service.check(6.0)
    assert len(started) == 2 and service.restarts == 1
    assert started[1].popen is not None
    started[1].popen.wait(10)
    service.check(7.0)  # the second exit in a row: 2 s
    assert service.restart_at == 9.0
    service.check(9.0)
    assert service.restarts == 2
    assert started[2].popen is not None
    started[2].popen.wait(10)
    service.check(100.0)  # it had run for 91 s: the count starts again
    assert service.restart_at == 101.0
    err = capsys.readouterr().err
    assert "svc exited (status 0) after 5.0 s; restarting in 1 s" in err
    assert "starting svc again (restart 2)" in err


def test_a_service_being_stopped_is_not_restarted() -> None:
    process = Process("svc", [sys.executable, "-c", "import time; time.sleep(30)"], 0)
    service = Supervised("svc", process.start)
    service.start(0.0)
    service.stop(5.0)
    assert process.popen is not None and process.popen.returncode is not None
    service.check(10.0)
    assert service.restart_at is None and service.restarts == 0


def test_lag_counts_from_the_committed_offset_or_the_log_start() -> None:
    a, b, c = (TopicPartition("t", p) for p in range(3))
    assert lag_of({a: 10, b: None}, {a: 0, b: 5, c: 2}, {a: 12, b: 9, c: 2}) == 2 + 4
    assert lag_of({a: 12}, {a: 0}, {a: 12}) == 0
    lags = [GroupLag("fleetgate-assembler", 3), GroupLag("fleetgate-connector-sink", 1)]
    assert describe(lags) == ("assembler 3 records, connector (fleetgate-connector-sink) 1 records")
    assert describe([]) == "nothing"


def test_a_stop_gives_up_waiting_once_the_lag_stops_moving() -> None:
    watch = StallWatch(10.0)
    assembler = GroupLag("fleetgate-assembler", 7)
    # (now, lag) -> stalled?
    steps = [
        (0.0, [assembler], False),  # first look
        (6.0, [GroupLag("fleetgate-assembler", 5)], False),  # moved: the clock restarts
        (15.9, [GroupLag("fleetgate-assembler", 5)], False),
        (16.0, [GroupLag("fleetgate-assembler", 5)], True),  # 10 s without a change
        (17.0, [GroupLag("fleetgate-assembler", 5), GroupLag("fleetgate-connector-a", 1)], False),
        (27.0, [GroupLag("fleetgate-assembler", 5), GroupLag("fleetgate-connector-a", 1)], True),
    ]
    for now, lags, stalled in steps:
        assert watch.stalled(lags, now) is stalled, (now, lags)


def test_kafka_cluster_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """``kafka-storage format -t -x...`` takes such an id for an option: about 1 in 64 random
    ids would fail the format. UUIDs whose base64 starts with '-' come first here."""
    dashed = uuid.UUID(bytes=base64.urlsafe_b64decode("-" + "A" * 21 + "=="))
    plain = uuid.UUID(int=1)
    made = iter([dashed, dashed, plain])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(made))
    assert new_cluster_id() == base64.urlsafe_b64encode(plain.bytes).decode().rstrip("=")
