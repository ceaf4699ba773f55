"""Which IMEIs may connect: an optional allow-list per protocol, loaded when its listener starts.

The list is the union of a listener's ``imei_allow_list`` (a file, one IMEI a line, ``#``
starts a comment) and ``imei_allow`` (comma-separated). Both unset means every IMEI may
connect. A configured file that is missing, malformed or lists no IMEI at all stops the
ingestor at start: an empty mount must not silently lock out, or let in, the whole fleet.

The check itself runs in the session as soon as the device names its IMEI
(:func:`check_imei`, raising :class:`NotAllowed`); nothing of the device is published
before it passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .settings import ListenerSettings

__all__ = ["AllowList", "NotAllowed", "check_imei", "load", "reload"]

_IMEI_DIGITS = 15


class NotAllowed(Exception):
    """The device's IMEI is not on the configured allow-list; its session is closed."""


@dataclass(frozen=True, slots=True)
class AllowList:
    """``imeis`` as 15-digit strings; ``None`` allows every IMEI."""

    imeis: frozenset[str] | None
    source: str = ""

    def refusal(self, imei: str) -> str | None:
        """Why ``imei`` may not upload, or None if it may."""
        if self.imeis is None or imei in self.imeis:
            return None
        return f"IMEI {imei} not in the allow-list ({self.source})"

    @property
    def size(self) -> int | None:
        return None if self.imeis is None else len(self.imeis)


def _normalise(text: str, where: str) -> str:
    if not text.isascii() or not text.isdigit() or len(text) > _IMEI_DIGITS:
        raise ValueError(f"{where}: {text[:40]!r} is not an IMEI (up to 15 digits)")
    return text.zfill(_IMEI_DIGITS)  # as sessions name it: f"{imei:015d}"


def parse(text: str, source: str) -> set[str]:
    """IMEIs of an allow-list file's text; raises ValueError naming the first bad line."""
    imeis: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if entry:
            imeis.add(_normalise(entry, f"{source}:{number}"))
    return imeis


def from_settings(settings: ListenerSettings) -> AllowList:
    """Read the allow-list the settings name; raises ValueError/OSError if it is unusable."""
    path, inline = settings.imei_allow_list.strip(), settings.imei_allow.strip()
    if not path and not inline:
        return AllowList(None, "")
    imeis: set[str] = set()
    sources = []
    if path:
        found = parse(Path(path).read_text(encoding="utf-8"), path)
        if not found:
            raise ValueError(f"imei_allow_list {path} lists no IMEI; unset it to allow every IMEI")
        imeis |= found
        sources.append(path)
    if inline:
        entries = [e.strip() for e in inline.split(",")]
        imeis |= {_normalise(e, "imei_allow") for e in entries if e}
        sources.append("imei_allow")
    return AllowList(frozenset(imeis), " + ".join(sources))


# The list is settings-derived and read-only: one per (file, inline list), read at start.
_loaded: dict[tuple[str, str], AllowList] = {}


def reload(settings: ListenerSettings) -> AllowList:
    """Read the allow-list of ``settings`` afresh. :class:`~ingestor.server.Ingestor` calls
    this when a listener starts, so a broken list fails there and sessions find it loaded."""
    allow = _loaded[settings.imei_allow_list, settings.imei_allow] = from_settings(settings)
    return allow


def load(settings: ListenerSettings) -> AllowList:
    """The allow-list of ``settings`` as last read (read now if it never was)."""
    allow = _loaded.get((settings.imei_allow_list, settings.imei_allow))
    return reload(settings) if allow is None else allow


def check_imei(settings: ListenerSettings, imei: str) -> None:
    """Raise :class:`NotAllowed` naming ``imei`` if the configured allow-list excludes it."""
    refusal = load(settings).refusal(imei)
    if refusal is not None:
        raise NotAllowed(refusal)
