"""Waiting on a condition with a deadline: the one polling helper every test module uses.

Three shapes, one argument order ``(condition, within, what)``: :func:`eventually` for a plain
condition inside an event loop, :func:`eventually_async` for a condition that must itself be
awaited (a metadata or S3 query), :func:`eventually_sync` outside an event loop. A timeout
raises :class:`WaitTimeout`, both an ``AssertionError`` (a failed test) and a ``TimeoutError``
(for code that stops something that does not go away in time).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

__all__ = ["WaitTimeout", "eventually", "eventually_async", "eventually_sync"]

#: Between two checks of a plain condition, and of one that queries a server.
EVERY = 0.02
EVERY_QUERY = 0.05


class WaitTimeout(AssertionError, TimeoutError):
    """A condition did not hold within its deadline."""

    def __init__(self, within: float, what: str) -> None:
        super().__init__(f"waited {within:g} s for {what}")


async def eventually(
    condition: Callable[[], bool], within: float, what: str, *, every: float = EVERY
) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise WaitTimeout(within, what)
        await asyncio.sleep(every)


async def eventually_async(
    condition: Callable[[], Awaitable[bool]],
    within: float,
    what: str,
    *,
    every: float = EVERY_QUERY,
    retry_on: tuple[type[BaseException], ...] = (),
) -> None:
    """Like :func:`eventually`; an exception in ``retry_on`` counts as "not yet"."""
    deadline = time.monotonic() + within
    while True:
        try:
            if await condition():
                return
        except retry_on:
            pass
        if time.monotonic() > deadline:
            raise WaitTimeout(within, what)
        await asyncio.sleep(every)


def eventually_sync(
    condition: Callable[[], bool], within: float, what: str, *, every: float = EVERY
) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise WaitTimeout(within, what)
        time.sleep(every)
