"""The headers of ``fleetgate.camera.chunks.v1`` records: one encoder and one decoder.

The ingestor writes them (:meth:`ChunkMeta.headers`), the assembler and the tests read them
(:meth:`ChunkMeta.from_headers`), as :class:`connector.retry.RetryState` does for retries.
Header names are :class:`~contracts.topics.ChunkHeader`; values are ASCII decimal numbers
or the transfer id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .topics import ChunkHeader, RecordKind

__all__ = ["ChunkHeaderError", "ChunkMeta", "Headers"]

#: Kafka headers as a client hands them over: pairs, or a mapping.
Headers = Iterable[tuple[str, bytes]] | Mapping[str, bytes]


class ChunkHeaderError(ValueError):
    """A chunk-topic record whose key or headers break the contract."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ChunkMeta:
    """What the key and headers of one chunk-topic record say.

    ``offset``, ``crc_init``, ``crc`` and ``file_crc`` are those of ``chunk`` records (0 on
    the others); ``origin`` is on ``chunk`` records (required) and ``end`` records.
    """

    kind: RecordKind
    transfer_id: str
    offset: int = 0
    crc_init: int = 0
    crc: int = 0
    file_crc: int = 0
    origin: int | None = None

    @classmethod
    def start(cls, transfer_id: str) -> ChunkMeta:
        return cls(kind=RecordKind.START, transfer_id=transfer_id)

    @classmethod
    def chunk(
        cls, transfer_id: str, *, offset: int, crc_init: int, crc: int, file_crc: int, origin: int
    ) -> ChunkMeta:
        return cls(
            kind=RecordKind.CHUNK,
            transfer_id=transfer_id,
            offset=offset,
            crc_init=crc_init,
            crc=crc,
            file_crc=file_crc,
            origin=origin,
        )

    @classmethod
    def end(cls, transfer_id: str, *, origin: int) -> ChunkMeta:
        return cls(kind=RecordKind.END, transfer_id=transfer_id, origin=origin)

    def headers(self) -> list[tuple[str, bytes]]:
        """The Kafka headers of the record (the key is the transfer id)."""
        out = [_pair(ChunkHeader.KIND, self.kind), _pair(ChunkHeader.TRANSFER, self.transfer_id)]
        if self.kind is RecordKind.CHUNK:
            out += [
                _pair(ChunkHeader.OFFSET, self.offset),
                _pair(ChunkHeader.CRC_INIT, self.crc_init),
                _pair(ChunkHeader.CRC, self.crc),
                _pair(ChunkHeader.FILE_CRC, self.file_crc),
            ]
        if self.origin is not None:
            out.append(_pair(ChunkHeader.ORIGIN, self.origin))
        return out

    @classmethod
    def from_headers(cls, key: bytes | None, headers: Headers | None) -> ChunkMeta:
        """Read a record's key and headers; :class:`ChunkHeaderError` if they break the
        contract (the key wins over ``fg-transfer``, which only stands in for a missing key)."""
        items = headers.items() if isinstance(headers, Mapping) else headers or ()
        found: dict[str, str] = {}
        for name, raw in items:
            try:
                found[name] = bytes(raw).decode("ascii")
            except (UnicodeDecodeError, TypeError):
                raise ChunkHeaderError(f"header {name} is not ASCII") from None
        try:
            transfer_id = (key or b"").decode("ascii")
        except UnicodeDecodeError:
            raise ChunkHeaderError("record key is not ASCII") from None
        if not transfer_id:
            transfer_id = found.get(ChunkHeader.TRANSFER, "")
        if not transfer_id:
            raise ChunkHeaderError("record has neither key nor fg-transfer header")
        kind_text = found.get(ChunkHeader.KIND)
        try:
            kind = RecordKind(kind_text or "")
        except ValueError:
            raise ChunkHeaderError(f"fg-kind is {kind_text!r}") from None

        def number(header: ChunkHeader, *, required: bool = True) -> int | None:
            text = found.get(header)
            if text is None:
                if required:
                    raise ChunkHeaderError(f"{kind} record without {header} header")
                return None
            try:
                result = int(text)
            except ValueError:
                raise ChunkHeaderError(f"{header} is {text!r}, not a number") from None
            if result < 0:
                raise ChunkHeaderError(f"{header} is negative ({result})")
            return result

        origin = number(ChunkHeader.ORIGIN, required=kind is RecordKind.CHUNK)
        if kind is not RecordKind.CHUNK:
            return cls(kind=kind, transfer_id=transfer_id, origin=origin)
        return cls(
            kind=kind,
            transfer_id=transfer_id,
            offset=number(ChunkHeader.OFFSET) or 0,
            crc_init=number(ChunkHeader.CRC_INIT) or 0,
            crc=number(ChunkHeader.CRC) or 0,
            file_crc=number(ChunkHeader.FILE_CRC) or 0,
            origin=origin,
        )


def _pair(name: ChunkHeader, value: object) -> tuple[str, bytes]:
    return (name.value, str(value).encode("ascii"))
