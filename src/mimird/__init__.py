"""mimird: a single-process daemon that speaks the Grafana Mimir HTTP API."""

__version__ = "0.1.0"
