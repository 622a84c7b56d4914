# C-level interface of the aggregation folds, for kernels that fold samples where they decode them (the head).
cimport numpy as cnp
from libc.stdint cimport int64_t


cdef struct Cells:
    # Accumulators of n (group, step) cells; group g at step j is cell g * n_steps + j. All start zeroed.
    double* value
    cnp.uint8_t* seen
    double* comp
    double* mean
    double* count
    cnp.uint8_t* incremental
    Py_ssize_t n


cdef class SelectFold:
    # One `select_fold`: its arguments, accumulators and counts, fed one series at a time.
    cdef int code
    cdef object times_array
    cdef object groups_array
    cdef const int64_t* times
    cdef Py_ssize_t n_steps
    cdef int64_t lookback_ms
    cdef const cnp.intp_t* groups
    cdef Py_ssize_t n_series
    cdef Py_ssize_t n_groups
    cdef double* value
    cdef cnp.uint8_t* seen
    cdef cnp.uint8_t* series_present
    cdef Cells cells
    cdef Py_ssize_t selected
    cdef bint finished

    cdef void add_series(self, Py_ssize_t k, const int64_t* ts, const double* vals, Py_ssize_t n) noexcept nogil
    cdef Py_ssize_t fold_steps(self, Py_ssize_t k, const int64_t* ts, const double* vals, Py_ssize_t n,
                               Py_ssize_t first, Py_ssize_t end) noexcept nogil
    cdef void note_selected(self, Py_ssize_t k, Py_ssize_t selected) noexcept nogil
