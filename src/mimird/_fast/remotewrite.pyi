import numpy as np
import numpy.typing as npt

METRIC_TYPE_UNKNOWN: int
METRIC_TYPE_COUNTER: int
METRIC_TYPE_GAUGE: int
METRIC_TYPE_HISTOGRAM: int
METRIC_TYPE_GAUGEHISTOGRAM: int
METRIC_TYPE_SUMMARY: int
METRIC_TYPE_INFO: int
METRIC_TYPE_STATESET: int
RESET_HINT_UNKNOWN: int
RESET_HINT_YES: int
RESET_HINT_NO: int
RESET_HINT_GAUGE: int
SOURCE_API: int
SOURCE_RULE: int

LabelPairs = tuple[tuple[str, str], ...]

class NativeHistogram:
    count_int: int
    count_float: float
    is_float: bool
    sum: float
    schema: int
    zero_threshold: float
    zero_count_int: int
    zero_count_float: float
    negative_spans: tuple[tuple[int, int], ...]
    negative_deltas: tuple[int, ...]
    negative_counts: tuple[float, ...]
    positive_spans: tuple[tuple[int, int], ...]
    positive_deltas: tuple[int, ...]
    positive_counts: tuple[float, ...]
    reset_hint: int
    timestamp: int
    custom_values: tuple[float, ...]

class WriteBatch:
    series_labels: list[LabelPairs]
    sample_offsets: npt.NDArray[np.int64]
    timestamps: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    exemplars: list[tuple[int, LabelPairs, float, int]]
    histograms: list[tuple[int, NativeHistogram]]
    metadata: list[tuple[int, str, str, str]]
    source: int
    skip_label_validation: bool
    skip_label_count_validation: bool
    created_timestamps: npt.NDArray[np.int64]
    raw: memoryview | None
    label_spans: npt.NDArray[np.int64] | None
    label_starts: npt.NDArray[np.int64] | None
    series_extras: npt.NDArray[np.uint8] | None
    def labels_of(self, index: int) -> LabelPairs: ...
    @property
    def num_series(self) -> int: ...
    @property
    def num_samples(self) -> int: ...
    def series_samples(self, index: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]: ...

def decode_write_request(
    data: bytes | bytearray | memoryview, *, decode_exemplars: bool = True
) -> WriteBatch: ...
def decode_write_request_v2(
    data: bytes | bytearray | memoryview, *, decode_exemplars: bool = True
) -> WriteBatch: ...
def metric_family_name(metric_name: str, metric_type: int) -> str: ...
