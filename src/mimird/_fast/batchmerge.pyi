import numpy as np

def merge_batches(
    labels_lists: list[list[tuple[tuple[str, str], ...]]], ts_arrays: list[np.ndarray], vals_arrays: list[np.ndarray],
    offsets_arrays: list[np.ndarray],
) -> tuple[list[tuple[tuple[str, str], ...]], np.ndarray, np.ndarray, np.ndarray]: ...
