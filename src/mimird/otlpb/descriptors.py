"""OpenTelemetry's metrics protocol (OTLP) and `google.rpc.Status` as protobuf descriptors.

There is no protoc on the build machines, so the .proto files of the opentelemetry-proto repository
(`opentelemetry/proto/{common,resource,metrics}/v1/*.proto` and `collector/metrics/v1/metrics_service.proto`)
are written out here as `FileDescriptorProto` values, field for field: names, numbers, types, labels,
oneofs, nested messages and enums, and proto3 `optional` fields (which need a synthetic oneof each).
Only the messages a metrics receiver reads or answers with are included; the language options
(java_package, go_package, ...) only steer code generation and are left out.

`google/rpc/status.proto` is added because OTLP/HTTP error bodies are a `google.rpc.Status`.
"""

from google.protobuf import any_pb2, descriptor_pb2

Field = descriptor_pb2.FieldDescriptorProto

COMMON_FILE = "opentelemetry/proto/common/v1/common.proto"
RESOURCE_FILE = "opentelemetry/proto/resource/v1/resource.proto"
METRICS_FILE = "opentelemetry/proto/metrics/v1/metrics.proto"
METRICS_SERVICE_FILE = "opentelemetry/proto/collector/metrics/v1/metrics_service.proto"
STATUS_FILE = "google/rpc/status.proto"
ANY_FILE = any_pb2.DESCRIPTOR.name

COMMON = ".opentelemetry.proto.common.v1"
RESOURCE = ".opentelemetry.proto.resource.v1"
METRICS = ".opentelemetry.proto.metrics.v1"
SERVICE = ".opentelemetry.proto.collector.metrics.v1"

DOUBLE = Field.TYPE_DOUBLE
INT32 = Field.TYPE_INT32
INT64 = Field.TYPE_INT64
UINT32 = Field.TYPE_UINT32
UINT64 = Field.TYPE_UINT64
SINT32 = Field.TYPE_SINT32
FIXED64 = Field.TYPE_FIXED64
SFIXED64 = Field.TYPE_SFIXED64
STRING = Field.TYPE_STRING
BYTES = Field.TYPE_BYTES
BOOL = Field.TYPE_BOOL
MESSAGE = Field.TYPE_MESSAGE
ENUM = Field.TYPE_ENUM

REPEATED = "repeated"
OPTIONAL = "optional"  # proto3 explicit presence


def _message(container, name: str, fields: list[tuple], oneofs: list[str] = (), reserved: list[int] = ()):
    """Add message `name` to `container` (a file or a message, for nested types) and return it.

    Each field is (name, number, type[, REPEATED | OPTIONAL][, type_name][, {"oneof": name}]).
    A proto3 `optional` field gets its synthetic oneof `_<name>` after the declared oneofs, as protoc does.
    """
    message = container.message_type.add(name=name) if hasattr(container, "message_type") \
        else container.nested_type.add(name=name)
    oneof_names = list(oneofs)
    for oneof_name in oneof_names:
        message.oneof_decl.add(name=oneof_name)
    for number in reserved:
        message.reserved_range.add(start=number, end=number + 1)
    for field_name, number, field_type, *options in fields:
        field = message.field.add(name=field_name, number=number, type=field_type, label=Field.LABEL_OPTIONAL)
        for option in options:
            if option == REPEATED:
                field.label = Field.LABEL_REPEATED
            elif option == OPTIONAL:
                field.proto3_optional = True
                message.oneof_decl.add(name=f"_{field_name}")
                field.oneof_index = len(message.oneof_decl) - 1
            elif isinstance(option, dict):
                field.oneof_index = oneof_names.index(option["oneof"])
            else:
                field.type_name = option
    return message


def _enum(container, name: str, values: list[tuple[str, int]]) -> None:
    enum = container.enum_type.add(name=name)
    for value_name, number in values:
        enum.value.add(name=value_name, number=number)


def common_file() -> descriptor_pb2.FileDescriptorProto:
    """opentelemetry/proto/common/v1/common.proto."""
    file = descriptor_pb2.FileDescriptorProto(name=COMMON_FILE, package=COMMON[1:], syntax="proto3")
    _message(file, "AnyValue", [
        ("string_value", 1, STRING, {"oneof": "value"}),
        ("bool_value", 2, BOOL, {"oneof": "value"}),
        ("int_value", 3, INT64, {"oneof": "value"}),
        ("double_value", 4, DOUBLE, {"oneof": "value"}),
        ("array_value", 5, MESSAGE, f"{COMMON}.ArrayValue", {"oneof": "value"}),
        ("kvlist_value", 6, MESSAGE, f"{COMMON}.KeyValueList", {"oneof": "value"}),
        ("bytes_value", 7, BYTES, {"oneof": "value"}),
        ("string_value_strindex", 8, INT32, {"oneof": "value"}),
    ], oneofs=["value"])
    _message(file, "ArrayValue", [("values", 1, MESSAGE, REPEATED, f"{COMMON}.AnyValue")])
    _message(file, "KeyValueList", [("values", 1, MESSAGE, REPEATED, f"{COMMON}.KeyValue")])
    _message(file, "KeyValue", [
        ("key", 1, STRING),
        ("value", 2, MESSAGE, f"{COMMON}.AnyValue"),
        ("key_strindex", 3, INT32),
    ])
    _message(file, "InstrumentationScope", [
        ("name", 1, STRING),
        ("version", 2, STRING),
        ("attributes", 3, MESSAGE, REPEATED, f"{COMMON}.KeyValue"),
        ("dropped_attributes_count", 4, UINT32),
    ])
    _message(file, "EntityRef", [
        ("schema_url", 1, STRING),
        ("type", 2, STRING),
        ("id_keys", 3, STRING, REPEATED),
        ("description_keys", 4, STRING, REPEATED),
    ])
    return file


