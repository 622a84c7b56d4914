"""Protobuf message classes for Prometheus's `prometheus` package (remote write v1 and remote read).

Built at import from the descriptors in `mimird.prompb.descriptors`, in a private descriptor pool so
they never clash with another copy of the same package. The ingest path does not use these classes (the
Cython decoder in `mimird._fast.remotewrite` reads the wire format directly); they are the reference
that decoder is tested against, and they encode remote read responses.
"""

from google.protobuf import descriptor_pool, message_factory

from mimird.prompb import descriptors

_pool = descriptor_pool.DescriptorPool()
_pool.Add(descriptors.types_file())
_pool.Add(descriptors.remote_file())


def _message_class(name: str):
    return message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"{descriptors.PACKAGE}.{name}"))


MetricMetadata = _message_class("MetricMetadata")
Sample = _message_class("Sample")
Exemplar = _message_class("Exemplar")
Histogram = _message_class("Histogram")
BucketSpan = _message_class("BucketSpan")
TimeSeries = _message_class("TimeSeries")
Label = _message_class("Label")
Labels = _message_class("Labels")
LabelMatcher = _message_class("LabelMatcher")
ReadHints = _message_class("ReadHints")
Chunk = _message_class("Chunk")
ChunkedSeries = _message_class("ChunkedSeries")
WriteRequest = _message_class("WriteRequest")
ReadRequest = _message_class("ReadRequest")
ReadResponse = _message_class("ReadResponse")
Query = _message_class("Query")
QueryResult = _message_class("QueryResult")
ChunkedReadResponse = _message_class("ChunkedReadResponse")

__all__ = [
    "BucketSpan",
    "Chunk",
    "ChunkedReadResponse",
    "ChunkedSeries",
    "Exemplar",
    "Histogram",
    "Label",
    "LabelMatcher",
    "Labels",
    "MetricMetadata",
    "Query",
    "QueryResult",
    "ReadHints",
    "ReadRequest",
    "ReadResponse",
    "Sample",
    "TimeSeries",
    "WriteRequest",
]
