"""Protobuf message classes for OTLP metrics (`opentelemetry.proto.*`) and `google.rpc.Status`.

Built at import from the descriptors in `mimird.otlpb.descriptors`, in a private descriptor pool so
they never clash with the classes of the OpenTelemetry SDK (which registers the same names in the
default pool when it is installed).
"""

from google.protobuf import descriptor_pool, message_factory

from mimird.otlpb import descriptors

_pool = descriptor_pool.DescriptorPool()
for _file in (descriptors.common_file(), descriptors.resource_file(), descriptors.metrics_file(),
              descriptors.metrics_service_file(), descriptors.any_file(), descriptors.status_file()):
    _pool.Add(_file)


def _message_class(full_name: str):
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(full_name))


AnyValue = _message_class("opentelemetry.proto.common.v1.AnyValue")
ArrayValue = _message_class("opentelemetry.proto.common.v1.ArrayValue")
KeyValueList = _message_class("opentelemetry.proto.common.v1.KeyValueList")
KeyValue = _message_class("opentelemetry.proto.common.v1.KeyValue")
InstrumentationScope = _message_class("opentelemetry.proto.common.v1.InstrumentationScope")
Resource = _message_class("opentelemetry.proto.resource.v1.Resource")
MetricsData = _message_class("opentelemetry.proto.metrics.v1.MetricsData")
ResourceMetrics = _message_class("opentelemetry.proto.metrics.v1.ResourceMetrics")
ScopeMetrics = _message_class("opentelemetry.proto.metrics.v1.ScopeMetrics")
Metric = _message_class("opentelemetry.proto.metrics.v1.Metric")
Gauge = _message_class("opentelemetry.proto.metrics.v1.Gauge")
Sum = _message_class("opentelemetry.proto.metrics.v1.Sum")
Histogram = _message_class("opentelemetry.proto.metrics.v1.Histogram")
ExponentialHistogram = _message_class("opentelemetry.proto.metrics.v1.ExponentialHistogram")
Summary = _message_class("opentelemetry.proto.metrics.v1.Summary")
NumberDataPoint = _message_class("opentelemetry.proto.metrics.v1.NumberDataPoint")
HistogramDataPoint = _message_class("opentelemetry.proto.metrics.v1.HistogramDataPoint")
ExponentialHistogramDataPoint = _message_class("opentelemetry.proto.metrics.v1.ExponentialHistogramDataPoint")
SummaryDataPoint = _message_class("opentelemetry.proto.metrics.v1.SummaryDataPoint")
Exemplar = _message_class("opentelemetry.proto.metrics.v1.Exemplar")
ExportMetricsServiceRequest = _message_class("opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest")
ExportMetricsServiceResponse = _message_class("opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceResponse")
ExportMetricsPartialSuccess = _message_class("opentelemetry.proto.collector.metrics.v1.ExportMetricsPartialSuccess")
Status = _message_class("google.rpc.Status")

AGGREGATION_TEMPORALITY_UNSPECIFIED = 0
AGGREGATION_TEMPORALITY_DELTA = 1
AGGREGATION_TEMPORALITY_CUMULATIVE = 2
DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK = 1

__all__ = [
    "AGGREGATION_TEMPORALITY_CUMULATIVE",
    "AGGREGATION_TEMPORALITY_DELTA",
    "AGGREGATION_TEMPORALITY_UNSPECIFIED",
    "DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK",
    "AnyValue",
    "ArrayValue",
    "Exemplar",
    "ExponentialHistogram",
    "ExponentialHistogramDataPoint",
    "ExportMetricsPartialSuccess",
    "ExportMetricsServiceRequest",
    "ExportMetricsServiceResponse",
    "Gauge",
    "Histogram",
    "HistogramDataPoint",
    "InstrumentationScope",
    "KeyValue",
    "KeyValueList",
    "Metric",
    "MetricsData",
    "NumberDataPoint",
    "Resource",
    "ResourceMetrics",
    "ScopeMetrics",
    "Status",
    "Sum",
    "Summary",
    "SummaryDataPoint",
]
