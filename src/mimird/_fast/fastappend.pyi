import numpy as np
import numpy.typing as npt

from mimird._fast.headseries import MemSeries
from mimird._fast.remotewrite import WriteBatch

class SeriesCache:
    validated_under: object
    def __len__(self) -> int: ...
    @property
    def memory_bytes(self) -> int: ...
    def clear(self) -> None: ...
    def add(self, series: MemSeries) -> bool: ...
    def add_known(self, by_labels: dict, series_labels: object) -> None: ...
    def lookup(self, batch: WriteBatch, index: int, drop_name: str | None = None) -> MemSeries | None: ...

class FastPlan:
    fast_samples: int
    min_t: int
    max_t: int
    min_valid: int
    slow_indices: list[int]
    slow_offsets: npt.NDArray[np.int64]
    slow_timestamps: npt.NDArray[np.int64]
    slow_values: npt.NDArray[np.float64]
    generation: object
    @property
    def fast_series_count(self) -> int: ...
    def claims_fast(self, series: MemSeries) -> bool: ...
    def fast_series(self) -> list[tuple[int, MemSeries, list[int], list[float]]]: ...
    def append(
        self, block_range: int
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.int64], npt.NDArray[np.float64]]: ...

def plan_fast_append(
    cache: SeriesCache, batch: WriteBatch, min_ms: int, max_ms: int, min_valid: int, drop_name: str | None = None
) -> FastPlan: ...
