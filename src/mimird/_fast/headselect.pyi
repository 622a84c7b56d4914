from typing import Any

import numpy as np

class HeadSnapshot:
    num_series: int
    num_chunks: int
    chunk_bytes: int
    @staticmethod
    def take(series_by_ref: dict[int, Any], refs: np.ndarray, mint: int, maxt: int,
             latest_only: bool = False) -> HeadSnapshot: ...
    def decode(self, parts: int = 1) -> tuple[list[tuple[tuple[str, str], ...]], np.ndarray, np.ndarray, np.ndarray]: ...
