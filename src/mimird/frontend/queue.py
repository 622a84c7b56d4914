"""The request queue between Mimir's query-frontend and its queriers, in one process.

At most `-querier.max-concurrent` requests are served at once; the others wait in the queue, at most
`-query-frontend.max-outstanding-requests-per-tenant` of them per tenant (a federated request counts for
its tenant set), and one more is refused with 429 `too many outstanding requests`. The time spent waiting
is the query statistics' `queue_time_seconds`.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque

from mimird.http.errors import HTTPError

TOO_MANY_OUTSTANDING = "too many outstanding requests"


class QueryQueue:
    """Concurrency slots and per-tenant waiting counts.

    The slots are counted here rather than by an asyncio.Semaphore: a request that finds a slot free
    (nearly every one) then takes it without a call into the semaphore's Python code. Waiters are
    served first come, first served."""

    def __init__(self, max_concurrent: int, max_outstanding_per_tenant: int):
        self.free = max_concurrent
        self.waiters: deque[asyncio.Future] = deque()
        self.max_outstanding = max_outstanding_per_tenant
        self.waiting: dict[str, int] = {}

    async def acquire(self, tenant: str) -> float:
        """Take a slot, waiting in line for it if needed; returns the seconds waited. Raises HTTPError 429
        when `tenant` already has the most requests waiting it may have."""
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return 0.0
        started = time.perf_counter()
        if self.waiting.get(tenant, 0) >= self.max_outstanding:
            raise HTTPError(429, TOO_MANY_OUTSTANDING)
        self.waiting[tenant] = self.waiting.get(tenant, 0) + 1
        try:
            await self._wait_for_slot()
        finally:
            self.waiting[tenant] -= 1
            if not self.waiting[tenant]:
                del self.waiting[tenant]
        return time.perf_counter() - started

    async def _wait_for_slot(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as the wait was cancelled: pass it on
            else:
                self.waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a slot back: to the longest waiter, or to the free count."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


_queues: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def queue_for(app) -> QueryQueue:
    """The app's one queue (every querier handler shares it)."""
    queue = _queues.get(app)
    if queue is None:
        queue = _queues[app] = QueryQueue(app.config.querier.max_concurrent,
                                          app.config.frontend.max_outstanding_per_tenant)
    return queue
