# cython: language_level=3
"""Putting pushed series' label pairs into canonical form: empty values dropped, sorted by name.

Senders such as Prometheus already send labels sorted and without empty values, so the common case
is a check that returns the very tuple it was given; only other series are rebuilt and sorted.
"""
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from cpython.unicode cimport PyUnicode_Compare, PyUnicode_GET_LENGTH


cdef bint _is_canonical(tuple pairs, object drop_name) except -1:
    cdef Py_ssize_t i, n = PyTuple_GET_SIZE(pairs)
    cdef object pair, name, previous = None
    for i in range(n):
        pair = <object>PyTuple_GET_ITEM(pairs, i)
        if type(pair) is not tuple or PyTuple_GET_SIZE(pair) != 2:
            return False
        name = <object>PyTuple_GET_ITEM(pair, 0)
        value = <object>PyTuple_GET_ITEM(pair, 1)
        if type(name) is not str or type(value) is not str or PyUnicode_GET_LENGTH(value) == 0:
            return False
        if drop_name is not None and name == drop_name:
            return False
        if previous is not None and PyUnicode_Compare(previous, name) >= 0:
            return False
        previous = name
    return True


def canonical_labels(pairs, drop_name=None):
    """`pairs` sorted by name with empty values (and the label `drop_name`) removed, as a tuple.

    Repeated names stay next to each other for validation to report. Already canonical tuples are
    returned as they are.
    """
    if type(pairs) is tuple and _is_canonical(<tuple>pairs, drop_name):
        return pairs
    return tuple(sorted((name, value) for name, value in pairs if value != "" and name != drop_name))


def canonical_labels_many(list series_pairs, drop_name=None):
    """canonical_labels for every series of a request."""
    cdef Py_ssize_t i, n = len(series_pairs)
    cdef list out = [None] * n
    cdef object pairs
    for i in range(n):
        pairs = series_pairs[i]
        if type(pairs) is tuple and _is_canonical(<tuple>pairs, drop_name):
            out[i] = pairs
        else:
            out[i] = tuple(sorted((name, value) for name, value in pairs if value != "" and name != drop_name))
    return out
