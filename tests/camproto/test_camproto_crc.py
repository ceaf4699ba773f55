"""CRC-16 of the DATA command: reflected, poly 0x8408, init passed in, no final XOR."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from camproto import CHECK_VALUE, crc16


def reference_crc16(data: bytes, init: int = 0) -> int:
    """Bit-by-bit CRC-16: register shifted right, poly 0x8408, no final XOR (T2/T4 rules)."""
    crc = init
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


def test_check_value() -> None:
    assert crc16(b"123456789") == 0x2189 == CHECK_VALUE
    assert reference_crc16(b"123456789") == 0x2189


def test_empty_data_keeps_init() -> None:
    assert crc16(b"") == 0
    assert crc16(b"", 0xBEEF) == 0xBEEF


def test_accepts_bytearray_and_memoryview() -> None:
    data = b"123456789"
    assert crc16(bytearray(data)) == crc16(memoryview(data)) == 0x2189


def test_init_ffff_is_not_init_zero() -> None:
    # The reference page's check that init 0 is the right start: 0xFFFF gives another value.
    assert crc16(b"123456789", 0xFFFF) == reference_crc16(b"123456789", 0xFFFF) != 0x2189


@settings(max_examples=200)
@given(data=st.binary(max_size=2100), init=st.integers(0, 0xFFFF))
def test_matches_bitwise_reference(data: bytes, init: int) -> None:
    assert crc16(data, init) == reference_crc16(data, init)


@settings(max_examples=200)
@given(a=st.binary(max_size=1100), b=st.binary(max_size=1100), init=st.integers(0, 0xFFFF))
def test_chaining(a: bytes, b: bytes, init: int) -> None:
    # The device's chained packet CRC equals the CRC of all bytes since the chain started.
    assert crc16(b, crc16(a)) == crc16(a + b)
    assert crc16(b, crc16(a, init)) == crc16(a + b, init)
