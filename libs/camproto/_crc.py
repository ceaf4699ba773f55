"""CRC-16 of the camera file-transfer protocol.

Reflected CRC-16, polynomial 0x8408 (0x1021 reflected), initial value 0, no final XOR:
the register model catalogued as CRC-16/KERMIT, check value ``crc16(b"123456789") == 0x2189``.
The device chains it: each DATA packet's CRC is computed with the previous packet's CRC as the
initial value, so the last packet's CRC is the CRC of the whole file.
"""

from __future__ import annotations

import anycrc  # type: ignore[import-untyped]

__all__ = ["CHECK_VALUE", "crc16"]

CHECK_VALUE = 0x2189
_MODEL = anycrc.Model("CRC16-KERMIT")
_calc = _MODEL.calc


def crc16(data: bytes | bytearray | memoryview, init: int = 0) -> int:
    """Return the CRC of ``data`` continuing from ``init`` (the previous CRC, or 0)."""
    result: int = _calc(data, init)
    return result
