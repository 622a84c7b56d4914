"""The configuration schema, as Mimir names things.

Each `Option` has its YAML path, its flag, a type, a default and help text. The flag parser, the
YAML loader, `/config`, the runtime overrides and docs/configuration.md are all generated from
`OPTIONS`, so an option is declared once. Options under `limits.` are per-tenant limits: their
values here are the defaults that the runtime config's `overrides` section can change per tenant.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from mimird.util.durations import format_duration, parse_duration


class ConfigError(Exception):
    """A configuration problem that stops start-up; the message is one line that names the culprit."""


@dataclass(frozen=True)
class Option:
    """One setting: where it lives in YAML, its flag, its type and default, and what it does."""

    path: str
    flag: str | None
    kind: str  # string, int, float, bool, duration, list
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    secret: bool = False
    category: str = "basic"
    validate: Any = field(default=None, compare=False)

    @property
    def is_limit(self) -> bool:
        return self.path.startswith("limits.")

    @property
    def yaml_key(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    def parse_text(self, text: str) -> Any:
        """Convert a flag's text into this option's type, or raise ValueError."""
        if self.kind == "string":
            return text
        if self.kind == "bool":
            lowered = text.lower()
            if lowered in ("1", "t", "true"):
                return True
            if lowered in ("0", "f", "false"):
                return False
            raise ValueError(f"invalid boolean value {text!r}")
        if self.kind == "int":
            try:
                return int(text, 0)
            except ValueError:
                raise ValueError(f"invalid integer value {text!r}") from None
        if self.kind == "float":
            try:
                return float(text)
            except ValueError:
                raise ValueError(f"invalid number {text!r}") from None
        if self.kind == "duration":
            return parse_duration(text)
        if self.kind == "list":
            return [item.strip() for item in text.split(",") if item.strip()]
        raise AssertionError(self.kind)

    def from_yaml(self, value: Any) -> Any:
        """Convert a YAML value into this option's type, or raise ValueError naming what was expected."""
        if self.kind == "string":
            if isinstance(value, str):
                return value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
            raise ValueError(f"expected a string, got {_yaml_type(value)}")
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            raise ValueError(f"expected a boolean, got {_yaml_type(value)}")
        if self.kind == "int":
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            raise ValueError(f"expected an integer, got {_yaml_type(value)}")
        if self.kind == "float":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            raise ValueError(f"expected a number, got {_yaml_type(value)}")
        if self.kind == "duration":
            if isinstance(value, str):
                return parse_duration(value)
            if isinstance(value, int) and not isinstance(value, bool) and value == 0:
                return 0.0
            raise ValueError(f"expected a duration such as 1m30s, got {_yaml_type(value)}")
        if self.kind == "list":
            if isinstance(value, str):
                return self.parse_text(value)
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return list(value)
            raise ValueError(f"expected a list of strings, got {_yaml_type(value)}")
        raise AssertionError(self.kind)

    def check(self, value: Any) -> None:
        """Raise ValueError if a well-typed value is still not acceptable."""
        if self.choices is not None:
            items = value if isinstance(value, list) else [value]
            for item in items:
                if item not in self.choices:
                    raise ValueError(f"invalid value {item!r}, must be one of: {', '.join(self.choices)}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"must be at least {self.minimum:g}")
        if self.validate is not None:
            self.validate(value)

    def to_yaml(self, value: Any) -> Any:
        """The value as /config prints it."""
        if self.secret and value:
            return "********"
        if self.kind == "duration":
            return format_duration(value)
        if self.kind == "list":
            return ",".join(value)
        return value

    def to_text(self, value: Any) -> str:
        """The value as a flag would spell it."""
        shown = self.to_yaml(value)
        if isinstance(shown, bool):
            return "true" if shown else "false"
        return str(shown)


def _yaml_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _http_prefix(value: str) -> None:
    if value and (not value.startswith("/") or value.endswith("/")):
        raise ValueError("must start with '/' and not end with '/'")


def _compression_level(value: int) -> None:
    if not (1 <= value <= 9 or value == -1):
        raise ValueError(f"invalid gzip compression level: {value}, must be between 1 and 9 or -1 for default "
                         "compression level")


def _port(value: int) -> None:
    if not 0 <= value <= 65535:
        raise ValueError("must be between 0 and 65535")


def _tenant_name(value: str) -> None:
    from mimird.http.auth import validate_tenant_id

    validate_tenant_id(value)


def _block_ranges(value: list) -> None:
    from mimird.compactor.compactor import parse_block_ranges

    parse_block_ranges(value)


def _results_cache_backend(value: str) -> None:
    if value not in ("", "memcached"):
        raise ValueError(f'unsupported cache backend: "{value}", supported values: [memcached]')


def _cache_compression(value: str) -> None:
    if value not in ("", "snappy"):
        raise ValueError("unsupported compression")


MIB = 1024 * 1024

OPTIONS: tuple[Option, ...] = (
    # Monolithic mode runs every component of Mimir's `all` target; `alertmanager` adds the Alertmanager.
    Option("target", "target", "list", ["all"],
           "Comma-separated list of modules to run. mimird always runs Mimir's monolithic `all` "
           "target in one process; add `alertmanager` to run the multi-tenant Alertmanager too.",
           choices=("all", "alertmanager")),
    Option("multitenancy_enabled", "auth.multitenancy-enabled", "bool", True,
           "When true, requests to tenant endpoints must carry the X-Scope-OrgID header."),
    Option("no_auth_tenant", "auth.no-auth-tenant", "string", "anonymous",
           "Tenant ID used for every request when multi-tenancy is disabled.", validate=_tenant_name),
    Option("tenant_federation.enabled", "tenant-federation.enabled", "bool", False,
           "Allow read requests to name several tenants separated by `|` in X-Scope-OrgID."),
    Option("tenant_federation.max_tenants", "tenant-federation.max-tenants", "int", 0,
           "Maximum number of tenants one federated request may name; 0 means no limit.", minimum=0),
    # server
    Option("server.http_listen_address", "server.http-listen-address", "string", "127.0.0.1",
           "HTTP server listen address."),
    Option("server.http_listen_port", "server.http-listen-port", "int", 8080,
           "HTTP server listen port; 0 picks a free port.", validate=_port),
    Option("server.http_server_read_timeout", "server.http-server-read-timeout", "duration", 30.0,
           "Time allowed to read a whole request, headers and body; 0 disables it.", minimum=0),
    Option("server.http_server_read_header_timeout", "server.http-server-read-header-timeout", "duration",
           0.0, "Time allowed to read request headers; 0 uses the read timeout.", minimum=0),
    Option("server.http_server_idle_timeout", "server.http-server-idle-timeout", "duration", 120.0,
           "How long an idle keep-alive connection is kept open.", minimum=0),
    Option("server.http_conn_limit", "server.http-conn-limit", "int", 0,
           "Maximum number of simultaneous HTTP connections; 0 means no limit.", minimum=0),
    Option("server.http_max_request_body_bytes", "server.http-max-request-body-bytes", "int", 100 * MIB,
           "Largest request body accepted, after decompression (mimird). Larger requests get 413.",
           minimum=1),
    Option("server.graceful_shutdown_timeout", "server.graceful-shutdown-timeout", "duration", 30.0,
           "Time to let in-flight requests finish on shutdown.", minimum=0),
    Option("server.register_instrumentation", "server.register-instrumentation", "bool", True,
           "Serve the process's own metrics at /metrics."),
    Option("server.log_level", "log.level", "string", "info",
           "Only log messages with the given severity or above.", choices=("debug", "info", "warn", "error")),
    Option("server.log_format", "log.format", "string", "logfmt", "Output log messages in the given format.",
           choices=("logfmt", "json")),
    # api
    Option("api.prometheus_http_prefix", "http.prometheus-http-prefix", "string", "/prometheus",
           "HTTP URL path under which the Prometheus API is served.", validate=_http_prefix),
    Option("api.alertmanager_http_prefix", "http.alertmanager-http-prefix", "string", "/alertmanager",
           "HTTP URL path under which the Alertmanager UI and API are served.", validate=_http_prefix),
    Option("api.response_compression_level", "http.response-compression-level", "int", -1,
           "Compression level for HTTP responses when gzip compression is requested by the client. Valid values "
           "are 1 (fastest) to 9 (best compression), or -1 for the default compression level (6).",
           category="experimental", validate=_compression_level),
    # runtime config
    Option("runtime_config.file", "runtime-config.file", "string", "",
           "Comma-separated list of YAML files with runtime configuration (per-tenant overrides), "
           "merged in order and reloaded periodically."),
    Option("runtime_config.period", "runtime-config.reload-period", "duration", 10.0,
           "How often to check runtime config files.", minimum=0.001),
    # storage
    Option("blocks_storage.backend", "blocks-storage.backend", "string", "filesystem",
           "Backend storage for blocks.", choices=("filesystem",)),
    Option("blocks_storage.filesystem.dir", "blocks-storage.filesystem.dir", "string", "./data/blocks",
           "Local filesystem directory that holds the bucket of blocks."),
    Option("blocks_storage.tsdb.dir", "blocks-storage.tsdb.dir", "string", "./data/tsdb",
           "Directory for the ingesters' TSDBs (head and WAL) and their local blocks."),
    Option("blocks_storage.tsdb.block_ranges_period", "blocks-storage.tsdb.block-ranges-period", "duration",
           7200.0, "TSDB block range: the head is cut into blocks of this length.", minimum=60,
           category="advanced"),
    Option("blocks_storage.tsdb.retention_period", "blocks-storage.tsdb.retention-period", "duration", 13 * 3600.0,
           "How long the ingester keeps local blocks after they were shipped to the bucket.", minimum=0),
    Option("blocks_storage.tsdb.head_compaction_interval", "blocks-storage.tsdb.head-compaction-interval",
           "duration", 60.0, "How often the ingester checks whether a head should be cut into a block.",
           minimum=0.001, category="advanced"),
    Option("blocks_storage.tsdb.flush_blocks_on_shutdown", "blocks-storage.tsdb.flush-blocks-on-shutdown", "bool",
           False, "Cut the whole head into blocks and ship them on shutdown (the WAL keeps it otherwise).",
           category="advanced"),
    Option("blocks_storage.tsdb.wal_segment_size_bytes", "blocks-storage.tsdb.wal-segment-size-bytes", "int",
           128 * MIB, "Size of each WAL segment file.", minimum=32 * 1024, category="advanced"),
    Option("blocks_storage.tsdb.wal_fsync", "blocks-storage.tsdb.wal-fsync", "string", "never",
           "When the WAL is fsynced (mimird): `always` before each push is acknowledged, `batch` once per "
           "written batch off the request path, or `never` (segments are synced when closed, as Prometheus).",
           choices=("always", "batch", "never"), category="advanced"),
    Option("ingester.ring.unregister_on_shutdown", "ingester.ring.unregister-on-shutdown", "bool", True,
           "Unregister from the ring on shutdown (shown by /ingester/unregister-on-shutdown).",
           category="advanced"),
    Option("distributor.max_recv_msg_size", "distributor.max-recv-msg-size", "int", 100 * MIB,
           "Max message size in bytes that the distributors will accept for incoming push requests.",
           minimum=1, category="advanced"),
    # distributor: OTLP and Influx line protocol
    Option("distributor.max_otlp_request_size", "distributor.max-otlp-request-size", "int", 100 * MIB,
           "Maximum OTLP request size in bytes that the distributors accept, compressed and decompressed.",
           minimum=1, category="advanced"),
    Option("distributor.influx_endpoint_enabled", "distributor.influx-endpoint-enabled", "bool", False,
           "Enable the Influx line protocol endpoint /api/v1/push/influx/write.", category="experimental"),
    Option("distributor.max_influx_request_size", "distributor.max-influx-request-size", "int", 100 * MIB,
           "Maximum Influx line protocol request size in bytes, compressed and decompressed.",
           minimum=1, category="experimental"),
    Option("limits.otel_metric_suffixes_enabled", "distributor.otel-metric-suffixes-enabled", "bool", False,
           "Whether to enable automatic suffixes to names of metrics ingested through OTLP.", category="advanced"),
    Option("limits.promote_otel_resource_attributes", "distributor.otel-promote-resource-attributes", "list", [],
           "Optionally specify OTel resource attributes to promote to labels.", category="experimental"),
    Option("limits.otel_keep_identifying_resource_attributes",
           "distributor.otel-keep-identifying-resource-attributes", "bool", False,
           "Whether to keep identifying OTel resource attributes in the target_info metric on top of converting "
           "to job and instance labels.", category="experimental"),
    Option("limits.otel_promote_scope_metadata", "distributor.otel-promote-scope-metadata", "bool", False,
           "Whether to promote OTel scope metadata (scope name, version, schema URL, attributes) to "
           "corresponding metric labels, prefixed with otel_scope_.", category="experimental"),
    Option("limits.otel_native_delta_ingestion", "distributor.otel-native-delta-ingestion", "bool", False,
           "Whether to accept OTel metrics with delta temporality as they are (their metadata type is unknown) "
           "instead of rejecting them.", category="experimental"),
    # distributor: instance limits (per process, not per tenant)
    Option("distributor.instance_limits.max_inflight_push_requests",
           "distributor.instance-limits.max-inflight-push-requests", "int", 2000,
           "Max inflight push requests that this distributor can handle. This limit is per-distributor, not "
           "per-tenant. Additional requests will be rejected. 0 = unlimited.", minimum=0, category="advanced"),
    Option("distributor.instance_limits.max_ingestion_rate", "distributor.instance-limits.max-ingestion-rate",
           "float", 0.0,
           "Max ingestion rate (samples/sec) that this distributor will accept. This limit is per-distributor, "
           "not per-tenant. Additional push requests will be rejected. Current ingestion rate is computed as "
           "exponentially weighted moving average, updated every second. 0 = unlimited.", minimum=0,
           category="advanced"),
    # distributor: HA tracker, Retry-After, validation opt-outs, ingestion statistics
    Option("distributor.ha_tracker.enable_ha_tracker", "distributor.ha-tracker.enable", "bool", False,
           "Enable the HA tracker, which deduplicates samples from Prometheus HA pairs (tenants also need "
           "accept_ha_samples). Elections are kept in <tsdb dir>/ha-tracker.json."),
    Option("distributor.retry_after_header.enabled", "distributor.retry-after-header.enabled", "bool", True,
           "Send a Retry-After header with 429 and 5xx answers to pushes.", category="experimental"),
    Option("distributor.retry_after_header.min_backoff", "distributor.retry-after-header.min-backoff", "duration",
           6.0, "Minimum Retry-After, for the first retry attempt.", minimum=0, category="experimental"),
    Option("distributor.retry_after_header.max_backoff", "distributor.retry-after-header.max-backoff", "duration",
           96.0, "Maximum Retry-After, whatever the Retry-Attempt header says.", minimum=0, category="experimental"),
    Option("api.skip_label_name_validation_header_enabled", "api.skip-label-name-validation-header-enabled",
           "bool", False, "Allows skipping label name validation via the X-Mimir-SkipLabelNameValidation header "
           "on the http write path (the request must also set skip_label_validation).", category="advanced"),
    Option("api.skip_label_count_validation_header_enabled", "api.skip-label-count-validation-header-enabled",
           "bool", False, "Allows skipping the label count validation via the X-Mimir-SkipLabelCountValidation "
           "header on the http write path (the request must also set skip_label_count_validation).",
           category="advanced"),
    Option("ingester.rate_update_period", "ingester.rate-update-period", "duration", 15.0,
           "Period with which to update the per-tenant ingestion rates.", minimum=0.001, category="advanced"),
    # ring (one instance owns every ring)
    Option("ingester.ring.instance_id", "ingester.ring.instance-id", "string", "",
           "Instance ID shown in every ring; empty means the hostname. A single process owns all rings.",
           category="advanced"),
    Option("ingester.ring.num_tokens", "ingester.ring.num-tokens", "int", 128,
           "Number of tokens this instance owns in each ring.", minimum=1, category="advanced"),
    Option("ingester.ring.heartbeat_period", "ingester.ring.heartbeat-period", "duration", 15.0,
           "Period at which the instance heartbeats its ring entries.", minimum=0.001, category="advanced"),
    # per-tenant limits (defaults; runtime config overrides them per tenant)
    Option("limits.ingestion_rate", "distributor.ingestion-rate-limit", "float", 10000.0,
           "Per-tenant ingestion rate limit in samples per second.", minimum=0),
    Option("limits.ingestion_burst_size", "distributor.ingestion-burst-size", "int", 200000,
           "Per-tenant allowed ingestion burst size (in number of samples).", minimum=0),
    Option("limits.ingestion_burst_factor", "distributor.ingestion-burst-factor", "float", 0.0,
           "Per-tenant burst factor; when above 0 the burst size is the rate times this factor.",
           minimum=0, category="experimental"),
    Option("limits.request_rate", "distributor.request-rate-limit", "float", 0.0,
           "Per-tenant push request rate limit in requests per second; 0 disables it.", minimum=0),
    Option("limits.request_burst_size", "distributor.request-burst-size", "int", 0,
           "Per-tenant allowed push request burst size; 0 disables the limit.", minimum=0),
    Option("limits.service_overload_status_code_on_rate_limit_enabled",
           "distributor.service-overload-status-code-on-rate-limit-enabled", "bool", False,
           "If enabled, rate limit errors are reported with HTTP status 529 (service overloaded) instead of 429.",
           category="experimental"),
    Option("limits.max_label_name_length", "validation.max-length-label-name", "int", 1024,
           "Maximum length accepted for label names.", minimum=0),
    Option("limits.max_label_value_length", "validation.max-length-label-value", "int", 2048,
           "Maximum length accepted for label value. This setting also applies to the metric name.", minimum=0),
    Option("limits.max_label_names_per_series", "validation.max-label-names-per-series", "int", 30,
           "Maximum number of label names per series.", minimum=0),
    Option("limits.max_label_names_per_info_series", "validation.max-label-names-per-info-series", "int", 80,
           "Maximum number of label names per info series (metric names ending in _info).", minimum=0),
    Option("limits.max_metadata_length", "validation.max-metadata-length", "int", 1024,
           "Maximum length accepted for metric metadata. Metadata refers to Metric Name, HELP and UNIT; longer "
           "HELP is truncated.", minimum=0),
    Option("limits.enforce_metadata_metric_name", "validation.enforce-metadata-metric-name", "bool", True,
           "Enforce every metadata has a metric name.", category="advanced"),
    Option("limits.creation_grace_period", "validation.create-grace-period", "duration", 600.0,
           "Controls how far into the future incoming samples are accepted compared to the wall clock.",
           minimum=0),
    Option("limits.past_grace_period", "validation.past-grace-period", "duration", 0.0,
           "Controls how far into the past incoming samples are accepted compared to the wall clock; 0 disables "
           "the check.", minimum=0),
    Option("limits.accept_ha_samples", "distributor.ha-tracker.enable-for-all-users", "bool", False,
           "Flag to enable, for all tenants, handling of samples with external labels identifying replicas in an "
           "HA Prometheus setup."),
    Option("limits.ha_cluster_label", "distributor.ha-tracker.cluster", "string", "cluster",
           "Prometheus label to look for in samples to identify a Prometheus HA cluster."),
    Option("limits.ha_replica_label", "distributor.ha-tracker.replica", "string", "__replica__",
           "Prometheus label to look for in samples to identify a Prometheus HA replica."),
    Option("limits.ha_max_clusters", "distributor.ha-tracker.max-clusters", "int", 100,
           "Maximum number of clusters that HA tracker will keep track of for a single tenant; 0 disables the "
           "limit.", minimum=0),
    Option("limits.ha_tracker_update_timeout", "distributor.ha-tracker.update-timeout", "duration", 15.0,
           "Update the timestamp in the KV store for a given cluster/replica only after this amount of time has "
           "passed since the current stored timestamp.", minimum=0, category="advanced"),
    Option("limits.ha_tracker_update_timeout_jitter_max", "distributor.ha-tracker.update-timeout-jitter-max",
           "duration", 5.0, "Maximum jitter applied to the update timeout, in order to spread the HA heartbeats "
           "over time.", minimum=0, category="advanced"),
    Option("limits.ha_tracker_failover_timeout", "distributor.ha-tracker.failover-timeout", "duration", 30.0,
           "If we don't receive any samples from the accepted replica for a cluster in this amount of time we will "
           "failover to the next replica we receive a sample from.", minimum=0, category="advanced"),
    Option("limits.out_of_order_time_window", "ingester.out-of-order-time-window", "duration", 0.0,
           "Non-zero value enables out-of-order support for most recent samples that are within the time "
           "window in relation to the TSDB's maximum time.", minimum=0),
    Option("limits.max_global_series_per_user", "ingester.max-global-series-per-user", "int", 150000,
           "The maximum number of in-memory series per tenant; 0 disables the limit.", minimum=0),
    Option("limits.max_global_series_per_metric", "ingester.max-global-series-per-metric", "int", 0,
           "The maximum number of in-memory series per metric name; 0 disables the limit.", minimum=0),
    Option("limits.max_global_exemplars_per_user", "ingester.max-global-exemplars-per-user", "int", 0,
           "The maximum number of exemplars in memory per tenant; 0 disables exemplar storage.", minimum=0),
    Option("limits.max_exemplars_per_series_per_request", "distributor.max-exemplars-per-series-per-request",
           "int", 0, "Maximum number of exemplars per series per request. 0 to disable limit in request. The "
           "exceeding exemplars are dropped.", minimum=0, category="experimental"),
    Option("limits.max_fetched_chunks_per_query", "querier.max-fetched-chunks-per-query", "int", 2000000,
           "Maximum number of chunks a single query may fetch; 0 disables the limit.", minimum=0),
    Option("limits.max_fetched_series_per_query", "querier.max-fetched-series-per-query", "int", 0,
           "Maximum number of series a single query may fetch; 0 disables the limit.", minimum=0),
    Option("limits.max_fetched_chunk_bytes_per_query", "querier.max-fetched-chunk-bytes-per-query", "int", 0,
           "Maximum size of chunks a single query may fetch, in bytes; 0 disables the limit.", minimum=0),
    Option("limits.query_ingesters_within", "querier.query-ingesters-within", "duration", 13 * 3600.0,
           "Maximum lookback beyond which queries are not sent to ingester. 0 means all queries are sent to "
           "ingester.", minimum=0, category="advanced"),
    Option("limits.cardinality_analysis_enabled", "querier.cardinality-analysis-enabled", "bool", False,
           "Enables endpoints used for cardinality analysis."),
    Option("limits.cardinality_analysis_max_results", "querier.cardinality-analysis-max-results", "int", 500,
           "Maximum number of results that can be returned by the cardinality analysis endpoints (the largest "
           "allowed 'limit' parameter).", minimum=0),
    Option("limits.label_values_max_cardinality_label_names_per_request",
           "querier.label-values-max-cardinality-label-names-per-request", "int", 100,
           "Maximum number of label names allowed to be queried in a single /api/v1/cardinality/label_values "
           "API call; 0 disables the limit.", minimum=0),
    Option("limits.max_query_lookback", "querier.max-query-lookback", "duration", 0.0,
           "Limit how long back data (series and metadata) can be queried, up until <lookback> duration ago; "
           "0 disables the limit.", minimum=0),
    Option("limits.max_total_query_length", "query-frontend.max-total-query-length", "duration", 0.0,
           "Limit the total query time range (end - start time). This limit is enforced in the query-frontend "
           "on the received instant, range or remote read query; 0 disables it.", minimum=0),
    Option("limits.max_query_expression_size_bytes", "query-frontend.max-query-expression-size-bytes", "int", 0,
           "Max size of the raw query, in bytes; 0 disables the limit.", minimum=0),
    Option("frontend.query_stats_enabled", "query-frontend.query-stats-enabled", "bool", True,
           "False to disable query statistics tracking. When enabled, a Server-Timing header carries them in "
           "every query response."),
    Option("limits.align_queries_with_step", "query-frontend.align-queries-with-step", "bool", False,
           "Mutate incoming queries to align their start and end with their step."),
    Option("frontend.max_outstanding_per_tenant", "query-frontend.max-outstanding-requests-per-tenant", "int",
           100, "Maximum number of outstanding requests per tenant per query-frontend; requests beyond this "
           "error with HTTP 429.", minimum=1),
    Option("frontend.split_queries_by_interval", "query-frontend.split-queries-by-interval", "duration", 86400.0,
           "Split range queries by an interval and execute in parallel. You should use a multiple of 24 hours to "
           "optimize querying blocks. 0 to disable it.", minimum=0),
    Option("frontend.cache_results", "query-frontend.cache-results", "bool", False,
           "Cache query results (in memory, least recently used entries evicted first, or in the backend "
           "-query-frontend.results-cache.backend names)."),
    Option("limits.max_cache_freshness", "query-frontend.max-cache-freshness", "duration", 600.0,
           "Most recent allowed cacheable result per-tenant, to prevent caching very recent results that might "
           "still be in flux.", minimum=0),
    Option("limits.results_cache_ttl", "query-frontend.results-cache-ttl", "duration", 604800.0,
           "Time to live duration for cached query results.", minimum=0),
    Option("limits.cache_unaligned_requests", "query-frontend.cache-unaligned-requests", "bool", False,
           "Cache requests that are not step-aligned."),
    Option("limits.results_cache_ttl_for_out_of_order_time_window",
           "query-frontend.results-cache-ttl-for-out-of-order-time-window", "duration", 600.0,
           "Time to live duration for cached query results if query is within out-of-order time window.",
           minimum=0),
    Option("frontend.results_cache.backend", "query-frontend.results-cache.backend", "string", "",
           "Backend for query-frontend results cache, if not empty. Supported values: memcached. Empty keeps the "
           "results in this process's memory (mimird's embedded default; Mimir itself has no in-memory backend).",
           validate=_results_cache_backend),
    Option("frontend.results_cache.memcached.addresses", "query-frontend.results-cache.memcached.addresses",
           "string", "", "Comma separated list of memcached addresses. Supported prefixes are: dns+ (looked up as "
           "an A/AAAA query)."),
    Option("frontend.results_cache.memcached.timeout", "query-frontend.results-cache.memcached.timeout",
           "duration", 0.1, "The socket read/write timeout.", minimum=0.001),
    Option("frontend.results_cache.memcached.max_idle_connections",
           "query-frontend.results-cache.memcached.max-idle-connections", "int", 100,
           "The maximum number of idle connections that will be maintained per address.", minimum=0,
           category="advanced"),
    Option("frontend.results_cache.memcached.max_async_concurrency",
           "query-frontend.results-cache.memcached.max-async-concurrency", "int", 50,
           "The maximum number of concurrent asynchronous operations can occur.", minimum=1, category="advanced"),
    Option("frontend.results_cache.memcached.max_async_buffer_size",
           "query-frontend.results-cache.memcached.max-async-buffer-size", "int", 25000,
           "The maximum number of enqueued asynchronous operations allowed.", minimum=1, category="advanced"),
    Option("frontend.results_cache.memcached.max_item_size", "query-frontend.results-cache.memcached.max-item-size",
           "int", 1024 * 1024, "The maximum size of an item stored in memcached. Bigger items are not stored. If "
           "set to 0, no maximum size is enforced.", minimum=0, category="advanced"),
    Option("frontend.results_cache.compression", "query-frontend.results-cache.compression", "string", "",
           "Enable cache compression, if not empty. Supported values are: snappy.", validate=_cache_compression),
    Option("limits.max_query_parallelism", "querier.max-query-parallelism", "int", 14,
           "Maximum number of split (by time) or partial (by shard) queries that will be scheduled in parallel by "
           "the query-frontend for a single input query.", minimum=0),
    Option("querier.max_concurrent", "querier.max-concurrent", "int", 20,
           "The number of workers running in each querier process. This setting limits the maximum number of "
           "concurrent queries in each querier.", minimum=1),
    # querier
    Option("querier.timeout", "querier.timeout", "duration", 120.0,
           "The timeout for a query.", minimum=0.001),
    Option("querier.max_samples", "querier.max-samples", "int", 50_000_000,
           "Maximum number of samples a single query can load into memory.", minimum=1, category="advanced"),
    Option("querier.lookback_delta", "querier.lookback-delta", "duration", 300.0,
           "Time since the last sample after which a time series is considered stale and ignored by expression "
           "evaluations.", minimum=0.001, category="advanced"),
    Option("querier.query_store_after", "querier.query-store-after", "duration", 12 * 3600.0,
           "The time after which a metric should be queried from storage and not just ingesters. 0 means all "
           "queries are sent to store.", minimum=0, category="advanced"),
    Option("ingester.active_series_metrics_idle_timeout", "ingester.active-series-metrics-idle-timeout",
           "duration", 1200.0, "After what time a series is considered to be inactive (for the active series "
           "cardinality endpoints).", minimum=0.001, category="advanced"),
    Option("limits.ruler_max_rules_per_rule_group", "ruler.max-rules-per-rule-group", "int", 20,
           "Maximum number of rules per rule group per tenant; 0 disables the limit.", minimum=0),
    Option("limits.ruler_max_rule_groups_per_tenant", "ruler.max-rule-groups-per-tenant", "int", 70,
           "Maximum number of rule groups per tenant; 0 disables the limit.", minimum=0),
    Option("limits.compactor_blocks_retention_period", "compactor.blocks-retention-period", "duration", 0.0,
           "Delete blocks older than this from the bucket; 0 keeps them forever.", minimum=0),
    # compactor and store-gateway
    Option("limits.compactor_block_upload_enabled", "compactor.block-upload-enabled", "bool", False,
           "Enable block upload API for the tenant."),
    Option("limits.compactor_block_upload_validation_enabled", "compactor.block-upload-validation-enabled",
           "bool", True, "Enable block upload validation for the tenant."),
    Option("limits.compactor_block_upload_verify_chunks", "compactor.block-upload-verify-chunks", "bool", True,
           "Verify chunks when uploading blocks via the upload API for the tenant."),
    Option("limits.compactor_block_upload_max_block_size_bytes", "compactor.block-upload-max-block-size-bytes",
           "int", 0, "Maximum size in bytes of a block that is allowed to be uploaded or validated; 0 = no limit.",
           minimum=0),
    Option("limits.compactor_partial_block_deletion_delay", "compactor.partial-block-deletion-delay", "duration",
           86400.0, "If a partial block (unfinished block without meta.json) has not been modified for this "
           "time, it is marked for deletion; 0 disables it.", minimum=0),
    Option("compactor.block_ranges", "compactor.block-ranges", "list", ["2h", "12h", "24h"],
           "List of compaction time ranges.", category="advanced", validate=_block_ranges),
    Option("compactor.data_dir", "compactor.data-dir", "string", "./data-compactor/",
           "Directory to temporarily store blocks during compaction and upload validation."),
    Option("compactor.compaction_interval", "compactor.compaction-interval", "duration", 3600.0,
           "The frequency at which the compaction runs.", minimum=0.001, category="advanced"),
    Option("compactor.cleanup_interval", "compactor.cleanup-interval", "duration", 900.0,
           "How frequently the compactor applies retention and deletes marked blocks and tenants.",
           minimum=0.001, category="advanced"),
    Option("compactor.deletion_delay", "compactor.deletion-delay", "duration", 12 * 3600.0,
           "Time before a block marked for deletion is deleted from the bucket.", minimum=0, category="advanced"),
    Option("compactor.tenant_cleanup_delay", "compactor.tenant-cleanup-delay", "duration", 6 * 3600.0,
           "For tenants marked for deletion, this is the time between deletion of the last block, and doing "
           "final cleanup (marker files, debug files) of the tenant.", minimum=0, category="advanced"),
    Option("compactor.first_level_compaction_wait_period", "compactor.first-level-compaction-wait-period",
           "duration", 25 * 60.0, "How long the compactor waits before compacting first-level blocks uploaded by "
           "the ingesters.", minimum=0),
    Option("compactor.max_block_upload_validation_concurrency",
           "compactor.max-block-upload-validation-concurrency", "int", 1,
           "Max number of uploaded blocks that can be validated concurrently; 0 means no limit.", minimum=0),
    Option("blocks_storage.bucket_store.sync_interval", "blocks-storage.bucket-store.sync-interval", "duration",
           900.0, "How frequently the store-gateway scans the bucket for new and deleted blocks.",
           minimum=0.001),
    Option("blocks_storage.bucket_store.ignore_deletion_marks_delay",
           "blocks-storage.bucket-store.ignore-deletion-marks-delay", "duration", 3600.0,
           "How long after a block is marked for deletion the store-gateway stops reading it.", minimum=0,
           category="advanced"),
    Option("blocks_storage.bucket_store.index_header.lazy_loading_idle_timeout",
           "blocks-storage.bucket-store.index-header.lazy-loading-idle-timeout", "duration", 3600.0,
           "The store-gateway opens a block when a query first reads it and closes it after this long without "
           "queries; 0 keeps blocks open once opened.", minimum=0, category="advanced"),
)

OPTIONS_BY_PATH = {opt.path: opt for opt in OPTIONS}
OPTIONS_BY_FLAG = {opt.flag: opt for opt in OPTIONS if opt.flag}
LIMIT_OPTIONS = {opt.yaml_key: opt for opt in OPTIONS if opt.is_limit}

# Flags handled by the loader itself rather than stored in the config.
LOADER_FLAGS = {
    "config.file": "Configuration file to load (YAML).",
    "config.expand-env": "Expand ${VAR} and ${VAR:default} references in the config file from the environment.",
    "help": "Print basic help and exit.",
    "help-all": "Print help, including advanced and experimental options, and exit.",
    "version": "Print the version and exit.",
}


# Every "a." / "a.b." prefix of an option path: the sections attribute access can descend into.
_SECTION_PREFIXES = frozenset(
    ".".join(parts[:i]) + "." for parts in (opt.path.split(".") for opt in OPTIONS) for i in range(1, len(parts)))


class _Section:
    """Attribute access over one level of the nested config (`config.server.http_listen_port`)."""

    def __init__(self, values: dict[str, Any], prefix: str):
        self._values = values
        self._prefix = prefix

    def __getattr__(self, name: str) -> Any:
        path = f"{self._prefix}{name}"
        if path in self._values:
            return self._values[path]
        sub = path + "."
        if sub in _SECTION_PREFIXES:
            return _Section(self._values, sub)
        raise AttributeError(f"no configuration option {path}")


class Config(_Section):
    """The effective configuration: every option's value, by YAML path."""

    def __init__(self, values: dict[str, Any]):
        super().__init__(dict(values), "")

    @classmethod
    def defaults(cls) -> Config:
        return cls({opt.path: _copy(opt.default) for opt in OPTIONS})

    def get(self, path: str) -> Any:
        return self._values[path]

    def items(self):
        return self._values.items()

    def limit_defaults(self) -> dict[str, Any]:
        """The per-tenant limits without any override, keyed by their YAML name."""
        return {key: self._values[opt.path] for key, opt in LIMIT_OPTIONS.items()}

    def to_tree(self, only_diff: bool = False) -> dict[str, Any]:
        """Nested mapping as /config shows it; `only_diff` keeps only values that differ from defaults."""
        tree: dict[str, Any] = {}
        for opt in OPTIONS:
            value = self._values[opt.path]
            if only_diff and value == opt.default:
                continue
            node = tree
            *parents, leaf = opt.path.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = opt.to_yaml(value)
        return tree


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


_ENV_REF = re.compile(r"\$\{(\w+)(?::([^}]*))?\}")


def _expand_env(text: str) -> str:
    return _ENV_REF.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), text)


