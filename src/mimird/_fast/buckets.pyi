import numpy as np
import numpy.typing as npt

def almost_equal(a: float, b: float, epsilon: float) -> bool: ...
def quantile_steps(
    q: npt.NDArray[np.float64],
    bounds: npt.NDArray[np.float64],
    counts: npt.NDArray[np.float64],
    present: npt.NDArray[np.uint8],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]: ...
