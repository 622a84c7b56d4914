# cython: language_level=3
"""Kernels for the Prometheus index (format v2) that loop over every series or symbol of a block.

The index section layouts are drawn in docs/format/index.md. This module owns the byte-level loops of
the series section (encoding a batch of series entries, decoding one), the scan that locates every
symbol of the symbol table, and the scan of the postings offset table. Everything else about the index
(section framing, postings lists, TOC) is plain Python over numpy in mimird.tsdb.block.index.

Every decoder checks its bounds itself (the module is compiled without bounds checks) and raises
ValueError on bytes that do not parse, so a corrupt index is an exception, never a crash.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

cimport numpy as cnp

from mimird._fast.crc32c cimport crc32c_update
from mimird._fast.varint cimport put_uvarint, read_uvarint_at, zigzag_decode, zigzag_encode

import numpy as np

cnp.import_array()

SERIES_ALIGNMENT = 16
"""Series entries start at multiples of 16 bytes; a series ref is its offset divided by 16."""

cdef enum:
    _SERIES_ALIGN = 16
    _MAX_VARINT = 10


cdef inline void _put_be32(uint8_t* out, uint32_t value) noexcept nogil:
    out[0] = <uint8_t>(value >> 24)
    out[1] = <uint8_t>(value >> 16)
    out[2] = <uint8_t>(value >> 8)
    out[3] = <uint8_t>value


cdef inline uint32_t _get_be32(const uint8_t* data) noexcept nogil:
    return (<uint32_t>data[0] << 24) | (<uint32_t>data[1] << 16) | (<uint32_t>data[2] << 8) | data[3]


def encode_series_batch(uint64_t position, const int64_t[::1] order not None,
                        const int64_t[::1] label_starts not None, const uint32_t[::1] label_ids not None,
                        const int64_t[::1] chunk_starts not None, const int64_t[::1] chunk_mint not None,
                        const int64_t[::1] chunk_maxt not None, const uint64_t[::1] chunk_refs not None):
    """Encode the series entries for series `order[0], order[1], ...`, to be written at file `position`.

    Series `s` has the symbol ids `label_ids[label_starts[s]:label_starts[s + 1]]` (name, value,
    name, value, ...) and the chunks `chunk_starts[s]:chunk_starts[s + 1]` of the chunk arrays.
    Each entry is preceded by the zero padding that aligns it to 16 bytes, so the returned bytes go
    at `position` unchanged. Returns (bytes, refs): refs (uint64, one per series of `order`) are the
    entries' offsets divided by 16, the series refs that postings lists hold. Chunks must already be
    validated (sorted, non-overlapping); the refs are delta-encoded as Prometheus does.
    """
    cdef Py_ssize_t n = order.shape[0], i, j, bound = 0, s, num_labels, num_chunks
    cdef Py_ssize_t num_series_total = label_starts.shape[0] - 1
    for i in range(n):
        s = order[i]
        if s < 0 or s >= num_series_total or s >= chunk_starts.shape[0] - 1:
            raise IndexError(f"series index {s} out of range")
        num_labels = label_starts[s + 1] - label_starts[s]
        num_chunks = chunk_starts[s + 1] - chunk_starts[s]
        if (num_labels < 0 or num_chunks < 0 or label_starts[s + 1] > label_ids.shape[0]
                or chunk_starts[s + 1] > chunk_mint.shape[0] or chunk_starts[s + 1] > chunk_maxt.shape[0]
                or chunk_starts[s + 1] > chunk_refs.shape[0] or num_labels % 2):
            raise IndexError(f"series index {s} has inconsistent label or chunk ranges")
        bound += _SERIES_ALIGN + 2 * _MAX_VARINT + num_labels * 5 + num_chunks * 3 * _MAX_VARINT + 4
    cdef uint8_t* out = <uint8_t*>malloc(bound + 1)
    cdef uint8_t* body = <uint8_t*>malloc(bound + 1)
    if out == NULL or body == NULL:
        free(out)
        free(body)
        raise MemoryError()
    cdef cnp.ndarray refs = np.empty(n, dtype=np.uint64)
    cdef uint64_t[::1] refs_view = refs
    cdef Py_ssize_t pos = 0, blen, c, c_end
    cdef uint64_t file_pos = position
    cdef int64_t prev_maxt, prev_ref
    cdef uint32_t crc
    try:
        with nogil:
            for i in range(n):
                s = order[i]
                while file_pos % _SERIES_ALIGN:
                    out[pos] = 0
                    pos += 1
                    file_pos += 1
                refs_view[i] = file_pos // _SERIES_ALIGN
                blen = 0
                num_labels = (label_starts[s + 1] - label_starts[s]) // 2
                blen += put_uvarint(body + blen, <uint64_t>num_labels)
                for j in range(label_starts[s], label_starts[s + 1]):
                    blen += put_uvarint(body + blen, label_ids[j])
                c = chunk_starts[s]
                c_end = chunk_starts[s + 1]
                blen += put_uvarint(body + blen, <uint64_t>(c_end - c))
                if c < c_end:
                    blen += put_uvarint(body + blen, zigzag_encode(chunk_mint[c]))
                    blen += put_uvarint(body + blen, <uint64_t>(chunk_maxt[c] - chunk_mint[c]))
                    blen += put_uvarint(body + blen, chunk_refs[c])
                    prev_maxt = chunk_maxt[c]
                    prev_ref = <int64_t>chunk_refs[c]
                    c += 1
                    while c < c_end:
                        blen += put_uvarint(body + blen, <uint64_t>(chunk_mint[c] - prev_maxt))
                        blen += put_uvarint(body + blen, <uint64_t>(chunk_maxt[c] - chunk_mint[c]))
                        blen += put_uvarint(body + blen, zigzag_encode(<int64_t>chunk_refs[c] - prev_ref))
                        prev_maxt = chunk_maxt[c]
                        prev_ref = <int64_t>chunk_refs[c]
                        c += 1
                j = put_uvarint(out + pos, <uint64_t>blen)
                pos += j
                file_pos += j
                crc = crc32c_update(0, body, blen)
                for j in range(blen):
                    out[pos + j] = body[j]
                pos += blen
                _put_be32(out + pos, crc)
                pos += 4
                file_pos += blen + 4
        return PyBytes_FromStringAndSize(<char*>out, pos), refs
    finally:
        free(out)
        free(body)


def decode_series(const uint8_t[::1] data not None, Py_ssize_t offset):
    """Decode the series entry at byte `offset` of the index bytes `data` and check its CRC.

    Returns (label_ids uint32 [name, value, ...], mint int64, maxt int64, chunk refs uint64), the
    chunk arrays undone from their delta encoding. Raises ValueError on a checksum mismatch or bytes
    that do not parse.
    """
    cdef Py_ssize_t size = data.shape[0], pos, start, end, i
    cdef uint64_t length, value, num_labels, num_chunks
    cdef const uint8_t* buf
    if offset < 0 or offset >= size:
        raise ValueError(f"series offset {offset} is outside the index ({size} bytes)")
    buf = &data[0]
    pos = read_uvarint_at(buf, offset, size, &length)
    if pos < 0 or length > <uint64_t>(size - pos) or <Py_ssize_t>length + 4 > size - pos:
        raise ValueError(f"series at offset {offset}: length runs past the end of the index")
    start = pos
    end = pos + <Py_ssize_t>length
    if crc32c_update(0, buf + start, end - start) != _get_be32(buf + end):
        raise ValueError(f"series at offset {offset}: checksum mismatch")
    pos = read_uvarint_at(buf, pos, end, &num_labels)
    if pos < 0 or num_labels > <uint64_t>(end - pos):
        raise ValueError(f"series at offset {offset}: bad label count")
    cdef cnp.ndarray labels = np.empty(2 * num_labels, dtype=np.uint32)
    cdef uint32_t[::1] labels_view = labels
    for i in range(<Py_ssize_t>(2 * num_labels)):
        pos = read_uvarint_at(buf, pos, end, &value)
        if pos < 0 or value > 0xFFFFFFFF:
            raise ValueError(f"series at offset {offset}: bad label symbol reference")
        labels_view[i] = <uint32_t>value
    pos = read_uvarint_at(buf, pos, end, &num_chunks)
    if pos < 0 or num_chunks > <uint64_t>(end - pos):
        raise ValueError(f"series at offset {offset}: bad chunk count")
    cdef cnp.ndarray mint = np.empty(num_chunks, dtype=np.int64)
    cdef cnp.ndarray maxt = np.empty(num_chunks, dtype=np.int64)
    cdef cnp.ndarray refs = np.empty(num_chunks, dtype=np.uint64)
    cdef int64_t[::1] mint_view = mint
    cdef int64_t[::1] maxt_view = maxt
    cdef uint64_t[::1] refs_view = refs
    cdef int64_t t0 = 0, ref0 = 0
    cdef uint64_t a, b, c
    for i in range(<Py_ssize_t>num_chunks):
        pos = read_uvarint_at(buf, pos, end, &a)
        if pos >= 0:
            pos = read_uvarint_at(buf, pos, end, &b)
        if pos >= 0:
            pos = read_uvarint_at(buf, pos, end, &c)
        if pos < 0:
            raise ValueError(f"series at offset {offset}: chunk {i} runs past the entry")
        if i == 0:
            t0 = zigzag_decode(a)
            ref0 = <int64_t>c
        else:
            t0 = t0 + <int64_t>a
            ref0 = ref0 + zigzag_decode(c)
        mint_view[i] = t0
        t0 = t0 + <int64_t>b
        maxt_view[i] = t0
        refs_view[i] = <uint64_t>ref0
    if pos != end:
        raise ValueError(f"series at offset {offset}: {end - pos} trailing bytes")
    return labels, mint, maxt, refs


def symbol_offsets(const uint8_t[::1] data not None, Py_ssize_t start, Py_ssize_t end, Py_ssize_t count):
    """Offsets in `data` of the `count` length-prefixed symbols that begin at `start` and end by `end`.

    Raises ValueError if a symbol runs past `end`.
    """
    if start < 0 or end > data.shape[0] or start > end or count < 0 or count > end - start:
        raise ValueError("symbol table bounds are outside the index")
    cdef cnp.ndarray offsets = np.empty(count, dtype=np.uint64)
    cdef uint64_t[::1] view = offsets
    cdef Py_ssize_t pos = start, i, failed = -1
    cdef uint64_t length
    cdef const uint8_t* buf = &data[0] if data.shape[0] else NULL
    with nogil:
        for i in range(count):
            view[i] = pos
            pos = read_uvarint_at(buf, pos, end, &length)
            if pos < 0 or length > <uint64_t>(end - pos):
                failed = i
                break
            pos += <Py_ssize_t>length
    if failed >= 0:
        raise ValueError(f"symbol {failed} runs past the end of the symbol table")
    return offsets


def read_postings_offset_table(const uint8_t[::1] data not None, Py_ssize_t start, Py_ssize_t end,
                               Py_ssize_t count):
    """Parse the `count` entries of the postings offset table that begin at `start` and end by `end`.

    Returns {name: ([values...], [postings offsets...])}, values in table order. Raises ValueError on
    an entry that does not have two keys or runs past `end`, or on invalid UTF-8.
    """
    if start < 0 or end > data.shape[0] or start > end or count < 0:
        raise ValueError("postings offset table bounds are outside the index")
    cdef dict table = {}
    cdef Py_ssize_t pos = start, i, name_start = -1, name_len = -1, value_pos
    cdef uint64_t keys, length, offset
    cdef const uint8_t* buf = &data[0] if data.shape[0] else NULL
    cdef object name = None
    cdef list values = None, offsets = None
    for i in range(count):
        pos = read_uvarint_at(buf, pos, end, &keys)
        if pos < 0 or keys != 2:
            raise ValueError(f"postings offset table entry {i}: expected 2 keys")
        pos = read_uvarint_at(buf, pos, end, &length)
        if pos < 0 or length > <uint64_t>(end - pos):
            raise ValueError(f"postings offset table entry {i}: name runs past the table")
        if name is None or <Py_ssize_t>length != name_len or \
                _bytes_differ(buf + name_start, buf + pos, name_len):
            name = PyUnicode_DecodeUTF8(<const char*>(buf + pos), <Py_ssize_t>length, NULL)
            name_start = pos
            name_len = <Py_ssize_t>length
            entry = table.get(name)
            if entry is None:
                values = []
                offsets = []
                table[name] = (values, offsets)
            else:
                values, offsets = entry
        pos += <Py_ssize_t>length
        pos = read_uvarint_at(buf, pos, end, &length)
        if pos < 0 or length > <uint64_t>(end - pos):
            raise ValueError(f"postings offset table entry {i}: value runs past the table")
        value_pos = pos
        pos += <Py_ssize_t>length
        pos = read_uvarint_at(buf, pos, end, &offset)
        if pos < 0:
            raise ValueError(f"postings offset table entry {i}: offset runs past the table")
        values.append(PyUnicode_DecodeUTF8(<const char*>(buf + value_pos), <Py_ssize_t>length, NULL))
        offsets.append(offset)
    if pos != end:
        raise ValueError(f"postings offset table has {end - pos} trailing bytes")
    return table


cdef inline bint _bytes_differ(const uint8_t* a, const uint8_t* b, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if a[i] != b[i]:
            return True
    return False


def frame_chunks(list chunks not None, int encoding):
    """The chunk-file records of `chunks` (a list of bytes), back to back, and each record's offset.

    A record is `uvarint(len(data)) | encoding byte | data | BE32 CRC-32C(encoding byte + data)`.
    Returns (bytes, offsets int64 array relative to the start of the returned bytes).
    """
    cdef Py_ssize_t n = len(chunks), i, total = 0, pos = 0, size
    cdef uint8_t encoding_byte = <uint8_t>encoding
    cdef uint32_t crc
    cdef bytes data
    if not 0 <= encoding <= 255:
        raise ValueError(f"encoding {encoding} is not a byte")
    for i in range(n):
        if type(chunks[i]) is not bytes:
            raise TypeError("chunks must be bytes")
        total += len(<bytes>chunks[i]) + _MAX_VARINT + 1 + 4
    cdef cnp.ndarray offsets = np.empty(n, dtype=np.int64)
    cdef int64_t[::1] offsets_view = offsets
    cdef uint8_t* out = <uint8_t*>malloc(total + 1)
    if out == NULL:
        raise MemoryError()
    cdef const uint8_t* src
    try:
        for i in range(n):
            data = <bytes>chunks[i]
            src = <const uint8_t*>PyBytes_AS_STRING(data)
            size = len(data)
            offsets_view[i] = pos
            pos += put_uvarint(out + pos, <uint64_t>size)
            out[pos] = encoding_byte
            crc = crc32c_update(0, &encoding_byte, 1)
            crc = crc32c_update(crc, src, size)
            memcpy(out + pos + 1, src, size)
            pos += 1 + size
            _put_be32(out + pos, crc)
            pos += 4
        return PyBytes_FromStringAndSize(<char*>out, pos), offsets
    finally:
        free(out)


def read_chunks(list segments not None, const uint64_t[::1] refs not None, Py_ssize_t header_size):
    """The data bytes of the chunks `refs` in `segments` (one bytes-like buffer per segment file).

    Checks each chunk's bounds and CRC; raises ValueError naming the first chunk that fails. Returns
    a list of (encoding, bytes) pairs, one per ref.
    """
    cdef Py_ssize_t n = refs.shape[0], i, num_segments = len(segments), pos, size
    cdef uint64_t ref, segment, offset, length
    cdef const uint8_t[::1] view
    cdef list views = [memoryview(s).cast("B") if not isinstance(s, bytes) else s for s in segments]
    cdef list result = [None] * n
    cdef const uint8_t* buf
    for i in range(n):
        ref = refs[i]
        segment = ref >> 32
        offset = ref & 0xFFFFFFFF
        if segment >= <uint64_t>num_segments:
            raise ValueError(f"chunk ref {ref:#x}: segment {segment + 1:06d} does not exist")
        view = views[segment]
        size = view.shape[0]
        if offset < <uint64_t>header_size or offset >= <uint64_t>size:
            raise ValueError(f"chunk ref {ref:#x}: offset {offset} is outside segment {segment + 1:06d} "
                             f"({size} bytes)")
        buf = &view[0]
        pos = read_uvarint_at(buf, <Py_ssize_t>offset, size, &length)
        if pos < 0 or length > <uint64_t>size or <Py_ssize_t>length + 5 > size - pos:
            raise ValueError(f"chunk ref {ref:#x}: length runs past the end of segment {segment + 1:06d}")
        if crc32c_update(0, buf + pos, <Py_ssize_t>length + 1) != _get_be32(buf + pos + 1 + length):
            raise ValueError(f"chunk ref {ref:#x}: checksum mismatch")
        result[i] = (buf[pos], PyBytes_FromStringAndSize(<const char*>(buf + pos + 1), <Py_ssize_t>length))
    return result


def is_strictly_increasing(const int64_t[::1] values not None):
    """Whether every value is greater than the one before (timestamps of one series)."""
    cdef Py_ssize_t i
    cdef bint increasing = True
    with nogil:
        for i in range(1, values.shape[0]):
            if values[i] <= values[i - 1]:
                increasing = False
                break
    return increasing
