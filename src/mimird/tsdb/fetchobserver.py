"""The hook through which storage readers report the chunks a query fetches (for the querier's
`-querier.max-fetched-chunks-per-query` and `-querier.max-fetched-chunk-bytes-per-query` limits).

The querier sets `chunk_fetch_observer` while it pulls series from the readers; a reader that decodes
chunks for a query looks the observer up once per select and calls it with each series' chunk count and
encoded bytes. The observer may raise to stop the query. Nothing is counted when no observer is set
(compaction, the WAL, tests of the readers)."""

from __future__ import annotations

import contextvars
from collections.abc import Callable

ChunkObserver = Callable[[int, int], None]

chunk_fetch_observer: contextvars.ContextVar[ChunkObserver | None] = contextvars.ContextVar(
    "mimird_chunk_fetch_observer", default=None)
