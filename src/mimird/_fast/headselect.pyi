import numpy as np

from mimird._fast.headseries import SeriesByRef

class HeadSnapshot:
    num_series: int
    num_chunks: int
    chunk_bytes: int
    @staticmethod
    def take(series_by_ref: SeriesByRef, refs: np.ndarray, mint: int, maxt: int,
             latest_only: bool = False) -> HeadSnapshot: ...
    def decode(self, parts: int = 1) -> tuple[list[tuple[tuple[str, str], ...]], np.ndarray, np.ndarray, np.ndarray]: ...
