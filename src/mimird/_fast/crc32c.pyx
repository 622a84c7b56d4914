# cython: language_level=3
"""CRC-32C (Castagnoli), the checksum of Prometheus's index, chunk files and WAL.

With the CRC32 instruction of SSE4.2 where the processor has it (x86-64 since 2008; the module is built
for the baseline x86-64, so the instruction is used only in one function compiled for it and chosen at
run time), else a slice-by-8 table lookup. Every query over blocks checks the chunks and index entries it
reads, as Prometheus's readers do; the table took 2-3% of such a query's CPU time, the instruction about
a third of that. The loops run without the GIL, so large buffers checksum in parallel with other threads.
"""
from libc.stdint cimport uint8_t, uint32_t

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    /* crc is the running (inverted) value, as the table loop keeps it. */
    __attribute__((target("sse4.2")))
    static uint32_t mimird_crc32c_sse42(uint32_t crc, const uint8_t* data, Py_ssize_t n) {
        uint64_t running = crc, word;
        while (n >= 8) {
            memcpy(&word, data, 8);
            running = __builtin_ia32_crc32di(running, word);
            data += 8;
            n -= 8;
        }
        while (n > 0) {
            running = __builtin_ia32_crc32qi((uint32_t)running, *data);
            data++;
            n--;
        }
        return (uint32_t)running;
    }
    static int mimird_crc32c_has_sse42(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("sse4.2");
    }
    #else
    static uint32_t mimird_crc32c_sse42(uint32_t crc, const uint8_t* data, Py_ssize_t n) { return crc; }
    static int mimird_crc32c_has_sse42(void) { return 0; }
    #endif
    """
    uint32_t mimird_crc32c_sse42(uint32_t crc, const uint8_t* data, Py_ssize_t n) nogil
    int mimird_crc32c_has_sse42()

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


cdef bint _use_sse42 = mimird_crc32c_has_sse42() != 0


cdef uint32_t crc32c_update(uint32_t crc, const uint8_t* data, Py_ssize_t n) noexcept nogil:
    """Continue a CRC-32C over `n` bytes (crc is the finalised value of the previous part)."""
    if _use_sse42:
        return ~mimird_crc32c_sse42(~crc, data, n)
    return _table_update(crc, data, n)


cdef uint32_t _table_update(uint32_t crc, const uint8_t* data, Py_ssize_t n) noexcept nogil:
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


def use_instruction(bint enabled):
    """Use the CRC32 instruction (when the processor has it) or the table: for tests of both. Returns
    whether the instruction is in use now."""
    global _use_sse42
    _use_sse42 = enabled and mimird_crc32c_has_sse42() != 0
    return _use_sse42
