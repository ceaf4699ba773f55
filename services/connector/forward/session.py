"""One forwarding connection: ``dmtproto``'s device role on a socket.

The device core decides everything (HELLO first, records after the hello response, a commit
request after each batch, the next batch after a successful commit response); this adapter
only moves its bytes, with a deadline on every wait for the server. Nothing is retried here:
the outcome says how far the server got, and the worker decides what comes next.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass

from dmtproto import CommitAcknowledged, DmtDevice, RemoteProtocolError

from ..config import disallowed_address
from .plan import Target

__all__ = ["Outcome", "forward"]

#: One record per message: each message the server gets is the raw topic's, byte for byte.
RECORDS_PER_MESSAGE = 1
#: Records per commit request (the device core's default).
RECORDS_PER_COMMIT = 256
_READ = 65536


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one connection went. ``committed`` records are the server's now (they left
    ``device.pending``); ``error`` says why the session ended before the rest."""

    committed: int
    commits: int
    sent_bytes: int
    seconds: float
    error: str | None = None
    #: Not connected: the destination is a private address (dead letter, no retry).
    refused: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def alive(self) -> bool | None:
        """For the circuit breaker: True when everything was committed, None when refused."""
        return None if self.refused else self.ok


class _Refused(Exception):
    pass


async def _connect(
    target: Target, allow_private: bool, wait_seconds: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Resolve, refuse private addresses unless allowed, connect to a checked address."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))
    if not allow_private:
        for address in addresses:
            why = disallowed_address(address)
            if why is not None:
                raise _Refused(
                    f"{target.host} resolves to {why}; set 'allow_private_network: true' "
                    "to allow it"
                )
    error: OSError = OSError(f"no address for {target.host}")
    for address in addresses:
        try:
            async with asyncio.timeout(wait_seconds):
                return await asyncio.open_connection(address, target.port)
        except OSError as exc:
            error = exc
    raise error


async def forward(
    target: Target,
    device: DmtDevice,
    *,
    wait_seconds: float,
    allow_private: bool = False,
    records_per_message: int = RECORDS_PER_MESSAGE,
    records_per_commit: int = RECORDS_PER_COMMIT,
) -> Outcome:
    """Connect as ``device``, upload what it holds, hang up. ``wait_seconds`` bounds the
    connection and each wait for an answer."""
    started = time.monotonic()
    committed = commits = sent = 0
    error: str | None = None
    writer: asyncio.StreamWriter | None = None
    conn = device.connect(
        records_per_message=records_per_message, records_per_commit=records_per_commit
    )
    try:
        reader, writer = await _connect(target, allow_private, wait_seconds)
        while True:
            out = conn.data_to_send()
            if out:
                writer.write(out)
                sent += len(out)
                async with asyncio.timeout(wait_seconds):
                    await writer.drain()
            if conn.finished:
                break
            try:
                async with asyncio.timeout(wait_seconds):
                    data = await reader.read(_READ)
            except TimeoutError:
                error = f"no answer within {wait_seconds:g} s ({_waiting(conn.state.name)})"
                break
            if not data:
                error = f"the server closed the connection ({_waiting(conn.state.name)})"
                break
            for event in conn.receive_data(data):
                if isinstance(event, CommitAcknowledged):
                    if not event.ok:
                        error = f"the server answered a commit with status {event.status}"
                        break
                    committed += event.records
                    commits += 1
            if error is not None:
                break
    except _Refused as exc:
        return Outcome(0, 0, 0, time.monotonic() - started, str(exc), refused=True)
    except RemoteProtocolError as exc:
        error = f"protocol error from the server: {exc}"
    except TimeoutError:
        error = f"connecting or sending took over {wait_seconds:g} s"
    except OSError as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
    return Outcome(committed, commits, sent, time.monotonic() - started, error)


def _waiting(state: str) -> str:
    return {
        "AWAIT_HELLO_RESPONSE": "waiting for the hello response",
        "AWAIT_COMMIT_RESPONSE": "waiting for a commit response",
    }.get(state, f"state {state}")
