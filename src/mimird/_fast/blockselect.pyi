from collections.abc import Callable
from typing import Any

import numpy as np

class BlockSnapshot:
    num_chunks: int
    chunk_bytes: int
    max_samples: int
    @staticmethod
    def take(index: Any, refs: np.ndarray, series_start: int, series_end: int, symbol_offsets: np.ndarray,
             symbol_cache: list[str | None], segments: list[Any], segment_header_size: int, mint: int,
             maxt: int) -> BlockSnapshot: ...
    def decode(self) -> tuple[list[tuple[tuple[str, str], ...]], np.ndarray, np.ndarray, np.ndarray]: ...

def decode_merged(
    sources: list[BlockSnapshot | tuple[list[tuple[tuple[str, str], ...]], np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[list[tuple[tuple[str, str], ...]], np.ndarray, np.ndarray, np.ndarray]: ...

class ChunkDecodeError(ValueError): ...

def evaluate_merged(
    sources: list[BlockSnapshot | tuple[list[tuple[tuple[str, str], ...]], np.ndarray, np.ndarray, np.ndarray]],
    name: str, eval_ts: np.ndarray, range_ms: int, params: tuple = (), intercept_shift_ms: int = 0,
    between: Callable[[], None] | None = None, slice_samples: int = 0,
) -> tuple[list[tuple[tuple[str, str], ...]], np.ndarray, np.ndarray, np.ndarray]: ...
