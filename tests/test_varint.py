"""The Cython varint codec against Go's encoding/binary rules, checked by hypothesis."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mimird._fast import varint


def reference_uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_uvarint_round_trip(value):
    encoded = varint.encode_uvarint(value)
    assert encoded == reference_uvarint(value)
    assert varint.uvarint_size(value) == len(encoded)
    assert varint.decode_uvarint(encoded + b"\xff") == (value, len(encoded))


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_varint_round_trip(value):
    encoded = varint.encode_varint(value)
    zigzag = (value << 1) ^ (value >> 63)
    assert encoded == reference_uvarint(zigzag & (2**64 - 1))
    assert varint.decode_varint(encoded) == (value, len(encoded))


def test_known_values():
    assert varint.encode_uvarint(300) == b"\xac\x02"
    assert varint.encode_varint(-1) == b"\x01"
    assert varint.decode_uvarint(b"\x00\x96\x01", 1) == (150, 3)


@pytest.mark.parametrize("data", [b"", b"\x80", b"\xff\xff", b"\xff" * 9 + b"\x02"])
def test_truncated_or_overlong(data):
    with pytest.raises(ValueError):
        varint.decode_uvarint(data)
