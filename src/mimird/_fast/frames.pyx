# cython: language_level=3
"""Reading the evaluator's (series x steps) frames: which rows have samples, and the samples themselves.

A frame holds a value matrix and a presence mask. A range query's result, a subquery's series and the
rows a range function keeps are all read out of one: per series with any sample, the steps where it has
one and its values there. Done with numpy that is a mask test and two boolean indexings per series, each
call costing tens of microseconds when the CPU's caches are cold (a dashboard's refresh comes after an
idle pause). Here each is one call for the whole frame, and so is the commonest arithmetic on one, a
vector combined with a scalar by + - * /.
"""
import numpy as np

cimport numpy as cnp
from libc.stdint cimport int64_t

cnp.import_array()


cdef struct Mask:
    # A (series x steps) presence mask of bool or uint8, in any memory layout.
    char* data
    Py_ssize_t rows
    Py_ssize_t steps
    Py_ssize_t row_stride
    Py_ssize_t col_stride


cdef struct FrameData:
    # The values (float64, series x steps) and the steps (int64) read alongside a Mask.
    char* values
    Py_ssize_t value_row
    Py_ssize_t value_col
    char* steps
    Py_ssize_t step_stride


cdef cnp.ndarray _as_mask(cnp.ndarray present):
    # The engine's masks are bool (or uint8) already; anything else is converted, not refused.
    if cnp.PyArray_TYPE(present) == cnp.NPY_BOOL or cnp.PyArray_TYPE(present) == cnp.NPY_UINT8:
        return present
    return present.astype(bool)


cdef cnp.ndarray _as_type(cnp.ndarray array, int type_num, object dtype):
    return array if cnp.PyArray_TYPE(array) == type_num else array.astype(dtype)


cdef int _mask_of(cnp.ndarray present, Mask* mask) except -1:
    if cnp.PyArray_NDIM(present) != 2:
        raise ValueError("present must be two-dimensional")
    if cnp.PyArray_TYPE(present) != cnp.NPY_BOOL and cnp.PyArray_TYPE(present) != cnp.NPY_UINT8:
        raise TypeError("present must be bool or uint8")  # (callers convert with _as_mask)
    mask.data = <char*>cnp.PyArray_DATA(present)
    mask.rows = cnp.PyArray_DIM(present, 0)
    mask.steps = cnp.PyArray_DIM(present, 1)
    mask.row_stride = cnp.PyArray_STRIDE(present, 0)
    mask.col_stride = cnp.PyArray_STRIDE(present, 1)
    return 0


cdef int _frame_of(cnp.ndarray values, cnp.ndarray present, cnp.ndarray steps, Mask* mask,
                   FrameData* frame) except -1:
    _mask_of(present, mask)
    if cnp.PyArray_NDIM(values) != 2 or cnp.PyArray_NDIM(steps) != 1:
        raise ValueError("values must be two-dimensional, steps one-dimensional")
    if cnp.PyArray_TYPE(values) != cnp.NPY_FLOAT64 or cnp.PyArray_TYPE(steps) != cnp.NPY_INT64:
        raise TypeError("values must be float64 and steps int64")  # (callers convert with _as_type)
    if cnp.PyArray_DIM(values, 0) != mask.rows or cnp.PyArray_DIM(values, 1) != mask.steps \
            or cnp.PyArray_DIM(steps, 0) != mask.steps:
        raise ValueError("values, present and steps differ in shape")
    frame.values = <char*>cnp.PyArray_DATA(values)
    frame.value_row = cnp.PyArray_STRIDE(values, 0)
    frame.value_col = cnp.PyArray_STRIDE(values, 1)
    frame.steps = <char*>cnp.PyArray_DATA(steps)
    frame.step_stride = cnp.PyArray_STRIDE(steps, 0)
    return 0


cdef inline Py_ssize_t _row_count(const Mask* mask, Py_ssize_t row) noexcept:
    cdef const char* cells = mask.data + row * mask.row_stride
    cdef Py_ssize_t j, count = 0
    for j in range(mask.steps):
        count += cells[j * mask.col_stride] != 0
    return count


