"""Per-tenant ingestion rates for `/api/v1/user_stats` and `/distributor/all_user_stats`.

Mimir's ingester keeps an exponentially weighted moving average of samples appended per second for
writes from the API and from the ruler (`Source=RULE`), ticked every `-ingester.rate-update-period`:
the first tick takes the measured rate as it is, later ticks move by α = 0.2 towards it.
"""

from __future__ import annotations

ALPHA = 0.2


class EwmaRate:
    """Events per second, smoothed; `add` counts events, `tick` closes an interval of `interval` seconds."""

    __slots__ = ("interval", "pending", "rate", "started")

    def __init__(self, interval: float):
        self.interval = interval
        self.pending = 0
        self.rate = 0.0
        self.started = False

    def add(self, count: int) -> None:
        self.pending += count

    def tick(self) -> None:
        instant = self.pending / self.interval
        self.pending = 0
        if self.started:
            self.rate += ALPHA * (instant - self.rate)
        else:
            self.started = True
            self.rate = instant


class IngestionRates:
    """API and rule ingestion rates per tenant."""

    def __init__(self, interval: float):
        self.interval = interval
        self.api: dict[str, EwmaRate] = {}
        self.rule: dict[str, EwmaRate] = {}

    def add(self, tenant: str, samples: int, from_rule: bool = False) -> None:
        rates = self.rule if from_rule else self.api
        rate = rates.get(tenant)
        if rate is None:
            rate = rates[tenant] = EwmaRate(self.interval)
        rate.add(samples)

    def tick(self) -> None:
        for rates in (self.api, self.rule):
            for rate in rates.values():
                rate.tick()

    def tenants(self) -> set[str]:
        return set(self.api) | set(self.rule)

    def stats(self, tenant: str, num_series: int) -> dict:
        """Mimir's UserStats JSON object for one tenant."""
        api = self.api[tenant].rate if tenant in self.api else 0.0
        rule = self.rule[tenant].rate if tenant in self.rule else 0.0
        return {"ingestionRate": api + rule, "numSeries": num_series, "APIIngestionRate": api,
                "RuleIngestionRate": rule}
