# C-level interface of the sample merge of mimird._fast.batchmerge, for kernels that merge parts they
# decoded themselves (mimird._fast.blockselect).
from libc.stdint cimport int64_t


cdef struct Part:
    const int64_t* ts       # a series' samples in one input
    const double* vals
    Py_ssize_t pos          # next sample (merge cursor)
    Py_ssize_t end


cdef Py_ssize_t merge_parts(Part* parts, Py_ssize_t n, int64_t* out_t, double* out_v,
                            Py_ssize_t filled) noexcept nogil
