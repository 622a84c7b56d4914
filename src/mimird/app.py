"""Builds the components in dependency order (as Mimir's modules.go) and owns start and stop."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket

from mimird.api.routes import register_routes
from mimird.bucket import FilesystemBucket
from mimird.compactor.compactor import Compactor
from mimird.config.runtime import Overrides, RuntimeConfig
from mimird.config.schema import Config
from mimird.distributor.distributor import Distributor
from mimird.http.auth import TenantResolver
from mimird.http.router import Router
from mimird.http.server import HTTPServer
from mimird.ingester.ingester import Ingester
from mimird.ring import RING_PATHS, LocalRings
from mimird.services import Service
from mimird.storegateway.gateway import StoreGateway
from mimird.util import systemd
from mimird.util.logging import kv_log
from mimird.util.metrics import Metrics

log = logging.getLogger("mimird")


class ServerService(Service):
    """The HTTP server as a module, first to start (so /ready can answer 503) and last to stop."""

    name = "server"

    def __init__(self, app: App):
        super().__init__()
        self.app = app
        self.port: int | None = None

    async def starting(self) -> None:
        config = self.app.config
        self.port = await self.app.http.start(config.server.http_listen_address, config.server.http_listen_port)
        kv_log(log, logging.INFO, "server listening on addresses",
               http=f"{config.server.http_listen_address}:{self.port}")

    async def stopping(self) -> None:
        await self.app.http.stop(self.app.config.server.graceful_shutdown_timeout)


class App:
    """The whole daemon: configuration, components, router and HTTP server."""

    def __init__(self, config: Config):
        self.config = config
        self.metrics = Metrics()
        self.router = Router()
        self.stopping = False
        self._stop_requested = asyncio.Event()

        resolver = TenantResolver(config.multitenancy_enabled, config.no_auth_tenant,
                                  config.tenant_federation.enabled, config.tenant_federation.max_tenants)
        self.http = HTTPServer(
            self.router, resolver,
            read_timeout=config.server.http_server_read_timeout,
            read_header_timeout=config.server.http_server_read_header_timeout,
            idle_timeout=config.server.http_server_idle_timeout,
            conn_limit=config.server.http_conn_limit,
            max_body=config.server.http_max_request_body_bytes,
            metrics=self.metrics,
            gzip_level=config.api.response_compression_level,
        )
        self.server = ServerService(self)

        files = [f.strip() for f in config.runtime_config.file.split(",") if f.strip()]
        self.runtime_config = RuntimeConfig(files, config.runtime_config.period) if files else None
        self.overrides = Overrides(config, self.runtime_config)
        address = f"{config.server.http_listen_address}:{config.server.http_listen_port}"
        instance_id = config.ingester.ring.instance_id or socket.gethostname() or "mimird"
        self.rings = LocalRings(instance_id, address, config.ingester.ring.num_tokens,
                                config.ingester.ring.heartbeat_period)

        self.bucket = FilesystemBucket(config.blocks_storage.filesystem.dir)
        self.ingester = Ingester(config, self.overrides, instance_id, self.bucket)
        self.store_gateway = StoreGateway(config, self.bucket, self.metrics)
        self.compactor = Compactor(config, self.overrides, self.bucket, self.ingester, self.metrics)
        self.distributor = Distributor(config, self.ingester, instance_id, metrics=self.metrics)

        # Dependency order: each service only uses those before it.
        self.services: list[Service] = [self.server]
        if self.runtime_config is not None:
            self.services.append(self.runtime_config)
        self.services += [self.rings, self.ingester, self.distributor]
        self.services += [self.store_gateway, self.compactor]
        register_routes(self)

    def features(self) -> dict[str, str]:
        """Feature flags reported by the buildinfo endpoint (Mimir reports them as strings)."""
        return {"ruler_config_api": "false", "alertmanager_config_api": "false",
                "query_sharding": "false", "federated_rules": "false"}

    def index_pages(self) -> list[tuple[str, list[tuple[str, str]]]]:
        """The admin pages the index page links to, grouped by component."""
        registered = {route.pattern for route in self.router.routes if "GET" in route.methods}
        groups = [
            ("Admin Endpoints", [("Services' status", "/services"), ("Readiness", "/ready"),
                                 ("Current config", "/config"), ("Config (diff from defaults)", "/config?mode=diff"),
                                 ("Default config", "/config?mode=defaults"), ("Runtime config", "/runtime_config"),
                                 ("Metrics", "/metrics"), ("Memberlist status", "/memberlist"),
                                 ("Build information", "/api/v1/status/buildinfo")]),
            ("Rings", [(f"{title} ring", path) for path, (_, title) in RING_PATHS.items()]),
            ("Distributor", [("Usage statistics", "/distributor/all_user_stats")]
             + ([("HA tracker status", "/distributor/ha_tracker")] if self.distributor.ha_enabled else [])),
            ("Store-gateway", [("Tenants & Blocks", "/store-gateway/tenants")]),
            ("Compactor", [("Tenants & compaction jobs", "/compactor/tenants")]),
        ]
        return [(title, [(label, path) for label, path in pages if path.split("?")[0] in registered])
                for title, pages in groups]

    def request_stop(self) -> None:
        self._stop_requested.set()

    async def start(self) -> None:
        """Start every service in order; on a failure stop those already started and re-raise."""
        for service in self.services:
            try:
                await service.start()
            except Exception:
                await self.stop()
                raise
        systemd.notify("READY=1")
        kv_log(log, logging.INFO, "mimird started", version=self._version())

    async def stop(self) -> None:
        """Stop services in reverse order; the HTTP server last, after in-flight requests finish."""
        if self.stopping:
            return
        self.stopping = True
        systemd.notify("STOPPING=1")
        for service in reversed(self.services):
            await service.stop()
        kv_log(log, logging.INFO, "mimird stopped")

    async def run(self) -> None:
        """Start, serve until SIGTERM or SIGINT, then stop gracefully."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self.start()
        await self._stop_requested.wait()
        kv_log(log, logging.INFO, "received stop signal, shutting down")
        await self.stop()

    @staticmethod
    def _version() -> str:
        from mimird import __version__

        return __version__