cdef inline Py_ssize_t _copy_row(const Mask* mask, const FrameData* frame, Py_ssize_t row, int64_t* ts,
                                 double* vals) noexcept:
    # The row's present steps and values into ts/vals; returns how many.
    cdef const char* cells = mask.data + row * mask.row_stride
    cdef const char* row_values = frame.values + row * frame.value_row
    cdef Py_ssize_t j, w = 0
    for j in range(mask.steps):
        if cells[j * mask.col_stride]:
            ts[w] = (<const int64_t*>(frame.steps + j * frame.step_stride))[0]
            vals[w] = (<const double*>(row_values + j * frame.value_col))[0]
            w += 1
    return w


def present_rows(cnp.ndarray values, cnp.ndarray present, cnp.ndarray steps, rows):
    """For each row index of `rows`, in that order, whose row of `present` has a True: `(row, timestamps,
    values)`, the steps (int64) where it is present and its values (float64) there, as new arrays.

    `values` (float64) and `present` (bool or uint8) have the shape (series, len(steps)), in any memory
    layout; `steps` is a one-dimensional int64 array. Other types are converted first.
    """
    cdef Mask mask
    cdef FrameData frame
    values, present = _as_type(values, cnp.NPY_FLOAT64, np.float64), _as_mask(present)
    steps = _as_type(steps, cnp.NPY_INT64, np.int64)
    _frame_of(values, present, steps, &mask, &frame)
    cdef Py_ssize_t row, count
    cdef cnp.npy_intp dims[1]
    cdef cnp.ndarray out_ts, out_vals
    cdef list out = []
    for item in rows:
        row = item
        if row < 0 or row >= mask.rows:
            raise IndexError("row out of range")
        count = _row_count(&mask, row)
        if count == 0:
            continue
        dims[0] = count
        out_ts = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
        out_vals = cnp.PyArray_EMPTY(1, dims, cnp.NPY_FLOAT64, 0)
        _copy_row(&mask, &frame, row, <int64_t*>cnp.PyArray_DATA(out_ts), <double*>cnp.PyArray_DATA(out_vals))
        out.append((row, out_ts, out_vals))
    return out


def count_present(cnp.ndarray present):
    """How many cells of a (series x steps) presence mask (bool or uint8; others are converted) are set."""
    cdef Mask mask
    present = _as_mask(present)
    _mask_of(present, &mask)
    cdef Py_ssize_t row, cells = 0
    for row in range(mask.rows):
        cells += _row_count(&mask, row)
    return cells


def rows_present(cnp.ndarray present, bint all_as_none=False):
    """`(cells, rows)` of a (series x steps) presence mask (bool or uint8): how many cells are set, and the
    indexes of the rows with at least one, in order (None instead of every row, with `all_as_none`). Masks of
    other types are converted first."""
    cdef Mask mask
    present = _as_mask(present)
    _mask_of(present, &mask)
    cdef Py_ssize_t cells
    rows = _rows_with_points(&mask, all_as_none, &cells)
    return cells, rows


cdef list _rows_with_points(const Mask* mask, bint all_as_none, Py_ssize_t* cells):
    # rows_present's work: the rows with a set cell (None for all of them, with all_as_none); cells[0] the count.
    cdef Py_ssize_t row, in_row
    cdef list rows = None
    cells[0] = 0
    for row in range(mask.rows):
        in_row = _row_count(mask, row)
        cells[0] += in_row
        if in_row == 0 and rows is None:
            rows = list(range(row))  # the first row without a point: from here on the rows are listed
        elif in_row and rows is not None:
            rows.append(row)
    if rows is None and not all_as_none:
        rows = list(range(mask.rows))
    return rows