def resource_file() -> descriptor_pb2.FileDescriptorProto:
    """opentelemetry/proto/resource/v1/resource.proto."""
    file = descriptor_pb2.FileDescriptorProto(name=RESOURCE_FILE, package=RESOURCE[1:], syntax="proto3",
                                              dependency=[COMMON_FILE])
    _message(file, "Resource", [
        ("attributes", 1, MESSAGE, REPEATED, f"{COMMON}.KeyValue"),
        ("dropped_attributes_count", 2, UINT32),
        ("entity_refs", 3, MESSAGE, REPEATED, f"{COMMON}.EntityRef"),
    ])
    return file


def metrics_file() -> descriptor_pb2.FileDescriptorProto:
    """opentelemetry/proto/metrics/v1/metrics.proto."""
    file = descriptor_pb2.FileDescriptorProto(name=METRICS_FILE, package=METRICS[1:], syntax="proto3",
                                              dependency=[COMMON_FILE, RESOURCE_FILE])
    key_values = f"{COMMON}.KeyValue"
    temporality = f"{METRICS}.AggregationTemporality"
    _message(file, "MetricsData", [("resource_metrics", 1, MESSAGE, REPEATED, f"{METRICS}.ResourceMetrics")])
    _message(file, "ResourceMetrics", [
        ("resource", 1, MESSAGE, f"{RESOURCE}.Resource"),
        ("scope_metrics", 2, MESSAGE, REPEATED, f"{METRICS}.ScopeMetrics"),
        ("schema_url", 3, STRING),
    ], reserved=[1000])
    _message(file, "ScopeMetrics", [
        ("scope", 1, MESSAGE, f"{COMMON}.InstrumentationScope"),
        ("metrics", 2, MESSAGE, REPEATED, f"{METRICS}.Metric"),
        ("schema_url", 3, STRING),
    ])
    _message(file, "Metric", [
        ("name", 1, STRING),
        ("description", 2, STRING),
        ("unit", 3, STRING),
        ("gauge", 5, MESSAGE, f"{METRICS}.Gauge", {"oneof": "data"}),
        ("sum", 7, MESSAGE, f"{METRICS}.Sum", {"oneof": "data"}),
        ("histogram", 9, MESSAGE, f"{METRICS}.Histogram", {"oneof": "data"}),
        ("exponential_histogram", 10, MESSAGE, f"{METRICS}.ExponentialHistogram", {"oneof": "data"}),
        ("summary", 11, MESSAGE, f"{METRICS}.Summary", {"oneof": "data"}),
        ("metadata", 12, MESSAGE, REPEATED, key_values),
    ], oneofs=["data"], reserved=[4, 6, 8])
    _message(file, "Gauge", [("data_points", 1, MESSAGE, REPEATED, f"{METRICS}.NumberDataPoint")])
    _message(file, "Sum", [
        ("data_points", 1, MESSAGE, REPEATED, f"{METRICS}.NumberDataPoint"),
        ("aggregation_temporality", 2, ENUM, temporality),
        ("is_monotonic", 3, BOOL),
    ])
    _message(file, "Histogram", [
        ("data_points", 1, MESSAGE, REPEATED, f"{METRICS}.HistogramDataPoint"),
        ("aggregation_temporality", 2, ENUM, temporality),
    ])
    _message(file, "ExponentialHistogram", [
        ("data_points", 1, MESSAGE, REPEATED, f"{METRICS}.ExponentialHistogramDataPoint"),
        ("aggregation_temporality", 2, ENUM, temporality),
    ])
    _message(file, "Summary", [("data_points", 1, MESSAGE, REPEATED, f"{METRICS}.SummaryDataPoint")])
    _enum(file, "AggregationTemporality", [
        ("AGGREGATION_TEMPORALITY_UNSPECIFIED", 0),
        ("AGGREGATION_TEMPORALITY_DELTA", 1),
        ("AGGREGATION_TEMPORALITY_CUMULATIVE", 2),
    ])
    _enum(file, "DataPointFlags", [
        ("DATA_POINT_FLAGS_DO_NOT_USE", 0),
        ("DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK", 1),
    ])
    _message(file, "NumberDataPoint", [
        ("attributes", 7, MESSAGE, REPEATED, key_values),
        ("start_time_unix_nano", 2, FIXED64),
        ("time_unix_nano", 3, FIXED64),
        ("as_double", 4, DOUBLE, {"oneof": "value"}),
        ("as_int", 6, SFIXED64, {"oneof": "value"}),
        ("exemplars", 5, MESSAGE, REPEATED, f"{METRICS}.Exemplar"),
        ("flags", 8, UINT32),
    ], oneofs=["value"], reserved=[1])
    _message(file, "HistogramDataPoint", [
        ("attributes", 9, MESSAGE, REPEATED, key_values),
        ("start_time_unix_nano", 2, FIXED64),
        ("time_unix_nano", 3, FIXED64),
        ("count", 4, FIXED64),
        ("sum", 5, DOUBLE, OPTIONAL),
        ("bucket_counts", 6, FIXED64, REPEATED),
        ("explicit_bounds", 7, DOUBLE, REPEATED),
        ("exemplars", 8, MESSAGE, REPEATED, f"{METRICS}.Exemplar"),
        ("flags", 10, UINT32),
        ("min", 11, DOUBLE, OPTIONAL),
        ("max", 12, DOUBLE, OPTIONAL),
    ], reserved=[1])
    exponential = _message(file, "ExponentialHistogramDataPoint", [
        ("attributes", 1, MESSAGE, REPEATED, key_values),
        ("start_time_unix_nano", 2, FIXED64),
        ("time_unix_nano", 3, FIXED64),
        ("count", 4, FIXED64),
        ("sum", 5, DOUBLE, OPTIONAL),
        ("scale", 6, SINT32),
        ("zero_count", 7, FIXED64),
        ("positive", 8, MESSAGE, f"{METRICS}.ExponentialHistogramDataPoint.Buckets"),
        ("negative", 9, MESSAGE, f"{METRICS}.ExponentialHistogramDataPoint.Buckets"),
        ("flags", 10, UINT32),
        ("exemplars", 11, MESSAGE, REPEATED, f"{METRICS}.Exemplar"),
        ("min", 12, DOUBLE, OPTIONAL),
        ("max", 13, DOUBLE, OPTIONAL),
        ("zero_threshold", 14, DOUBLE),
    ])
    _message(exponential, "Buckets", [("offset", 1, SINT32), ("bucket_counts", 2, UINT64, REPEATED)])
    summary = _message(file, "SummaryDataPoint", [
        ("attributes", 7, MESSAGE, REPEATED, key_values),
        ("start_time_unix_nano", 2, FIXED64),
        ("time_unix_nano", 3, FIXED64),
        ("count", 4, FIXED64),
        ("sum", 5, DOUBLE),
        ("quantile_values", 6, MESSAGE, REPEATED, f"{METRICS}.SummaryDataPoint.ValueAtQuantile"),
        ("flags", 8, UINT32),
    ], reserved=[1])
    _message(summary, "ValueAtQuantile", [("quantile", 1, DOUBLE), ("value", 2, DOUBLE)])
    _message(file, "Exemplar", [
        ("filtered_attributes", 7, MESSAGE, REPEATED, key_values),
        ("time_unix_nano", 2, FIXED64),
        ("as_double", 3, DOUBLE, {"oneof": "value"}),
        ("as_int", 6, SFIXED64, {"oneof": "value"}),
        ("span_id", 4, BYTES),
        ("trace_id", 5, BYTES),
    ], oneofs=["value"], reserved=[1])
    return file


