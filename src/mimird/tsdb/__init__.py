"""Time-series storage: the head (in-memory series index, chunks), WAL and blocks."""
