# Reading numpy arrays in place in the kernels. A typed memoryview's acquisition (numpy's buffer export,
# the format check, a memoryview object) is a few hundred lines of C in several libraries; a dashboard's
# query runs them cold, after its caches were emptied, at 0.1 ms or more the first time per module, where
# the pointer and length read here cost a few microseconds.
cimport numpy as cnp


cdef inline cnp.ndarray vector(object obj, int typenum):
    """`obj` as a 1-d C-contiguous array of `typenum`: `obj` itself when it is one, else a converted copy."""
    cdef cnp.ndarray array
    if cnp.PyArray_Check(obj):
        array = <cnp.ndarray>obj
        if (cnp.PyArray_TYPE(array) == typenum and cnp.PyArray_NDIM(array) == 1
                and cnp.PyArray_IS_C_CONTIGUOUS(array)):
            return array
    array = <cnp.ndarray>cnp.PyArray_FROM_OTF(obj, typenum, cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED)
    if cnp.PyArray_NDIM(array) != 1:
        raise ValueError(f"expected a 1-d array, got {cnp.PyArray_NDIM(array)} dimensions")
    return array
