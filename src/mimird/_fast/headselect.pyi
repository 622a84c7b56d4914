from typing import Any

import numpy as np

class HeadSnapshot:
    num_series: int
    num_chunks: int
    chunk_bytes: int
    @staticmethod
    def take(series: list[Any], mint: int, maxt: int) -> HeadSnapshot: ...
    def decode(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]: ...
