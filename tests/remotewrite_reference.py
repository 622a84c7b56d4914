"""Remote write v1 decoded the slow, obviously right way: protobuf's own parser plus a Python walk.

The Cython decoder (mimird._fast.remotewrite) is tested against this, and bench/remotewrite.py times
it as the baseline. Floats are compared by bit pattern, so NaN payloads count.
"""

import struct

from mimird import prompb


def float_bits(value: float) -> int:
    return struct.unpack("<Q", struct.pack("<d", value))[0]


def histogram_key(h) -> tuple:
    """A prompb.Histogram as a comparable tuple (see native_histogram_key for the decoder's side)."""
    return (
        h.count_int,
        float_bits(h.count_float),
        h.WhichOneof("count") == "count_float",
        float_bits(h.sum),
        h.schema,
        float_bits(h.zero_threshold),
        h.zero_count_int,
        float_bits(h.zero_count_float),
        tuple((s.offset, s.length) for s in h.negative_spans),
        tuple(h.negative_deltas),
        tuple(float_bits(v) for v in h.negative_counts),
        tuple((s.offset, s.length) for s in h.positive_spans),
        tuple(h.positive_deltas),
        tuple(float_bits(v) for v in h.positive_counts),
        h.reset_hint,
        h.timestamp,
        tuple(float_bits(v) for v in h.custom_values),
    )


def native_histogram_key(h) -> tuple:
    """A decoded NativeHistogram as the same tuple as histogram_key."""
    return (
        h.count_int,
        float_bits(h.count_float),
        h.is_float,
        float_bits(h.sum),
        h.schema,
        float_bits(h.zero_threshold),
        h.zero_count_int,
        float_bits(h.zero_count_float),
        h.negative_spans,
        h.negative_deltas,
        tuple(float_bits(v) for v in h.negative_counts),
        h.positive_spans,
        h.positive_deltas,
        tuple(float_bits(v) for v in h.positive_counts),
        h.reset_hint,
        h.timestamp,
        tuple(float_bits(v) for v in h.custom_values),
    )


def reference_decode(data: bytes) -> dict:
    """Parse with the protobuf classes and walk into the WriteBatch layout (raises DecodeError)."""
    request = prompb.WriteRequest.FromString(data)
    series_labels = []
    offsets = [0]
    timestamps = []
    values = []
    exemplars = []
    histograms = []
    for index, series in enumerate(request.timeseries):
        series_labels.append(tuple((label.name, label.value) for label in series.labels))
        for sample in series.samples:
            timestamps.append(sample.timestamp)
            values.append(sample.value)
        offsets.append(len(timestamps))
        for exemplar in series.exemplars:
            labels = tuple((label.name, label.value) for label in exemplar.labels)
            exemplars.append((index, labels, exemplar.value, exemplar.timestamp))
        for histogram in series.histograms:
            histograms.append((index, histogram))
    metadata = [(m.type, m.metric_family_name, m.help, m.unit) for m in request.metadata]
    return {
        "series_labels": series_labels,
        "sample_offsets": offsets,
        "timestamps": timestamps,
        "values": values,
        "exemplars": exemplars,
        "histograms": histograms,
        "metadata": metadata,
    }


def comparable_reference(decoded: dict) -> dict:
    """reference_decode's result with floats as bit patterns and histograms as tuples."""
    return {
        "series_labels": decoded["series_labels"],
        "sample_offsets": decoded["sample_offsets"],
        "timestamps": decoded["timestamps"],
        "values": [float_bits(v) for v in decoded["values"]],
        "exemplars": [(i, labels, float_bits(v), t) for i, labels, v, t in decoded["exemplars"]],
        "histograms": [(i, histogram_key(h)) for i, h in decoded["histograms"]],
        "metadata": decoded["metadata"],
    }


def comparable_batch(batch) -> dict:
    """A WriteBatch in the same shape as comparable_reference."""
    return {
        "series_labels": list(batch.series_labels),
        "sample_offsets": batch.sample_offsets.tolist(),
        "timestamps": batch.timestamps.tolist(),
        "values": batch.values.view("<u8").tolist(),
        "exemplars": [(i, labels, float_bits(v), t) for i, labels, v, t in batch.exemplars],
        "histograms": [(i, native_histogram_key(h)) for i, h in batch.histograms],
        "metadata": batch.metadata,
    }
