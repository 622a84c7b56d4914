# Inline bit-stream helpers for the XOR chunk codec. Bits run most-significant first within each byte,
# as in Prometheus's tsdb/chunkenc/bstream.go; docs/format/chunks.md draws the chunk layout.
from libc.stdint cimport uint8_t, uint64_t


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    static inline uint64_t mimird_load_be64(const uint8_t* p) {
        uint64_t x;
        memcpy(&x, p, 8);
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        return x;
    #else
        return __builtin_bswap64(x);
    #endif
    }

    static inline void mimird_store_be64(uint8_t* p, uint64_t x) {
    #if !(defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__)
        x = __builtin_bswap64(x);
    #endif
        memcpy(p, &x, 8);
    }

    static inline int mimird_clz64(uint64_t x) { return __builtin_clzll(x); }
    static inline int mimird_ctz64(uint64_t x) { return __builtin_ctzll(x); }
    /* Compilers turn this form into one rotate instruction. */
    static inline uint64_t mimird_rotr64(uint64_t x, unsigned int n) {
        return (x >> (n & 63)) | (x << (-n & 63));
    }

    #define MIMIRD_LIKELY(x) __builtin_expect(!!(x), 1)
    #define MIMIRD_UNLIKELY(x) __builtin_expect(!!(x), 0)
    """
    uint64_t load_be64 "mimird_load_be64"(const uint8_t* p) noexcept nogil
    void store_be64 "mimird_store_be64"(uint8_t* p, uint64_t x) noexcept nogil
    # Both are undefined for 0: callers only ask about a non-zero XOR delta.
    int clz64 "mimird_clz64"(uint64_t x) noexcept nogil
    int ctz64 "mimird_ctz64"(uint64_t x) noexcept nogil
    # x rotated right by n % 64 bits.
    uint64_t rotr64 "mimird_rotr64"(uint64_t x, unsigned int n) noexcept nogil
    # Branch-layout hints for the decoders' hot loops: the condition's value, passed through.
    bint likely "MIMIRD_LIKELY"(bint condition) noexcept nogil
    bint unlikely "MIMIRD_UNLIKELY"(bint condition) noexcept nogil


cdef inline uint64_t peek64_slow(const uint8_t* data, Py_ssize_t size, uint64_t pos) noexcept nogil:
    cdef uint64_t first_byte = pos >> 3
    cdef unsigned int shift = pos & 7
    cdef uint64_t window = 0
    cdef uint64_t index
    cdef int i
    for i in range(8):
        index = first_byte + <uint64_t>i
        window <<= 8
        if index < <uint64_t>size:
            window |= data[index]
    index = first_byte + 8
    if shift and index < <uint64_t>size:
        return (window << shift) | (data[index] >> (8 - shift))
    return window << shift


cdef inline uint64_t peek57_unchecked(const uint8_t* data, uint64_t pos) noexcept nogil:
    """At least the 57 bits starting at bit `pos`, first bit in the top bit (the low pos & 7 bits are 0).

    Reads data[pos // 8 : pos // 8 + 8] without checking; the caller knows they exist.
    """
    return load_be64(data + (pos >> 3)) << (pos & 7)


cdef inline uint64_t peek64_unchecked(const uint8_t* data, uint64_t pos) noexcept nogil:
    """The 64 bits starting at bit `pos`, first bit in the top bit.

    Reads data[pos // 8 : pos // 8 + 9] without checking; the caller knows they exist.
    """
    cdef uint64_t first_byte = pos >> 3
    cdef unsigned int shift = pos & 7
    # The ninth byte supplies the `shift` bits shifted out of the word; with shift 0 it adds nothing.
    return (load_be64(data + first_byte) << shift) | ((<uint64_t>data[first_byte + 8] << shift) >> 8)


cdef inline uint64_t peek64(const uint8_t* data, Py_ssize_t size, uint64_t pos) noexcept nogil:
    """The 64 bits starting at bit `pos`, first bit in the top bit; bits past the end read as 0.

    Never reads outside data[0:size], so callers may run past the end and check the position after.
    """
    if (pos >> 3) + 9 <= <uint64_t>size:
        return peek64_unchecked(data, pos)
    return peek64_slow(data, size, pos)

