"""Per-tenant ingestion and request rate limits, and the `Retry-After` header of refused pushes.

The buckets follow golang.org/x/time/rate, which Mimir's limiter wraps: a bucket holds at most
`burst` tokens, refills at `rate` tokens a second, starts full, and `allow(n)` takes n tokens if it
holds them. A request costing more than the burst can never pass (Mimir reports that separately).
A tenant's bucket is rebuilt when its limits change (runtime overrides reload), as dskit's limiter
rechecks them.
"""

from __future__ import annotations

import math
import random
import time
from decimal import Decimal

from mimird.distributor.validation import tenant_limit_message


class TokenBucket:
    """One tenant's bucket; `rate` tokens/s (inf = unlimited), at most `burst` tokens."""

    __slots__ = ("rate", "burst", "tokens", "last")

    def __init__(self, rate: float, burst: int, now: float):
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.last = now

    def allow(self, n: int, now: float) -> bool:
        """Take `n` tokens if the bucket holds them at time `now` (seconds)."""
        if self.rate == math.inf:
            return True
        if n > self.burst:
            return False
        elapsed = max(0.0, now - self.last)
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate)
        self.last = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


class TenantLimiter:
    """A bucket per tenant, rebuilt when the tenant's (rate, burst) changes."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def allow(self, tenant: str, rate: float, burst: int, n: int) -> bool:
        now = self.clock()
        bucket = self._buckets.get(tenant)
        if bucket is None or bucket.rate != rate or bucket.burst != burst:
            bucket = self._buckets[tenant] = TokenBucket(rate, burst, now)
        return bucket.allow(n, now)


def go_float(value: float) -> str:
    """A float64 as Go's `%v` prints it: shortest digits, exponent form below 1e-4 and from 1e6 (`1e+06`)."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value == 0:
        return "0"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    text = "".join(map(str, digits))
    decimal_exponent = len(text) + exponent - 1  # exponent of the leading digit
    prefix = "-" if sign else ""
    if decimal_exponent < -4 or decimal_exponent >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if decimal_exponent < 0 else '+'}{abs(decimal_exponent):02d}"
    if exponent >= 0:
        return prefix + text + "0" * exponent
    point = len(text) + exponent
    if point > 0:
        return prefix + text[:point] + "." + text[point:]
    return prefix + "0." + "0" * (-point) + text


def ingestion_burst_size(limits: dict) -> int:
    """The tenant's burst: `ingestion_burst_factor` × rate when the factor is set, else the burst size."""
    factor = limits["ingestion_burst_factor"]
    if factor > 0:
        return int(limits["ingestion_rate"] * factor)
    return limits["ingestion_burst_size"]


def ingestion_rate_message(rate: float, burst: int) -> str:
    """Mimir's 429 text when a push does not fit the tenant's ingestion rate."""
    return tenant_limit_message(
        f"the request has been rejected because the tenant exceeded the ingestion rate limit, set to {go_float(rate)} "
        f"items/s with a maximum allowed burst of {burst}. This limit is applied on the total number of samples, "
        "exemplars and metadata received across all distributors", "tenant-max-ingestion-rate",
        "distributor.ingestion-rate-limit", "distributor.ingestion-burst-size")


def ingestion_burst_message(burst: int, items: int) -> str:
    """Mimir's 429 text when one push alone is bigger than the tenant's burst."""
    return tenant_limit_message(
        f"the request has been rejected because the tenant exceeded the ingestion burst size limit, set to {burst}, "
        f"with {items} items. This limit is applied on the total number of samples, exemplars and metadata "
        "received across all distributors", "tenant-max-ingestion-rate", "distributor.ingestion-burst-size")


def request_rate_message(rate: float, burst: int) -> str:
    """Mimir's 429 text when a tenant sends pushes faster than its request rate."""
    return tenant_limit_message(
        f"the request has been rejected because the tenant exceeded the request rate limit, set to {go_float(rate)} "
        f"requests/s across all distributors with a maximum allowed burst of {burst}", "tenant-max-request-rate",
        "distributor.request-rate-limit", "distributor.request-burst-size")


def retry_after_seconds(retry_attempt: str | None, min_backoff: float, max_backoff: float,
                        rng: random.Random | None = None) -> str:
    """The `Retry-After` value for a 429/5xx push (Mimir's calculateRetryAfter).

    Doubles from `min_backoff` with each `Retry-Attempt` (1 when absent or not a positive integer),
    capped at `max_backoff`, with ±50% jitter, then clamped into [min_backoff, max_backoff]; whole seconds.
    """
    try:
        attempt = int(retry_attempt) if retry_attempt is not None else 1
    except ValueError:
        attempt = 1
    attempt = max(attempt, 1)
    delay = min(max_backoff, min_backoff * 2.0 ** min(attempt - 1, 64))
    jitter = int(delay * 0.5)
    if jitter > 0:
        delay += (rng or random).randrange(2 * jitter) - jitter
    delay = min(max_backoff, max(min_backoff, delay))
    return f"{delay:.0f}"
