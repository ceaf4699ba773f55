"""The camera protocol as the edge hosts it: the progress book every session shares."""

from __future__ import annotations

from typing import Any, ClassVar

from ..adapter import Link, Protocol, Session
from ..settings import IngestorSettings, ListenerSettings
from ..sink import Sink
from . import metrics
from .progress import ProgressBook, ProgressPublisher, ProgressReader
from .resume import Claims
from .session import CameraSession
from .settings import CameraSettings

__all__ = ["CameraProtocol"]


class CameraProtocol(Protocol):
    """Teltonika camera file transfers (``camproto``).

    Before its listener accepts, it reads ``fleetgate.camera.progress.v1`` into the
    :class:`ProgressBook` and then follows it (``read_progress``; tests may turn it off), so
    a device that comes back resumes where Kafka has its file up to. Its sessions share the
    book, one :class:`ProgressPublisher` (flushed when the ingestor stops) and the
    :class:`Claims` that keep two sessions from writing one transfer; with the reader, a
    transfer is also claimed on the progress topic before it is written, so two ingestors
    never write one transfer either (:mod:`.arbiter`).
    """

    name: ClassVar[str] = metrics.PROTOCOL
    hello: ClassVar[str] = "INIT"
    close_reasons: ClassVar[tuple[str, ...]] = (
        "resume_reset",
        "refused",
        "too_slow",
        "superseded",
    )
    settings_class: ClassVar[type[ListenerSettings]] = CameraSettings

    def __init__(
        self,
        settings: ListenerSettings,
        edge: IngestorSettings,
        sink: Sink,
        *,
        read_progress: bool = True,
    ) -> None:
        super().__init__(settings, edge, sink)
        assert isinstance(settings, CameraSettings)
        self.camera = settings
        self.book = ProgressBook(settings.progress_max_age_seconds)
        self.publisher = ProgressPublisher(sink, self.book, edge.ack_timeout_seconds)
        #: Which session writes each transfer: two at once never write one transfer.
        self.claims = Claims()
        self.reader = ProgressReader(edge, settings, self.book) if read_progress else None
        metrics.progress_entries.set_function(lambda: len(self.book))

    async def start(self) -> None:
        if self.reader is not None:
            await self.reader.open()

    def session(self, link: Link) -> Session:
        return CameraSession(
            link, self.camera, self.book, self.publisher, self.claims, reader=self.reader
        )

    async def stop(self) -> None:
        await self.publisher.close(within=self.edge.close_timeout_seconds)
        if self.reader is not None:
            await self.reader.close()

    def describe(self) -> dict[str, Any]:
        return {"transfers_known": len(self.book)}
