# Reading numpy arrays in place in the kernels. A typed memoryview's set-up (numpy's buffer export, the
# format check, a memoryview object) costs more than a small batch's whole evaluation, and a dashboard's
# query runs it cold; raw pointers into an array checked here stand in for it.
cimport numpy as cnp
import numpy as np


cdef inline cnp.ndarray vector(object values, int type_num, str what):
    """`values` as a C-contiguous 1-d array of `type_num` (itself when it already is one: the engine's
    arrays skip numpy's conversion call); ValueError naming `what` when it has another number of
    dimensions."""
    cdef cnp.ndarray array
    if isinstance(values, cnp.ndarray):
        array = values
        if (cnp.PyArray_TYPE(array) == type_num and cnp.PyArray_NDIM(array) == 1
                and cnp.PyArray_IS_C_CONTIGUOUS(array)):
            return array
    array = np.ascontiguousarray(values, dtype=cnp.PyArray_DescrFromType(type_num))
    if cnp.PyArray_NDIM(array) != 1:
        raise ValueError(f"{what} must be one-dimensional")
    return array
