"""The `prometheus` protobuf package (Prometheus's prompb/types.proto and remote.proto) as descriptors.

There is no protoc on the build machines, so the two .proto files are written out here as
`FileDescriptorProto` values, field for field as in Prometheus 3.5 (names, numbers, types, labels,
oneofs, nested enums). gogoproto options only steer Go code generation and are left out: they do not
change the wire format. `types.proto` and `remote.proto` beside this module are the same definitions
in .proto syntax, for reading.
"""

from google.protobuf import descriptor_pb2

Field = descriptor_pb2.FieldDescriptorProto

PACKAGE = "prometheus"
TYPES_FILE = "prometheus/prompb/types.proto"
REMOTE_FILE = "prometheus/prompb/remote.proto"

# Short names for the scalar types used below.
DOUBLE = Field.TYPE_DOUBLE
INT64 = Field.TYPE_INT64
UINT64 = Field.TYPE_UINT64
UINT32 = Field.TYPE_UINT32
SINT32 = Field.TYPE_SINT32
SINT64 = Field.TYPE_SINT64
STRING = Field.TYPE_STRING
BYTES = Field.TYPE_BYTES
BOOL = Field.TYPE_BOOL
MESSAGE = Field.TYPE_MESSAGE
ENUM = Field.TYPE_ENUM


def _message(
    file: descriptor_pb2.FileDescriptorProto,
    name: str,
    fields: list[tuple],
    enums: dict[str, list[tuple[str, int]]] | None = None,
    oneofs: list[str] | None = None,
) -> None:
    """Add message `name` to `file`.

    Each field is (name, number, type[, "repeated"][, type_name][, oneof=...]): a type_name is the
    fully qualified message or enum name, a dict {"oneof": name} puts the field in that oneof.
    """
    message = file.message_type.add(name=name)
    for enum_name, values in (enums or {}).items():
        enum = message.enum_type.add(name=enum_name)
        for value_name, number in values:
            enum.value.add(name=value_name, number=number)
    for oneof_name in oneofs or []:
        message.oneof_decl.add(name=oneof_name)
    for field_name, number, field_type, *options in fields:
        field = message.field.add(name=field_name, number=number, type=field_type, label=Field.LABEL_OPTIONAL)
        for option in options:
            if option == "repeated":
                field.label = Field.LABEL_REPEATED
            elif isinstance(option, dict):
                field.oneof_index = list(oneofs or []).index(option["oneof"])
            else:
                field.type_name = option


