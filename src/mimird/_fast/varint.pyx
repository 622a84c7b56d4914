# cython: language_level=3
"""Varints as Go's encoding/binary writes them: unsigned LEB128 and zig-zag signed.

Prometheus's index, chunk and WAL formats and the protobuf wire format all use them. The cdef inline
versions in varint.pxd are what other kernels cimport; these wrappers serve Python callers and tests.
"""
from libc.stdint cimport int64_t, uint8_t, uint64_t

from mimird._fast.varint cimport get_uvarint, put_uvarint, zigzag_decode, zigzag_encode


def encode_uvarint(unsigned long long value):
    """Return `value` (0 <= value < 2**64) as an unsigned varint."""
    cdef uint8_t out[10]
    cdef Py_ssize_t n = put_uvarint(out, value)
    return (<char*>out)[:n]


def encode_varint(long long value):
    """Return the signed `value` as a zig-zag varint."""
    cdef uint8_t out[10]
    cdef Py_ssize_t n = put_uvarint(out, zigzag_encode(value))
    return (<char*>out)[:n]


def decode_uvarint(const uint8_t[::1] buf not None, Py_ssize_t pos=0):
    """Decode an unsigned varint at `buf[pos:]`; return (value, next position).

    Raises ValueError when the buffer ends inside the varint or it overflows 64 bits.
    """
    cdef uint64_t value = 0
    cdef Py_ssize_t n
    if pos < 0 or pos > buf.shape[0]:
        raise ValueError("varint position out of range")
    if pos == buf.shape[0]:
        raise ValueError("truncated varint")
    n = get_uvarint(&buf[pos], buf.shape[0] - pos, &value)
    if n < 0:
        raise ValueError("truncated or overlong varint")
    return value, pos + n


def decode_varint(const uint8_t[::1] buf not None, Py_ssize_t pos=0):
    """Decode a zig-zag signed varint at `buf[pos:]`; return (value, next position)."""
    value, end = decode_uvarint(buf, pos)
    return zigzag_decode(<uint64_t>value), end


def uvarint_size(unsigned long long value):
    """Number of bytes the unsigned varint of `value` takes."""
    cdef int n = 1
    while value >= 0x80:
        value >>= 7
        n += 1
    return n
