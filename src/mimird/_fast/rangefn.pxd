# Declarations of the range-function kernels in rangefn.pyx, for Cython code that evaluates one
# series at a time with its own buffers (Python callers use evaluate/evaluate_batch instead).
cimport numpy as cnp
from libc.stdint cimport int64_t, uint8_t


cdef enum RangeFunction:
    FN_RATE
    FN_INCREASE
    FN_DELTA
    FN_IRATE
    FN_IDELTA
    FN_DERIV
    FN_PREDICT_LINEAR
    FN_RESETS
    FN_CHANGES
    FN_AVG
    FN_SUM
    FN_COUNT
    FN_MIN
    FN_MAX
    FN_LAST
    FN_PRESENT
    FN_STDDEV
    FN_STDVAR
    FN_QUANTILE
    FN_MAD
    FN_TS_OF_MIN
    FN_TS_OF_MAX
    FN_TS_OF_LAST
    FN_DOUBLE_EXPONENTIAL_SMOOTHING


cdef struct Series:
    const int64_t* ts
    const double* vals
    Py_ssize_t n


cdef struct StepGrid:
    const int64_t* eval_ts
    Py_ssize_t n_steps
    int64_t range_ms
    const double* param0   # per-step value of the first scalar parameter
    const double* param1   # per-step value of the second scalar parameter
    int64_t intercept_shift_ms


cdef struct Scratch:
    double* values         # room for two copies of one series' values (quantile and mad sorting)
    Py_ssize_t* indexes    # room for one series' sample indexes (resets list, min/max deque)


# Evaluate range function `fn` for one series over the grid into out[:n_steps] and
# present[:n_steps]. `scratch` needs 2 * s.n doubles and s.n indexes; the samples and grid must
# meet the assumptions stated in rangefn.pyx's module docstring.
cdef void evaluate_series(int fn, const Series* s, const StepGrid* g, Scratch* scratch, double* out,
                          uint8_t* present) noexcept nogil


# evaluate_batch's step arguments (function name, evaluation times, range, scalar parameters, predict_linear's
# shift) checked and set into `grid`, with the kernel's code in fn[0]; returns the arrays the grid points
# into, to be kept alive as long as the grid is used.
cdef tuple prepare_grid(str name, object eval_ts, long long range_ms, tuple params, long long intercept_shift_ms,
                        StepGrid* grid, int* fn)

# The (n_series, n_steps) output of a batch: `given` checked to be a writable C-contiguous array of that
# shape (float64 values, or uint8 presence), or a new one (presence zeroed).
cdef cnp.ndarray output_rows(object given, Py_ssize_t n_series, Py_ssize_t n_steps, bint is_present)
