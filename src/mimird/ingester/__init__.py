"""The ingester: per-tenant TSDBs (head, WAL, blocks), block shipping, and its admin endpoints."""
