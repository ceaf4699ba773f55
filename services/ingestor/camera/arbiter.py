"""Who writes a transfer, across ingestors: the progress topic's order decides.

Every ingestor reads ``fleetgate.camera.progress.v1`` (key = transfer id, so one partition
and one order per transfer). Before a session writes a transfer it publishes a claim there
(a :class:`contracts.TransferProgress` with ``claim`` set), waits for Kafka's ack, reads the
topic back up to its claim, and writes only if :func:`holder_after`, applied to the records
in the topic's order, made it the holder. Every reader applies the same rule to the same
records in the same order, so two claimants never both win; the loser starts the file over
under another transfer id, or closes so the device comes back.

Pure: the records carry their writer's clock (``updated_at``) and the claimant's
``stale_seconds``; the decision to claim (:func:`is_live`) takes ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from contracts import TransferProgress

__all__ = ["Holder", "holder_after", "is_live"]


@dataclass(frozen=True, slots=True)
class Holder:
    """The session that writes a transfer now, as the progress topic says."""

    session_id: str
    ingestor: str
    #: ``updated_at`` of its newest record: its last sign of life.
    since: datetime


def holder_after(current: Holder | None, record: TransferProgress) -> Holder | None:
    """The holder once ``record`` is read, ``current`` the holder before it.

    * A complete record ends the holding: the file is written, nobody holds it.
    * The holder's own records keep it (and say it is alive).
    * A record of a transfer nobody holds makes its session the holder (a claim, or the
      progress of a writer that publishes no claims).
    * Another session's claim wins when it is a takeover (its resume point proves the file:
      the device resends bytes Kafka holds and they must match), when it comes from the
      holder's own ingestor (that ingestor knows its old session is gone: a session of it
      still writing would have kept it from claiming), or when the holder published nothing
      for the claim's ``stale_seconds`` (its ingestor was killed).
    * Anything else (a losing claim, late progress of a session that was taken over) leaves
      the holder as it is.
    """
    if record.complete:
        return None
    mine = Holder(record.session_id, record.ingestor, record.updated_at)
    if current is None:
        return mine
    if record.session_id == current.session_id:
        return mine if record.updated_at > current.since else current
    if record.claim is None:
        return current
    if record.claim == "takeover" or record.ingestor == current.ingestor:
        return mine
    stale = record.stale_seconds
    if stale is not None and (record.updated_at - current.since).total_seconds() >= stale:
        return mine
    return current


def is_live(holder: Holder, now: datetime, stale_seconds: float) -> bool:
    """Whether ``holder`` may still be writing: it published something in the last
    ``stale_seconds`` (a claim made now against it would lose, unless a takeover)."""
    return (now - holder.since).total_seconds() < stale_seconds