def parse_flags(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Split Go-style flags (`-name=value`, `--name value`, `-bool`) into a name->text mapping.

    Returns the flags and the special loader actions seen (help, version). Raises ConfigError for
    an unknown flag, a missing value or a positional argument.
    """
    flags: dict[str, str] = {}
    actions: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            raise ConfigError(f"unexpected argument {arg!r}: every setting is a -flag=value")
        name = arg.lstrip("-")
        value: str | None = None
        if "=" in name:
            name, value = name.split("=", 1)
        if name in ("help", "h", "help-all", "version"):
            actions.append("help" if name == "h" else name)
            continue
        opt = OPTIONS_BY_FLAG.get(name)
        is_bool = (opt is not None and opt.kind == "bool") or name == "config.expand-env"
        if opt is None and name not in LOADER_FLAGS:
            raise ConfigError(f"flag provided but not defined: -{name}")
        if value is None:
            if is_bool:
                value = "true"
            elif i < len(argv):
                value = argv[i]
                i += 1
            else:
                raise ConfigError(f"flag needs an argument: -{name}")
        flags[name] = value
    return flags, actions


def _walk_yaml(node: Any, prefix: str, out: dict[str, tuple[Any, int | None]], lines: dict) -> None:
    if not isinstance(node, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {_yaml_type(node)}")
    for key, value in node.items():
        path = f"{prefix}{key}"
        line = None
        if hasattr(node, "lc"):
            try:
                line = node.lc.key(key)[0] + 1
            except (KeyError, TypeError):
                line = None
        if path in OPTIONS_BY_PATH:
            out[path] = (value, line)
        elif any(p.startswith(path + ".") for p in OPTIONS_BY_PATH):
            if value is None:
                continue
            _walk_yaml(value, path + ".", out, lines)
        else:
            where = f"line {line}: " if line else ""
            parent = prefix.rstrip(".") or "config"
            raise ConfigError(f"{where}field {key} not found in type {parent}")


def load_yaml_text(text: str, source: str, expand_env: bool = False) -> dict[str, Any]:
    """Read a config YAML document into {path: typed value}; errors name the file, line and key."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    if expand_env:
        text = _expand_env(text)
    try:
        document = YAML(typ="rt").load(text)
    except YAMLError as exc:
        first = str(exc).strip().splitlines()
        raise ConfigError(f"error loading config from {source}: {' '.join(s.strip() for s in first)}") from None
    if document is None:
        return {}
    found: dict[str, tuple[Any, int | None]] = {}
    try:
        _walk_yaml(document, "", found, {})
    except ConfigError as exc:
        raise ConfigError(f"error loading config from {source}: {exc}") from None
    values = {}
    for path, (raw, line) in found.items():
        opt = OPTIONS_BY_PATH[path]
        where = f"line {line}: " if line else ""
        try:
            values[path] = opt.from_yaml(raw)
            opt.check(values[path])
        except ValueError as exc:
            raise ConfigError(f"error loading config from {source}: {where}{path}: {exc}") from None
    return values


def load_config(argv: list[str]) -> tuple[Config, list[str]]:
    """Build the effective config: defaults, then the YAML file, then flags on top.

    Returns the config and the loader actions requested (`help`, `help-all`, `version`).
    Raises ConfigError with a one-line message for anything wrong.
    """
    flags, actions = parse_flags(argv)
    values = {opt.path: _copy(opt.default) for opt in OPTIONS}
    config_file = flags.pop("config.file", "")
    expand_env_text = flags.pop("config.expand-env", "false")
    try:
        expand_env = OPTIONS_BY_FLAG["auth.multitenancy-enabled"].parse_text(expand_env_text)
    except ValueError as exc:
        raise ConfigError(f"invalid value {expand_env_text!r} for flag -config.expand-env: {exc}") from None
    if config_file:
        try:
            with open(config_file, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise ConfigError(f"error loading config from {config_file}: {exc.strerror}") from None
        values.update(load_yaml_text(text, config_file, expand_env))
    for name, text in flags.items():
        opt = OPTIONS_BY_FLAG[name]
        try:
            value = opt.parse_text(text)
            opt.check(value)
        except ValueError as exc:
            raise ConfigError(f"invalid value {text!r} for flag -{name}: {exc}") from None
        values[opt.path] = value
    config = Config(values)
    config.flags_set = {name: text for name, text in flags.items()}
    config.config_file = config_file
    return config, actions
