"""Small shared helpers: durations, logging."""
