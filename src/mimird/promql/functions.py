"""The PromQL function table of Prometheus 3.5: argument types, return type, arity, experimental flag.

``variadic`` follows Prometheus: 0 means exactly ``len(arg_types)`` arguments; N > 0 means the last
argument type is optional and may repeat up to N times in all (so between ``len(arg_types) - 1`` and
``len(arg_types) - 1 + N`` arguments); -1 means the last argument type may repeat without limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from mimird.promql.ast import ValueType

SCALAR = ValueType.SCALAR
VECTOR = ValueType.VECTOR
MATRIX = ValueType.MATRIX
STRING = ValueType.STRING


@dataclass(frozen=True)
class Function:
    """One PromQL function's signature."""

    name: str
    arg_types: tuple[ValueType, ...]
    return_type: ValueType
    variadic: int = 0
    experimental: bool = False

    @property
    def min_args(self) -> int:
        """Fewest arguments a call may have."""
        return len(self.arg_types) if self.variadic == 0 else len(self.arg_types) - 1

    @property
    def max_args(self) -> int | None:
        """Most arguments a call may have, or None when unbounded."""
        if self.variadic == 0:
            return len(self.arg_types)
        if self.variadic < 0:
            return None
        return len(self.arg_types) - 1 + self.variadic

    def arg_type(self, index: int) -> ValueType:
        """The expected type of argument ``index`` (repeating the last one for variadic functions)."""
        return self.arg_types[min(index, len(self.arg_types) - 1)]


def _fn(name: str, args: tuple[ValueType, ...], ret: ValueType = VECTOR, variadic: int = 0,
        experimental: bool = False) -> Function:
    return Function(name, args, ret, variadic, experimental)


_V = (VECTOR,)
_M = (MATRIX,)

_TABLE: tuple[Function, ...] = (
    _fn("abs", _V),
    _fn("absent", _V),
    _fn("absent_over_time", _M),
    _fn("acos", _V),
    _fn("acosh", _V),
    _fn("asin", _V),
    _fn("asinh", _V),
    _fn("atan", _V),
    _fn("atanh", _V),
    _fn("avg_over_time", _M),
    _fn("ceil", _V),
    _fn("changes", _M),
    _fn("clamp", (VECTOR, SCALAR, SCALAR)),
    _fn("clamp_max", (VECTOR, SCALAR)),
    _fn("clamp_min", (VECTOR, SCALAR)),
    _fn("cos", _V),
    _fn("cosh", _V),
    _fn("count_over_time", _M),
    _fn("days_in_month", _V, variadic=1),
    _fn("day_of_month", _V, variadic=1),
    _fn("day_of_week", _V, variadic=1),
    _fn("day_of_year", _V, variadic=1),
    _fn("deg", _V),
    _fn("delta", _M),
    _fn("deriv", _M),
    _fn("exp", _V),
    _fn("floor", _V),
    _fn("histogram_avg", _V),
    _fn("histogram_count", _V),
    _fn("histogram_sum", _V),
    _fn("histogram_stddev", _V),
    _fn("histogram_stdvar", _V),
    _fn("histogram_fraction", (SCALAR, SCALAR, VECTOR)),
    _fn("histogram_quantile", (SCALAR, VECTOR)),
    _fn("double_exponential_smoothing", (MATRIX, SCALAR, SCALAR), experimental=True),
    _fn("hour", _V, variadic=1),
    _fn("idelta", _M),
    _fn("increase", _M),
    _fn("info", (VECTOR, VECTOR), variadic=1, experimental=True),
    _fn("irate", _M),
    _fn("label_replace", (VECTOR, STRING, STRING, STRING, STRING)),
    _fn("label_join", (VECTOR, STRING, STRING, STRING), variadic=-1),
    _fn("last_over_time", _M),
    _fn("ln", _V),
    _fn("log10", _V),
    _fn("log2", _V),
    _fn("mad_over_time", _M, experimental=True),
    _fn("max_over_time", _M),
    _fn("min_over_time", _M),
    _fn("ts_of_max_over_time", _M, experimental=True),
    _fn("ts_of_min_over_time", _M, experimental=True),
    _fn("ts_of_last_over_time", _M, experimental=True),
    _fn("minute", _V, variadic=1),
    _fn("month", _V, variadic=1),
    _fn("pi", (), SCALAR),
    _fn("predict_linear", (MATRIX, SCALAR)),
    _fn("present_over_time", _M),
    _fn("quantile_over_time", (SCALAR, MATRIX)),
    _fn("rad", _V),
    _fn("rate", _M),
    _fn("resets", _M),
    _fn("round", (VECTOR, SCALAR), variadic=1),
    _fn("scalar", _V, SCALAR),
    _fn("sgn", _V),
    _fn("sin", _V),
    _fn("sinh", _V),
    _fn("sort", _V),
    _fn("sort_desc", _V),
    _fn("sort_by_label", (VECTOR, STRING), variadic=-1, experimental=True),
    _fn("sort_by_label_desc", (VECTOR, STRING), variadic=-1, experimental=True),
    _fn("sqrt", _V),
    _fn("stddev_over_time", _M),
    _fn("stdvar_over_time", _M),
    _fn("sum_over_time", _M),
    _fn("tan", _V),
    _fn("tanh", _V),
    _fn("time", (), SCALAR),
    _fn("timestamp", _V),
    _fn("vector", (SCALAR,)),
    _fn("year", _V, variadic=1),
)

FUNCTIONS: dict[str, Function] = {f.name: f for f in _TABLE}
"""Every function Prometheus 3.5 knows, by name (names are case-sensitive)."""

# Aggregation operators. Those taking a parameter map to the parameter's type; experimental ones are
# the two that Prometheus gates behind --enable-feature=promql-experimental-functions.
AGGREGATORS: frozenset[str] = frozenset(
    ("sum", "avg", "count", "min", "max", "group", "stddev", "stdvar", "topk", "bottomk", "count_values",
     "quantile", "limitk", "limit_ratio")
)
AGGREGATOR_PARAM_TYPES: dict[str, ValueType] = {
    "topk": SCALAR,
    "bottomk": SCALAR,
    "quantile": SCALAR,
    "limitk": SCALAR,
    "limit_ratio": SCALAR,
    "count_values": STRING,
}
EXPERIMENTAL_AGGREGATORS: frozenset[str] = frozenset(("limitk", "limit_ratio"))


def get_function(name: str) -> Function | None:
    """The function called ``name``, or None."""
    return FUNCTIONS.get(name)
