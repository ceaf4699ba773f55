"""One device connection: socket <-> protocol :class:`~ingestor.adapter.Session`, any protocol.

The loop reads up to 64 KiB at a time, never while more than ``max_buffered_bytes`` of the
session's records wait for Kafka (TCP back-pressure reaches the device), and never longer
than the core's next deadline or the idle limit (``hello_timeout_seconds`` from connecting
until the device named itself, then ``idle_timeout_seconds`` without a byte). On a stop
request the session closes at once unless it is busy; told to cut (the drain deadline), a
busy session reaches a durable point first. Whatever ends it, the session ends with one
``session_closed`` log line and a ``sessions_closed_total{protocol, reason}`` count.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import Counter

from . import metrics
from .adapter import Link, PeerError, Session
from .allowlist import NotAllowed
from .sink import KafkaFailed

__all__ = ["Connection"]

_READ = 64 * 1024


@dataclass(slots=True, eq=False)
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    session: Session
    #: What the device's first message is called (the protocol's ``hello``).
    hello: str = "hello"
    _stop_requested: bool = False
    _cut: bool = False
    _woken: bool = False
    _read_timer: asyncio.Timeout | None = None
    _opened: float = field(default_factory=time.monotonic)

    _received: Counter = field(init=False)

    def __post_init__(self) -> None:
        self.session.link.transmit = self._write
        self._received = metrics.received_bytes.labels(self.session.link.protocol)

    @property
    def link(self) -> Link:
        return self.session.link

    async def run(self, stopping: Callable[[], bool] = lambda: False) -> str:
        """Serve the connection until it ends; return the close-reason category."""
        link = self.link
        detail = ""
        try:
            await self.session.start()
            detail = await self._serve(stopping)
        except PeerError as exc:
            link.close_reason, detail = "protocol_error", str(exc)
        except NotAllowed as exc:
            link.close_reason, detail = "not_allowed", str(exc)
        except KafkaFailed as exc:
            link.close_reason, detail = "kafka_error", str(exc)
        except (ConnectionError, TimeoutError) as exc:
            link.close_reason, detail = "device_closed", f"connection lost: {exc!r}"
        finally:
            self._read_timer = None
            await self._finish(detail)
        return link.close_reason

    async def _serve(self, stopping: Callable[[], bool]) -> str:
        loop = asyncio.get_running_loop()
        session, settings = self.session, self.link.settings
        last_data = opened = loop.time()
        while True:
            if self._cut and session.busy:
                return await self._close("shutdown", await session.cut())
            if (stopping() or self._stop_requested) and not session.busy:
                return await self._close("shutdown", "ingestor shutting down")
            await self.link.ledger.bound(settings.max_buffered_bytes)
            identified = session.identified
            idle = settings.idle_timeout_seconds if identified else settings.hello_timeout_seconds
            # The hello must come within its timeout of connecting, however the bytes trickle.
            since = last_data if identified else opened
            now = loop.time()
            wait = since + idle - now
            deadline = session.next_deadline()
            if deadline is not None:
                wait = min(wait, deadline - now)
            try:
                async with asyncio.timeout(max(wait, 0)) as self._read_timer:
                    data = await self.reader.read(_READ)
            except TimeoutError:
                self._read_timer = None
                if self._woken:  # a stop request: the loop's head decides
                    self._woken = False
                    continue
                data = await self._arrived()
                if data:
                    # The deadline passed while the device's bytes were waiting to be read
                    # (the loop lagged under load): they count, the timer does not.
                    last_data = loop.time()
                    await session.receive_data(data, last_data)
                    await self._write()
                    if session.closed:
                        return session.detail
                    continue
                now = loop.time()
                if now - since >= idle:
                    why = (
                        f"no data for {idle:g} s"
                        if identified
                        else f"no {self.hello} within {idle:g} s"
                    )
                    return await self._close("idle", why)
                await session.handle_timeout(now)
                await self._write()
                if session.closed:
                    return session.detail
                continue
            self._read_timer = None
            self._woken = False
            if not data:
                await session.receive_eof()
                return "device closed the connection"
            self._received.inc(len(data))
            last_data = loop.time()
            await session.receive_data(data, last_data)
            await self._write()
            if session.closed:
                return session.detail

    async def _arrived(self) -> bytes:
        """Bytes that reached us before a deadline fired but were not read yet (the loop was
        late: in the turn the timer fired, the socket's data reached the stream's buffer
        first, and the read was cancelled with it there). A timer acts only on what is
        really missing."""
        if not _buffered(self.reader):
            return b""
        return await self.reader.read(_READ)  # returns at once: the buffer is not empty

    # Stopping -------------------------------------------------------------------------

    def request_stop(self, *, cut: bool = False) -> None:
        """Close at once if the session is not busy, else when it is done; with ``cut``,
        also while busy: reach a durable point first."""
        self._stop_requested = True
        self._cut = self._cut or cut
        timer = self._read_timer
        if timer is not None:
            with contextlib.suppress(RuntimeError):  # the read is over already
                timer.reschedule(asyncio.get_running_loop().time())
                self._woken = True

    async def _close(self, reason: str, detail: str) -> str:
        self.link.close_reason = reason
        await self.session.close(detail)
        await self._write()
        return detail

    async def _write(self) -> None:
        out = self.session.data_to_send()
        if out:
            self.writer.write(out)
            await self.writer.drain()

    async def _finish(self, detail: str) -> None:
        link = self.link
        try:
            if link.close_reason != "kafka_error":
                await self.session.finish(detail or link.close_reason)
        except KafkaFailed as exc:
            link.close_reason, detail = "kafka_error", str(exc)
        finally:
            link.ledger.abandon()
            reason = link.close_reason
            metrics.sessions_closed.labels(link.protocol, reason).inc()
            level = "info" if reason in ("clean", "device_closed") else "warning"
            getattr(link.log, level)(
                "session_closed",
                reason=reason,
                detail=detail,
                **self.session.summary(),
                seconds=round(time.monotonic() - self._opened, 3),
            )
            self.writer.close()
            try:
                async with asyncio.timeout(2):
                    await self.writer.wait_closed()
            except (TimeoutError, ConnectionError):
                pass


def _buffered(reader: asyncio.StreamReader) -> int:
    """Bytes in ``reader``'s buffer (asyncio has no public peek; ``_buffer`` has been the
    buffer since the module exists)."""
    buffer: bytearray = getattr(reader, "_buffer", bytearray())
    return len(buffer)
