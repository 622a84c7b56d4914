import numpy as np
import numpy.typing as npt

def select_rows(
    ts: npt.ArrayLike,
    vals: npt.ArrayLike,
    offsets: npt.ArrayLike,
    times: npt.ArrayLike,
    lookback_ms: int,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.uint8], npt.NDArray[np.int64], npt.NDArray[np.int64]]: ...
def select_at(
    ts: npt.ArrayLike,
    vals: npt.ArrayLike,
    offsets: npt.ArrayLike,
    t: int,
    lookback_ms: int,
) -> tuple[list[int], list[float]]: ...
