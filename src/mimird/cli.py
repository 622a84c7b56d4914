"""Command line entry point (placeholder replaced by the configuration work)."""

import sys


def main(argv: list[str] | None = None) -> int:
    """Parse flags and the YAML file, then run the daemon until a signal stops it."""
    del argv
    print("mimird: configuration not loaded", file=sys.stderr)
    return 1
