"""The route table. Each line maps a URL of the Mimir HTTP API to the component method serving it.

`auth=True` marks the endpoints the spec says "Requires authentication" (X-Scope-OrgID);
`federated=True` the read endpoints that may name several tenants. Endpoints of components that
are not built yet are not registered, so they answer 404.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mimird.api.status import StatusAPI
from mimird.compactor.http import CompactorAPI
from mimird.compactor.upload import BlockUploadAPI
from mimird.distributor.distributor import push_body_read_limit
from mimird.distributor.http import DistributorAPI
from mimird.distributor.influx import InfluxHandler
from mimird.distributor.otlp import OTLPHandler
from mimird.ingester.http import IngesterAPI
from mimird.querier.api import QuerierAPI
from mimird.querier.cardinality import CardinalityAPI
from mimird.querier.remoteread import MAX_REQUEST_BYTES, RemoteReadAPI
from mimird.ring import RING_PATHS
from mimird.storegateway.http import StoreGatewayAPI

if TYPE_CHECKING:
    from mimird.app import App


def register_routes(app: App) -> None:
    """Add every endpoint this build serves to the app's router."""
    router = app.router
    prom = app.config.api.prometheus_http_prefix
    am = app.config.api.alertmanager_http_prefix
    status = StatusAPI(app)

    # All services
    router.add("GET", "/", status.index)
    router.add("GET", "/config", status.config)
    router.add("GET", "/api/v1/status/config", status.status_config)
    router.add("GET", "/api/v1/status/flags", status.status_flags)
    router.add("GET", "/services", status.services)
    router.add("GET", "/ready", status.ready)
    if app.config.server.register_instrumentation:
        router.add("GET", "/metrics", status.metrics)
    router.add("GET", "/memberlist", status.memberlist)
    router.add("GET", "/api/v1/status/buildinfo", status.buildinfo)
    router.add("GET", f"{prom}/api/v1/status/buildinfo", status.buildinfo)
    router.add("GET", f"{am}/api/v1/status/buildinfo", status.buildinfo)
    if app.runtime_config is not None:
        router.add("GET", "/runtime_config", status.runtime_config)
        router.add("GET", "/api/v1/user_limits", status.user_limits, auth=True)

    # Distributor (the push route reads up to twice the message limit so that the handler, not the
    # server's 413, answers Mimir's 400 for a too-large push; see distributor.py)
    router.add("POST", "/api/v1/push", app.distributor.push, auth=True, gzip_response=False,
               max_body=push_body_read_limit(app.config.distributor.max_recv_msg_size))
    distributor = DistributorAPI(app.distributor)
    router.add("GET", "/api/v1/user_stats", distributor.user_stats, auth=True)
    router.add("GET", "/distributor/all_user_stats", distributor.all_user_stats)
    router.add("GET", "/distributor/ha_tracker", distributor.ha_tracker)

    # OTLP and Influx line protocol (the server reads up to twice the size limit so that the handlers,
    # not the server's generic 413, answer Mimir's messages for a body that is too large)
    otlp = OTLPHandler(app.distributor, app.overrides, app.config.distributor.max_otlp_request_size)
    router.add("POST", "/otlp/v1/metrics", otlp.push, auth=True, gzip_response=False,
               max_body=2 * app.config.distributor.max_otlp_request_size)
    if app.config.distributor.influx_endpoint_enabled:
        influx = InfluxHandler(app.distributor, app.config.distributor.max_influx_request_size)
        router.add("POST", "/api/v1/push/influx/write", influx.push, auth=True, gzip_response=False,
                   max_body=2 * app.config.distributor.max_influx_request_size)

    # Ingester
    ingester = IngesterAPI(app.ingester)
    router.add("GET,POST", "/ingester/flush", ingester.flush)
    router.add("GET,POST,DELETE", "/ingester/prepare-shutdown", ingester.prepare_shutdown)
    router.add("POST", "/ingester/shutdown", ingester.shutdown)
    router.add("GET,POST,DELETE", "/ingester/prepare-partition-downscale", ingester.prepare_partition_downscale)
    router.add("GET,POST,DELETE", "/ingester/prepare-instance-ring-downscale",
               ingester.prepare_instance_ring_downscale)
    router.add("GET,PUT,DELETE", "/ingester/unregister-on-shutdown", ingester.unregister_on_shutdown,
               gzip_response=False)
    router.add("GET", "/ingester/tsdb_metrics", ingester.tsdb_metrics, auth=True)
    router.add("GET", "/ingester/tenants", ingester.tenants)
    router.add("GET", "/ingester/tsdb/{tenant}", ingester.tenant_tsdb)

    # Querier (read paths; several tenants each with tenant federation)
    querier = QuerierAPI(app)
    remote_read = RemoteReadAPI(app)
    cardinality = CardinalityAPI(app)
    router.add("GET,POST", f"{prom}/api/v1/query", querier.query, auth=True, federated=True)
    router.add("GET,POST", f"{prom}/api/v1/query_range", querier.query_range, auth=True, federated=True)
    router.add("GET,POST", f"{prom}/api/v1/query_exemplars", querier.query_exemplars, auth=True, federated=True)
    router.add("GET,POST,DELETE", f"{prom}/api/v1/series", querier.series, auth=True, federated=True)
    router.add("GET,POST", f"{prom}/api/v1/labels", querier.labels, auth=True, federated=True)
    router.add("GET", f"{prom}/api/v1/label/{{name}}/values", querier.label_values, auth=True, federated=True)
    router.add("GET", f"{prom}/api/v1/metadata", querier.metadata, auth=True, federated=True)
    router.add("GET,POST", f"{prom}/api/v1/format_query", querier.format_query, auth=True)
    router.add("POST", f"{prom}/api/v1/read", remote_read.read, auth=True, federated=True, gzip_response=False,
               max_body=2 * MAX_REQUEST_BYTES)
    router.add("GET,POST", f"{prom}/api/v1/cardinality/label_names", cardinality.label_names, auth=True)
    router.add("GET,POST", f"{prom}/api/v1/cardinality/label_values", cardinality.label_values, auth=True)
    router.add("GET,POST", f"{prom}/api/v1/cardinality/active_series", cardinality.active_series, auth=True)
    router.add("GET,POST", f"{prom}/api/v1/cardinality/active_native_histogram_metrics",
               cardinality.active_native_histogram_metrics, auth=True)

    # Store-gateway
    store_gateway = StoreGatewayAPI(app.store_gateway)
    router.add("GET", "/store-gateway/tenants", store_gateway.tenants)
    router.add("GET", "/store-gateway/tenant/{tenant}/blocks", store_gateway.tenant_blocks)
    router.add("GET,POST,DELETE", "/store-gateway/prepare-shutdown", store_gateway.prepare_shutdown,
               gzip_response=False)

    # Compactor (block upload bodies are whole block files: no server-wide body limit)
    compactor = CompactorAPI(app.compactor, app.rings.address)
    upload = BlockUploadAPI(app.compactor)
    router.add("POST", "/api/v1/upload/block/{block}/start", upload.start, auth=True, gzip_response=False,
               max_body=2 * 1024 * 1024)
    router.add("POST", "/api/v1/upload/block/{block}/files", upload.files, auth=True, gzip_response=False,
               max_body=1 << 40)
    router.add("POST", "/api/v1/upload/block/{block}/finish", upload.finish, auth=True, gzip_response=False)
    router.add("GET", "/api/v1/upload/block/{block}/check", upload.check, auth=True, gzip_response=False)
    router.add("POST", "/compactor/delete_tenant", compactor.delete_tenant, auth=True)
    router.add("GET", "/compactor/delete_tenant_status", compactor.delete_tenant_status, auth=True)
    router.add("GET", "/compactor/tenants", compactor.tenants)
    router.add("GET", "/compactor/tenant/{tenant}/planned_jobs", compactor.planned_jobs)

    # Ring pages: one per component ring, all owned by this instance
    for path in RING_PATHS:
        router.add("GET,POST", path, app.rings.handle_ring_page)
