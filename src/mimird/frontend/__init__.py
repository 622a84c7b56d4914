"""What Mimir's query-frontend adds in front of the querier's handlers: the request body limit, the
request queue and querier concurrency (`queue`), query statistics in the `Server-Timing` header
(`stats`), and the per-tenant query limits and lookback clamp applied before a query runs (`limits`)."""
