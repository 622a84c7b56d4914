from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FUNCTION_PARAMETER_COUNTS: dict[str, int]

_Param = float | npt.ArrayLike

def check_double_exponential_smoothing_params(smoothing_factor: float, trend_factor: float) -> None: ...
def evaluate_batch(
    name: str,
    ts: npt.ArrayLike,
    vals: npt.ArrayLike,
    series_offsets: npt.ArrayLike,
    eval_ts: npt.ArrayLike,
    range_ms: int,
    params: tuple[_Param, ...] = (),
    intercept_shift_ms: int = 0,
    out: npt.NDArray[np.float64] | None = None,
    present: npt.NDArray[np.uint8] | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.uint8]]: ...
def evaluate(
    name: str,
    ts: npt.ArrayLike,
    vals: npt.ArrayLike,
    eval_ts: npt.ArrayLike | Sequence[int],
    range_ms: int,
    params: tuple[_Param, ...] = (),
    intercept_shift_ms: int = 0,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.uint8]]: ...
def evaluate_instant(
    name: str,
    ts: npt.ArrayLike,
    vals: npt.ArrayLike,
    series_offsets: npt.ArrayLike,
    t: int,
    range_ms: int,
) -> tuple[list[int], list[float], int]: ...
def has_stale_markers(vals: npt.NDArray[np.float64]) -> bool: ...