def metrics_service_file() -> descriptor_pb2.FileDescriptorProto:
    """opentelemetry/proto/collector/metrics/v1/metrics_service.proto (the messages; the gRPC service is not needed)."""
    file = descriptor_pb2.FileDescriptorProto(name=METRICS_SERVICE_FILE, package=SERVICE[1:], syntax="proto3",
                                              dependency=[METRICS_FILE])
    _message(file, "ExportMetricsServiceRequest",
             [("resource_metrics", 1, MESSAGE, REPEATED, f"{METRICS}.ResourceMetrics")])
    _message(file, "ExportMetricsServiceResponse",
             [("partial_success", 1, MESSAGE, f"{SERVICE}.ExportMetricsPartialSuccess")])
    _message(file, "ExportMetricsPartialSuccess", [("rejected_data_points", 1, INT64), ("error_message", 2, STRING)])
    return file


def any_file() -> descriptor_pb2.FileDescriptorProto:
    """google/protobuf/any.proto, copied from the protobuf runtime (Status.details refers to it)."""
    file = descriptor_pb2.FileDescriptorProto()
    any_pb2.DESCRIPTOR.CopyToProto(file)
    return file


def status_file() -> descriptor_pb2.FileDescriptorProto:
    """google/rpc/status.proto."""
    file = descriptor_pb2.FileDescriptorProto(name=STATUS_FILE, package="google.rpc", syntax="proto3",
                                              dependency=[ANY_FILE])
    _message(file, "Status", [
        ("code", 1, INT32),
        ("message", 2, STRING),
        ("details", 3, MESSAGE, REPEATED, ".google.protobuf.Any"),
    ])
    return file
