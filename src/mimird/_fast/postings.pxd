# Postings set algebra and XXH64 for other Cython modules (the block index reader, the head) to cimport.
# Every list is sorted and duplicate-free; `out` must have room for the largest possible result.
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t


cdef Py_ssize_t intersect_into(const uint64_t* a, Py_ssize_t na, const uint64_t* b, Py_ssize_t nb,
                               uint64_t* out) noexcept nogil
cdef Py_ssize_t subtract_into(const uint64_t* a, Py_ssize_t na, const uint64_t* b, Py_ssize_t nb,
                              uint64_t* out) noexcept nogil
cdef Py_ssize_t merge_two_into(const uint64_t* a, Py_ssize_t na, const uint64_t* b, Py_ssize_t nb,
                               uint64_t* out) noexcept nogil
cdef uint64_t xxh64(const uint8_t* p, Py_ssize_t length, uint64_t seed) noexcept nogil


cdef class PostingsBuilder:
    cdef object _buffer
    cdef Py_ssize_t _size

    cdef _grow(self, Py_ssize_t needed)


cdef class SeriesLabelStore:
    cdef object _refs
    cdef object _offsets
    cdef object _pairs
    cdef uint64_t* _refs_data
    cdef int64_t* _offsets_data
    cdef uint32_t* _pairs_data
    cdef Py_ssize_t _count
    cdef Py_ssize_t _capacity
    cdef Py_ssize_t _pairs_used
    cdef Py_ssize_t _pairs_capacity

    cdef _set_buffers(self, refs, offsets, pairs)
    cdef _grow(self, Py_ssize_t extra_pairs)


cdef class RefsByHash:
    cdef object _hashes
    cdef object _refs
    cdef uint64_t* _hashes_data
    cdef uint64_t* _refs_data
    cdef Py_ssize_t _mask
    cdef Py_ssize_t _count

    cdef _allocate(self, Py_ssize_t size)
    cdef void _insert(self, uint64_t label_hash, uint64_t ref) noexcept nogil
    cdef _rehash(self, const uint64_t[::1] hashes, const uint64_t[::1] refs)
