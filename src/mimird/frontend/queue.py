"""The request queue between Mimir's query-frontend and its queriers, in one process.

At most `-querier.max-concurrent` requests are served at once; the others wait in the queue, at most
`-query-frontend.max-outstanding-requests-per-tenant` of them per tenant (a federated request counts for
its tenant set), and one more is refused with 429 `too many outstanding requests`. The time spent waiting
is the query statistics' `queue_time_seconds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator

from mimird.http.errors import HTTPError

TOO_MANY_OUTSTANDING = "too many outstanding requests"


class QueryQueue:
    """Concurrency slots and per-tenant waiting counts."""

    def __init__(self, max_concurrent: int, max_outstanding_per_tenant: int):
        self.slots = asyncio.Semaphore(max_concurrent)
        self.max_outstanding = max_outstanding_per_tenant
        self.waiting: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def slot(self, tenant: str) -> AsyncIterator[float]:
        """Hold a serving slot for the body of the `async with`; yields the seconds spent waiting for it."""
        started = time.perf_counter()
        if self.slots.locked():
            if self.waiting.get(tenant, 0) >= self.max_outstanding:
                raise HTTPError(429, TOO_MANY_OUTSTANDING)
            self.waiting[tenant] = self.waiting.get(tenant, 0) + 1
            try:
                await self.slots.acquire()
            finally:
                self.waiting[tenant] -= 1
                if not self.waiting[tenant]:
                    del self.waiting[tenant]
        else:
            await self.slots.acquire()
        try:
            yield time.perf_counter() - started
        finally:
            self.slots.release()


_queues: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def queue_for(app) -> QueryQueue:
    """The app's one queue (every querier handler shares it)."""
    queue = _queues.get(app)
    if queue is None:
        queue = _queues[app] = QueryQueue(app.config.querier.max_concurrent,
                                          app.config.frontend.max_outstanding_per_tenant)
    return queue
