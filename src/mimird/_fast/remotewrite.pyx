"""Prometheus remote write 1.0 (`prometheus.WriteRequest`) and 2.0 (`io.prometheus.write.v2.Request`)
decoded straight from the protobuf wire format.

This module owns the ingest hot path's decoding: `decode_write_request` (1.0) and
`decode_write_request_v2` (2.0, see the section near the end) turn the uncompressed request body into
a `WriteBatch` without building a protobuf object per sample. They work in two passes:

1. A nogil scan over the bytes checks the wire format (varints, lengths, wire types, unknown fields skipped
   as protobuf requires, groups included) and records where each label, sample, exemplar, histogram
   and metadata entry is, copying sample timestamps and value bit patterns into flat C arrays.
2. With the GIL, the recorded spans become Python objects: label strings are decoded once per distinct
   byte string and shared (a per-call intern table keyed by the raw bytes), the samples are copied into
   numpy arrays, and the rarer histograms and metadata are parsed into their Python structures.

The wire layout is Prometheus 3.5's prompb/remote.proto and types.proto (see src/mimird/prompb/), plus
the fields Mimir's WriteRequest adds: `Source = 2` and `skip_label_validation = 1000`,
`skip_label_count_validation = 1001`. Malformed input raises ValueError with gogoproto's wording (what
Mimir answers with) and where in the request the problem is. Values are carried as 64-bit patterns, so
NaN payloads such as the staleness marker arrive unchanged. Label bytes that are not UTF-8 are kept
as lone surrogates (surrogateescape) for validation to refuse that one series, as Mimir does.
"""
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_New
from cpython.ref cimport Py_INCREF, PyObject
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport INT64_MAX, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, realloc
from libc.string cimport memcmp, memcpy, memset

cimport cython
cimport numpy as cnp

from mimird._fast.varint cimport zigzag_decode

import numpy as np

