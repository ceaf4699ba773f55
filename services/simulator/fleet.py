"""A fleet of simulated cameras uploading over TCP: asyncio around camproto's device role.

Each device is a :class:`camproto.CameraDevice` that keeps the files it still has to upload
across connections. A device connects, drives one :class:`camproto.DeviceConnection` per TCP
connection (answering the server as soon as its bytes arrive), and reconnects until the server
has accepted every file (REPEAT INIT after the whole file), it gives up after too many failed
connections in a row, or the fleet's time runs out. Faults come from :mod:`simulator.faults`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from camproto import (
    CameraDevice,
    CameraFile,
    DeviceConnection,
    DeviceFile,
    DualCamSlot,
    Event,
    FileAccepted,
    FileRequested,
    RemoteProtocolError,
    ResumeRequested,
)

from .content import ContentSpec, DeviceKind, DevicePlan, plan_fleet
from .faults import (
    FailurePath,
    Faults,
    Interruption,
    InterruptionKind,
    TokenBucket,
    WriteShaper,
    garbage_bytes,
)

__all__ = [
    "DEFAULT_PORT",
    "DeviceOutcome",
    "Fleet",
    "FleetReport",
    "Progress",
    "SimulatedDevice",
    "SimulationConfig",
    "simulate",
]

_log = logging.getLogger(__name__)

#: The ingestor's default camera port (FLEETGATE_CAMERA_PORT): Traccar's port for the same
#: protocol, so a camera set up for Traccar needs no change.
DEFAULT_PORT = 5232
_READ_SIZE = 64 * 1024
#: A slow link may burst this many seconds' worth of bytes.
_BURST_SECONDS = 0.05
#: Error messages kept per device; later ones are only counted.
_MAX_ERRORS = 20
#: Longest wait for the server to close after an injected disconnect or garbage.
_FAULT_GRACE = 5.0
#: Protocol id of the BAD_PROTOCOL failure path: no server implements it.
BAD_PROTOCOL_ID = 9
#: STATUS codes the failing devices answer with (errors of Table 20).
METADATA_ERROR_STATUS = 2
REQUEST_ERROR_STATUS = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationConfig:
    """Everything a run needs. Times are in seconds, sizes in bytes."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    devices: int = 10
    #: Share of DualCam devices; the rest are DSM.
    dualcam_ratio: float = 0.5
    content: ContentSpec = field(default_factory=ContentSpec)
    faults: Faults = field(default_factory=Faults)
    #: Seeds content, IMEIs and the random choices of faults.
    seed: int = 0
    #: The whole run; devices still uploading then are failures.
    timeout: float = 300.0
    #: Failed connections in a row (none accepting a file) before a device gives up.
    max_reconnects: int = 5
    #: Pause before reconnecting.
    reconnect_backoff: float = 0.1
    #: Longest wait for the server (its next command, or room to write) on a connection.
    io_timeout: float = 30.0
    connect_timeout: float = 10.0
    #: Bytes taken from the protocol machine per socket write.
    write_size: int = 64 * 1024
    #: Devices connected at once; 0 means all of them.
    concurrency: int = 0
    #: Protocol id in INIT.
    protocol: int = 5

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1..65535, not {self.port}")
        if self.devices < 1:
            raise ValueError("simulate at least one device")
        if not 0.0 <= self.dualcam_ratio <= 1.0:
            raise ValueError(f"DualCam ratio must be between 0 and 1, not {self.dualcam_ratio}")
        for name in ("timeout", "io_timeout", "connect_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_reconnects < 0 or self.reconnect_backoff < 0:
            raise ValueError("max_reconnects and reconnect_backoff cannot be negative")
        if self.write_size < 1 or self.concurrency < 0:
            raise ValueError("write_size must be positive and concurrency not negative")


@dataclass(slots=True, kw_only=True)
class DeviceOutcome:
    """What one device did. It failed if any of its files was not accepted in the end."""

    index: int
    kind: DeviceKind
    imei: int
    #: Files the device had to upload.
    files: int
    #: Files whose every byte went out at least once.
    files_sent: int = 0
    #: Files the server confirmed (REPEAT INIT after the whole file).
    files_accepted: int = 0
    #: Bytes written to sockets: commands, resends and garbage included.
    bytes_sent: int = 0
    #: Sizes of the accepted files.
    payload_bytes: int = 0
    #: TCP connections attempted (the first one included).
    connections: int = 0
    crc_faults: int = 0
    disconnects: int = 0
    garbage: int = 0
    #: Failure paths (issue 10) this device played.
    failure_paths: list[str] = field(default_factory=list)
    #: Non-zero byte offsets the server asked the device to resume from.
    resumed_from: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    errors_dropped: int = 0
    duration: float = 0.0
    finished: bool = False

    @property
    def ok(self) -> bool:
        return self.files_accepted == self.files

    @property
    def reconnects(self) -> int:
        return max(0, self.connections - 1)

    def error(self, message: str) -> None:
        if len(self.errors) < _MAX_ERRORS:
            self.errors.append(message)
        else:
            self.errors_dropped += 1

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = self.kind.value
        data["ok"] = self.ok
        data["reconnects"] = self.reconnects
        return data

    def line(self) -> str:
        """One line for people: the device, whether it passed, and its counters."""
        status = "ok  " if self.ok else "FAIL"
        parts = [
            f"{self.kind.value:7} {self.imei} {status}",
            f"files {self.files_accepted}/{self.files} accepted ({self.files_sent} sent)",
            f"{self.bytes_sent / 1e6:.2f} MB",
            f"reconnects {self.reconnects}",
            f"crc faults {self.crc_faults}",
        ]
        if self.disconnects or self.garbage:
            parts.append(f"disconnects {self.disconnects} garbage {self.garbage}")
        if self.resumed_from:
            parts.append(f"resumed {len(self.resumed_from)}x")
        parts.append(f"{self.duration:.2f}s")
        return "  ".join(parts)


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    """A snapshot of a running fleet."""

    elapsed: float
    devices: int
    devices_done: int
    devices_failed: int
    files: int
    files_accepted: int
    bytes_sent: int

    def line(self) -> str:
        rate = self.bytes_sent / self.elapsed / 1e6 if self.elapsed > 0 else 0.0
        return (
            f"{self.elapsed:6.1f}s  devices {self.devices_done}/{self.devices} done"
            f" ({self.devices_failed} failed)  files {self.files_accepted}/{self.files}"
            f" accepted  {self.bytes_sent / 1e6:.1f} MB sent ({rate:.1f} MB/s)"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetReport:
    outcomes: tuple[DeviceOutcome, ...]
    duration: float
    faults: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(outcome.ok for outcome in self.outcomes)

    @property
    def failed(self) -> tuple[DeviceOutcome, ...]:
        return tuple(outcome for outcome in self.outcomes if not outcome.ok)

    @property
    def files(self) -> int:
        return sum(outcome.files for outcome in self.outcomes)

    @property
    def files_accepted(self) -> int:
        return sum(outcome.files_accepted for outcome in self.outcomes)

    @property
    def bytes_sent(self) -> int:
        return sum(outcome.bytes_sent for outcome in self.outcomes)

    @property
    def payload_bytes(self) -> int:
        return sum(outcome.payload_bytes for outcome in self.outcomes)

    @property
    def throughput(self) -> float:
        """Accepted file bytes per second."""
        return self.payload_bytes / self.duration if self.duration > 0 else 0.0

    def summary(self) -> str:
        return (
            f"{len(self.outcomes)} devices: {len(self.outcomes) - len(self.failed)} ok,"
            f" {len(self.failed)} failed; {self.files_accepted}/{self.files} files accepted;"
            f" {self.payload_bytes / 1e6:.1f} MB of files ({self.bytes_sent / 1e6:.1f} MB"
            f" sent) in {self.duration:.2f}s, {self.throughput / 1e6:.1f} MB/s"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "duration_s": round(self.duration, 3),
            "faults": list(self.faults),
            "devices": len(self.outcomes),
            "devices_failed": len(self.failed),
            "files": self.files,
            "files_accepted": self.files_accepted,
            "bytes_sent": self.bytes_sent,
            "payload_bytes": self.payload_bytes,
            "throughput_mb_s": round(self.throughput / 1e6, 3),
            "outcomes": [outcome.to_dict() for outcome in self.outcomes],
        }


class _End(Enum):
    DONE = "done"  # every file accepted
    PLANNED = "planned"  # an injected fault ended it
    FAILED = "failed"


class SimulatedDevice:
    """One camera of the fleet: its files, its faults, its outcome."""

    def __init__(self, plan: DevicePlan, config: SimulationConfig) -> None:
        self.plan = plan
        self.config = config
        faults = config.faults
        self.outcome = DeviceOutcome(
            index=plan.index,
            kind=plan.kind,
            imei=plan.imei,
            files=config.content.files_per_device,
        )
        self._interruptions: deque[Interruption] = deque(faults.interruptions())
        self._rng = random.Random(f"{config.seed}:faults:{plan.index}")
        #: The device's link, shared by its connections: slow-link pacing and split/merge.
        self.bucket = (
            None
            if faults.slow is None
            else TokenBucket(faults.slow, max(1.0, faults.slow * _BURST_SECONDS))
        )
        self.shaper = WriteShaper(self._rng, config.write_size) if faults.split else None
        # Files are told apart by identity: two DualCam files may share a slot.
        self._sent: set[int] = set()
        self._crc_hit: set[int] = set()
        self._crc_armed = False
        self._accepted_here = 0

    async def run(self, deadline: float) -> DeviceOutcome:
        """Upload every file, reconnecting as needed; stop at ``deadline`` (loop time).

        The files are made here and dropped at the end (:meth:`DevicePlan.files` makes them
        again), so a large fleet holds only the content of the devices still running.
        """
        config, outcome = self.config, self.outcome
        loop = asyncio.get_running_loop()
        started = loop.time()
        camera = CameraDevice(
            imei=self.plan.imei,
            files=self.plan.files(config.content),
            protocol=config.protocol,
            restart_crc_after_resume=config.faults.restart_crc_after_resume,
        )
        self._arm_failures(camera)
        failures = 0
        try:
            async with asyncio.timeout_at(deadline):
                while camera.pending:
                    if outcome.connections:
                        await asyncio.sleep(config.reconnect_backoff)
                    end, reason = await self._connection(camera)
                    # A one-connection failure is over: the bad INIT first, then the STATUS.
                    if camera.protocol != config.protocol:
                        camera.protocol = config.protocol
                    else:
                        camera.request_status.clear()
                    _log.debug(
                        "device %s connection %d: %s", camera.imei, outcome.connections, reason
                    )
                    if end is _End.FAILED:
                        outcome.error(reason)
                        failures = 0 if self._accepted_here else failures + 1
                        if camera.pending and failures > config.max_reconnects:
                            outcome.error(f"gave up after {failures} failed connections in a row")
                            break
                    else:
                        failures = 0
        except TimeoutError:
            outcome.error(
                f"timed out after {config.timeout:g}s with {len(camera.pending)} of"
                f" {outcome.files} files not accepted"
            )
        finally:
            outcome.duration = loop.time() - started
            outcome.finished = True
        return outcome

    def _arm_failures(self, camera: CameraDevice) -> None:
        """Set up the failure paths this device plays (the first ``fail_devices`` do)."""
        faults = self.config.faults
        if not faults.fail or self.plan.index >= faults.fail_devices:
            return
        real = list(camera.files)
        for path in faults.fail:
            self.outcome.failure_paths.append(path.value)
            if path is FailurePath.NO_FILE:
                camera.empty_paths = 1
            elif path is FailurePath.METADATA_ERROR:
                for item in real:
                    camera.metadata_status[item.file.identifier] = METADATA_ERROR_STATUS
            elif path is FailurePath.STATUS_ERROR and real:
                camera.request_status[real[0].file.identifier] = REQUEST_ERROR_STATUS
            elif path is FailurePath.BAD_PROTOCOL:
                camera.protocol = BAD_PROTOCOL_ID
            elif path in (FailurePath.EMPTY_FILE, FailurePath.GONE_FILE):
                extra = self._extra_file(camera, path.value)
                if extra is not None:
                    camera.files.append(extra)
                    blocked = camera.stuck if path is FailurePath.EMPTY_FILE else camera.gone
                    blocked.add(extra.file.identifier)

    def _extra_file(self, camera: CameraDevice, name: str) -> DeviceFile | None:
        """A file to announce that cannot be delivered: a free DualCam slot, or a DSM path."""
        metadata = camera.files[0].metadata if camera.files else bytes(32)
        if self.plan.kind is DeviceKind.DSM:
            path = f"dsm/picture/000000/{name}.jpg".encode() + b"\0"
            return DeviceFile(CameraFile.for_path(path), b"\xff", metadata)
        used = {item.file.slot for item in camera.files}
        free = [slot for slot in DualCamSlot if slot not in used]
        if not free:
            self.outcome.error(f"{name}: no free DualCam slot to announce it in")
            return None
        return DeviceFile(CameraFile.for_slot(free[-1]), b"\xff", metadata)

    async def _connection(self, camera: CameraDevice) -> tuple[_End, str]:
        config = self.config
        self.outcome.connections += 1
        self._accepted_here = 0
        try:
            async with asyncio.timeout(config.connect_timeout):
                reader, writer = await asyncio.open_connection(config.host, config.port)
        except TimeoutError:
            return _End.FAILED, f"connect to {config.host}:{config.port} timed out"
        except OSError as exc:
            return _End.FAILED, f"cannot connect to {config.host}:{config.port}: {_text(exc)}"
        session = _Session(self, camera.connect(), reader, writer)
        graceful = False
        try:
            result = await session.run()
            graceful = result[0] is not _End.FAILED
            return result
        finally:
            if graceful:
                writer.close()
                with contextlib.suppress(OSError, TimeoutError):
                    async with asyncio.timeout(1.0):
                        await writer.wait_closed()
            else:
                writer.transport.abort()

    # Called by the session -----------------------------------------------------------------

    def on_event(self, connection: DeviceConnection, event: Event) -> None:
        outcome = self.outcome
        if isinstance(event, FileAccepted):
            outcome.files_accepted += 1
            self._accepted_here += 1
            camera = connection.device
            outcome.payload_bytes = sum(len(item.data) for item in camera.uploaded)
        elif isinstance(event, ResumeRequested):
            if event.offset:
                outcome.resumed_from.append(event.offset)
        elif isinstance(event, FileRequested):
            self._arm_bad_crc(connection)

    def _arm_bad_crc(self, connection: DeviceConnection) -> None:
        packet = self.config.faults.bad_crc_at
        item = connection.current
        if packet is None or item is None or id(item) in self._crc_hit or packet > item.packets:
            return
        connection.device.bad_crc_packets.add(packet)
        self._crc_armed = True

    def after_send(self, connection: DeviceConnection) -> None:
        """Account for what ``data_to_send()`` just produced."""
        item: DeviceFile | None = connection.current
        packet = self.config.faults.bad_crc_at
        if self._crc_armed and packet not in connection.device.bad_crc_packets:
            self._crc_armed = False  # camproto sends each listed packet wrong once, then drops it
            self.outcome.crc_faults += 1
            if item is not None:
                self._crc_hit.add(id(item))
        if item is not None and connection.all_sent and id(item) not in self._sent:
            self._sent.add(id(item))
            self.outcome.files_sent += 1

    def next_interruption(self) -> Interruption | None:
        return self._interruptions[0] if self._interruptions else None

    def take_interruption(self) -> Interruption:
        return self._interruptions.popleft()

    def write_limit(self) -> int:
        limit = self.shaper.limit() if self.shaper is not None else self.config.write_size
        if self.bucket is not None:
            limit = min(limit, max(1, int(self.bucket.burst)))
        return limit

    def garbage(self) -> bytes:
        return garbage_bytes(self._rng, self.config.faults.garbage_size)


class _Session:
    """One TCP connection: a reader task feeding the machine, and the writer loop."""

    def __init__(
        self,
        device: SimulatedDevice,
        connection: DeviceConnection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.device = device
        self.connection = connection
        self.reader = reader
        self.writer = writer
        self.io_timeout = device.config.io_timeout
        self.wake = asyncio.Event()
        self.eof = False
        self.failure: str | None = None

    async def run(self) -> tuple[_End, str]:
        reading = asyncio.create_task(self._read_loop())
        try:
            result = await self._write_loop()
        finally:
            reading.cancel()
            await asyncio.wait([reading])
        if not reading.cancelled() and (bug := reading.exception()) is not None:
            raise bug  # a bug in the simulator or in camproto: let it show
        return result

    async def _read_loop(self) -> None:
        try:
            await self._read()
        except Exception as exc:
            self.failure = f"reader crashed: {exc!r}"
            raise
        finally:
            self.wake.set()

    async def _read(self) -> None:
        connection, device = self.connection, self.device
        while True:
            try:
                data = await self.reader.read(_READ_SIZE)
            except OSError as exc:
                left = len(connection.device.files)
                self.failure = (
                    self.failure or f"connection lost ({_text(exc)}) with {left} files left"
                )
                data = b""
            eof = not data
            try:
                events = connection.receive_data(data, eof=eof)
            except RemoteProtocolError as exc:
                self.failure = f"server broke the protocol: {exc}"
                self.wake.set()
                return
            for event in events:
                device.on_event(connection, event)
            self.eof = eof
            self.wake.set()
            if eof or connection.closed:
                return

    async def _write_loop(self) -> tuple[_End, str]:
        connection, device = self.connection, self.device
        while True:
            if self.failure is not None:
                return _End.FAILED, self.failure
            if connection.closed or self.eof:
                return self._ended()
            step = device.next_interruption()
            out = connection.data_to_send(
                device.write_limit(), None if step is None else step.at_packet
            )
            device.after_send(connection)
            if out:
                try:
                    await self._write(out)
                except (OSError, TimeoutError) as exc:
                    return self._write_failed(exc)
                continue
            if step is not None and connection.packets_sent >= step.at_packet:
                return await self._interrupt(device.take_interruption())
            # Nothing to send: the server has the turn.
            self.wake.clear()
            if not await self._wait(self.io_timeout):
                return _End.FAILED, (
                    f"server silent for {self.io_timeout:g}s"
                    f" (device {connection.state.value}, {connection.packets_sent} packets sent)"
                )

    def _write_failed(self, exc: OSError) -> tuple[_End, str]:
        """A write failed; the reader may know better why (it runs while the writer waits)."""
        if self.failure is not None:
            return _End.FAILED, self.failure
        if self.eof or self.connection.closed:
            return self._ended()  # the server hung up: say how, not the broken pipe
        return _End.FAILED, f"write failed: {_text(exc)}"

    def _ended(self) -> tuple[_End, str]:
        left = len(self.connection.device.pending)
        how = "sent CLOSE" if self.connection.closed and not self.eof else "closed the connection"
        if not left:
            return _End.DONE, f"all files accepted; server {how}"
        return _End.FAILED, f"server {how} with {left} files left"

    async def _wait(self, seconds: float) -> bool:
        """Wait for the reader to report something; False if ``seconds`` pass first."""
        try:
            async with asyncio.timeout(seconds):
                await self.wake.wait()
        except TimeoutError:
            return False
        return True

    async def _write(self, data: bytes) -> None:
        device, writer = self.device, self.writer
        shaper, bucket = device.shaper, device.bucket
        pieces = shaper.split(data) if shaper is not None else [data]
        for piece in pieces:
            if bucket is not None:
                await bucket.take(len(piece))
            writer.write(piece)
            device.outcome.bytes_sent += len(piece)
            async with asyncio.timeout(self.io_timeout):
                await writer.drain()
            if len(pieces) > 1:
                await asyncio.sleep(0)  # let each piece leave on its own

    async def _interrupt(self, step: Interruption) -> tuple[_End, str]:
        """End this connection as ``step`` plans; the server should then close its side."""
        outcome = self.device.outcome
        packets = self.connection.packets_sent
        try:
            if step.kind is InterruptionKind.GARBAGE:
                outcome.garbage += 1
                await self._write(self.device.garbage())
            else:
                outcome.disconnects += 1
                if self.writer.can_write_eof():
                    self.writer.write_eof()
        except (OSError, TimeoutError) as exc:
            return _End.PLANNED, f"{step.kind.value} after {packets} packets: {_text(exc)}"
        # Wait for the server to close, so that it has taken in every byte sent before.
        grace = min(self.io_timeout, _FAULT_GRACE)
        while not self.eof and self.failure is None:
            self.wake.clear()
            if not await self._wait(grace):
                if step.kind is InterruptionKind.GARBAGE:
                    outcome.error(f"server kept the session open {grace:g}s after garbage")
                break
        return _End.PLANNED, f"{step.kind.value} after {packets} packets"


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class Fleet:
    """``config.devices`` simulated cameras, run concurrently by :meth:`run`."""

    def __init__(self, config: SimulationConfig) -> None:
        self.config = config
        self.plans = plan_fleet(config.devices, config.dualcam_ratio, config.seed)
        self.devices = [SimulatedDevice(plan, config) for plan in self.plans]
        self._started: float | None = None

    def progress(self) -> Progress:
        outcomes = [device.outcome for device in self.devices]
        elapsed = 0.0
        if self._started is not None:
            elapsed = asyncio.get_running_loop().time() - self._started
        return Progress(
            elapsed=elapsed,
            devices=len(outcomes),
            devices_done=sum(outcome.finished for outcome in outcomes),
            devices_failed=sum(outcome.finished and not outcome.ok for outcome in outcomes),
            files=sum(outcome.files for outcome in outcomes),
            files_accepted=sum(outcome.files_accepted for outcome in outcomes),
            bytes_sent=sum(outcome.bytes_sent for outcome in outcomes),
        )

    async def run(self) -> FleetReport:
        config = self.config
        loop = asyncio.get_running_loop()
        started = self._started = loop.time()
        deadline = started + config.timeout
        limit = asyncio.Semaphore(config.concurrency) if config.concurrency else None

        async def one(device: SimulatedDevice) -> DeviceOutcome:
            if limit is None:
                return await device.run(deadline)
            async with limit:
                return await device.run(deadline)

        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(device)) for device in self.devices]
        return FleetReport(
            outcomes=tuple(task.result() for task in tasks),
            duration=loop.time() - started,
            faults=config.faults.active,
        )


async def simulate(config: SimulationConfig) -> FleetReport:
    """Run a fleet as ``config`` describes and report on every device."""
    return await Fleet(config).run()
