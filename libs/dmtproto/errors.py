"""Exceptions raised by the protocol machines.

``RemoteProtocolError`` means the device (or server) broke the protocol: log the message and
close that connection. ``LocalProtocolError`` means the caller used the API wrongly (a bug in the
caller). Any other exception escaping the machines is a bug in this package.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["LocalProtocolError", "ProtocolError", "RemoteProtocolError"]


class ProtocolError(Exception):
    """Base class; never raised itself."""

    def __init__(self, msg: str) -> None:
        if type(self) is ProtocolError:
            raise TypeError("raise LocalProtocolError or RemoteProtocolError, not ProtocolError")
        super().__init__(msg)


class LocalProtocolError(ProtocolError):
    """The local application asked for something the protocol does not allow now."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow.

    The message names the message type, the connection state and the limit broken where there
    is one. ``events`` holds what the same ``receive_data`` call produced before the error
    (records that decoded, say), so the caller can still keep them before closing; they are
    not committed, so the device sends them again.
    """

    def __init__(
        self,
        msg: str,
        events: Sequence[object] = (),
        *,
        message_type: int | None = None,
        state: str | None = None,
    ) -> None:
        super().__init__(msg)
        self.events: tuple[object, ...] = tuple(events)
        self.message_type = message_type
        self.state = state
