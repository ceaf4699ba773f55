"""The Digital Matter protocol as the edge hosts it."""

from __future__ import annotations

from typing import Any, ClassVar

from ..adapter import Link, Protocol, Session
from ..settings import ListenerSettings
from .session import DmtSession
from .settings import DmtSettings

__all__ = ["DmtProtocol"]


class DmtProtocol(Protocol):
    """Digital Matter trackers (Oyster, Yabby, G62...) over their binary TCP protocol
    (``dmtproto``), directly ("direct to 3rd party") or through the OEM Server's raw TCP
    connector. Sessions share nothing but the edge."""

    name: ClassVar[str] = "dmt"
    hello: ClassVar[str] = "HELLO"
    settings_class: ClassVar[type[ListenerSettings]] = DmtSettings

    def session(self, link: Link) -> Session:
        assert isinstance(self.settings, DmtSettings)
        return DmtSession(link, self.settings)

    def describe(self) -> dict[str, Any]:
        assert isinstance(self.settings, DmtSettings)
        return {"max_message_length": self.settings.max_message_length}
