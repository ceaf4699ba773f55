"""assembler.health.S3Watch: S3 calls timed while they run, with the clock passed in."""

from __future__ import annotations

import threading

import pytest

from assembler import health
from assembler.health import S3Watch, SlowRequest


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_oldest_age_and_slow_requests_each_reported_once() -> None:
    clock = Clock()
    seen: list[tuple[str, float]] = []
    watch = S3Watch(5.0, clock=clock, observe=lambda op, s: seen.append((op, s)))
    assert watch.oldest_age() == 0.0 and watch.ready() and watch.reason() == ""
    with watch.request("stat"):
        clock.now += 3
        with watch.request("put"):
            clock.now += 2.5
            assert watch.in_flight() == 2 and watch.oldest_age() == 5.5
            assert watch.newly_slow() == [SlowRequest("stat", 5.5)]
            assert watch.newly_slow() == []  # once
            assert not watch.ready()
            assert watch.reason() == "an S3 request has been in flight for 5.5 s"
            clock.now += 3
            assert watch.newly_slow() == [SlowRequest("put", 5.5)]
        assert watch.oldest_age() == 8.5
    assert watch.oldest_age() == 0.0 and watch.ready()
    assert seen == [("put", 5.5), ("stat", 8.5)]


def test_a_failed_call_makes_s3_not_ready_until_one_succeeds() -> None:
    watch = S3Watch(5.0, clock=Clock())
    with pytest.raises(ConnectionError), watch.request("put"):
        raise ConnectionError("refused")
    assert not watch.ready()
    assert watch.reason() == "the last S3 request failed: ConnectionError('refused')"
    with watch.request("stat"):
        pass
    assert watch.ready() and watch.in_flight() == 0


def test_calls_from_threads() -> None:
    watch = S3Watch(5.0)
    barrier = threading.Barrier(9)

    def call() -> None:
        with watch.request("put"):
            barrier.wait(5)
            barrier.wait(5)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    barrier.wait(5)
    assert watch.in_flight() == 8
    barrier.wait(5)
    for thread in threads:
        thread.join(5)
    assert watch.in_flight() == 0 and watch.ready()


def test_s3_ready_reports_on_the_installed_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "_current", None)
    assert health.s3_ready()  # no S3 yet: nothing to report
    clock = Clock()
    watch = S3Watch(1.0, clock=clock)
    health.install(watch)
    with watch.request("put"):
        assert health.s3_ready() and health.s3_not_ready_reason() == ""
        clock.now += 1
        assert not health.s3_ready()
        assert health.s3_not_ready_reason() == "an S3 request has been in flight for 1.0 s"
    assert health.s3_ready()
