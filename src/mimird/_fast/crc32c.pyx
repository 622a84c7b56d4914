# cython: language_level=3
"""CRC-32C (Castagnoli), the checksum of Prometheus's index, chunk files and WAL.

Slice-by-8 table lookup; the loop runs without the GIL, so large buffers checksum in parallel
with other threads.
"""
from libc.stdint cimport uint8_t, uint32_t

cdef uint32_t TABLE[8][256]


cdef void _build_tables() noexcept:
    cdef uint32_t poly = 0x82F63B78  # reversed Castagnoli polynomial
    cdef uint32_t crc
    cdef int i, j
    for i in range(256):
        crc = i
        for j in range(8):
            crc = (crc >> 1) ^ (poly if crc & 1 else 0)
        TABLE[0][i] = crc
    for i in range(256):
        for j in range(1, 8):
            TABLE[j][i] = (TABLE[j - 1][i] >> 8) ^ TABLE[0][TABLE[j - 1][i] & 0xFF]


_build_tables()


cdef uint32_t crc32c_update(uint32_t crc, const uint8_t* data, Py_ssize_t n) noexcept nogil:
    """Continue a CRC-32C over `n` bytes (crc is the finalised value of the previous part)."""
    cdef Py_ssize_t i = 0
    cdef uint32_t lo, hi
    crc = ~crc
    while n - i >= 8:
        lo = crc ^ (<uint32_t>data[i] | (<uint32_t>data[i + 1] << 8) | (<uint32_t>data[i + 2] << 16)
                    | (<uint32_t>data[i + 3] << 24))
        hi = (<uint32_t>data[i + 4] | (<uint32_t>data[i + 5] << 8) | (<uint32_t>data[i + 6] << 16)
              | (<uint32_t>data[i + 7] << 24))
        crc = (TABLE[7][lo & 0xFF] ^ TABLE[6][(lo >> 8) & 0xFF] ^ TABLE[5][(lo >> 16) & 0xFF]
               ^ TABLE[4][lo >> 24] ^ TABLE[3][hi & 0xFF] ^ TABLE[2][(hi >> 8) & 0xFF]
               ^ TABLE[1][(hi >> 16) & 0xFF] ^ TABLE[0][hi >> 24])
        i += 8
    while i < n:
        crc = TABLE[0][(crc ^ data[i]) & 0xFF] ^ (crc >> 8)
        i += 1
    return ~crc


def crc32c(const uint8_t[::1] data not None, unsigned int value=0):
    """CRC-32C of `data`; pass a previous result as `value` to checksum a buffer in pieces."""
    cdef uint32_t crc = value
    cdef Py_ssize_t n = data.shape[0]
    if n == 0:
        return crc
    with nogil:
        crc = crc32c_update(crc, &data[0], n)
    return crc
