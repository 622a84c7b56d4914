"""The pure-Python matrix and vector renderer that `mimird._fast.jsonenc` replaced, kept as its reference.

It is the renderer `mimird.querier.jsonfmt.value_json` used before the Cython kernel, built on
jsonfmt's single-value formatters (`format_float`, `format_timestamp`, `labels_json`), which remain the
product's definition of Prometheus's JSON. `tests/test_jsonenc.py` checks the kernel against it byte for
byte and `bench/jsonenc.py` measures both.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from mimird.querier.jsonfmt import _format_float_slow, format_timestamp, labels_json, point_json


def format_timestamps(ts: Sequence[int]) -> list[str]:
    """`format_timestamp` of many; whole seconds (the usual step grid) take a shortcut."""
    ts = list(ts)
    if all(t % 1000 == 0 for t in ts):
        return [str(t // 1000) for t in ts]
    return [format_timestamp(t) for t in ts]


def format_floats(vals: Sequence[float]) -> list[str]:
    """`format_float` of many."""
    out = []
    for value in vals:
        text = repr(value)
        if "e" in text or "n" in text:
            text = _format_float_slow(value, text)
        elif text.endswith(".0"):
            text = text[:-2]
        out.append(text)
    return out


def matrix_series_json(labels: Iterable[tuple[str, str]], ts: Sequence[int], vals: Sequence[float]) -> str:
    """One element of a matrix result; `values` is left out when the series has no points."""
    body = f'{{"metric":{labels_json(labels, False)}'
    if len(ts):
        points = [f'[{t},"{v}"]' for t, v in zip(format_timestamps(ts), format_floats(vals), strict=True)]
        body += ',"values":[' + ",".join(points) + "]"
    return body + "}"


def render_matrix(series: Iterable[Any]) -> str:
    """The `result` array of a matrix."""
    return "[" + ",".join(matrix_series_json(one.labels, one.ts.tolist(), one.vals.tolist())
                          for one in series) + "]"


def render_vector(samples: Iterable[Any]) -> str:
    """The `result` array of a vector."""
    return "[" + ",".join(
        f'{{"metric":{labels_json(sample.labels, False)},"value":{point_json(int(sample.t), float(sample.v))}}}'
        for sample in samples) + "]"