def types_file() -> descriptor_pb2.FileDescriptorProto:
    """prompb/types.proto."""
    file = descriptor_pb2.FileDescriptorProto(name=TYPES_FILE, package=PACKAGE, syntax="proto3")
    _message(
        file,
        "MetricMetadata",
        [
            ("type", 1, ENUM, ".prometheus.MetricMetadata.MetricType"),
            ("metric_family_name", 2, STRING),
            ("help", 4, STRING),
            ("unit", 5, STRING),
        ],
        enums={
            "MetricType": [
                ("UNKNOWN", 0),
                ("COUNTER", 1),
                ("GAUGE", 2),
                ("HISTOGRAM", 3),
                ("GAUGEHISTOGRAM", 4),
                ("SUMMARY", 5),
                ("INFO", 6),
                ("STATESET", 7),
            ]
        },
    )
    _message(file, "Sample", [("value", 1, DOUBLE), ("timestamp", 2, INT64)])
    _message(
        file,
        "Exemplar",
        [
            ("labels", 1, MESSAGE, "repeated", ".prometheus.Label"),
            ("value", 2, DOUBLE),
            ("timestamp", 3, INT64),
        ],
    )
    _message(
        file,
        "Histogram",
        [
            ("count_int", 1, UINT64, {"oneof": "count"}),
            ("count_float", 2, DOUBLE, {"oneof": "count"}),
            ("sum", 3, DOUBLE),
            ("schema", 4, SINT32),
            ("zero_threshold", 5, DOUBLE),
            ("zero_count_int", 6, UINT64, {"oneof": "zero_count"}),
            ("zero_count_float", 7, DOUBLE, {"oneof": "zero_count"}),
            ("negative_spans", 8, MESSAGE, "repeated", ".prometheus.BucketSpan"),
            ("negative_deltas", 9, SINT64, "repeated"),
            ("negative_counts", 10, DOUBLE, "repeated"),
            ("positive_spans", 11, MESSAGE, "repeated", ".prometheus.BucketSpan"),
            ("positive_deltas", 12, SINT64, "repeated"),
            ("positive_counts", 13, DOUBLE, "repeated"),
            ("reset_hint", 14, ENUM, ".prometheus.Histogram.ResetHint"),
            ("timestamp", 15, INT64),
            ("custom_values", 16, DOUBLE, "repeated"),
        ],
        enums={"ResetHint": [("UNKNOWN", 0), ("YES", 1), ("NO", 2), ("GAUGE", 3)]},
        oneofs=["count", "zero_count"],
    )
    _message(file, "BucketSpan", [("offset", 1, SINT32), ("length", 2, UINT32)])
    _message(
        file,
        "TimeSeries",
        [
            ("labels", 1, MESSAGE, "repeated", ".prometheus.Label"),
            ("samples", 2, MESSAGE, "repeated", ".prometheus.Sample"),
            ("exemplars", 3, MESSAGE, "repeated", ".prometheus.Exemplar"),
            ("histograms", 4, MESSAGE, "repeated", ".prometheus.Histogram"),
        ],
    )
    _message(file, "Label", [("name", 1, STRING), ("value", 2, STRING)])
    _message(file, "Labels", [("labels", 1, MESSAGE, "repeated", ".prometheus.Label")])
    _message(
        file,
        "LabelMatcher",
        [("type", 1, ENUM, ".prometheus.LabelMatcher.Type"), ("name", 2, STRING), ("value", 3, STRING)],
        enums={"Type": [("EQ", 0), ("NEQ", 1), ("RE", 2), ("NRE", 3)]},
    )
    _message(
        file,
        "ReadHints",
        [
            ("step_ms", 1, INT64),
            ("func", 2, STRING),
            ("start_ms", 3, INT64),
            ("end_ms", 4, INT64),
            ("grouping", 5, STRING, "repeated"),
            ("by", 6, BOOL),
            ("range_ms", 7, INT64),
        ],
    )
    _message(
        file,
        "Chunk",
        [
            ("min_time_ms", 1, INT64),
            ("max_time_ms", 2, INT64),
            ("type", 3, ENUM, ".prometheus.Chunk.Encoding"),
            ("data", 4, BYTES),
        ],
        enums={"Encoding": [("UNKNOWN", 0), ("XOR", 1), ("HISTOGRAM", 2), ("FLOAT_HISTOGRAM", 3)]},
    )
    _message(
        file,
        "ChunkedSeries",
        [
            ("labels", 1, MESSAGE, "repeated", ".prometheus.Label"),
            ("chunks", 2, MESSAGE, "repeated", ".prometheus.Chunk"),
        ],
    )
    return file


def remote_file() -> descriptor_pb2.FileDescriptorProto:
    """prompb/remote.proto."""
    file = descriptor_pb2.FileDescriptorProto(
        name=REMOTE_FILE, package=PACKAGE, syntax="proto3", dependency=[TYPES_FILE]
    )
    _message(
        file,
        "WriteRequest",
        [
            ("timeseries", 1, MESSAGE, "repeated", ".prometheus.TimeSeries"),
            ("metadata", 3, MESSAGE, "repeated", ".prometheus.MetricMetadata"),
        ],
    )
    # Field 2 is reserved by Prometheus because Cortex (and Mimir) use it for the request source.
    file.message_type[-1].reserved_range.add(start=2, end=3)
    _message(
        file,
        "ReadRequest",
        [
            ("queries", 1, MESSAGE, "repeated", ".prometheus.Query"),
            ("accepted_response_types", 2, ENUM, "repeated", ".prometheus.ReadRequest.ResponseType"),
        ],
        enums={"ResponseType": [("SAMPLES", 0), ("STREAMED_XOR_CHUNKS", 1)]},
    )
    _message(file, "ReadResponse", [("results", 1, MESSAGE, "repeated", ".prometheus.QueryResult")])
    _message(
        file,
        "Query",
        [
            ("start_timestamp_ms", 1, INT64),
            ("end_timestamp_ms", 2, INT64),
            ("matchers", 3, MESSAGE, "repeated", ".prometheus.LabelMatcher"),
            ("hints", 4, MESSAGE, ".prometheus.ReadHints"),
        ],
    )
    _message(file, "QueryResult", [("timeseries", 1, MESSAGE, "repeated", ".prometheus.TimeSeries")])
    _message(
        file,
        "ChunkedReadResponse",
        [
            ("chunked_series", 1, MESSAGE, "repeated", ".prometheus.ChunkedSeries"),
            ("query_index", 2, INT64),
        ],
    )
    return file
