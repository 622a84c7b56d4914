from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

def present_rows(
    values: npt.NDArray[np.float64],
    present: npt.NDArray[np.bool_],
    steps: npt.NDArray[np.int64],
    rows: Iterable[int],
) -> list[tuple[int, npt.NDArray[np.int64], npt.NDArray[np.float64]]]: ...
def count_present(present: npt.NDArray[np.bool_] | npt.NDArray[np.uint8]) -> int: ...
def rows_present(
    present: npt.NDArray[np.bool_] | npt.NDArray[np.uint8], all_as_none: bool = False
) -> tuple[int, list[int] | None]: ...
def present_batch(
    values: npt.NDArray[np.float64],
    present: npt.NDArray[np.bool_] | npt.NDArray[np.uint8],
    steps: npt.NDArray[np.int64],
) -> tuple[list[int], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float64]]: ...

SCALAR_ARITHMETIC: frozenset[str]

def scalar_arithmetic(
    op: str, values: npt.NDArray[np.float64], scalars: npt.NDArray[np.float64], swap: bool
) -> npt.NDArray[np.float64]: ...
