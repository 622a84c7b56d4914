"""Query results and query errors of the PromQL engine, shaped as Prometheus's API returns them.

A result is a ``Scalar``, a ``String``, a ``Vector`` (a list of ``Sample``) or a ``Matrix`` (a list
of ``Series`` whose points are numpy arrays). Errors are ``QueryError`` subclasses that carry
Prometheus's ``errorType`` so that the HTTP layer can answer with Prometheus's JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mimird.tsdb.labels import Labels


@dataclass(frozen=True)
class Scalar:
    """A scalar at time ``t`` (ms)."""

    t: int
    v: float


@dataclass(frozen=True)
class String:
    """A string literal's value at time ``t`` (ms)."""

    t: int
    v: str


# Not frozen: a frozen dataclass's __init__ goes through object.__setattr__ and costs twice as much, and
# an instant query builds one Sample per result series. Treat them as immutable all the same.
@dataclass(slots=True, unsafe_hash=True)
class Sample:
    """One element of an instant vector."""

    labels: Labels
    t: int
    v: float


@dataclass(frozen=True)
class Series:
    """One series of a range result: timestamps (int64 ms) and float values, equally long."""

    labels: Labels
    ts: np.ndarray
    vals: np.ndarray


class Vector(list):
    """An instant vector: a list of Sample, in the order the engine produced them."""


class Matrix(list):
    """A range vector: a list of Series, sorted by label set for range queries."""


Value = Scalar | String | Vector | Matrix


@dataclass
class QueryResult:
    """What a query returns: the value and the annotations (full texts, Prometheus's wording)."""

    value: Value
    warnings: list[str] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)


class QueryError(Exception):
    """A query failed; ``error_type`` is Prometheus's API ``errorType``."""

    error_type = "execution"


class BadDataError(QueryError):
    """The query itself is invalid (parse errors, bad parameters)."""

    error_type = "bad_data"


class ExecutionError(QueryError):
    """Evaluation failed (duplicate label sets, many-to-many matching, bad regex, ...)."""

    error_type = "execution"


class TooManySamplesError(ExecutionError):
    """The query would hold more samples in memory than ``max_samples`` allows."""

    def __init__(self, where: str = "query execution") -> None:
        super().__init__(f"query processing would load too many samples into memory in {where}")


class QueryTimeoutError(QueryError):
    """The query ran longer than the engine's timeout."""

    error_type = "timeout"

    def __init__(self, where: str = "expression evaluation") -> None:
        super().__init__(f"query timed out in {where}")


class QueryCanceledError(QueryError):
    """The query was cancelled through its cancellation token."""

    error_type = "canceled"

    def __init__(self, where: str = "expression evaluation") -> None:
        super().__init__(f"query was canceled in {where}")
