"""Simulated Digital Matter trackers over TCP: asyncio around dmtproto's device role.

Each device logs records at a rate (or all at once), connects, sends HELLO, uploads what it
holds in batches each followed by a commit request, and drops records only when the server
commits them. It reconnects after a lost connection and sends the uncommitted records again
(same sequence numbers, same bytes), until every record is committed, it gives up after too
many failed connections in a row, or the run's time is up.

Faults (any combination): disconnect right after a commit request (before the response: the
server must not have committed, the device resends), garbage once after the hello response
(the server must close that session), and a slow link (writes paced to a byte rate).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from dmtproto import (
    Analogue16,
    Analogue16Field,
    AsyncSessionCompleted,
    CommitAcknowledged,
    DeviceConnection,
    DeviceState,
    DigitalField,
    DmtDevice,
    GpsField,
    Hello,
    HelloAcknowledged,
    MessageType,
    RemoteProtocolError,
    to_dm_time,
)

__all__ = ["DmtDeviceOutcome", "DmtFleetReport", "DmtSimulationConfig", "simulate_dmt"]

_READ_SIZE = 64 * 1024
#: Longest wait for the server to close after garbage.
_FAULT_GRACE_SECONDS = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DmtSimulationConfig:
    """Everything a run needs. Times in seconds, rates per second."""

    host: str = "127.0.0.1"
    port: int
    devices: int = 10
    #: Records each device logs.
    records: int = 100
    #: Records per second each device logs; 0 logs them all before connecting.
    rate: float = 0.0
    records_per_message: int = 16
    records_per_commit: int = 64
    #: Seeds IMEIs, positions and garbage.
    seed: int = 0
    timeout_seconds: float = 300.0
    io_timeout_seconds: float = 30.0
    connect_timeout_seconds: float = 10.0
    #: Failed connections in a row (none committing a record) before a device gives up.
    max_reconnects: int = 5
    reconnect_backoff_seconds: float = 0.1
    #: Times each device hangs up right after a commit request, before the response.
    disconnect_before_commit: int = 0
    #: Each device sends random bytes once, after its first hello response.
    garbage: bool = False
    #: Bytes per second each device may write; 0 = unlimited.
    link_bytes_per_second: int = 0
    #: End each upload with an async session request (0x22) and wait for its answer.
    async_session: bool = True
    #: Devices connected at once; 0 means all.
    concurrency: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1..65535, not {self.port}")
        if self.devices < 1 or self.records < 0:
            raise ValueError("simulate at least one device, with a record count >= 0")
        if self.records_per_message < 1 or self.records_per_commit < 1:
            raise ValueError("records per message and per commit must be at least 1")
        if self.rate < 0 or self.link_bytes_per_second < 0 or self.concurrency < 0:
            raise ValueError("rate, link speed and concurrency cannot be negative")


@dataclass(slots=True, kw_only=True)
class DmtDeviceOutcome:
    index: int
    imei: str
    records: int
    committed: int = 0
    #: Records written to a socket, resends included.
    sent: int = 0
    connections: int = 0
    disconnects_injected: int = 0
    garbage_sent: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.committed == self.records

    @property
    def resent(self) -> int:
        return self.sent - self.committed

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok, "resent": self.resent}


@dataclass(frozen=True, slots=True)
class DmtFleetReport:
    devices: tuple[DmtDeviceOutcome, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.devices)

    @property
    def committed(self) -> int:
        return sum(d.committed for d in self.devices)

    def summary(self) -> str:
        records = sum(d.records for d in self.devices)
        resent = sum(d.resent for d in self.devices)
        failed = sum(not d.ok for d in self.devices)
        rate = self.committed / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{len(self.devices)} devices, {self.committed}/{records} records committed "
            f"({rate:.0f}/s), {resent} resent, {failed} devices failed, {self.seconds:.1f} s"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "seconds": self.seconds,
            "devices": [d.to_dict() for d in self.devices],
        }


def _imei(rng: random.Random) -> str:
    return "35" + "".join(str(rng.randrange(10)) for _ in range(13))


def _record_fields(rng: random.Random, now: int) -> tuple[GpsField, DigitalField, Analogue16Field]:
    return (
        GpsField(
            gps_time=now,
            latitude_e7=rng.randint(-900_000_000, 900_000_000),
            longitude_e7=rng.randint(-1_800_000_000, 1_800_000_000),
            altitude_m=rng.randint(0, 500),
            speed_cm_s=rng.randint(0, 3000),
            speed_accuracy=1,
            heading_2deg=rng.randint(0, 179),
            pdop_tenths=rng.randint(8, 30),
            position_accuracy_m=rng.randint(2, 20),
            status=3,
        ),
        DigitalField(inputs=rng.randint(0, 1), outputs=0, status=3),
        Analogue16Field(
            values=(
                Analogue16(1, rng.randint(3500, 4200)),
                Analogue16(2, rng.randint(1150, 1450)),
                Analogue16(3, rng.randint(-500, 4500) & 0xFFFF),
                Analogue16(4, rng.randint(5, 31)),
            )
        ),
    )


class _Device:
    def __init__(self, index: int, config: DmtSimulationConfig) -> None:
        self.config = config
        self.rng = random.Random(f"{config.seed}/{index}")
        imei = _imei(self.rng)
        self.tracker = DmtDevice(
            Hello(
                serial=100_000 + index,
                imei=imei,
                iccid="8961" + imei[2:] + "00",
                product_id=34,
                hardware_revision=2,
                firmware_major=1,
                firmware_minor=9,
            )
        )
        self.outcome = DmtDeviceOutcome(index=index, imei=imei, records=config.records)
        self.logged = 0
        self.new_records = asyncio.Event()
        self.disconnects_left = config.disconnect_before_commit

    def log(self, count: int) -> None:
        now = to_dm_time(time.time())
        for _ in range(count):
            self.tracker.log(time=now, log_reason=3, fields=_record_fields(self.rng, now))
        self.logged += count
        self.new_records.set()

    async def logger(self) -> None:
        """Log records at the configured rate."""
        rate, total = self.config.rate, self.config.records
        start = time.monotonic()
        while self.logged < total:
            due = min(total, int((time.monotonic() - start) * rate) + 1)
            if due > self.logged:
                self.log(due - self.logged)
            await asyncio.sleep(min(1.0 / rate, 0.1))

    async def run(self, deadline: float) -> DmtDeviceOutcome:
        config = self.config
        if config.rate == 0:
            self.log(config.records)
            logger = None
        else:
            logger = asyncio.create_task(self.logger())
        failures = 0
        try:
            while not self._done():
                if time.monotonic() >= deadline:
                    self.outcome.errors.append("time ran out")
                    break
                before = self.tracker.committed
                self.outcome.connections += 1
                try:
                    remaining = deadline - time.monotonic()
                    await asyncio.wait_for(self._connection(), remaining)
                except (OSError, TimeoutError, RemoteProtocolError, _Hangup) as exc:
                    self.outcome.errors.append(_text(exc))
                failures = 0 if self.tracker.committed > before else failures + 1
                if failures > config.max_reconnects:
                    self.outcome.errors.append(f"gave up after {failures} failed connections")
                    break
                if not self._done():
                    await asyncio.sleep(config.reconnect_backoff_seconds)
        finally:
            if logger is not None:
                logger.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await logger
        self.outcome.committed = self.tracker.committed
        return self.outcome

    def _done(self) -> bool:
        return self.logged >= self.config.records and not self.tracker.pending

    async def _connection(self) -> None:
        config = self.config
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(config.host, config.port), config.connect_timeout_seconds
        )
        conn = self.tracker.connect(
            records_per_message=config.records_per_message,
            records_per_commit=config.records_per_commit,
            auto_upload=False,
        )
        try:
            await self._write(writer, conn.data_to_send())
            await self._session(conn, reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _session(
        self, conn: DeviceConnection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        config = self.config
        finishing = False
        while True:
            if conn.state is DeviceState.IDLE and not finishing:
                if self.tracker.pending:
                    count = conn.upload()
                    await self._write(writer, conn.data_to_send())
                    self.outcome.sent += count
                    if self.disconnects_left > 0:
                        self.disconnects_left -= 1
                        self.outcome.disconnects_injected += 1
                        raise _Hangup("hung up before the commit response (injected)")
                    continue
                if self._done():
                    if not config.async_session:
                        return
                    conn.send(MessageType.ASYNC_SESSION_REQUEST)
                    await self._write(writer, conn.data_to_send())
                    finishing = True
                    continue
                self.new_records.clear()
                await self.new_records.wait()  # the logger's next record (the run's deadline)
                continue
            data = await asyncio.wait_for(reader.read(_READ_SIZE), config.io_timeout_seconds)
            if not data:
                raise _Hangup(f"server closed the connection in state {conn.state.name}")
            for event in conn.receive_data(data):
                if isinstance(event, HelloAcknowledged):
                    await self._maybe_garbage(reader, writer)
                elif isinstance(event, CommitAcknowledged) and not event.ok:
                    raise _Hangup(f"server answered a commit with status {event.status}")
                elif isinstance(event, AsyncSessionCompleted) and finishing:
                    return

    async def _maybe_garbage(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if not self.config.garbage or self.outcome.garbage_sent:
            return
        self.outcome.garbage_sent = True
        junk = bytes([0x47]) + self.rng.randbytes(63)  # never starts with the sync bytes
        await self._write(writer, junk)
        # The server must close this session: wait for its EOF (bytes before it are dropped).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_FAULT_GRACE_SECONDS):
                while await reader.read(_READ_SIZE):
                    pass
        raise _Hangup("server closed the session after garbage (injected)")

    async def _write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        rate = self.config.link_bytes_per_second
        if not rate:
            writer.write(data)
            await asyncio.wait_for(writer.drain(), self.config.io_timeout_seconds)
            return
        step = max(1, rate // 20)  # 50 ms worth at a time
        for pos in range(0, len(data), step):
            chunk = data[pos : pos + step]
            writer.write(chunk)
            await asyncio.wait_for(writer.drain(), self.config.io_timeout_seconds)
            await asyncio.sleep(len(chunk) / rate)


class _Hangup(Exception):
    """The connection ended before the device was done (expected with faults)."""


def _text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def simulate_dmt(config: DmtSimulationConfig) -> DmtFleetReport:
    """Run the fleet to the end and report what each device got committed."""
    start = time.monotonic()
    deadline = start + config.timeout_seconds
    devices = [_Device(i, config) for i in range(config.devices)]
    limit = asyncio.Semaphore(config.concurrency or config.devices)

    async def one(device: _Device) -> DmtDeviceOutcome:
        async with limit:
            return await device.run(deadline)

    outcomes = await asyncio.gather(*(one(d) for d in devices))
    return DmtFleetReport(tuple(outcomes), time.monotonic() - start)
