"""CRC-32C against its published check value and a bit-by-bit reference."""

from hypothesis import given
from hypothesis import strategies as st

from mimird._fast.crc32c import crc32c


def reference_crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_check_value():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


@given(st.binary(max_size=200), st.binary(max_size=50))
def test_against_reference_and_incremental(a, b):
    assert crc32c(a) == reference_crc32c(a)
    assert crc32c(b, crc32c(a)) == crc32c(a + b)
