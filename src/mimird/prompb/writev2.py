"""Protobuf classes of remote write 2.0 (`io.prometheus.write.v2`, Prometheus's
prompb/io/prometheus/write/v2/types.proto), built from descriptors without protoc.

Field for field as the .proto (names, numbers, types, packed repeated scalars as proto3 does by
default, oneofs, nested enums); gogoproto options only steer Go code generation and are left out.
Like `mimird.prompb`, these classes are what the Cython decoder (`decode_write_request_v2`) is
tested against; the ingest path reads the wire format directly.
"""

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from mimird.prompb.descriptors import (
    BOOL,
    DOUBLE,
    ENUM,
    INT64,
    MESSAGE,
    SINT32,
    SINT64,
    STRING,
    UINT32,
    UINT64,
    _message,
)

PACKAGE = "io.prometheus.write.v2"
TYPES_FILE = "io/prometheus/write/v2/types.proto"
CONTENT_TYPE = "application/x-protobuf;proto=io.prometheus.write.v2.Request"


def types_file() -> descriptor_pb2.FileDescriptorProto:
    """io/prometheus/write/v2/types.proto, plus Mimir's extra Request fields (source, skip flags)."""
    file = descriptor_pb2.FileDescriptorProto(name=TYPES_FILE, package=PACKAGE, syntax="proto3")
    p = f".{PACKAGE}"
    _message(file, "Request", [
        ("symbols", 4, STRING, "repeated"),
        ("timeseries", 5, MESSAGE, "repeated", f"{p}.TimeSeries"),
        # Not in Prometheus's message: Mimir reads these from a 2.0 request as from a 1.0 one.
        ("skip_label_validation", 1000, BOOL),
        ("skip_label_count_validation", 1001, BOOL),
    ])
    file.message_type[-1].reserved_range.add(start=1, end=4)
    _message(file, "TimeSeries", [
        ("labels_refs", 1, UINT32, "repeated"),
        ("samples", 2, MESSAGE, "repeated", f"{p}.Sample"),
        ("histograms", 3, MESSAGE, "repeated", f"{p}.Histogram"),
        ("exemplars", 4, MESSAGE, "repeated", f"{p}.Exemplar"),
        ("metadata", 5, MESSAGE, f"{p}.Metadata"),
        ("created_timestamp", 6, INT64),
    ])
    _message(file, "Exemplar", [
        ("labels_refs", 1, UINT32, "repeated"),
        ("value", 2, DOUBLE),
        ("timestamp", 3, INT64),
    ])
    _message(file, "Sample", [("value", 1, DOUBLE), ("timestamp", 2, INT64)])
    _message(file, "Metadata", [
        ("type", 1, ENUM, f"{p}.Metadata.MetricType"),
        ("help_ref", 3, UINT32),
        ("unit_ref", 4, UINT32),
    ], enums={"MetricType": [
        ("METRIC_TYPE_UNSPECIFIED", 0), ("METRIC_TYPE_COUNTER", 1), ("METRIC_TYPE_GAUGE", 2),
        ("METRIC_TYPE_HISTOGRAM", 3), ("METRIC_TYPE_GAUGEHISTOGRAM", 4), ("METRIC_TYPE_SUMMARY", 5),
        ("METRIC_TYPE_INFO", 6), ("METRIC_TYPE_STATESET", 7),
    ]})
    _message(file, "Histogram", [
        ("count_int", 1, UINT64, {"oneof": "count"}),
        ("count_float", 2, DOUBLE, {"oneof": "count"}),
        ("sum", 3, DOUBLE),
        ("schema", 4, SINT32),
        ("zero_threshold", 5, DOUBLE),
        ("zero_count_int", 6, UINT64, {"oneof": "zero_count"}),
        ("zero_count_float", 7, DOUBLE, {"oneof": "zero_count"}),
        ("negative_spans", 8, MESSAGE, "repeated", f"{p}.BucketSpan"),
        ("negative_deltas", 9, SINT64, "repeated"),
        ("negative_counts", 10, DOUBLE, "repeated"),
        ("positive_spans", 11, MESSAGE, "repeated", f"{p}.BucketSpan"),
        ("positive_deltas", 12, SINT64, "repeated"),
        ("positive_counts", 13, DOUBLE, "repeated"),
        ("reset_hint", 14, ENUM, f"{p}.Histogram.ResetHint"),
        ("timestamp", 15, INT64),
        ("custom_values", 16, DOUBLE, "repeated"),
    ], enums={"ResetHint": [("RESET_HINT_UNSPECIFIED", 0), ("RESET_HINT_YES", 1), ("RESET_HINT_NO", 2),
                            ("RESET_HINT_GAUGE", 3)]},
        oneofs=["count", "zero_count"])
    _message(file, "BucketSpan", [("offset", 1, SINT32), ("length", 2, UINT32)])
    return file


_pool = descriptor_pool.DescriptorPool()
_pool.Add(types_file())


def _message_class(name: str):
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))


Request = _message_class("Request")
TimeSeries = _message_class("TimeSeries")
Exemplar = _message_class("Exemplar")
Sample = _message_class("Sample")
Metadata = _message_class("Metadata")
Histogram = _message_class("Histogram")
BucketSpan = _message_class("BucketSpan")

__all__ = ["CONTENT_TYPE", "BucketSpan", "Exemplar", "Histogram", "Metadata", "Request", "Sample", "TimeSeries"]
