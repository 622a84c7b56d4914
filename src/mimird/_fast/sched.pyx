# cython: language_level=3
"""Which processor the calling thread runs on, for `mimird.util.cores` (Python's os module has no
sched_getcpu)."""

cdef extern from "<sched.h>" nogil:
    int sched_getcpu()


def current_cpu():
    """The CPU the calling thread is running on now, or -1 where the system cannot tell."""
    return sched_getcpu()
