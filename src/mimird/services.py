"""Component lifecycle, as Mimir's services: New -> Starting -> Running -> Stopping -> Terminated/Failed.

The app starts services in dependency order and stops them in reverse; `/services` and `/ready`
report their states.
"""

from __future__ import annotations

import logging

from mimird.util.logging import kv_log

log = logging.getLogger("mimird.services")

NEW, STARTING, RUNNING, STOPPING, TERMINATED, FAILED = (
    "New", "Starting", "Running", "Stopping", "Terminated", "Failed")


class Service:
    """Base class for a component with an async start and stop."""

    name = "service"

    def __init__(self):
        self.state = NEW
        self.failure: BaseException | None = None

    async def starting(self) -> None:
        """Bring the component up; override."""

    async def stopping(self) -> None:
        """Release everything the component holds; override."""

    async def start(self) -> None:
        self.state = STARTING
        kv_log(log, logging.INFO, "starting module", module=self.name)
        try:
            await self.starting()
        except Exception as exc:
            self.state, self.failure = FAILED, exc
            raise
        self.state = RUNNING

    async def stop(self) -> None:
        if self.state not in (RUNNING, STARTING):
            if self.state == NEW:
                self.state = TERMINATED
            return
        self.state = STOPPING
        try:
            await self.stopping()
        except Exception as exc:
            self.state, self.failure = FAILED, exc
            kv_log(log, logging.ERROR, "module failed to stop", module=self.name, err=str(exc))
            return
        self.state = TERMINATED
        kv_log(log, logging.INFO, "module stopped", module=self.name)
