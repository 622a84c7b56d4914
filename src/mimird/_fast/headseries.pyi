from array import array

def float_bits(v: float) -> int: ...

class MemSeries:
    ref: int
    labels: tuple[tuple[str, str], ...]
    chunks: list[bytes] | tuple[()]
    chunk_mints: array[int] | tuple[()]
    chunk_maxts: array[int] | tuple[()]
    open: object | None
    open_mint: int
    last_t: int
    last_v_bits: int
    ooo_t: list[int] | tuple[()]
    ooo_v: list[float] | tuple[()]
    cut_at: int
    def __init__(self, ref: int, labels: tuple[tuple[str, str], ...]) -> None: ...
    @property
    def min_time(self) -> int: ...
    def close_open_chunk(self) -> None: ...
    def append(self, t: int, v: float, block_range: int) -> None: ...
    def insert_ooo(self, t: int, v: float) -> bool: ...
    def snapshot(self, mint: int, maxt: int) -> tuple[list[bytes], list[int], list[float]]: ...

def append_in_order(by_labels: dict, series_labels: list, offsets: list[int], timestamps: list[int],
                    values: list[float], min_valid: int, block_range: int, out_refs: list[int],
                    out_ts: list[int], out_vs: list[float]) -> tuple[list[tuple[int, int]], int, int]: ...

def shared_labels(pairs: dict, labels: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]: ...