cnp.import_array()


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    static inline uint64_t mimird_rw_load_le64(const uint8_t* p) {
        uint64_t x;
        memcpy(&x, p, 8);
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        x = __builtin_bswap64(x);
    #endif
        return x;
    }
    """
    uint64_t load_le64 "mimird_rw_load_le64"(const uint8_t* p) noexcept nogil


# Protobuf wire types.
cdef enum:
    WT_VARINT = 0
    WT_FIXED64 = 1
    WT_LEN = 2
    WT_START_GROUP = 3
    WT_END_GROUP = 4
    WT_FIXED32 = 5

# Kinds of decode failure; turned into messages by _error_message.
cdef enum:
    ERR_NONE = 0
    ERR_EOF
    ERR_OVERFLOW
    ERR_WIRE_TYPE
    ERR_ILLEGAL_TAG
    ERR_END_GROUP_NON_GROUP
    ERR_ILLEGAL_WIRE_TYPE
    ERR_UNEXPECTED_END_GROUP
    ERR_GROUP_MISMATCH
    ERR_GROUP_DEPTH
    ERR_NEGATIVE_LENGTH
    ERR_PACKED_LENGTH
    ERR_NO_MEMORY
    # Remote write 2.0 only; Mimir's own texts, without a position.
    ERR_RW2_FIRST_SYMBOL
    ERR_RW2_ODD_LABEL_REFS
    ERR_RW2_INVALID_LABEL_REF
    ERR_RW2_ODD_EXEMPLAR_LABEL_REFS
    ERR_RW2_INVALID_EXEMPLAR_LABEL_REF
    ERR_RW2_INVALID_HELP_REF
    ERR_RW2_INVALID_UNIT_REF
    ERR_RW2_V1_TIMESERIES
    ERR_RW2_V1_METADATA

cdef enum:
    MAX_FIELD_NUMBER = 0x1FFFFFFF
    # Unknown groups nested deeper than this are refused (upb, protobuf's C core, stops at 100 levels).
    MAX_GROUP_DEPTH = 64
    INTERN_INITIAL_SLOTS = 1024

# Mimir's WriteRequest fields beyond prompb's.
cdef enum:
    FIELD_SOURCE = 2
    FIELD_SKIP_LABEL_VALIDATION = 1000
    FIELD_SKIP_LABEL_COUNT_VALIDATION = 1001


# ---------------------------------------------------------------------------------------------------
# Plain C containers


cdef struct GrowBuf:
    char* data
    Py_ssize_t count
    Py_ssize_t capacity
    Py_ssize_t itemsize


cdef inline void growbuf_init(GrowBuf* buf, Py_ssize_t itemsize) noexcept nogil:
    buf.data = NULL
    buf.count = 0
    buf.capacity = 0
    buf.itemsize = itemsize


cdef inline void growbuf_free(GrowBuf* buf) noexcept nogil:
    free(buf.data)
    buf.data = NULL
    buf.count = 0
    buf.capacity = 0


cdef inline bint growbuf_reserve(GrowBuf* buf, Py_ssize_t capacity) noexcept nogil:
    """Make room for `capacity` items up front; False when out of memory."""
    cdef char* data = <char*>realloc(buf.data, capacity * buf.itemsize)
    if data == NULL:
        return False
    buf.data = data
    buf.capacity = capacity
    return True


cdef inline void* growbuf_push(GrowBuf* buf) noexcept nogil:
    """Room for one more item at the end, or NULL when out of memory."""
    cdef Py_ssize_t capacity
    cdef char* data
    if buf.count == buf.capacity:
        capacity = buf.capacity * 2 if buf.capacity else 64
        data = <char*>realloc(buf.data, capacity * buf.itemsize)
        if data == NULL:
            return NULL
        buf.data = data
        buf.capacity = capacity
    buf.count += 1
    return buf.data + (buf.count - 1) * buf.itemsize


cdef struct LabelRef:
    # The whole Label message: equal bytes decode to the same (name, value) pair, so they share a tuple.
    Py_ssize_t message_offset
    Py_ssize_t message_length
    Py_ssize_t name_offset
    Py_ssize_t name_length
    Py_ssize_t value_offset
    Py_ssize_t value_length


cdef struct SeriesRef:
    Py_ssize_t label_start
    Py_ssize_t label_count
    Py_ssize_t sample_start


cdef struct ExemplarRef:
    Py_ssize_t series
    Py_ssize_t label_start
    Py_ssize_t label_count
    uint64_t value_bits
    int64_t timestamp


cdef struct MessageRef:
    # A submessage parsed in the second pass (histograms, metadata).
    Py_ssize_t series
    Py_ssize_t offset
    Py_ssize_t length


cdef struct DecodeError:
    int kind
    const char* message      # the protobuf message being read
    const char* field        # the field, for wrong wire types
    uint64_t wire_type
    uint64_t field_number
    Py_ssize_t offset        # byte offset in the request where the bad element starts
    Py_ssize_t series        # index of the TimeSeries being read, or -1


cdef struct Scan:
    const uint8_t* data
    Py_ssize_t size
    bint decode_exemplars
    GrowBuf series
    GrowBuf labels
    GrowBuf exemplar_labels
    GrowBuf timestamps
    GrowBuf values
    GrowBuf exemplars
    GrowBuf histograms
    GrowBuf metadata
    int32_t source
    bint skip_label_validation
    bint skip_label_count_validation
    DecodeError error


# ---------------------------------------------------------------------------------------------------
# Wire-format primitives


cdef inline int fail(DecodeError* err, int kind, const char* message, const char* field,
                     uint64_t wire_type, uint64_t field_number, Py_ssize_t offset) noexcept nogil:
    err.kind = kind
    err.message = message
    err.field = field
    err.wire_type = wire_type
    err.field_number = field_number
    err.offset = offset
    return -1


cdef inline int read_varint(const uint8_t* data, Py_ssize_t* pos, Py_ssize_t end,
                            uint64_t* out) noexcept nogil:
    """0, ERR_EOF if the varint runs past `end`, or ERR_OVERFLOW if it has more than 10 bytes."""
    cdef Py_ssize_t p = pos[0]
    cdef uint64_t result = 0
    cdef unsigned int shift = 0
    cdef uint8_t byte
    while True:
        if p >= end:
            return ERR_EOF
        byte = data[p]
        p += 1
        result |= (<uint64_t>(byte & 0x7F)) << shift
        if byte < 0x80:
            out[0] = result
            pos[0] = p
            return 0
        shift += 7
        if shift >= 70:
            return ERR_OVERFLOW


cdef inline int read_length(const uint8_t* data, Py_ssize_t* pos, Py_ssize_t end,
                            Py_ssize_t* length) noexcept nogil:
    """Read a length prefix that must fit in what is left before `end`."""
    cdef uint64_t value
    cdef int rc = read_varint(data, pos, end, &value)
    if rc:
        return rc
    if value > <uint64_t>INT64_MAX:
        return ERR_NEGATIVE_LENGTH
    if value > <uint64_t>(end - pos[0]):
        return ERR_EOF
    length[0] = <Py_ssize_t>value
    return 0


cdef inline int read_tag(const uint8_t* data, Py_ssize_t* pos, Py_ssize_t end, uint64_t* field_number,
                         uint32_t* wire_type, DecodeError* err, const char* message) noexcept nogil:
    cdef Py_ssize_t start = pos[0]
    cdef uint64_t tag
    cdef int rc
    if data[start] < 0x80:
        tag = data[start]
        pos[0] = start + 1
    else:
        rc = read_varint(data, pos, end, &tag)
        if rc:
            return fail(err, rc, message, NULL, 0, 0, start)
    wire_type[0] = <uint32_t>(tag & 7)
    field_number[0] = tag >> 3
    if wire_type[0] == WT_END_GROUP:
        return fail(err, ERR_END_GROUP_NON_GROUP, message, NULL, WT_END_GROUP, field_number[0], start)
    if field_number[0] == 0 or field_number[0] > MAX_FIELD_NUMBER:
        return fail(err, ERR_ILLEGAL_TAG, message, NULL, wire_type[0], field_number[0], start)
    return 0


cdef int skip_value(const uint8_t* data, Py_ssize_t* pos, Py_ssize_t end, uint32_t wire_type) noexcept nogil:
    """Step over one non-group value of `wire_type`; 0 or an error kind."""
    cdef uint64_t ignored
    cdef Py_ssize_t length
    cdef int rc
    if wire_type == WT_VARINT:
        return read_varint(data, pos, end, &ignored)
    if wire_type == WT_FIXED64:
        if end - pos[0] < 8:
            return ERR_EOF
        pos[0] += 8
        return 0
    if wire_type == WT_LEN:
        rc = read_length(data, pos, end, &length)
        if rc:
            return rc
        pos[0] += length
        return 0
    if wire_type == WT_FIXED32:
        if end - pos[0] < 4:
            return ERR_EOF
        pos[0] += 4
        return 0
    return ERR_ILLEGAL_WIRE_TYPE


cdef int skip_field(const uint8_t* data, Py_ssize_t* pos, Py_ssize_t end, uint64_t field_number,
                    uint32_t wire_type, Py_ssize_t start, DecodeError* err, const char* message) noexcept nogil:
    """Step over an unknown field whose tag (at `start`) has been read, groups included."""
    cdef uint32_t[MAX_GROUP_DEPTH] open_groups
    cdef int depth
    cdef int rc
    cdef uint64_t tag
    cdef uint64_t inner_field
    cdef uint32_t inner_wire_type
    if wire_type != WT_START_GROUP:
        rc = skip_value(data, pos, end, wire_type)
        if rc:
            return fail(err, rc, message, NULL, wire_type, field_number, start)
        return 0
    open_groups[0] = <uint32_t>field_number
    depth = 1
    while depth > 0:
        start = pos[0]
        rc = read_varint(data, pos, end, &tag)
        if rc:
            return fail(err, rc, message, NULL, 0, 0, start)
        inner_field = tag >> 3
        inner_wire_type = <uint32_t>(tag & 7)
        if inner_field == 0 or inner_field > MAX_FIELD_NUMBER:
            return fail(err, ERR_ILLEGAL_TAG, message, NULL, inner_wire_type, inner_field, start)
        if inner_wire_type == WT_START_GROUP:
            if depth == MAX_GROUP_DEPTH:
                return fail(err, ERR_GROUP_DEPTH, message, NULL, inner_wire_type, inner_field, start)
            open_groups[depth] = <uint32_t>inner_field
            depth += 1
        elif inner_wire_type == WT_END_GROUP:
            if inner_field != open_groups[depth - 1]:
                return fail(err, ERR_GROUP_MISMATCH, message, NULL, open_groups[depth - 1], inner_field, start)
            depth -= 1
        else:
            rc = skip_value(data, pos, end, inner_wire_type)
            if rc:
                return fail(err, rc, message, NULL, inner_wire_type, inner_field, start)
    return 0


# Go field names (as gogoproto prints them in errors) by message and field number.
cdef enum:
    REQUEST_FIELDS = 0
    SERIES_FIELDS
    LABEL_FIELDS
    SAMPLE_FIELDS
    EXEMPLAR_FIELDS
    HISTOGRAM_FIELDS
    SPAN_FIELDS
    METADATA_FIELDS


cdef const char* _field_name(int message, uint64_t field_number) noexcept nogil:
    if message == REQUEST_FIELDS:
        if field_number == 1:
            return "Timeseries"
        if field_number == 2:
            return "Source"
        if field_number == 3:
            return "Metadata"
        if field_number == 1000:
            return "SkipLabelValidation"
        return "SkipLabelCountValidation"
    if message == SERIES_FIELDS:
        if field_number == 1:
            return "Labels"
        if field_number == 2:
            return "Samples"
        if field_number == 3:
            return "Exemplars"
        return "Histograms"
    if message == LABEL_FIELDS:
        return "Name" if field_number == 1 else "Value"
    if message == SPAN_FIELDS:
        return "Offset" if field_number == 1 else "Length"
    if message == METADATA_FIELDS:
        if field_number == 1:
            return "Type"
        if field_number == 2:
            return "MetricFamilyName"
        return "Help" if field_number == 4 else "Unit"
    # HISTOGRAM_FIELDS
    if field_number == 1:
        return "CountInt"
    if field_number == 2:
        return "CountFloat"
    if field_number == 3:
        return "Sum"
    if field_number == 4:
        return "Schema"
    if field_number == 5:
        return "ZeroThreshold"
    if field_number == 6:
        return "ZeroCountInt"
    if field_number == 7:
        return "ZeroCountFloat"
    if field_number == 8:
        return "NegativeSpans"
    if field_number == 9:
        return "NegativeDeltas"
    if field_number == 10:
        return "NegativeCounts"
    if field_number == 11:
        return "PositiveSpans"
    if field_number == 12:
        return "PositiveDeltas"
    if field_number == 13:
        return "PositiveCounts"
    if field_number == 14:
        return "ResetHint"
    if field_number == 15:
        return "Timestamp"
    return "CustomValues"


cdef inline int32_t zigzag_decode32(uint64_t value) noexcept nogil:
    # sint32 decodes the low 32 bits of the varint, as protobuf does.
    cdef uint32_t low = <uint32_t>value
    return <int32_t>((low >> 1) ^ (~(low & 1) + 1))


# ---------------------------------------------------------------------------------------------------
# First pass: the request structure, nogil


cdef int scan_label(Scan* s, Py_ssize_t pos, Py_ssize_t end, LabelRef* label) noexcept nogil:
    cdef const uint8_t* data = s.data
    cdef uint64_t field_number
    cdef uint32_t wire_type
    cdef Py_ssize_t start, length
    cdef int rc
    label.message_offset = pos
    label.message_length = end - pos
    label.name_offset = pos
    label.name_length = 0
    label.value_offset = pos
    label.value_length = 0
    while pos < end:
        start = pos
        if read_tag(data, &pos, end, &field_number, &wire_type, &s.error, "Label"):
            return -1
        if field_number == 1 or field_number == 2:
            if wire_type != WT_LEN:
                return fail(&s.error, ERR_WIRE_TYPE, "Label", _field_name(LABEL_FIELDS, field_number),
                            wire_type, field_number, start)
            rc = read_length(data, &pos, end, &length)
            if rc:
                return fail(&s.error, rc, "Label", NULL, wire_type, field_number, start)
            if field_number == 1:
                label.name_offset = pos
                label.name_length = length
            else:
                label.value_offset = pos
                label.value_length = length
            pos += length
        elif skip_field(data, &pos, end, field_number, wire_type, start, &s.error, "Label"):
            return -1
    return 0


cdef inline int scan_sample(Scan* s, Py_ssize_t pos, Py_ssize_t end) noexcept nogil:
    cdef const uint8_t* data = s.data
    cdef uint64_t value_bits = 0
    cdef uint64_t timestamp = 0
    cdef uint64_t field_number
    cdef uint32_t wire_type
    cdef Py_ssize_t start
    cdef Py_ssize_t cursor
    cdef int rc
    cdef void* slot
    # Senders write a sample as value (tag 0x09, 8 bytes) then timestamp (tag 0x10, varint); take that
    # shape in one step and leave everything else to the general loop below.
    if end - pos >= 11 and data[pos] == 0x09 and data[pos + 9] == 0x10:
        cursor = pos + 10
        if read_varint(data, &cursor, end, &timestamp) == 0 and cursor == end:
            value_bits = load_le64(data + pos + 1)
            pos = end
        else:
            timestamp = 0
    while pos < end:
        start = pos
        if read_tag(data, &pos, end, &field_number, &wire_type, &s.error, "Sample"):
            return -1
        if field_number == 1:
            if wire_type != WT_FIXED64:
                return fail(&s.error, ERR_WIRE_TYPE, "Sample", "Value", wire_type, field_number, start)
            if end - pos < 8:
                return fail(&s.error, ERR_EOF, "Sample", NULL, wire_type, field_number, start)
            value_bits = load_le64(data + pos)
            pos += 8
        elif field_number == 2:
            if wire_type != WT_VARINT:
                return fail(&s.error, ERR_WIRE_TYPE, "Sample", "Timestamp", wire_type, field_number, start)
            rc = read_varint(data, &pos, end, &timestamp)
            if rc:
                return fail(&s.error, rc, "Sample", NULL, wire_type, field_number, start)
        elif skip_field(data, &pos, end, field_number, wire_type, start, &s.error, "Sample"):
            return -1
    slot = growbuf_push(&s.timestamps)
    if slot == NULL:
        return fail(&s.error, ERR_NO_MEMORY, "Sample", NULL, 0, 0, pos)
    (<int64_t*>slot)[0] = <int64_t>timestamp
    slot = growbuf_push(&s.values)
    if slot == NULL:
        return fail(&s.error, ERR_NO_MEMORY, "Sample", NULL, 0, 0, pos)
    (<uint64_t*>slot)[0] = value_bits
    return 0


cdef int scan_exemplar(Scan* s, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t series) noexcept nogil:
    cdef const uint8_t* data = s.data
    cdef ExemplarRef exemplar
    cdef uint64_t field_number
    cdef uint64_t timestamp = 0
    cdef uint32_t wire_type
    cdef Py_ssize_t start, length
    cdef LabelRef* label
    cdef void* slot
    cdef int rc
    exemplar.series = series
    exemplar.label_start = s.exemplar_labels.count
    exemplar.label_count = 0
    exemplar.value_bits = 0
    while pos < end:
        start = pos
        if read_tag(data, &pos, end, &field_number, &wire_type, &s.error, "Exemplar"):
            return -1
        if field_number == 1:
            if wire_type != WT_LEN:
                return fail(&s.error, ERR_WIRE_TYPE, "Exemplar", "Labels", wire_type, field_number, start)
            rc = read_length(data, &pos, end, &length)
            if rc:
                return fail(&s.error, rc, "Exemplar", NULL, wire_type, field_number, start)
            label = <LabelRef*>growbuf_push(&s.exemplar_labels)
            if label == NULL:
                return fail(&s.error, ERR_NO_MEMORY, "Exemplar", NULL, 0, 0, start)
            if scan_label(s, pos, pos + length, label):
                return -1
            exemplar.label_count += 1
            pos += length
        elif field_number == 2:
            if wire_type != WT_FIXED64:
                return fail(&s.error, ERR_WIRE_TYPE, "Exemplar", "Value", wire_type, field_number, start)
            if end - pos < 8:
                return fail(&s.error, ERR_EOF, "Exemplar", NULL, wire_type, field_number, start)
            exemplar.value_bits = load_le64(data + pos)
            pos += 8
        elif field_number == 3:
            if wire_type != WT_VARINT:
                return fail(&s.error, ERR_WIRE_TYPE, "Exemplar", "Timestamp", wire_type, field_number, start)
            rc = read_varint(data, &pos, end, &timestamp)
            if rc:
                return fail(&s.error, rc, "Exemplar", NULL, wire_type, field_number, start)
        elif skip_field(data, &pos, end, field_number, wire_type, start, &s.error, "Exemplar"):
            return -1
    exemplar.timestamp = <int64_t>timestamp
    slot = growbuf_push(&s.exemplars)
    if slot == NULL:
        return fail(&s.error, ERR_NO_MEMORY, "Exemplar", NULL, 0, 0, pos)
    (<ExemplarRef*>slot)[0] = exemplar
    return 0


cdef int scan_series(Scan* s, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t index) noexcept nogil:
    cdef const uint8_t* data = s.data
    cdef SeriesRef* series = <SeriesRef*>growbuf_push(&s.series)
    cdef uint64_t field_number
    cdef uint32_t wire_type
    cdef Py_ssize_t start, length
    cdef LabelRef* label
    cdef MessageRef* histogram
    cdef int rc
    if series == NULL:
        return fail(&s.error, ERR_NO_MEMORY, "TimeSeries", NULL, 0, 0, pos)
    series.label_start = s.labels.count
    series.label_count = 0
    series.sample_start = s.timestamps.count
    while pos < end:
        start = pos
        if read_tag(data, &pos, end, &field_number, &wire_type, &s.error, "TimeSeries"):
            return -1
        if 1 <= field_number <= 4:
            if wire_type != WT_LEN:
                return fail(&s.error, ERR_WIRE_TYPE, "TimeSeries", _field_name(SERIES_FIELDS, field_number),
                            wire_type, field_number, start)
            rc = read_length(data, &pos, end, &length)
            if rc:
                return fail(&s.error, rc, "TimeSeries", NULL, wire_type, field_number, start)
            if field_number == 2:
                if scan_sample(s, pos, pos + length):
                    return -1
            elif field_number == 1:
                label = <LabelRef*>growbuf_push(&s.labels)
                if label == NULL:
                    return fail(&s.error, ERR_NO_MEMORY, "TimeSeries", NULL, 0, 0, start)
                if scan_label(s, pos, pos + length, label):
                    return -1
                series.label_count += 1
            elif field_number == 3:
                if s.decode_exemplars and scan_exemplar(s, pos, pos + length, index):
                    return -1
            else:
                histogram = <MessageRef*>growbuf_push(&s.histograms)
                if histogram == NULL:
                    return fail(&s.error, ERR_NO_MEMORY, "TimeSeries", NULL, 0, 0, start)
                histogram.series = index
                histogram.offset = pos
                histogram.length = length
            pos += length
        elif skip_field(data, &pos, end, field_number, wire_type, start, &s.error, "TimeSeries"):
            return -1
    return 0


cdef int scan_request(Scan* s) noexcept nogil:
    cdef const uint8_t* data = s.data
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t end = s.size
    cdef Py_ssize_t start, length
    cdef uint64_t field_number, value
    cdef uint32_t wire_type
    cdef MessageRef* metadata
    cdef int rc
    while pos < end:
        start = pos
        if read_tag(data, &pos, end, &field_number, &wire_type, &s.error, "WriteRequest"):
            return -1
        if field_number == 1 or field_number == 3:
            if wire_type != WT_LEN:
                return fail(&s.error, ERR_WIRE_TYPE, "WriteRequest", _field_name(REQUEST_FIELDS, field_number),
                            wire_type, field_number, start)
            rc = read_length(data, &pos, end, &length)
            if rc:
                return fail(&s.error, rc, "WriteRequest", NULL, wire_type, field_number, start)
            if field_number == 1:
                s.error.series = s.series.count
                if scan_series(s, pos, pos + length, s.series.count):
                    return -1
                s.error.series = -1
            else:
                metadata = <MessageRef*>growbuf_push(&s.metadata)
                if metadata == NULL:
                    return fail(&s.error, ERR_NO_MEMORY, "WriteRequest", NULL, 0, 0, start)
                metadata.series = -1
                metadata.offset = pos
                metadata.length = length
            pos += length
        elif (field_number == FIELD_SOURCE or field_number == FIELD_SKIP_LABEL_VALIDATION
              or field_number == FIELD_SKIP_LABEL_COUNT_VALIDATION):
            if wire_type != WT_VARINT:
                return fail(&s.error, ERR_WIRE_TYPE, "WriteRequest", _field_name(REQUEST_FIELDS, field_number),
                            wire_type, field_number, start)
            rc = read_varint(data, &pos, end, &value)
            if rc:
                return fail(&s.error, rc, "WriteRequest", NULL, wire_type, field_number, start)
            if field_number == FIELD_SOURCE:
                s.source = <int32_t>value
            elif field_number == FIELD_SKIP_LABEL_VALIDATION:
                s.skip_label_validation = value != 0
            else:
                s.skip_label_count_validation = value != 0
        elif skip_field(data, &pos, end, field_number, wire_type, start, &s.error, "WriteRequest"):
            return -1
    return 0


# ---------------------------------------------------------------------------------------------------
# Histograms and metadata (second pass; the parsers themselves need no Python objects)


cdef struct SpanValue:
    int32_t offset
    uint32_t length


cdef struct HistogramScan:
    uint64_t count_int
    uint64_t count_float_bits
    bint count_is_float
    uint64_t sum_bits
    int32_t schema
    uint64_t zero_threshold_bits
    uint64_t zero_count_int
    uint64_t zero_count_float_bits
    int32_t reset_hint
    int64_t timestamp
    GrowBuf negative_spans
    GrowBuf negative_deltas
    GrowBuf negative_counts
    GrowBuf positive_spans
    GrowBuf positive_deltas
    GrowBuf positive_counts
    GrowBuf custom_values


cdef void histogram_scan_init(HistogramScan* h) noexcept nogil:
    memset(h, 0, sizeof(HistogramScan))
    growbuf_init(&h.negative_spans, sizeof(SpanValue))
    growbuf_init(&h.negative_deltas, sizeof(int64_t))
    growbuf_init(&h.negative_counts, sizeof(uint64_t))
    growbuf_init(&h.positive_spans, sizeof(SpanValue))
    growbuf_init(&h.positive_deltas, sizeof(int64_t))
    growbuf_init(&h.positive_counts, sizeof(uint64_t))
    growbuf_init(&h.custom_values, sizeof(uint64_t))


cdef void histogram_scan_free(HistogramScan* h) noexcept nogil:
    growbuf_free(&h.negative_spans)
    growbuf_free(&h.negative_deltas)
    growbuf_free(&h.negative_counts)
    growbuf_free(&h.positive_spans)
    growbuf_free(&h.positive_deltas)
    growbuf_free(&h.positive_counts)
    growbuf_free(&h.custom_values)


cdef int read_repeated_sint64(const uint8_t* data, Py_ssize_t* pos, Py_ssize_t end, uint32_t wire_type,
                              GrowBuf* out, DecodeError* err, const char* field, uint64_t field_number,
                              Py_ssize_t start) noexcept nogil:
    """One element (varint wire type) or a packed run (length-delimited) of a repeated sint64."""
    cdef Py_ssize_t length, packed_end
    cdef uint64_t value
    cdef void* slot
    cdef int rc
    if wire_type == WT_VARINT:
        packed_end = end
    elif wire_type == WT_LEN:
        rc = read_length(data, pos, end, &length)
        if rc:
            return fail(err, rc, "Histogram", NULL, wire_type, field_number, start)
        packed_end = pos[0] + length
    else:
        return fail(err, ERR_WIRE_TYPE, "Histogram", field, wire_type, field_number, start)
    while True:
        rc = read_varint(data, pos, packed_end, &value)
        if rc:
            return fail(err, rc, "Histogram", NULL, wire_type, field_number, start)
        slot = growbuf_push(out)
        if slot == NULL:
            return fail(err, ERR_NO_MEMORY, "Histogram", NULL, 0, 0, start)
        (<int64_t*>slot)[0] = zigzag_decode(value)
        if wire_type == WT_VARINT or pos[0] == packed_end:
            return 0


cdef int read_repeated_double(const uint8_t* data, Py_ssize_t* pos, Py_ssize_t end, uint32_t wire_type,
                              GrowBuf* out, DecodeError* err, const char* field, uint64_t field_number,
                              Py_ssize_t start) noexcept nogil:
    """One element (fixed64 wire type) or a packed run (length-delimited) of a repeated double."""
    cdef Py_ssize_t length, count, i
    cdef void* slot
    cdef int rc
    if wire_type == WT_FIXED64:
        length = 8
        if end - pos[0] < 8:
            return fail(err, ERR_EOF, "Histogram", NULL, wire_type, field_number, start)
    elif wire_type == WT_LEN:
        rc = read_length(data, pos, end, &length)
        if rc:
            return fail(err, rc, "Histogram", NULL, wire_type, field_number, start)
        if length % 8:
            return fail(err, ERR_PACKED_LENGTH, "Histogram", field, wire_type, field_number, start)
    else:
        return fail(err, ERR_WIRE_TYPE, "Histogram", field, wire_type, field_number, start)
    count = length // 8
    for i in range(count):
        slot = growbuf_push(out)
        if slot == NULL:
            return fail(err, ERR_NO_MEMORY, "Histogram", NULL, 0, 0, start)
        (<uint64_t*>slot)[0] = load_le64(data + pos[0])
        pos[0] += 8
    return 0


cdef int scan_bucket_span(const uint8_t* data, Py_ssize_t pos, Py_ssize_t end, GrowBuf* out,
                          DecodeError* err) noexcept nogil:
    cdef SpanValue span
    cdef uint64_t field_number, value
    cdef uint32_t wire_type
    cdef Py_ssize_t start
    cdef void* slot
    cdef int rc
    span.offset = 0
    span.length = 0
    while pos < end:
        start = pos
        if read_tag(data, &pos, end, &field_number, &wire_type, err, "BucketSpan"):
            return -1
        if field_number == 1 or field_number == 2:
            if wire_type != WT_VARINT:
                return fail(err, ERR_WIRE_TYPE, "BucketSpan", _field_name(SPAN_FIELDS, field_number),
                            wire_type, field_number, start)
            rc = read_varint(data, &pos, end, &value)
            if rc:
                return fail(err, rc, "BucketSpan", NULL, wire_type, field_number, start)
            if field_number == 1:
                span.offset = zigzag_decode32(value)
            else:
                span.length = <uint32_t>value
        elif skip_field(data, &pos, end, field_number, wire_type, start, err, "BucketSpan"):
            return -1
    slot = growbuf_push(out)
    if slot == NULL:
        return fail(err, ERR_NO_MEMORY, "BucketSpan", NULL, 0, 0, pos)
    (<SpanValue*>slot)[0] = span
    return 0


cdef int scan_histogram(const uint8_t* data, Py_ssize_t pos, Py_ssize_t end, HistogramScan* h,
                        DecodeError* err) noexcept nogil:
    cdef uint64_t field_number, value
    cdef uint32_t wire_type
    cdef Py_ssize_t start, length
    cdef int rc
    while pos < end:
        start = pos
        if read_tag(data, &pos, end, &field_number, &wire_type, err, "Histogram"):
            return -1
        if field_number in (1, 4, 6, 14, 15):
            if wire_type != WT_VARINT:
                return fail(err, ERR_WIRE_TYPE, "Histogram", _field_name(HISTOGRAM_FIELDS, field_number),
                            wire_type, field_number, start)
            rc = read_varint(data, &pos, end, &value)
            if rc:
                return fail(err, rc, "Histogram", NULL, wire_type, field_number, start)
            if field_number == 1:
                # A oneof member replaces whichever member was set before it.
                h.count_int = value
                h.count_float_bits = 0
                h.count_is_float = False
            elif field_number == 4:
                h.schema = zigzag_decode32(value)
            elif field_number == 6:
                h.zero_count_int = value
                h.zero_count_float_bits = 0
            elif field_number == 14:
                h.reset_hint = <int32_t>value
            else:
                h.timestamp = <int64_t>value
        elif field_number in (2, 3, 5, 7):
            if wire_type != WT_FIXED64:
                return fail(err, ERR_WIRE_TYPE, "Histogram", _field_name(HISTOGRAM_FIELDS, field_number),
                            wire_type, field_number, start)
            if end - pos < 8:
                return fail(err, ERR_EOF, "Histogram", NULL, wire_type, field_number, start)
            value = load_le64(data + pos)
            pos += 8
            if field_number == 2:
                h.count_float_bits = value
                h.count_int = 0
                h.count_is_float = True
            elif field_number == 3:
                h.sum_bits = value
            elif field_number == 5:
                h.zero_threshold_bits = value
            else:
                h.zero_count_float_bits = value
                h.zero_count_int = 0
        elif field_number == 8 or field_number == 11:
            if wire_type != WT_LEN:
                return fail(err, ERR_WIRE_TYPE, "Histogram", _field_name(HISTOGRAM_FIELDS, field_number),
                            wire_type, field_number, start)
            rc = read_length(data, &pos, end, &length)
            if rc:
                return fail(err, rc, "Histogram", NULL, wire_type, field_number, start)
            if scan_bucket_span(data, pos, pos + length,
                                &h.negative_spans if field_number == 8 else &h.positive_spans, err):
                return -1
            pos += length
        elif field_number == 9 or field_number == 12:
            if read_repeated_sint64(data, &pos, end, wire_type,
                                    &h.negative_deltas if field_number == 9 else &h.positive_deltas,
                                    err, _field_name(HISTOGRAM_FIELDS, field_number), field_number, start):
                return -1
        elif field_number == 10 or field_number == 13 or field_number == 16:
            if read_repeated_double(data, &pos, end, wire_type,
                                    &h.negative_counts if field_number == 10 else (
                                        &h.positive_counts if field_number == 13 else &h.custom_values),
                                    err, _field_name(HISTOGRAM_FIELDS, field_number), field_number, start):
                return -1
        elif skip_field(data, &pos, end, field_number, wire_type, start, err, "Histogram"):
            return -1
    return 0


cdef struct MetadataScan:
    int32_t type
    Py_ssize_t family_offset
    Py_ssize_t family_length
    Py_ssize_t help_offset
    Py_ssize_t help_length
    Py_ssize_t unit_offset
    Py_ssize_t unit_length


cdef int scan_metadata(const uint8_t* data, Py_ssize_t pos, Py_ssize_t end, MetadataScan* m,
                       DecodeError* err) noexcept nogil:
    cdef uint64_t field_number, value
    cdef uint32_t wire_type
    cdef Py_ssize_t start, length
    cdef int rc
    memset(m, 0, sizeof(MetadataScan))
    while pos < end:
        start = pos
        if read_tag(data, &pos, end, &field_number, &wire_type, err, "MetricMetadata"):
            return -1
        if field_number == 1:
            if wire_type != WT_VARINT:
                return fail(err, ERR_WIRE_TYPE, "MetricMetadata", "Type", wire_type, field_number, start)
            rc = read_varint(data, &pos, end, &value)
            if rc:
                return fail(err, rc, "MetricMetadata", NULL, wire_type, field_number, start)
            m.type = <int32_t>value
        elif field_number == 2 or field_number == 4 or field_number == 5:
            if wire_type != WT_LEN:
                return fail(err, ERR_WIRE_TYPE, "MetricMetadata", _field_name(METADATA_FIELDS, field_number),
                            wire_type, field_number, start)
            rc = read_length(data, &pos, end, &length)
            if rc:
                return fail(err, rc, "MetricMetadata", NULL, wire_type, field_number, start)
            if field_number == 2:
                m.family_offset = pos
                m.family_length = length
            elif field_number == 4:
                m.help_offset = pos
                m.help_length = length
            else:
                m.unit_offset = pos
                m.unit_length = length
            pos += length
        elif skip_field(data, &pos, end, field_number, wire_type, start, err, "MetricMetadata"):
            return -1
    return 0


# ---------------------------------------------------------------------------------------------------
# Second pass: Python objects


cdef struct InternSlot:
    uint64_t hash
    Py_ssize_t offset
    Py_ssize_t length
    PyObject* value      # borrowed; the owning reference is in InternTable.keep


cdef inline uint64_t hash_bytes(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    # Only keys a per-request table, so speed matters more than hash quality across requests.
    cdef uint64_t h = 0x9E3779B97F4A7C15ULL ^ (<uint64_t>n * 0xC2B2AE3D27D4EB4FULL)
    cdef uint64_t word
    while n >= 8:
        word = load_le64(p)
        h = (h ^ word) * 0xFF51AFD7ED558CCDULL
        h ^= h >> 31
        p += 8
        n -= 8
    if n > 0:
        word = 0
        memcpy(&word, p, n)
        h = (h ^ word) * 0xC4CEB9FE1A85EC53ULL
        h ^= h >> 29
    h ^= h >> 33
    h *= 0xFF51AFD7ED558CCDULL
    h ^= h >> 33
    return h


@cython.final
cdef class InternTable:
    """Per-request map from byte strings of the request to the one Python object made for them."""
    cdef const uint8_t* data
    cdef InternSlot* slots
    cdef Py_ssize_t mask
    cdef Py_ssize_t used
    cdef list keep

    def __cinit__(self):
        self.slots = <InternSlot*>calloc(INTERN_INITIAL_SLOTS, sizeof(InternSlot))
        if self.slots == NULL:
            raise MemoryError()
        self.mask = INTERN_INITIAL_SLOTS - 1
        self.used = 0
        self.keep = []

    def __dealloc__(self):
        free(self.slots)

    cdef inline InternSlot* find(self, Py_ssize_t offset, Py_ssize_t length, uint64_t h) noexcept:
        """The slot holding these bytes, or the empty slot where they belong."""
        cdef Py_ssize_t i = <Py_ssize_t>(h & <uint64_t>self.mask)
        cdef InternSlot* slot
        while True:
            slot = &self.slots[i]
            if slot.value == NULL:
                return slot
            if (slot.hash == h and slot.length == length
                    and memcmp(self.data + slot.offset, self.data + offset, length) == 0):
                return slot
            i = (i + 1) & self.mask

    cdef int add(self, InternSlot* slot, Py_ssize_t offset, Py_ssize_t length, uint64_t h,
                 object value) except -1:
        cdef InternSlot* old_slots
        cdef Py_ssize_t old_size, i
        cdef InternSlot* target
        self.keep.append(value)
        slot.hash = h
        slot.offset = offset
        slot.length = length
        slot.value = <PyObject*>value
        self.used += 1
        if self.used * 2 > self.mask:
            old_slots = self.slots
            old_size = self.mask + 1
            self.slots = <InternSlot*>calloc(old_size * 2, sizeof(InternSlot))
            if self.slots == NULL:
                self.slots = old_slots
                raise MemoryError()
            self.mask = old_size * 2 - 1
            for i in range(old_size):
                if old_slots[i].value != NULL:
                    target = self.find(old_slots[i].offset, old_slots[i].length, old_slots[i].hash)
                    target[0] = old_slots[i]
            free(old_slots)
        return 0


cdef inline object _decode_label_text(const uint8_t* data, Py_ssize_t length):
    """A label name or value as str; bytes that are not UTF-8 become lone surrogates (surrogateescape).

    Mimir does not refuse a request for a label value that is not UTF-8: validation drops that one
    series (err-mimir-label-value-invalid). The surrogates make `validation.validate_labels` see it.
    CPython looks the error handler up only when it meets a bad byte, so valid text decodes as fast
    as with the strict handler.
    """
    return PyUnicode_DecodeUTF8(<const char*>data, length, "surrogateescape")


cdef object intern_str(InternTable strings, Py_ssize_t offset, Py_ssize_t length):
    cdef uint64_t h = hash_bytes(strings.data + offset, length)
    cdef InternSlot* slot = strings.find(offset, length, h)
    cdef object text
    if slot.value != NULL:
        return <object>slot.value
    text = _decode_label_text(strings.data + offset, length)
    strings.add(slot, offset, length, h, text)
    return text


cdef object intern_pair(InternTable pairs, InternTable strings, LabelRef* label):
    cdef uint64_t h = hash_bytes(pairs.data + label.message_offset, label.message_length)
    cdef InternSlot* slot = pairs.find(label.message_offset, label.message_length, h)
    cdef object pair
    if slot.value != NULL:
        return <object>slot.value
    pair = (intern_str(strings, label.name_offset, label.name_length),
            intern_str(strings, label.value_offset, label.value_length))
    pairs.add(slot, label.message_offset, label.message_length, h, pair)
    return pair


cdef tuple build_labels(InternTable pairs, InternTable strings, LabelRef* refs, Py_ssize_t count):
    """The (name, value) pairs of `refs`."""
    cdef tuple result = PyTuple_New(count)
    cdef Py_ssize_t i
    cdef object pair
    for i in range(count):
        pair = intern_pair(pairs, strings, &refs[i])
        Py_INCREF(pair)
        PyTuple_SET_ITEM(result, i, pair)
    return result


cdef inline double float_from_bits(uint64_t bits) noexcept nogil:
    cdef double value
    memcpy(&value, &bits, 8)
    return value


cdef inline uint64_t bits_from_float(double value) noexcept nogil:
    cdef uint64_t bits
    memcpy(&bits, &value, 8)
    return bits


_ERROR_TEXTS = {
    ERR_EOF: "unexpected EOF",
    ERR_OVERFLOW: "proto: integer overflow",
    ERR_UNEXPECTED_END_GROUP: "proto: unexpected end of group",
    ERR_GROUP_DEPTH: "proto: unknown groups nested too deeply",
    ERR_NEGATIVE_LENGTH: "proto: negative length found during unmarshaling",
}


_RW2_ERROR_TEXTS = {
    ERR_RW2_FIRST_SYMBOL: "proto: Remote Write 2.0 symbols must start with empty string",
    ERR_RW2_ODD_LABEL_REFS: "proto: Remote Write 2.0 odd number of label references",
    ERR_RW2_INVALID_LABEL_REF: "proto: Remote Write 2.0 invalid label reference",
    ERR_RW2_ODD_EXEMPLAR_LABEL_REFS: "proto: Remote Write 2.0 odd number of exemplar label references",
    ERR_RW2_INVALID_EXEMPLAR_LABEL_REF: "proto: Remote Write 2.0 invalid exemplar label reference",
    ERR_RW2_INVALID_HELP_REF: "proto: Remote Write 2.0 invalid help reference",
    ERR_RW2_INVALID_UNIT_REF: "proto: Remote Write 2.0 invalid unit reference",
    ERR_RW2_V1_TIMESERIES: "proto: Remote Write 1.0 field Timeseries in non-Remote Write 1.0 message",
    ERR_RW2_V1_METADATA: "proto: Remote Write 1.0 field Metadata in non-Remote Write 1.0 message",
}


cdef str _error_message(DecodeError* err):
    if err.kind in _RW2_ERROR_TEXTS:
        return _RW2_ERROR_TEXTS[err.kind]
    message = (<bytes>err.message).decode() if err.message != NULL else "WriteRequest"
    field = (<bytes>err.field).decode() if err.field != NULL else ""
    if err.kind == ERR_WIRE_TYPE:
        text = f"proto: wrong wireType = {err.wire_type} for field {field}"
    elif err.kind == ERR_ILLEGAL_TAG:
        text = f"proto: {message}: illegal tag {err.field_number} (wire type {err.wire_type})"
    elif err.kind == ERR_END_GROUP_NON_GROUP:
        text = f"proto: {message}: wiretype end group for non-group"
    elif err.kind == ERR_ILLEGAL_WIRE_TYPE:
        text = f"proto: illegal wireType {err.wire_type}"
    elif err.kind == ERR_GROUP_MISMATCH:
        text = f"proto: end of group {err.field_number} while group {err.wire_type} is open"
    elif err.kind == ERR_PACKED_LENGTH:
        text = f"proto: packed field {field} has a length that is not a multiple of 8"
    else:
        text = _ERROR_TEXTS.get(err.kind, "proto: malformed message")
    if err.kind == ERR_ILLEGAL_TAG or err.kind == ERR_END_GROUP_NON_GROUP:
        where = f"at byte {err.offset}"
    else:
        where = f"in {message} at byte {err.offset}"
    if err.series >= 0:
        where += f" of timeseries[{err.series}]"
    return f"{text} ({where})"


cdef raise_decode_error(DecodeError* err):
    if err.kind == ERR_NO_MEMORY:
        raise MemoryError("out of memory while decoding a remote write request")
    raise ValueError(_error_message(err))


cdef tuple _doubles(GrowBuf* buf):
    cdef Py_ssize_t i
    cdef uint64_t* bits = <uint64_t*>buf.data
    return tuple([float_from_bits(bits[i]) for i in range(buf.count)])


cdef tuple _ints(GrowBuf* buf):
    cdef Py_ssize_t i
    cdef int64_t* values = <int64_t*>buf.data
    return tuple([values[i] for i in range(buf.count)])


cdef tuple _spans(GrowBuf* buf):
    cdef Py_ssize_t i
    cdef SpanValue* spans = <SpanValue*>buf.data
    return tuple([(spans[i].offset, spans[i].length) for i in range(buf.count)])


cdef NativeHistogram _histogram_from_scan(HistogramScan* h):
    cdef NativeHistogram histogram = NativeHistogram.__new__(NativeHistogram)
    histogram.count_int = h.count_int
    histogram.count_float = float_from_bits(h.count_float_bits)
    histogram.is_float = h.count_is_float
    histogram.sum = float_from_bits(h.sum_bits)
    histogram.schema = h.schema
    histogram.zero_threshold = float_from_bits(h.zero_threshold_bits)
    histogram.zero_count_int = h.zero_count_int
    histogram.zero_count_float = float_from_bits(h.zero_count_float_bits)
    histogram.negative_spans = _spans(&h.negative_spans)
    histogram.negative_deltas = _ints(&h.negative_deltas)
    histogram.negative_counts = _doubles(&h.negative_counts)
    histogram.positive_spans = _spans(&h.positive_spans)
    histogram.positive_deltas = _ints(&h.positive_deltas)
    histogram.positive_counts = _doubles(&h.positive_counts)
    histogram.reset_hint = h.reset_hint
    histogram.timestamp = h.timestamp
    histogram.custom_values = _doubles(&h.custom_values)
    return histogram


def _float_bits(values):
    return tuple([bits_from_float(v) for v in values])


cdef str _utf8_field(const uint8_t* data, Py_ssize_t offset, Py_ssize_t length, str what):
    try:
        return PyUnicode_DecodeUTF8(<const char*>data + offset, length, NULL)
    except UnicodeDecodeError:
        raise ValueError(f"{what} is not valid UTF-8: "
                         f"{(<const char*>data)[offset:offset + length]!r}") from None


# ---------------------------------------------------------------------------------------------------
# Public API

# Prometheus's MetricMetadata.MetricType values.
METRIC_TYPE_UNKNOWN = 0
METRIC_TYPE_COUNTER = 1
METRIC_TYPE_GAUGE = 2
METRIC_TYPE_HISTOGRAM = 3
METRIC_TYPE_GAUGEHISTOGRAM = 4
METRIC_TYPE_SUMMARY = 5
METRIC_TYPE_INFO = 6
METRIC_TYPE_STATESET = 7

# Histogram.ResetHint values.
RESET_HINT_UNKNOWN = 0
RESET_HINT_YES = 1
RESET_HINT_NO = 2
RESET_HINT_GAUGE = 3

# Mimir's WriteRequest.Source values.
SOURCE_API = 0
SOURCE_RULE = 1


@cython.final
cdef class NativeHistogram:
    """One native histogram sample as Prometheus's `Histogram` message carries it.

    An integer histogram has `is_float` False and uses `count_int`, `zero_count_int` and the `*_deltas`
    (each bucket's count as a difference from the previous bucket); a float histogram has `is_float`
    True (the `count` oneof held `count_float`) and uses `count_float`, `zero_count_float` and the
    `*_counts`. Spans are (offset, length) pairs. Floats compare by bit pattern in `==`, so a
    histogram equals its own decode even when its sum is a NaN (as in a staleness marker).
    """
    cdef readonly uint64_t count_int
    cdef readonly double count_float
    cdef readonly bint is_float
    cdef readonly double sum
    cdef readonly int32_t schema
    cdef readonly double zero_threshold
    cdef readonly uint64_t zero_count_int
    cdef readonly double zero_count_float
    cdef readonly tuple negative_spans
    cdef readonly tuple negative_deltas
    cdef readonly tuple negative_counts
    cdef readonly tuple positive_spans
    cdef readonly tuple positive_deltas
    cdef readonly tuple positive_counts
    cdef readonly int32_t reset_hint
    cdef readonly int64_t timestamp
    cdef readonly tuple custom_values

    cdef tuple _key(self):
        bits = _float_bits
        return (self.count_int, bits_from_float(self.count_float), self.is_float, bits_from_float(self.sum),
                self.schema, bits_from_float(self.zero_threshold), self.zero_count_int,
                bits_from_float(self.zero_count_float), self.negative_spans, self.negative_deltas,
                bits(self.negative_counts), self.positive_spans, self.positive_deltas,
                bits(self.positive_counts), self.reset_hint, self.timestamp, bits(self.custom_values))

    def __eq__(self, other):
        if not isinstance(other, NativeHistogram):
            return NotImplemented
        return self._key() == (<NativeHistogram>other)._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        count = f"count_float={self.count_float!r}" if self.is_float else f"count_int={self.count_int}"
        return (f"NativeHistogram({count}, sum={self.sum!r}, schema={self.schema}, "
                f"timestamp={self.timestamp}, reset_hint={self.reset_hint}, "
                f"positive_spans={self.positive_spans!r}, negative_spans={self.negative_spans!r})")


@cython.final
cdef class WriteBatch:
    """A decoded remote write request, laid out for the distributor's per-series loop.

    Series `i` has the label pairs `series_labels[i]` (in wire order, not sorted or checked) and the
    samples `timestamps[sample_offsets[i]:sample_offsets[i + 1]]` with the matching `values`.
    `exemplars` holds (series_index, labels, value, timestamp) tuples, `histograms` holds
    (series_index, NativeHistogram) pairs and `metadata` (type, metric_family_name, help, unit) tuples,
    all in wire order. `source` and the two skip flags are Mimir's extra WriteRequest fields.
    `created_timestamps[i]` is series i's created timestamp in ms (remote write 2.0; 0 = not sent).
    """
    cdef list _series_labels
    cdef readonly cnp.ndarray sample_offsets
    cdef readonly cnp.ndarray timestamps
    cdef readonly cnp.ndarray values
    cdef readonly list exemplars
    cdef readonly list histograms
    cdef readonly list metadata
    cdef readonly int source
    cdef readonly bint skip_label_validation
    cdef readonly bint skip_label_count_validation
    cdef readonly cnp.ndarray created_timestamps
    # Remote write 1.0 only (None for 2.0): where each series' labels are in the request, so that label
    # tuples are built only for the series that need them (`labels_of`) and the ingest fast path can
    # compare a series' label bytes with a known series without building anything.
    # `label_spans` holds six int64 per label (Label message offset and length, name offset and
    # length, value offset and length); series i's labels are label_starts[i]:label_starts[i + 1].
    cdef readonly object raw
    cdef readonly cnp.ndarray label_spans
    cdef readonly cnp.ndarray label_starts
    # Per series, 1 when it carries exemplars or histograms (the fast path leaves those to Python).
    cdef readonly cnp.ndarray series_extras
    cdef InternTable _strings
    cdef InternTable _pairs

    @property
    def series_labels(self):
        """Every series' (name, value) label pairs, in wire order (built on first use)."""
        cdef Py_ssize_t i, n
        cdef list built
        if self._series_labels is None:
            n = self.sample_offsets.shape[0] - 1
            built = [None] * n
            for i in range(n):
                built[i] = self.labels_of(i)
            self._series_labels = built
        return self._series_labels

    def labels_of(self, Py_ssize_t index):
        """Series `index`'s (name, value) label pairs in wire order; equal labels share their objects."""
        cdef const int64_t* starts
        if self._series_labels is not None:
            return self._series_labels[index]
        if index < 0 or index >= self.sample_offsets.shape[0] - 1:
            raise IndexError("series index out of range")
        starts = <const int64_t*>cnp.PyArray_DATA(self.label_starts)
        return build_labels(self._pairs, self._strings,
                            (<LabelRef*>cnp.PyArray_DATA(self.label_spans)) + starts[index],
                            starts[index + 1] - starts[index])

    @property
    def num_series(self):
        """Number of TimeSeries in the request, empty ones included."""
        return self.sample_offsets.shape[0] - 1

    @property
    def num_samples(self):
        """Number of float samples over all series."""
        return self.timestamps.shape[0]

    def series_samples(self, Py_ssize_t index):
        """(timestamps, values) of series `index`, as views into the flat arrays."""
        start = self.sample_offsets[index]
        stop = self.sample_offsets[index + 1]
        return self.timestamps[start:stop], self.values[start:stop]

    def __repr__(self):
        return (f"WriteBatch(series={self.num_series}, samples={self.num_samples}, "
                f"exemplars={len(self.exemplars)}, histograms={len(self.histograms)}, "
                f"metadata={len(self.metadata)})")


cdef void _free_capsule_pointer(object capsule) noexcept:
    free(PyCapsule_GetPointer(capsule, NULL))


cdef cnp.ndarray _array_from_growbuf(GrowBuf* buf, int typenum, Py_ssize_t per_item=1):
    """A 1-d array over the buffer's items (`per_item` array elements each) that takes the memory over
    (no copy); `buf` is left empty."""
    cdef cnp.npy_intp count = buf.count * per_item
    cdef cnp.ndarray array
    cdef char* data
    if count == 0:
        return cnp.PyArray_SimpleNew(1, &count, typenum)
    # Give back the unused tail; shrinking never moves much, and usually nothing.
    data = <char*>realloc(buf.data, buf.count * buf.itemsize)
    if data != NULL:
        buf.data = data
    owner = PyCapsule_New(buf.data, NULL, _free_capsule_pointer)
    buf.data = NULL
    buf.count = buf.capacity = 0
    array = cnp.PyArray_SimpleNewFromData(1, &count, typenum, <void*>PyCapsule_GetPointer(owner, NULL))
    cnp.set_array_base(array, owner)
    return array


cdef void _scan_free(Scan* s) noexcept nogil:
    growbuf_free(&s.series)
    growbuf_free(&s.labels)
    growbuf_free(&s.exemplar_labels)
    growbuf_free(&s.timestamps)
    growbuf_free(&s.values)
    growbuf_free(&s.exemplars)
    growbuf_free(&s.histograms)
    growbuf_free(&s.metadata)


cdef WriteBatch _build_batch(Scan* s, object raw):
    cdef WriteBatch batch = WriteBatch.__new__(WriteBatch)
    cdef InternTable strings = InternTable()
    cdef InternTable pairs = InternTable()
    cdef SeriesRef* series = <SeriesRef*>s.series.data
    cdef LabelRef* exemplar_labels = <LabelRef*>s.exemplar_labels.data
    cdef ExemplarRef* exemplars = <ExemplarRef*>s.exemplars.data
    cdef MessageRef* refs
    cdef Py_ssize_t n_series = s.series.count
    cdef Py_ssize_t n_samples = s.timestamps.count
    cdef Py_ssize_t i
    cdef cnp.ndarray offsets, label_starts, extras
    cdef int64_t* offset_data
    cdef int64_t* label_start_data
    cdef uint8_t* extras_data
    cdef MetadataScan metadata
    cdef DecodeError err

    strings.data = s.data
    pairs.data = s.data
    batch._strings = strings
    batch._pairs = pairs

    offsets = np.empty(n_series + 1, dtype=np.int64)
    offset_data = <int64_t*>cnp.PyArray_DATA(offsets)
    label_starts = np.empty(n_series + 1, dtype=np.int64)
    label_start_data = <int64_t*>cnp.PyArray_DATA(label_starts)
    extras = np.zeros(n_series, dtype=np.uint8)
    extras_data = <uint8_t*>cnp.PyArray_DATA(extras)
    for i in range(n_series):
        offset_data[i] = series[i].sample_start
        label_start_data[i] = series[i].label_start
    offset_data[n_series] = n_samples
    label_start_data[n_series] = s.labels.count
    for i in range(s.exemplars.count):
        extras_data[exemplars[i].series] = 1
    refs = <MessageRef*>s.histograms.data
    for i in range(s.histograms.count):
        extras_data[refs[i].series] = 1
    batch.sample_offsets = offsets
    batch.label_starts = label_starts
    batch.series_extras = extras
    # The label spans point into the request bytes, which the batch keeps alive with them.
    batch.raw = raw
    batch.label_spans = _array_from_growbuf(&s.labels, cnp.NPY_INT64, sizeof(LabelRef) // sizeof(int64_t))
    batch.timestamps = _array_from_growbuf(&s.timestamps, cnp.NPY_INT64)
    batch.values = _array_from_growbuf(&s.values, cnp.NPY_FLOAT64)

    batch.exemplars = []
    for i in range(s.exemplars.count):
        batch.exemplars.append((
            exemplars[i].series,
            build_labels(pairs, strings, exemplar_labels + exemplars[i].label_start, exemplars[i].label_count),
            float_from_bits(exemplars[i].value_bits),
            exemplars[i].timestamp,
        ))

    batch.histograms = _build_histograms(s)

    batch.metadata = []
    refs = <MessageRef*>s.metadata.data
    for i in range(s.metadata.count):
        memset(&err, 0, sizeof(DecodeError))
        err.series = -1
        if scan_metadata(s.data, refs[i].offset, refs[i].offset + refs[i].length, &metadata, &err):
            raise_decode_error(&err)
        batch.metadata.append((
            metadata.type,
            _utf8_field(s.data, metadata.family_offset, metadata.family_length,
                        f"metric family name of metadata[{i}]"),
            _utf8_field(s.data, metadata.help_offset, metadata.help_length, f"help of metadata[{i}]"),
            _utf8_field(s.data, metadata.unit_offset, metadata.unit_length, f"unit of metadata[{i}]"),
        ))

    batch.source = s.source
    batch.skip_label_validation = s.skip_label_validation
    batch.skip_label_count_validation = s.skip_label_count_validation
    batch.created_timestamps = np.zeros(n_series, dtype=np.int64)
    return batch


def decode_write_request(const uint8_t[::1] data not None, *, bint decode_exemplars=True):
    """Decode an uncompressed remote write v1 request body into a `WriteBatch`.

    Unknown fields are skipped; malformed protobuf (truncation, wrong wire types, overlong varints,
    bad lengths) and metadata strings that are not UTF-8 raise ValueError; label strings that are not
    UTF-8 decode with surrogateescape. With
    `decode_exemplars` False the exemplar fields are stepped over unread, as Mimir does for tenants
    that may not store exemplars.
    """
    cdef Scan s
    cdef int rc
    cdef uint8_t empty = 0
    memset(&s, 0, sizeof(Scan))
    s.data = &data[0] if data.shape[0] else &empty
    s.size = data.shape[0]
    s.decode_exemplars = decode_exemplars
    s.error.series = -1
    growbuf_init(&s.series, sizeof(SeriesRef))
    growbuf_init(&s.labels, sizeof(LabelRef))
    growbuf_init(&s.exemplar_labels, sizeof(LabelRef))
    growbuf_init(&s.timestamps, sizeof(int64_t))
    growbuf_init(&s.values, sizeof(uint64_t))
    growbuf_init(&s.exemplars, sizeof(ExemplarRef))
    growbuf_init(&s.histograms, sizeof(MessageRef))
    growbuf_init(&s.metadata, sizeof(MessageRef))
    try:
        # Most requests are mostly samples of about 18 bytes each; reserving for that up front saves
        # the copies of repeated doubling on big requests.
        if s.size >= 4096 and not (growbuf_reserve(&s.timestamps, s.size // 18)
                                   and growbuf_reserve(&s.values, s.size // 18)):
            raise MemoryError()
        with nogil:
            rc = scan_request(&s)
        if rc:
            raise_decode_error(&s.error)
        return _build_batch(&s, data)
    finally:
        _scan_free(&s)


# ---------------------------------------------------------------------------------------------------
# Remote write 2.0 (`io.prometheus.write.v2.Request`, Prometheus's prompb/io/prometheus/write/v2)
#
# Request{symbols = 4 (repeated string), timeseries = 5}; fields 1-3 are reserved (Mimir reports a
# 1.0 Timeseries or Metadata field as an error). TimeSeries{labels_refs = 1 (packed uint32, pairs of
# symbol indices), samples = 2, histograms = 3, exemplars = 4, metadata = 5, created_timestamp = 6};
# Exemplar{labels_refs = 1, value = 2, timestamp = 3}; Metadata{type = 1, help_ref = 3, unit_ref = 4};
# Sample and Histogram are laid out as in 1.0. Mimir's extra fields (Source = 2 would clash with the
# reserved range, but Mimir reads it; skip flags 1000/1001) are read as in 1.0.


cdef struct SymbolRef:
    Py_ssize_t offset
    Py_ssize_t length


cdef struct SeriesV2Ref:
    Py_ssize_t label_start   # index of the first name reference in ScanV2.label_refs
    Py_ssize_t label_count
    Py_ssize_t sample_start
    int64_t created_timestamp
    bint has_metadata
    int32_t metadata_type
    uint32_t help_ref
    uint32_t unit_ref


cdef struct ScanV2:
    # `base` collects samples, exemplars (their label_start/label_count index exemplar_label_refs),
    # histograms, the flags and the error exactly as a 1.0 scan does.
    Scan base
    GrowBuf symbols
    GrowBuf series_messages
    GrowBuf series
    GrowBuf label_refs
    GrowBuf exemplar_label_refs


cdef int read_label_refs(ScanV2* s, Py_ssize_t* pos, Py_ssize_t end, uint32_t wire_type, GrowBuf* out,
                         Py_ssize_t* label_count, bint exemplar, Py_ssize_t start) noexcept nogil:
    """A packed run of symbol references, two per label, each checked against the symbol table."""
    cdef const uint8_t* data = s.base.data
    cdef const char* message = "Exemplar" if exemplar else "TimeSeries"
    cdef int odd_error = ERR_RW2_ODD_EXEMPLAR_LABEL_REFS if exemplar else ERR_RW2_ODD_LABEL_REFS
    cdef int ref_error = ERR_RW2_INVALID_EXEMPLAR_LABEL_REF if exemplar else ERR_RW2_INVALID_LABEL_REF
    cdef Py_ssize_t length, packed_end, i, elements = 0
    cdef uint64_t value
    cdef void* slot
    cdef int rc
    if wire_type == WT_VARINT:
        # Mimir reads label references only packed; a single unpacked one counts as an odd number.
        return fail(&s.base.error, odd_error, message, NULL, wire_type, 1, start)
    if wire_type != WT_LEN:
        return fail(&s.base.error, ERR_WIRE_TYPE, message, "LabelsRefs", wire_type, 1, start)
    rc = read_length(data, pos, end, &length)
    if rc:
        return fail(&s.base.error, rc, message, NULL, wire_type, 1, start)
    packed_end = pos[0] + length
    for i in range(pos[0], packed_end):
        if data[i] < 0x80:
            elements += 1
    if elements % 2:
        return fail(&s.base.error, odd_error, message, NULL, wire_type, 1, start)
    while pos[0] < packed_end:
        rc = read_varint(data, pos, packed_end, &value)
        if rc:
            return fail(&s.base.error, rc, message, NULL, wire_type, 1, start)
        # Mimir keeps the low 32 bits of an oversized reference, as a uint32 field decodes.
        if <uint32_t>value >= <uint64_t>s.symbols.count:
            return fail(&s.base.error, ref_error, message, NULL, wire_type, 1, start)
        slot = growbuf_push(out)
        if slot == NULL:
            return fail(&s.base.error, ERR_NO_MEMORY, message, NULL, 0, 0, start)
        (<uint32_t*>slot)[0] = <uint32_t>value
    label_count[0] += elements // 2
    return 0


cdef int scan_exemplar_v2(ScanV2* s, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t series) noexcept nogil:
    cdef const uint8_t* data = s.base.data
    cdef ExemplarRef exemplar
    cdef uint64_t field_number
    cdef uint64_t timestamp = 0
    cdef uint32_t wire_type
    cdef Py_ssize_t start
    cdef void* slot
    cdef int rc
    exemplar.series = series
    exemplar.label_start = s.exemplar_label_refs.count
    exemplar.label_count = 0
    exemplar.value_bits = 0
    while pos < end:
        start = pos
        if read_tag(data, &pos, end, &field_number, &wire_type, &s.base.error, "Exemplar"):
            return -1
        if field_number == 1:
            if read_label_refs(s, &pos, end, wire_type, &s.exemplar_label_refs, &exemplar.label_count, True,
                               start):
                return -1
        elif field_number == 2:
            if wire_type != WT_FIXED64:
                return fail(&s.base.error, ERR_WIRE_TYPE, "Exemplar", "Value", wire_type, field_number, start)
            if end - pos < 8:
                return fail(&s.base.error, ERR_EOF, "Exemplar", NULL, wire_type, field_number, start)
            exemplar.value_bits = load_le64(data + pos)
            pos += 8
        elif field_number == 3:
            if wire_type != WT_VARINT:
                return fail(&s.base.error, ERR_WIRE_TYPE, "Exemplar", "Timestamp", wire_type, field_number, start)
            rc = read_varint(data, &pos, end, &timestamp)
            if rc:
                return fail(&s.base.error, rc, "Exemplar", NULL, wire_type, field_number, start)
        elif skip_field(data, &pos, end, field_number, wire_type, start, &s.base.error, "Exemplar"):
            return -1
    exemplar.timestamp = <int64_t>timestamp
    slot = growbuf_push(&s.base.exemplars)
    if slot == NULL:
        return fail(&s.base.error, ERR_NO_MEMORY, "Exemplar", NULL, 0, 0, pos)
    (<ExemplarRef*>slot)[0] = exemplar
    return 0


cdef int scan_metadata_v2(ScanV2* s, Py_ssize_t pos, Py_ssize_t end, SeriesV2Ref* series) noexcept nogil:
    cdef const uint8_t* data = s.base.data
    cdef uint64_t field_number, value
    cdef uint32_t wire_type
    cdef Py_ssize_t start
    cdef int32_t metric_type = 0
    cdef uint32_t help_ref = 0, unit_ref = 0
    cdef int rc
    while pos < end:
        start = pos
        if read_tag(data, &pos, end, &field_number, &wire_type, &s.base.error, "Metadata"):
            return -1
        if field_number == 1 or field_number == 3 or field_number == 4:
            if wire_type != WT_VARINT:
                return fail(&s.base.error, ERR_WIRE_TYPE, "Metadata",
                            "Type" if field_number == 1 else ("HelpRef" if field_number == 3 else "UnitRef"),
                            wire_type, field_number, start)
            rc = read_varint(data, &pos, end, &value)
            if rc:
                return fail(&s.base.error, rc, "Metadata", NULL, wire_type, field_number, start)
            if field_number == 1:
                metric_type = <int32_t>value
            elif <uint32_t>value >= <uint64_t>s.symbols.count:
                return fail(&s.base.error, ERR_RW2_INVALID_HELP_REF if field_number == 3 else ERR_RW2_INVALID_UNIT_REF,
                            "Metadata", NULL, wire_type, field_number, start)
            elif field_number == 3:
                help_ref = <uint32_t>value
            else:
                unit_ref = <uint32_t>value
        elif skip_field(data, &pos, end, field_number, wire_type, start, &s.base.error, "Metadata"):
            return -1
    if not series.has_metadata:
        # Mimir keeps the first metadata of a metric family; for one series that is its first.
        series.has_metadata = True
        series.metadata_type = metric_type
        series.help_ref = help_ref
        series.unit_ref = unit_ref
    return 0


cdef int scan_series_v2(ScanV2* s, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t index) noexcept nogil:
    cdef const uint8_t* data = s.base.data
    cdef SeriesV2Ref* series = <SeriesV2Ref*>growbuf_push(&s.series)
    cdef uint64_t field_number, value
    cdef uint32_t wire_type
    cdef Py_ssize_t start, length
    cdef MessageRef* histogram
    cdef int rc
    if series == NULL:
        return fail(&s.base.error, ERR_NO_MEMORY, "TimeSeries", NULL, 0, 0, pos)
    memset(series, 0, sizeof(SeriesV2Ref))
    series.label_start = s.label_refs.count
    series.sample_start = s.base.timestamps.count
    while pos < end:
        start = pos
        if read_tag(data, &pos, end, &field_number, &wire_type, &s.base.error, "TimeSeries"):
            return -1
        if field_number == 1:
            if read_label_refs(s, &pos, end, wire_type, &s.label_refs, &series.label_count, False, start):
                return -1
        elif 2 <= field_number <= 5:
            if wire_type != WT_LEN:
                return fail(&s.base.error, ERR_WIRE_TYPE, "TimeSeries",
                            "Samples" if field_number == 2 else (
                                "Histograms" if field_number == 3 else (
                                    "Exemplars" if field_number == 4 else "Metadata")),
                            wire_type, field_number, start)
            rc = read_length(data, &pos, end, &length)
            if rc:
                return fail(&s.base.error, rc, "TimeSeries", NULL, wire_type, field_number, start)
            if field_number == 2:
                if scan_sample(&s.base, pos, pos + length):
                    return -1
            elif field_number == 3:
                histogram = <MessageRef*>growbuf_push(&s.base.histograms)
                if histogram == NULL:
                    return fail(&s.base.error, ERR_NO_MEMORY, "TimeSeries", NULL, 0, 0, start)
                histogram.series = index
                histogram.offset = pos
                histogram.length = length
            elif field_number == 4:
                if s.base.decode_exemplars and scan_exemplar_v2(s, pos, pos + length, index):
                    return -1
            elif scan_metadata_v2(s, pos, pos + length, series):
                return -1
            pos += length
        elif field_number == 6:
            if wire_type != WT_VARINT:
                return fail(&s.base.error, ERR_WIRE_TYPE, "TimeSeries", "CreatedTimestamp", wire_type,
                            field_number, start)
            rc = read_varint(data, &pos, end, &value)
            if rc:
                return fail(&s.base.error, rc, "TimeSeries", NULL, wire_type, field_number, start)
            series.created_timestamp = <int64_t>value
        elif skip_field(data, &pos, end, field_number, wire_type, start, &s.base.error, "TimeSeries"):
            return -1
    return 0


cdef int scan_request_v2(ScanV2* s) noexcept nogil:
    """Top level first (symbols may follow the series that use them), then every series."""
    cdef const uint8_t* data = s.base.data
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t end = s.base.size
    cdef Py_ssize_t start, length, i
    cdef uint64_t field_number, value
    cdef uint32_t wire_type
    cdef SymbolRef* symbol
    cdef MessageRef* message
    cdef int rc
    while pos < end:
        start = pos
        if read_tag(data, &pos, end, &field_number, &wire_type, &s.base.error, "Request"):
            return -1
        if field_number == 1:
            return fail(&s.base.error, ERR_RW2_V1_TIMESERIES, "Request", NULL, wire_type, field_number, start)
        if field_number == 3:
            return fail(&s.base.error, ERR_RW2_V1_METADATA, "Request", NULL, wire_type, field_number, start)
        if field_number == 4 or field_number == 5:
            if wire_type != WT_LEN:
                return fail(&s.base.error, ERR_WIRE_TYPE, "Request", "Symbols" if field_number == 4 else "Timeseries",
                            wire_type, field_number, start)
            rc = read_length(data, &pos, end, &length)
            if rc:
                return fail(&s.base.error, rc, "Request", NULL, wire_type, field_number, start)
            if field_number == 4:
                if s.symbols.count == 0 and length != 0:
                    return fail(&s.base.error, ERR_RW2_FIRST_SYMBOL, "Request", NULL, wire_type, field_number, start)
                symbol = <SymbolRef*>growbuf_push(&s.symbols)
                if symbol == NULL:
                    return fail(&s.base.error, ERR_NO_MEMORY, "Request", NULL, 0, 0, start)
                symbol.offset = pos
                symbol.length = length
            else:
                message = <MessageRef*>growbuf_push(&s.series_messages)
                if message == NULL:
                    return fail(&s.base.error, ERR_NO_MEMORY, "Request", NULL, 0, 0, start)
                message.series = s.series_messages.count - 1
                message.offset = pos
                message.length = length
            pos += length
        elif (field_number == FIELD_SOURCE or field_number == FIELD_SKIP_LABEL_VALIDATION
              or field_number == FIELD_SKIP_LABEL_COUNT_VALIDATION):
            if wire_type != WT_VARINT:
                return fail(&s.base.error, ERR_WIRE_TYPE, "Request", _field_name(REQUEST_FIELDS, field_number),
                            wire_type, field_number, start)
            rc = read_varint(data, &pos, end, &value)
            if rc:
                return fail(&s.base.error, rc, "Request", NULL, wire_type, field_number, start)
            if field_number == FIELD_SOURCE:
                s.base.source = <int32_t>value
            elif field_number == FIELD_SKIP_LABEL_VALIDATION:
                s.base.skip_label_validation = value != 0
            else:
                s.base.skip_label_count_validation = value != 0
        elif skip_field(data, &pos, end, field_number, wire_type, start, &s.base.error, "Request"):
            return -1
    message = <MessageRef*>s.series_messages.data
    for i in range(s.series_messages.count):
        s.base.error.series = i
        if scan_series_v2(s, message[i].offset, message[i].offset + message[i].length, i):
            return -1
    s.base.error.series = -1
    return 0


# Suffixes a metric family's series carry beyond the family name, by metric type (Mimir names RW2
# metadata after the family, not after the series).
_FAMILY_SUFFIXES = {
    METRIC_TYPE_COUNTER: ("_total",),
    METRIC_TYPE_HISTOGRAM: ("_bucket", "_count", "_sum"),
    METRIC_TYPE_GAUGEHISTOGRAM: ("_bucket", "_gcount", "_gsum"),
    METRIC_TYPE_SUMMARY: ("_count", "_sum"),
}


def metric_family_name(str metric_name, int metric_type):
    """The metric family a series named `metric_name` belongs to, given the family's type."""
    for suffix in _FAMILY_SUFFIXES.get(metric_type, ()):
        if metric_name.endswith(suffix) and metric_name != suffix:
            return metric_name[:-len(suffix)]
    return metric_name


cdef class _SymbolTable:
    """The request's symbols as str, decoded on first use; label pairs shared by their two references."""
    cdef const uint8_t* data
    cdef SymbolRef* refs
    cdef list texts
    cdef dict pairs

    cdef object text(self, uint32_t index):
        cdef object text = self.texts[index]
        if text is None:
            text = _decode_label_text(self.data + self.refs[index].offset, self.refs[index].length)
            self.texts[index] = text
        return text

    cdef str help_text(self, uint32_t index):
        # Help and unit go to the metadata store as text; bytes that are not UTF-8 become U+FFFD.
        return (<const char*>self.data)[self.refs[index].offset:self.refs[index].offset
                                        + self.refs[index].length].decode("utf-8", "replace")

    cdef tuple labels(self, uint32_t* refs, Py_ssize_t count):
        cdef tuple result = PyTuple_New(count)
        cdef Py_ssize_t i
        cdef uint64_t key
        cdef object pair
        for i in range(count):
            key = (<uint64_t>refs[2 * i] << 32) | refs[2 * i + 1]
            pair = self.pairs.get(key)
            if pair is None:
                pair = (self.text(refs[2 * i]), self.text(refs[2 * i + 1]))
                self.pairs[key] = pair
            Py_INCREF(pair)
            PyTuple_SET_ITEM(result, i, pair)
        return result


cdef list _build_histograms(Scan* s):
    cdef list result = []
    cdef MessageRef* refs = <MessageRef*>s.histograms.data
    cdef HistogramScan histogram
    cdef DecodeError err
    cdef Py_ssize_t i
    for i in range(s.histograms.count):
        histogram_scan_init(&histogram)
        memset(&err, 0, sizeof(DecodeError))
        err.series = refs[i].series
        try:
            if scan_histogram(s.data, refs[i].offset, refs[i].offset + refs[i].length, &histogram, &err):
                raise_decode_error(&err)
            result.append((refs[i].series, _histogram_from_scan(&histogram)))
        finally:
            histogram_scan_free(&histogram)
    return result


cdef WriteBatch _build_batch_v2(ScanV2* s):
    cdef WriteBatch batch = WriteBatch.__new__(WriteBatch)
    cdef _SymbolTable symbols = _SymbolTable.__new__(_SymbolTable)
    cdef SeriesV2Ref* series = <SeriesV2Ref*>s.series.data
    cdef uint32_t* label_refs = <uint32_t*>s.label_refs.data
    cdef uint32_t* exemplar_label_refs = <uint32_t*>s.exemplar_label_refs.data
    cdef ExemplarRef* exemplars = <ExemplarRef*>s.base.exemplars.data
    cdef Py_ssize_t n_series = s.series.count
    cdef Py_ssize_t i
    cdef cnp.ndarray offsets, created
    cdef int64_t* offset_data
    cdef int64_t* created_data
    cdef set families = set()

    symbols.data = s.base.data
    symbols.refs = <SymbolRef*>s.symbols.data
    symbols.texts = [None] * s.symbols.count
    symbols.pairs = {}
    series_labels = [None] * n_series
    offsets = np.empty(n_series + 1, dtype=np.int64)
    created = np.empty(n_series, dtype=np.int64)
    offset_data = <int64_t*>cnp.PyArray_DATA(offsets)
    created_data = <int64_t*>cnp.PyArray_DATA(created)
    batch.metadata = []
    for i in range(n_series):
        labels = symbols.labels(label_refs + series[i].label_start, series[i].label_count)
        series_labels[i] = labels
        offset_data[i] = series[i].sample_start
        created_data[i] = series[i].created_timestamp
        if series[i].has_metadata:
            _add_series_metadata(batch.metadata, families, labels, &series[i], symbols)
    offset_data[n_series] = s.base.timestamps.count
    batch._series_labels = series_labels
    batch.sample_offsets = offsets
    batch.created_timestamps = created
    batch.timestamps = _array_from_growbuf(&s.base.timestamps, cnp.NPY_INT64)
    batch.values = _array_from_growbuf(&s.base.values, cnp.NPY_FLOAT64)
    batch.exemplars = [
        (exemplars[i].series,
         symbols.labels(exemplar_label_refs + exemplars[i].label_start, exemplars[i].label_count),
         float_from_bits(exemplars[i].value_bits), exemplars[i].timestamp)
        for i in range(s.base.exemplars.count)
    ]
    batch.histograms = _build_histograms(&s.base)
    batch.source = s.base.source
    batch.skip_label_validation = s.base.skip_label_validation
    batch.skip_label_count_validation = s.base.skip_label_count_validation
    return batch


cdef void _add_series_metadata(list metadata, set families, tuple labels, SeriesV2Ref* series,
                               _SymbolTable symbols):
    """Mimir's conversion of a series' metadata: named after its family, kept once per family, and only
    when it says something (a type, help or unit)."""
    metric_name = ""
    for name, value in labels:
        if name == "__name__":
            metric_name = value
            break
    family = metric_family_name(metric_name, series.metadata_type)
    if not family or family in families:
        return
    if not family.isascii():
        try:
            family.encode("utf-8")
        except UnicodeEncodeError:
            return  # a name that is not UTF-8: its series is refused in validation, and so is this
    help_text = symbols.help_text(series.help_ref)
    unit = symbols.help_text(series.unit_ref)
    if not help_text and not unit and series.metadata_type == 0:
        return
    families.add(family)
    metadata.append((series.metadata_type, family, help_text, unit))


cdef void _scan_v2_free(ScanV2* s) noexcept nogil:
    _scan_free(&s.base)
    growbuf_free(&s.symbols)
    growbuf_free(&s.series_messages)
    growbuf_free(&s.series)
    growbuf_free(&s.label_refs)
    growbuf_free(&s.exemplar_label_refs)


def decode_write_request_v2(const uint8_t[::1] data not None, *, bint decode_exemplars=True):
    """Decode an uncompressed remote write 2.0 request body into a `WriteBatch` laid out as for 1.0.

    Label references are resolved against the symbol table, whose first entry must be the empty
    string; per-series metadata becomes (type, family name, help, unit) entries, one per family.
    Malformed input raises ValueError, with Mimir's texts for the 2.0-specific problems (e.g.
    `proto: Remote Write 2.0 invalid label reference`).
    """
    cdef ScanV2 s
    cdef int rc
    cdef uint8_t empty = 0
    memset(&s, 0, sizeof(ScanV2))
    s.base.data = &data[0] if data.shape[0] else &empty
    s.base.size = data.shape[0]
    s.base.decode_exemplars = decode_exemplars
    s.base.error.series = -1
    growbuf_init(&s.base.series, sizeof(SeriesRef))
    growbuf_init(&s.base.labels, sizeof(LabelRef))
    growbuf_init(&s.base.exemplar_labels, sizeof(LabelRef))
    growbuf_init(&s.base.timestamps, sizeof(int64_t))
    growbuf_init(&s.base.values, sizeof(uint64_t))
    growbuf_init(&s.base.exemplars, sizeof(ExemplarRef))
    growbuf_init(&s.base.histograms, sizeof(MessageRef))
    growbuf_init(&s.base.metadata, sizeof(MessageRef))
    growbuf_init(&s.symbols, sizeof(SymbolRef))
    growbuf_init(&s.series_messages, sizeof(MessageRef))
    growbuf_init(&s.series, sizeof(SeriesV2Ref))
    growbuf_init(&s.label_refs, sizeof(uint32_t))
    growbuf_init(&s.exemplar_label_refs, sizeof(uint32_t))
    try:
        with nogil:
            rc = scan_request_v2(&s)
        if rc:
            raise_decode_error(&s.base.error)
        return _build_batch_v2(&s)
    finally:
        _scan_v2_free(&s)
