# C-level interface of the head's per-series state, for other kernels (append, select) to cimport.
from cpython.bytes cimport PyBytes_AS_STRING
from cpython.object cimport PyObject
from libc.stdint cimport int64_t, uint8_t, uint64_t

from mimird._fast.xorchunk cimport XORChunk


# A series' closed chunks live in one immutable bytes object, its "pack": for each chunk, oldest first, a
# ClosedChunk record, then every chunk's bytes end to end. A query reads a series' chunks cold (a dashboard
# refreshes after the caches have been emptied), and on this kind of machine each object on its own page
# costs a page walk; one pack per series is one or two pages where a list of chunk objects and their bound
# arrays were a dozen. Packs are replaced, never changed, so a query's snapshot may point into one it holds.
cdef struct ClosedChunk:
    int64_t mint
    int64_t maxt
    int64_t end    # where the chunk's bytes end, counted from the start of the pack's chunk bytes


cdef inline const ClosedChunk* pack_records(bytes pack) noexcept:
    return <const ClosedChunk*>PyBytes_AS_STRING(pack)


cdef inline const uint8_t* pack_data(bytes pack, Py_ssize_t num_chunks) noexcept:
    return <const uint8_t*>PyBytes_AS_STRING(pack) + num_chunks * sizeof(ClosedChunk)


cdef class MemSeries:
    cdef public object ref
    cdef public tuple labels
    cdef readonly bytes closed           # the pack of closed chunks (empty when there are none)
    cdef readonly Py_ssize_t num_closed  # how many chunks the pack holds
    cdef public XORChunk open
    cdef public int64_t open_mint
    cdef public int64_t last_t
    cdef public uint64_t last_v_bits
    # The out-of-order lists start as the shared empty tuple and become lists on first use: most series
    # in a head have no out-of-order sample, and two empty lists cost ~110 bytes.
    cdef public object ooo_t
    cdef public object ooo_v
    cdef public int64_t cut_at  # the block boundary the open chunk must not cross

    cdef bytes _closed_bytes(self, Py_ssize_t i)
    cpdef close_open_chunk(self)
    cdef int _append(self, int64_t t, double v, int64_t block_range) except -1


cdef struct RefSlot:
    uint64_t ref
    PyObject* series       # owned reference to a MemSeries; NULL: the slot is empty


cdef class SeriesByRef:
    cdef RefSlot* slots
    cdef Py_ssize_t mask
    cdef int shift
    cdef Py_ssize_t used

    cdef Py_ssize_t home(self, uint64_t ref) noexcept nogil
    cdef PyObject* find(self, uint64_t ref) noexcept nogil
    cdef RefSlot* _slot_for(self, uint64_t ref) noexcept
    cdef int _grow(self) except -1
