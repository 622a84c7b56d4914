import numpy as np
import numpy.typing as npt

SERIES_ALIGNMENT: int

def encode_series_batch(
    position: int,
    order: npt.NDArray[np.int64],
    label_starts: npt.NDArray[np.int64],
    label_ids: npt.NDArray[np.uint32],
    chunk_starts: npt.NDArray[np.int64],
    chunk_mint: npt.NDArray[np.int64],
    chunk_maxt: npt.NDArray[np.int64],
    chunk_refs: npt.NDArray[np.uint64],
) -> tuple[bytes, npt.NDArray[np.uint64]]: ...
def decode_series(
    data: bytes | bytearray | memoryview, offset: int
) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.uint64]]: ...
def symbol_offsets(
    data: bytes | bytearray | memoryview, start: int, end: int, count: int
) -> npt.NDArray[np.uint64]: ...
def read_postings_offset_table(
    data: bytes | bytearray | memoryview, start: int, end: int, count: int
) -> dict[str, tuple[list[str], list[int]]]: ...
def frame_chunks(chunks: list[bytes], encoding: int) -> tuple[bytes, npt.NDArray[np.int64]]: ...
def read_chunks(
    segments: list[bytes | memoryview], refs: npt.NDArray[np.uint64], header_size: int
) -> list[tuple[int, bytes]]: ...
def is_strictly_increasing(values: npt.NDArray[np.int64]) -> bool: ...
