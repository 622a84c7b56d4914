"""The query-frontend's per-tenant limits on instant and range queries, applied after the parameters are
parsed and before the querier runs the query (Mimir's limitsMiddleware), in Mimir's order:

1. lookback clamp: with `max_query_lookback` and/or `compactor_blocks_retention_period` set (the smallest
   non-zero of both, over the request's tenants), a query ending before now−lookback gets an empty
   success (a matrix, as Mimir's empty response) and a start before it is moved up to it;
2. `max_query_expression_size_bytes`: the raw query's length in bytes;
3. `max_total_query_length`: end − start of a range query;
4. `align_queries_with_step` (when every tenant of the request has it): a range query's start and end are
   floored to multiples of its step.

Errors are `bad_data` with Mimir's texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mimird.http.request import Response
from mimird.querier import jsonfmt
from mimird.util.durations import go_duration_ms

EMPTY_MATRIX = '{"resultType":"matrix","result":[]}'


def _limit_message(message: str, error_id: str, flag: str) -> str:
    # globalerror.ID.MessageWithPerTenantLimitConfig
    return (f"{message} (err-mimir-{error_id}). To adjust the related per-tenant limit, configure -{flag}, "
            "or contact your service administrator.")


def _smallest_non_zero(values) -> float:
    return min((v for v in values if v > 0), default=0)


@dataclass(frozen=True)
class QueryLimits:
    """The limits in force for one request (over all its tenants)."""

    lookback_ms: int
    max_expression_bytes: int
    max_total_length_ms: int
    align_with_step: bool = False

    @classmethod
    def for_tenants(cls, overrides, tenants: Sequence[str]) -> QueryLimits:
        """The limits over `tenants` (computed once per tenant combination until the overrides reload)."""
        return overrides.derived(("query_limits", tuple(tenants)), lambda: cls._compute(overrides, tenants))

    @classmethod
    def _compute(cls, overrides, tenants: Sequence[str]) -> QueryLimits:
        get = overrides.get
        if len(tenants) == 1:  # the common case, without the reductions over tenants
            tenant = tenants[0]
            lookback = _smallest_non_zero((get(tenant, "max_query_lookback"),
                                           get(tenant, "compactor_blocks_retention_period")))
            max_bytes = get(tenant, "max_query_expression_size_bytes")
            max_length = get(tenant, "max_total_query_length")
            return cls(lookback_ms=int(lookback * 1000),
                       max_expression_bytes=int(max_bytes if max_bytes > 0 else 0),
                       max_total_length_ms=int((max_length if max_length > 0 else 0) * 1000),
                       align_with_step=bool(get(tenant, "align_queries_with_step")))
        lookback = _smallest_non_zero([_smallest_non_zero([get(tenant, "max_query_lookback"),
                                                           get(tenant, "compactor_blocks_retention_period")])
                                       for tenant in tenants])
        return cls(
            lookback_ms=int(lookback * 1000),
            max_expression_bytes=int(_smallest_non_zero([get(tenant, "max_query_expression_size_bytes")
                                                         for tenant in tenants])),
            max_total_length_ms=int(_smallest_non_zero([get(tenant, "max_total_query_length")
                                                        for tenant in tenants]) * 1000),
            align_with_step=bool(tenants) and all(get(tenant, "align_queries_with_step") for tenant in tenants),
        )

    def align(self, start_ms: int, end_ms: int, step_ms: int) -> tuple[int, int]:
        """Start and end floored to multiples of the step when the tenants ask for aligned queries."""
        if not self.align_with_step:
            return start_ms, end_ms
        return start_ms // step_ms * step_ms, end_ms // step_ms * step_ms

    def apply(self, query: str, start_ms: int, end_ms: int, now_ms: int, is_range: bool
              ) -> tuple[int, Response | None]:
        """The (possibly clamped) start, or a response that answers the request without running it."""
        if self.lookback_ms:
            min_start = now_ms - self.lookback_ms
            if end_ms < min_start:
                return start_ms, jsonfmt.success(EMPTY_MATRIX)
            start_ms = max(start_ms, min_start)
        size = len(query.encode())
        if self.max_expression_bytes and size > self.max_expression_bytes:
            return start_ms, jsonfmt.error("bad_data", _limit_message(
                f"the raw query size in bytes exceeds the limit (query size: {size}, limit: "
                f"{self.max_expression_bytes})", "max-query-expression-size-bytes",
                "query-frontend.max-query-expression-size-bytes"))
        length_ms = end_ms - start_ms
        if is_range and self.max_total_length_ms and length_ms > self.max_total_length_ms:
            return start_ms, jsonfmt.error("bad_data", _limit_message(
                f"the total query time range exceeds the limit (query length: {go_duration_ms(length_ms)}, limit: "
                f"{go_duration_ms(self.max_total_length_ms)})", "max-total-query-length",
                "query-frontend.max-total-query-length"))
        return start_ms, None
