"""CRC-32C against its published check value and a bit-by-bit reference, by the table and by the
processor's CRC32 instruction (where it has one)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mimird._fast import crc32c as crc_module
from mimird._fast.crc32c import crc32c

HAS_INSTRUCTION = crc_module.use_instruction(True)


def reference_crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


@pytest.fixture(params=["instruction", "table"])
def way(request):
    if request.param == "instruction" and not HAS_INSTRUCTION:
        pytest.skip("this processor has no CRC32 instruction")
    crc_module.use_instruction(request.param == "instruction")
    yield request.param
    crc_module.use_instruction(True)


def test_check_value(way):
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0


@pytest.mark.parametrize("use_instruction", [True, False])
@given(a=st.binary(max_size=200), b=st.binary(max_size=50))
def test_against_reference_and_incremental(use_instruction, a, b):
    crc_module.use_instruction(use_instruction)
    try:
        assert crc32c(a) == reference_crc32c(a)
        assert crc32c(b, crc32c(a)) == crc32c(a + b)
    finally:
        crc_module.use_instruction(True)


def test_both_ways_agree_on_every_length_and_alignment(way):
    data = bytes(range(256)) * 3
    results = {}
    for start in range(9):
        for length in (0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 300):
            results[start, length] = crc32c(data[start:start + length])
    crc_module.use_instruction(way != "instruction")
    for (start, length), value in results.items():
        assert crc32c(data[start:start + length]) == value == reference_crc32c(data[start:start + length])
