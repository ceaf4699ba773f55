"""Keeps the devstack's services running: a service that exits is started again, after a pause
that doubles with each exit in a row (reset once it has run for a while).

The decision is :func:`restart_delay`, pure; :class:`Supervised` holds one service's process
and counters; the stack calls :meth:`Supervised.check` a few times a second.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from .infra import Process

__all__ = ["Backoff", "Supervised", "restart_delay"]


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_seconds: float = 0.5
    max_seconds: float = 30.0
    #: A run this long ends the "in a row" count: the next exit restarts after initial_seconds.
    stable_seconds: float = 60.0


def restart_delay(exits_in_a_row: int, backoff: Backoff) -> float:
    """Pause before the next start after the ``exits_in_a_row``-th exit (1, 2, ...)."""
    exponent = max(0, exits_in_a_row - 1)
    return min(backoff.max_seconds, backoff.initial_seconds * 2.0**exponent)


@dataclass
class Supervised:
    """A service the stack restarts when it exits."""

    name: str
    make: Callable[[], Process]  # a fresh, started process
    backoff: Backoff = field(default_factory=Backoff)
    process: Process | None = None
    started_at: float = 0.0
    restarts: int = 0  # over the whole run
    exits_in_a_row: int = 0
    restart_at: float | None = None
    #: Set when the stack stops this service: its exit is then expected.
    stopping: bool = False

    def start(self, now: float) -> Process:
        self.process = self.make()
        self.started_at = now
        self.restart_at = None
        return self.process

    @property
    def running(self) -> bool:
        popen = None if self.process is None else self.process.popen
        return popen is not None and popen.poll() is None

    def check(self, now: float) -> None:
        """Notice an exit (and schedule a restart), or restart when the pause is over."""
        if self.stopping:
            return
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.restarts += 1
                print(
                    f"devstack: starting {self.name} again (restart {self.restarts})",
                    file=sys.stderr,
                    flush=True,
                )
                self.start(now)
            return
        popen = None if self.process is None else self.process.popen
        if popen is None or popen.poll() is None:
            return
        if now - self.started_at >= self.backoff.stable_seconds:
            self.exits_in_a_row = 0
        self.exits_in_a_row += 1
        delay = restart_delay(self.exits_in_a_row, self.backoff)
        self.restart_at = now + delay
        print(
            f"devstack: {self.name} exited ({_status(popen.returncode)}) after "
            f"{now - self.started_at:.1f} s; restarting in {delay:g} s "
            f"(exit {self.exits_in_a_row} in a row, {self.restarts} restarts so far)",
            file=sys.stderr,
            flush=True,
        )

    def stop(self, timeout: float) -> None:
        self.stopping = True
        if self.process is not None:
            self.process.stop(timeout)


def _status(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"status {code}"
