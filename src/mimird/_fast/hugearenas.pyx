# cython: language_level=3
"""pymalloc's arenas carved out of one region on transparent huge pages.

Between two dashboard refreshes the machine's caches and TLBs go cold, and a request then pays for every
page it touches. A Python request touches many: its objects are spread over pymalloc's 1 MiB arenas,
each a separate `mmap` of 4 KiB pages. Taking the arenas from one region advised as huge pages puts those
objects on 2 MiB pages instead, which need fewer TLB entries and shorter page walks
(`mimird.util.hugepages` has the measurements).

Arenas pymalloc frees are kept on a free list for its next arena rather than unmapped (the region is
reserved, not committed: only arenas in use or on the list are resident). Arenas allocated before
`install` stay where they are and are freed by the allocator that made them, as are requests of another
size or any beyond the region.
"""

from libc.stdint cimport uintptr_t

cdef extern from "Python.h":
    ctypedef struct PyObjectArenaAllocator:
        void *ctx
        void *(*alloc)(void *ctx, size_t size) noexcept
        void (*free)(void *ctx, void *ptr, size_t size) noexcept

    void PyObject_GetArenaAllocator(PyObjectArenaAllocator *allocator)
    void PyObject_SetArenaAllocator(PyObjectArenaAllocator *allocator)

cdef extern from "sys/mman.h" nogil:
    void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset)
    int munmap(void *addr, size_t length)
    int madvise(void *addr, size_t length, int advice)
    int PROT_READ
    int PROT_WRITE
    int MAP_PRIVATE
    int MAP_ANONYMOUS
    int MAP_NORESERVE
    int MADV_HUGEPAGE
    void *MAP_FAILED

cdef enum:
    HUGE_PAGE = 2 << 20

cdef PyObjectArenaAllocator _previous
cdef char *_base = NULL         # start of the region (huge-page aligned)
cdef size_t _size = 0           # bytes reserved
cdef size_t _used = 0           # bytes handed out from the start, free-listed ones included
cdef size_t _arena_size = 0     # the one size served (pymalloc's ARENA_SIZE, learnt from its first call)
cdef void *_free_list = NULL    # freed arenas, linked through their first word
cdef size_t _arenas_out = 0


cdef void *_alloc(void *ctx, size_t size) noexcept:
    global _used, _arena_size, _free_list, _arenas_out
    cdef void *arena
    if _arena_size == 0:
        _arena_size = size
    if size == _arena_size:
        if _free_list != NULL:
            arena = _free_list
            _free_list = (<void **>arena)[0]
            _arenas_out += 1
            return arena
        if _used + size <= _size:
            arena = _base + _used
            _used += size
            _arenas_out += 1
            return arena
    return _previous.alloc(_previous.ctx, size)


cdef void _free(void *ctx, void *ptr, size_t size) noexcept:
    global _free_list, _arenas_out
    cdef uintptr_t address = <uintptr_t>ptr
    if <uintptr_t>_base <= address < <uintptr_t>_base + _size:
        (<void **>ptr)[0] = _free_list
        _free_list = ptr
        _arenas_out -= 1
    else:
        _previous.free(_previous.ctx, ptr, size)


cdef PyObjectArenaAllocator _ours


def install(size_t reserve_bytes=64 << 30) -> bool:
    """Serve pymalloc's arenas from a region of `reserve_bytes` of address space advised as huge pages.
    Returns False (and changes nothing) if the region cannot be mapped or advised, or if already
    installed."""
    global _base, _size
    if _base != NULL:
        return False
    cdef size_t length = reserve_bytes + HUGE_PAGE
    cdef void *mapped = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                             -1, 0)
    if mapped == MAP_FAILED:
        return False
    cdef uintptr_t start = (<uintptr_t>mapped + HUGE_PAGE - 1) & ~(<uintptr_t>HUGE_PAGE - 1)
    if madvise(<void *>start, reserve_bytes, MADV_HUGEPAGE) != 0:
        munmap(mapped, length)
        return False
    _base = <char *>start
    _size = reserve_bytes
    PyObject_GetArenaAllocator(&_previous)
    _ours.ctx = NULL
    _ours.alloc = _alloc
    _ours.free = _free
    PyObject_SetArenaAllocator(&_ours)
    return True


def stats() -> dict:
    """Arenas in use and free-listed, and the bytes of the region handed out so far."""
    cdef size_t free_count = 0
    cdef void *node = _free_list
    while node != NULL:
        free_count += 1
        node = (<void **>node)[0]
    return {"installed": _base != NULL, "arena_bytes": _arena_size, "arenas_in_use": _arenas_out,
            "arenas_free": free_count, "bytes_handed_out": _used}
