import numpy as np
import numpy.typing as npt

PARALLEL_MIN_CELLS: int

def fold(
    op: str,
    values: npt.ArrayLike,
    present: npt.ArrayLike,
    group_ids: npt.ArrayLike,
    n_groups: int,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.uint8]]: ...

def group_series(
    labels: list[tuple[tuple[str, str], ...]], grouping: tuple[str, ...], without: bool
) -> tuple[npt.NDArray[np.intp], list[tuple[tuple[str, str], ...]]]: ...

def distinct_label_values(labels: list[tuple[tuple[str, str], ...]], name: str) -> list[str]: ...

def fold_instant(
    op: str, values: list[float], group_ids: npt.NDArray[np.intp], n_groups: int
) -> tuple[list[int], list[float]]: ...

def select_fold(
    op: str,
    ts: npt.NDArray[np.int64],
    vals: npt.NDArray[np.float64],
    offsets: npt.NDArray[np.int64],
    times: npt.NDArray[np.int64],
    lookback_ms: int,
    group_ids: npt.NDArray[np.intp],
    n_groups: int,
) -> tuple[list[int], npt.NDArray[np.float64], npt.NDArray[np.bool_], int, int]: ...

FOLD_OPERATIONS: frozenset[str]

SELECT_K_MAX_CANDIDATES: int

def select_k(
    op: str,
    values: npt.ArrayLike,
    present: npt.ArrayLike,
    group_ids: npt.ArrayLike,
    n_groups: int,
    ks: npt.ArrayLike,
) -> tuple[np.ndarray, np.ndarray]: ...
