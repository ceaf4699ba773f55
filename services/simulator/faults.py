"""Faults the simulated cameras inject on demand. Any combination may be on at once.

* ``bad_crc_at=k``: DATA packet ``k`` (1-based, within the file) of every file goes out once
  with a wrong CRC; the server must ask for it again with RESUME.
* ``disconnect_at=k``: a connection stops after its ``k``-th DATA packet and is closed (its
  sending side first, then the socket once the server has closed); the device reconnects and
  must resume. ``disconnects`` says how many connections of each device end that way.
* ``garbage_at=k``: after its ``k``-th DATA packet the first connection sends random bytes that
  are no command; the server should close the session, and the device reconnects.
* ``slow``: the device's link carries at most that many bytes per second (a token bucket).
* ``split``: writes are split at random places (inside headers too) and several commands are
  merged into one write, so nothing can rely on TCP segment boundaries.
* ``restart_crc_after_resume``: the first DATA after a RESUME starts its CRC chain at 0 (what
  Teltonika's current test server expects); off, the chain continues over the resumed bytes.
* ``fail``: failure paths of real cameras (:class:`FailurePath`), played by the first
  ``fail_devices`` devices; the server must end each session by itself (a request or a CLOSE,
  never a stall), and every real file must still arrive.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from camproto import CommandId

__all__ = [
    "FailurePath",
    "Faults",
    "Interruption",
    "InterruptionKind",
    "TokenBucket",
    "WriteShaper",
    "garbage_bytes",
]


class FailurePath(StrEnum):
    """How a camera fails politely (issue 10); each names what the device does."""

    #: First connection: settings bit 25 set, the path request answered ``000D 0001 00``.
    NO_FILE = "no-file"
    #: An extra file announced after the real ones that answers START 0 every time.
    EMPTY_FILE = "empty-file"
    #: An extra file announced after the real ones that the device no longer has (STATUS 0x11).
    GONE_FILE = "gone-file"
    #: Every metadata request answered with an error STATUS (2): files go without metadata.
    METADATA_ERROR = "metadata-error"
    #: First connection: the first FILE REQUEST answered with an error STATUS (3).
    STATUS_ERROR = "status-error"
    #: First connection: an INIT with protocol id 9, which no server implements.
    BAD_PROTOCOL = "bad-protocol"


class InterruptionKind(StrEnum):
    DISCONNECT = "disconnect"
    GARBAGE = "garbage"


@dataclass(frozen=True, slots=True)
class Interruption:
    """A planned end of one connection, after ``at_packet`` DATA packets on it."""

    kind: InterruptionKind
    at_packet: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Faults:
    """Which faults each device injects; the default is a clean run."""

    bad_crc_at: int | None = None
    disconnect_at: int | None = None
    disconnects: int = 1
    garbage_at: int | None = None
    garbage_size: int = 32
    slow: float | None = None
    split: bool = False
    restart_crc_after_resume: bool = True
    fail: tuple[FailurePath, ...] = ()
    fail_devices: int = 1

    def __post_init__(self) -> None:
        if self.fail_devices < 0:
            raise ValueError("the number of failing devices cannot be negative")
        if self.bad_crc_at is not None and self.bad_crc_at < 1:
            raise ValueError("bad CRC packet numbers start at 1")
        if self.disconnect_at is not None and self.disconnect_at < 0:
            raise ValueError("disconnect packet count cannot be negative")
        if self.disconnects < 0:
            raise ValueError("number of disconnects cannot be negative")
        if self.garbage_at is not None and self.garbage_at < 0:
            raise ValueError("garbage packet count cannot be negative")
        if self.garbage_size < 2:
            raise ValueError("garbage needs at least 2 bytes to be a bad command id")
        if self.slow is not None and self.slow <= 0:
            raise ValueError("a slow link needs a positive rate in bytes per second")

    @property
    def active(self) -> tuple[str, ...]:
        """Names of the faults that are on, for reports."""
        names = []
        if self.bad_crc_at is not None:
            names.append(f"bad_crc_at={self.bad_crc_at}")
        if self.disconnect_at is not None and self.disconnects:
            names.append(f"disconnect_at={self.disconnect_at}x{self.disconnects}")
        if self.garbage_at is not None:
            names.append(f"garbage_at={self.garbage_at}")
        if self.slow is not None:
            names.append(f"slow={self.slow:g}B/s")
        if self.split:
            names.append("split")
        if not self.restart_crc_after_resume:
            names.append("continue_crc_after_resume")
        if self.fail and self.fail_devices:
            paths = "+".join(path.value for path in self.fail)
            names.append(f"fail={paths}x{self.fail_devices}")
        return tuple(names)

    def interruptions(self) -> tuple[Interruption, ...]:
        """Each device's planned connection ends, in order: the garbage first, then disconnects.

        A connection takes the next one and ends when it has sent that many DATA packets; if it
        ends sooner for another reason, the next connection takes the same one.
        """
        plan: list[Interruption] = []
        if self.garbage_at is not None:
            plan.append(Interruption(InterruptionKind.GARBAGE, self.garbage_at))
        if self.disconnect_at is not None:
            plan.extend(
                Interruption(InterruptionKind.DISCONNECT, self.disconnect_at)
                for _ in range(self.disconnects)
            )
        return tuple(plan)


def garbage_bytes(rng: random.Random, size: int) -> bytes:
    """``size`` random bytes that cannot be read as a command: the first u16 is no command id."""
    data = bytearray(rng.randbytes(size))
    # Ids are 0x0000..0x000E; a first byte of 0x01..0xFF makes the id at least 0x0100.
    data[0] = rng.randint(1, 0xFF)
    assert data[0] << 8 > max(CommandId)
    return bytes(data)


class TokenBucket:
    """Paces writes to ``rate`` bytes per second with bursts up to ``burst`` bytes.

    A write larger than the tokens at hand goes into debt, and :meth:`take` waits until the debt
    is paid, so the average rate holds whatever the write sizes.
    """

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._stamp = clock()

    def reserve(self, size: int) -> float:
        """Spend ``size`` tokens; return the seconds to wait before sending them."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self._tokens -= size
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    async def take(self, size: int) -> None:
        delay = self.reserve(size)
        if delay > 0:
            await asyncio.sleep(delay)


class WriteShaper:
    """Random write sizes: merged commands and split packets, reproducible from ``rng``."""

    def __init__(self, rng: random.Random, max_write: int) -> None:
        self._rng = rng
        self._max_write = max(max_write, 1)

    def limit(self) -> int:
        """How many bytes to take from ``data_to_send()`` for the next write.

        A third of the time a single command, else up to 16 KiB (several packets merged), or
        now and then up to four times the normal write size.
        """
        rng = self._rng
        draw = rng.random()
        if draw < 0.3:
            return 1
        if draw < 0.85:
            return rng.randint(2, 16 * 1024)
        return rng.randint(1, 4 * self._max_write)

    def split(self, data: bytes) -> list[bytes]:
        """Cut ``data`` into pieces to write one by one; some are 1..7 bytes (a header cut)."""
        rng = self._rng
        pieces: list[bytes] = []
        position = 0
        while position < len(data):
            draw = rng.random()
            if draw < 0.15:
                size = rng.randint(1, 7)
            elif draw < 0.6:
                size = rng.randint(8, 1500)
            else:
                size = rng.randint(1500, 64 * 1024)
            pieces.append(data[position : position + size])
            position += size
        return pieces
