# Asking the CPU for memory ahead of its use. A dashboard's query finds its objects cold (its caches were
# emptied since the last refresh), and Python objects are spread over the heap, each read waiting for a
# page walk and memory; asking for many of them first lets those waits overlap. A prefetch never faults
# and changes nothing.
from cpython.object cimport PyObject

cdef extern from *:
    """
    #define mimird_prefetch(address) __builtin_prefetch((const void*)(address), 0, 3)
    #define mimird_list_items(list) ((const void*)((PyListObject*)(list))->ob_item)
    """
    void prefetch "mimird_prefetch" (const void* address) noexcept nogil
    const void* list_items "mimird_list_items" (PyObject* list) noexcept nogil
