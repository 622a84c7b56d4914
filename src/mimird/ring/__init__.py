"""The hash rings of Mimir's components, in a single process: this instance owns every ring."""

from mimird.ring.ring import RING_PATHS, LocalRings

__all__ = ["RING_PATHS", "LocalRings"]
