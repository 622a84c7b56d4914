# C-level view of a HeadSnapshot, for kernels that decode the head's series among other sources'
# (mimird._fast.blockselect's merged reads).
from libc.stdint cimport int64_t, uint8_t


cdef struct ChunkRef:
    const uint8_t* data     # NULL while the bytes are in the scratch buffer (then `offset` says where)
    Py_ssize_t offset
    Py_ssize_t size


cdef struct HeadView:
    # A snapshot's noted chunks and out-of-order samples, valid while the snapshot is alive.
    const ChunkRef* chunks
    const Py_ssize_t* chunk_offsets
    const uint8_t* scratch
    const int64_t* ooo_t
    const double* ooo_v
    const Py_ssize_t* ooo_offsets
    const Py_ssize_t* capacity_offsets   # series i decodes into at most capacity_offsets[i + 1] - [i] samples
    int64_t mint
    int64_t maxt
    Py_ssize_t num_series


# The view of `snapshot` (a HeadSnapshot; TypeError otherwise) and its series' label sets, in order.
cdef HeadView head_view(object snapshot) except *
cdef list head_labels(object snapshot)

# Series i's samples in [mint, maxt], with its out-of-order ones merged in, decoded into out_t/out_v (room
# for its capacity); returns how many. On a corrupt chunk sets failed[0] to its index and returns 0.
cdef Py_ssize_t decode_head_series(const HeadView* view, Py_ssize_t i, int64_t* out_t, double* out_v,
                                   Py_ssize_t* failed) noexcept nogil

# The earliest time series i's samples in the range can have (from its first chunk's first sample and its
# out-of-order samples); INT64 max when it has none.
cdef int64_t head_series_start(const HeadView* view, Py_ssize_t i) noexcept nogil