def present_batch(cnp.ndarray values, cnp.ndarray present, cnp.ndarray steps):
    """The present cells of a frame as series of samples: `(rows, offsets, timestamps, values)`, where
    `rows` are the row indexes with at least one present step, in order, and row `rows[r]`'s samples are
    `timestamps/values[offsets[r]:offsets[r+1]]` (the steps where it is present, and its values there).

    Shapes and types as for `present_rows`: what a subquery's frame becomes for the range functions.
    """
    cdef Mask mask
    cdef FrameData frame
    values, present = _as_type(values, cnp.NPY_FLOAT64, np.float64), _as_mask(present)
    steps = _as_type(steps, cnp.NPY_INT64, np.int64)
    _frame_of(values, present, steps, &mask, &frame)
    cdef Py_ssize_t cells
    cdef list rows = _rows_with_points(&mask, False, &cells)
    cdef cnp.npy_intp dims[1]
    dims[0] = cells
    cdef cnp.ndarray out_ts = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
    cdef cnp.ndarray out_vals = cnp.PyArray_EMPTY(1, dims, cnp.NPY_FLOAT64, 0)
    dims[0] = len(rows) + 1
    cdef cnp.ndarray offsets = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
    cdef int64_t* ts_ptr = <int64_t*>cnp.PyArray_DATA(out_ts)
    cdef double* vals_ptr = <double*>cnp.PyArray_DATA(out_vals)
    cdef int64_t* offsets_ptr = <int64_t*>cnp.PyArray_DATA(offsets)
    cdef Py_ssize_t r, w = 0
    offsets_ptr[0] = 0
    for r in range(len(rows)):
        w += _copy_row(&mask, &frame, rows[r], ts_ptr + w, vals_ptr + w)
        offsets_ptr[r + 1] = w
    return rows, offsets, out_ts, out_vals


cdef enum:
    ADD = 0
    SUBTRACT = 1
    MULTIPLY = 2
    DIVIDE = 3

_ARITHMETIC = {"+": ADD, "-": SUBTRACT, "*": MULTIPLY, "/": DIVIDE}
#: The operators `scalar_arithmetic` computes.
SCALAR_ARITHMETIC = frozenset(_ARITHMETIC)


def scalar_arithmetic(str op, cnp.ndarray values, cnp.ndarray scalars, bint swap):
    """`values op scalars` (or `scalars op values` with `swap`) per step: a vector and a scalar combined
    by +, -, * or /, as a new C-ordered float64 array of the shape of `values`.

    `values` is float64 of shape (series, steps), in any layout, `scalars` float64 of shape (steps,).
    IEEE arithmetic as numpy's, without numpy's floating-point warnings (which Go does not have either)
    and so without the error-state context that silencing them takes.
    """
    cdef int code = _ARITHMETIC[op]
    if cnp.PyArray_NDIM(values) != 2 or cnp.PyArray_NDIM(scalars) != 1:
        raise ValueError("values must be two-dimensional, scalars one-dimensional")
    if cnp.PyArray_TYPE(values) != cnp.NPY_FLOAT64 or cnp.PyArray_TYPE(scalars) != cnp.NPY_FLOAT64:
        raise TypeError("values and scalars must be float64")
    cdef Py_ssize_t n_rows = cnp.PyArray_DIM(values, 0), n_steps = cnp.PyArray_DIM(values, 1), row, j
    if cnp.PyArray_DIM(scalars, 0) != n_steps:
        raise ValueError("values and scalars differ in steps")
    cdef char* value_data = <char*>cnp.PyArray_DATA(values)
    cdef char* scalar_data = <char*>cnp.PyArray_DATA(scalars)
    cdef Py_ssize_t value_row = cnp.PyArray_STRIDE(values, 0), value_col = cnp.PyArray_STRIDE(values, 1)
    cdef Py_ssize_t scalar_stride = cnp.PyArray_STRIDE(scalars, 0)
    cdef cnp.npy_intp dims[2]
    dims[0] = n_rows
    dims[1] = n_steps
    cdef cnp.ndarray result = cnp.PyArray_EMPTY(2, dims, cnp.NPY_FLOAT64, 0)
    cdef double* out = <double*>cnp.PyArray_DATA(result)
    cdef double a, b, t
    for row in range(n_rows):
        for j in range(n_steps):
            a = (<double*>(value_data + row * value_row + j * value_col))[0]
            b = (<double*>(scalar_data + j * scalar_stride))[0]
            if swap:
                t = a
                a = b
                b = t
            if code == ADD:
                out[row * n_steps + j] = a + b
            elif code == SUBTRACT:
                out[row * n_steps + j] = a - b
            elif code == MULTIPLY:
                out[row * n_steps + j] = a * b
            else:
                out[row * n_steps + j] = a / b
    return result
