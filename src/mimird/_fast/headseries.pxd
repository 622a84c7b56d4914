# C-level interface of the head's per-series state, for other kernels (append, select) to cimport.
from libc.stdint cimport int64_t, uint64_t

from mimird._fast.xorchunk cimport XORChunk


cdef class MemSeries:
    cdef public object ref
    cdef public tuple labels
    # The lists start as the shared empty tuple and become lists on first use: most series in a
    # head have no closed chunk and no out-of-order sample, and five empty lists cost ~280 bytes each.
    cdef public object chunks
    cdef public object chunk_mints
    cdef public object chunk_maxts
    cdef public XORChunk open
    cdef public int64_t open_mint
    cdef public int64_t last_t
    cdef public uint64_t last_v_bits
    cdef public object ooo_t
    cdef public object ooo_v
    cdef public int64_t cut_at  # the block boundary the open chunk must not cross

    cpdef close_open_chunk(self)
    cdef int _append(self, int64_t t, double v, int64_t block_range) except -1
