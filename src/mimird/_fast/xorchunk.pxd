# C-level interface of the XOR chunk codec (Prometheus chunk encoding 1) for other kernels to cimport.
# Byte layout: docs/format/chunks.md.
cimport cython
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint64_t


cdef enum:
    XOR_SAMPLE = 1          # xor_cursor_next read one more sample
    XOR_END = 0             # all num_samples samples have been read
    XOR_CORRUPT = -1        # truncated or malformed chunk
    XOR_OUT_OF_SPACE = -2   # more samples in range than the output arrays hold


cdef struct XORCursor:
    # Decoding state; after the last sample it is also the state an appender resumes from.
    const uint8_t* stream   # bit stream after the 2-byte sample count
    Py_ssize_t stream_size  # bytes
    uint64_t pos            # next bit to read
    uint64_t end            # stream_size * 8
    uint16_t num_total
    uint16_t num_read
    int64_t t
    uint64_t value_bits
    uint64_t t_delta
    uint8_t leading
    uint8_t trailing


cdef int xor_cursor_init(XORCursor* cursor, const uint8_t* chunk, Py_ssize_t size) noexcept nogil
cdef int xor_cursor_next(XORCursor* cursor) noexcept nogil
cdef Py_ssize_t xor_decode_range(XORCursor* cursor, int64_t mint, int64_t maxt,
                                 int64_t* out_t, double* out_v, Py_ssize_t capacity) noexcept nogil
cdef Py_ssize_t xor_decode_until(XORCursor* cursor, int64_t mint, int64_t maxt, int64_t* out_t, double* out_v,
                                 Py_ssize_t capacity, bint* past_maxt) noexcept nogil


@cython.final
cdef class XORChunk:
    cdef uint8_t* buf
    cdef Py_ssize_t capacity
    # Bits are gathered in `pending` (first bit in the top bit), which covers the 64 bits from bit
    # `pending_start` (a multiple of 8) of buf and is stored whole when full or when bytes() is asked.
    cdef uint64_t pending
    cdef uint64_t pending_start
    cdef int pending_bits
    cdef bint last_write_whole_bytes
    cdef unsigned int num
    cdef int64_t first_t
    cdef int64_t t
    cdef uint64_t value_bits
    cdef uint64_t t_delta
    cdef uint8_t leading
    cdef uint8_t trailing

    cdef int _reserve(self, Py_ssize_t nbytes) except -1
    cdef int _append(self, int64_t t, uint64_t value_bits) except -1
    cdef inline void _write_bits(self, uint64_t value, int nbits) noexcept nogil
    cdef inline void _write_value(self, uint64_t value_bits) noexcept nogil
    cdef uint64_t _nbits(self) noexcept nogil
    cdef Py_ssize_t _length(self) noexcept nogil
    cpdef append(self, int64_t t, double v)
