"""Ingestion and request rate limits through the real daemon (429, Mimir's messages, Retry-After, nothing
stored), and the token bucket, Go float formatting and Retry-After computation directly."""

from __future__ import annotations

import random

import pytest

from distributor_support import metric_value, module_daemon, now_ms, num_series, push
from mimird.distributor.ratelimit import TokenBucket, go_float, retry_after_seconds

RUNTIME = """
overrides:
  slow:
    ingestion_rate: 0.5
    ingestion_burst_size: 10
  chatty:
    request_rate: 0.01
    request_burst_size: 2
  factor:
    ingestion_rate: 2
    ingestion_burst_factor: 3
  overloaded:
    ingestion_burst_size: 5
    service_overload_status_code_on_rate_limit_enabled: true
"""


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    yield from module_daemon(tmp_path_factory, "limits", [], RUNTIME)


def series(count: int, name: str = "m", start: int | None = None):
    start = start if start is not None else now_ms() - count
    return [((("__name__", name),), [(start + i, float(i)) for i in range(count)])]


INGESTION_RATE = ("the request has been rejected because the tenant exceeded the ingestion rate limit, set to 0.5 "
                  "items/s with a maximum allowed burst of 10. This limit is applied on the total number of samples, "
                  "exemplars and metadata received across all distributors (err-mimir-tenant-max-ingestion-rate). To "
                  "adjust the related per-tenant limits, configure -distributor.ingestion-rate-limit and "
                  "-distributor.ingestion-burst-size, or contact your service administrator.")


def check_retry_after(response, low=3, high=9):
    value = response.headers.get("retry-after")
    assert value is not None and value.isdigit(), response.headers
    assert low <= int(value) <= high


def test_ingestion_rate_and_burst(d):
    # larger than the whole burst: the burst message, whatever the bucket holds
    response = push(d, "slow", series(11, "burst"))
    assert response.status_code == 429
    assert response.text == (
        "the request has been rejected because the tenant exceeded the ingestion burst size limit, set to 10, with "
        "11 items. This limit is applied on the total number of samples, exemplars and metadata received across all "
        "distributors (err-mimir-tenant-max-ingestion-rate). To adjust the related per-tenant limit, configure "
        "-distributor.ingestion-burst-size, or contact your service administrator.\n")
    check_retry_after(response, 6, 9)  # first attempt: 6s ±50%, never below min backoff
    # metadata counts too: 6 samples + 1 metadata fit, then 4 more do not
    assert push(d, "slow", series(6, "fits"), metadata=[(1, "fits", "help", "")]).status_code == 200
    response = push(d, "slow", series(4, "over"))
    assert response.status_code == 429
    assert response.text == INGESTION_RATE + "\n"
    assert num_series(d, "slow") == 1  # nothing of the refused requests was stored
    assert metric_value(d, "cortex_discarded_samples_total", reason="rate_limited", user="slow") == 15


def test_retry_after_follows_retry_attempt(d):
    response = push(d, "slow", series(50, "again"), headers={"Retry-Attempt": "3"})
    assert response.status_code == 429
    check_retry_after(response, 12, 36)  # 6s * 2^2 = 24s ±50%
    response = push(d, "slow", series(50, "again"), headers={"Retry-Attempt": "12"})
    check_retry_after(response, 48, 96)  # capped at the 96s max backoff


def test_burst_factor(d):
    # rate 2 × factor 3 = burst 6
    response = push(d, "factor", series(7))
    assert response.status_code == 429 and "burst size limit, set to 6, with 7 items" in response.text
    assert push(d, "factor", series(6)).status_code == 200


def test_service_overload_status_code(d):
    response = push(d, "overloaded", series(6))
    assert response.status_code == 529 and "(err-mimir-tenant-max-ingestion-rate)" in response.text
    check_retry_after(response, 6, 9)  # 529 is a 5xx: Retry-After too


def test_request_rate(d):
    assert push(d, "chatty", series(1, "a")).status_code == 200
    assert push(d, "chatty", series(1, "b")).status_code == 200
    response = push(d, "chatty", series(1, "c"))
    assert response.status_code == 429
    assert response.text == (
        "the request has been rejected because the tenant exceeded the request rate limit, set to 0.01 requests/s "
        "across all distributors with a maximum allowed burst of 2 (err-mimir-tenant-max-request-rate). To adjust "
        "the related per-tenant limits, configure -distributor.request-rate-limit and -distributor.request-burst-size, "
        "or contact your service administrator.\n")
    assert "retry-after" in response.headers
    assert num_series(d, "chatty") == 2


def test_default_tenant_is_not_limited(d):
    for i in range(3):
        assert push(d, "free", series(1000, f"m{i}", start=now_ms() - 10_000)).status_code == 200


def test_retry_after_header_can_be_disabled(start_daemon, tmp_path):
    daemon = start_daemon("-distributor.ingestion-burst-size=5", "-distributor.retry-after-header.enabled=false")
    response = push(daemon, "t", series(6))
    assert response.status_code == 429 and "retry-after" not in response.headers


def test_token_bucket():
    bucket = TokenBucket(2.0, 4, now=0.0)
    assert bucket.allow(4, 0.0)
    assert not bucket.allow(1, 0.1)
    assert bucket.allow(1, 0.5)  # 0.5 s at 2/s refilled one token
    assert not bucket.allow(5, 100.0)  # more than the burst never passes
    assert bucket.allow(4, 100.0)  # refill stops at the burst


def test_go_float():
    assert [go_float(x) for x in (10000.0, 0.5, 1e21, 123456.0, 1e6, 1234567.0, 0.0001, 0.00001, 2.5e-7, 3.0)] == [
        "10000", "0.5", "1e+21", "123456", "1e+06", "1.234567e+06", "0.0001", "1e-05", "2.5e-07", "3"]


def test_retry_after_seconds():
    rng = random.Random(1)
    values = {int(retry_after_seconds(None, 6, 96, rng)) for _ in range(200)}
    assert min(values) >= 6 and max(values) <= 8 and len(values) > 1  # 6 ± 3, clamped at the minimum
    assert retry_after_seconds("bogus", 6, 96, rng) in {str(i) for i in range(6, 9)}
    assert all(48 <= int(retry_after_seconds("9", 6, 96, rng)) <= 96 for _ in range(50))
    assert retry_after_seconds("1", 1, 1, rng) == "1"


def test_unavailable_ingester_is_503_with_retry_after(d):
    # last in this module: it shuts the module daemon's ingester down
    assert d.post("/ingester/shutdown").status_code in (200, 204)
    response = push(d, "free", series(1, "late"))
    assert response.status_code == 503
    assert response.text.startswith("failed pushing to ingester ")
    check_retry_after(response, 6, 9)
