"""The distributor: the way in for pushed samples, on to the ingester.

`Distributor.ingest` is the one write path of remote write, OTLP and Influx, and follows Mimir 2.17's
processing order (reference §1.2): request rate limit, HA deduplication decided on the first series,
per-series canonical labels (empty values dropped, sorted) and validation (a bad series is dropped
and the first error remembered), metadata validation, the ingestion rate limit over what is left,
then the ingester. An ingester error wins over a remembered validation error; a remembered
validation error answers 400 although the good series were stored.

Remote write 1.0 requests take a fast path for most of their series (mimird._fast.fastappend): once
the request rate limit and the HA decision are passed, series the tenant's head already holds, that
were validated under the current label limits and whose samples are plainly the next ones, are only
counted here and appended by the head straight from the decoded request. Everything else goes through
the checks below, so answers, counters and stored data are those of the plain path.

The push route's body limit: Mimir answers a push over `-distributor.max-recv-msg-size` with a 400
carrying its own message, never 413. The HTTP server refuses bodies over a route's `max_body` with
413 before reading them, so the push route is registered with `max_body` = `PUSH_BODY_READ_LIMIT`
(twice the message limit) and the handler answers Mimir's 400 from the `Content-Length` (or the body
length) for anything between the limit and that; only bodies over twice the limit still get the
server's 413 unread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from prometheus_client import Counter, Gauge

from mimird._fast.labelset import canonical_labels
from mimird._fast.remotewrite import SOURCE_RULE
from mimird.config.schema import ConfigError
from mimird.distributor import validation as v
from mimird.distributor.hatracker import HADecline, HATracker, find_ha_labels
from mimird.distributor.ratelimit import (
    TenantLimiter,
    ingestion_burst_message,
    ingestion_burst_size,
    ingestion_rate_message,
    request_rate_message,
    retry_after_seconds,
)
from mimird.distributor.remotewrite import (
    PushDecodeError,
    decode_push_body,
    is_remote_write_v2,
    message_size_error,
)
from mimird.distributor.stats import EwmaRate, IngestionRates
from mimird.http.errors import HTTPError
from mimird.http.request import Request, Response
from mimird.ingester.ingester import Ingester, IngesterUnavailable
from mimird.services import Service
from mimird.tsdb.head import DISCARD_REASONS
from mimird.tsdb.labels import Labels
from mimird.util.durations import go_duration
from mimird.util.logging import kv_log
from mimird.util.metrics import Metrics

log = logging.getLogger("mimird.distributor")


def push_body_read_limit(max_message_size: int) -> int:
    """How much of a push body the server may read so that the handler can answer Mimir's 400 itself."""
    return 2 * max_message_size


_LABEL_LIMITS = ("max_label_names_per_series", "max_label_names_per_info_series", "max_label_name_length",
                 "max_label_value_length")


def check_ha_timeouts(limits: dict) -> None:
    """Refuse (ConfigError) a failover timeout that is not 1s past the update timeout plus its jitter, as Mimir."""
    minimum = limits["ha_tracker_update_timeout"] + limits["ha_tracker_update_timeout_jitter_max"] + 1.0
    failover = limits["ha_tracker_failover_timeout"]
    if failover < minimum:
        raise ConfigError(f"HA Tracker failover timeout ({go_duration(round(failover * 1e9))}) must be at least 1s "
                          f"greater than update timeout - max jitter ({go_duration(round(minimum * 1e9))})")


MAX_INFLIGHT_PUSH_REQUESTS_MESSAGE = v.instance_limit_message(
    "the write request has been rejected because the distributor exceeded the allowed number of inflight push "
    "requests", "distributor-max-inflight-push-requests", "distributor.instance-limits.max-inflight-push-requests")
MAX_INGESTION_RATE_MESSAGE = v.instance_limit_message(
    "the write request has been rejected because the distributor exceeded the ingestion rate limit",
    "distributor-max-ingestion-rate", "distributor.instance-limits.max-ingestion-rate")

# cortex_distributor_instance_rejected_requests_total reasons
REJECTED_MAX_INFLIGHT = "distributor_max_inflight_push_requests"
REJECTED_MAX_INGESTION_RATE = "distributor_max_ingestion_rate"

# Mimir ticks the distributor's own ingestion rate (for its instance limit) every second.
INSTANCE_RATE_TICK = 1.0


def _written_headers(written: dict) -> list[tuple[str, str]]:
    """Remote write 2.0's response headers: what was forwarded to the ingester."""
    return [("X-Prometheus-Remote-Write-Samples-Written", str(written["samples"])),
            ("X-Prometheus-Remote-Write-Histograms-Written", str(written["histograms"])),
            ("X-Prometheus-Remote-Write-Exemplars-Written", str(written["exemplars"]))]


def _rate_limited_status(limits: dict) -> int:
    """429, or 529 ("service overloaded") for tenants that ask for it."""
    return 529 if limits["service_overload_status_code_on_rate_limit_enabled"] else 429


class DistributorMetrics:
    """The distributor's counters, named and labelled as Mimir's."""

    def __init__(self, metrics: Metrics | None):
        registry = metrics.registry if metrics is not None else None  # None: not exposed anywhere

        def counter(name, help_text, labels):
            return Counter(name, help_text, labels, registry=registry)

        self.discarded_samples = counter("cortex_discarded_samples_total",
                                         "The total number of samples that were discarded.", ["reason", "user"])
        self.discarded_exemplars = counter("cortex_discarded_exemplars_total",
                                           "The total number of exemplars that were discarded.", ["reason", "user"])
        self.discarded_metadata = counter("cortex_discarded_metadata_total",
                                          "The total number of metadata that were discarded.", ["reason", "user"])
        self.requests_in = counter("cortex_distributor_requests_in_total",
                                   "The total number of requests that have come in to the distributor, including "
                                   "rejected or deduped requests.", ["user"])
        self.received_requests = counter("cortex_distributor_received_requests_total",
                                         "The total number of received requests, excluding rejected and deduped "
                                         "requests.", ["user"])
        self.samples_in = counter("cortex_distributor_samples_in_total",
                                  "The total number of samples that have come in to the distributor, including "
                                  "rejected or deduped samples.", ["user"])
        self.received_samples = counter("cortex_distributor_received_samples_total",
                                        "The total number of received samples, excluding rejected and deduped "
                                        "samples.", ["user"])
        self.exemplars_in = counter("cortex_distributor_exemplars_in_total",
                                    "The total number of exemplars that have come in to the distributor, including "
                                    "rejected or deduped exemplars.", ["user"])
        self.received_exemplars = counter("cortex_distributor_received_exemplars_total",
                                          "The total number of received exemplars, excluding rejected and deduped "
                                          "exemplars.", ["user"])
        self.metadata_in = counter("cortex_distributor_metadata_in_total",
                                   "The total number of metadata the have come in to the distributor, including "
                                   "rejected.", ["user"])
        self.received_metadata = counter("cortex_distributor_received_metadata_total",
                                         "The total number of received metadata, excluding rejected.", ["user"])
        self.deduped_samples = counter("cortex_distributor_deduped_samples_total",
                                       "The total number of deduplicated samples.", ["user", "cluster"])
        self.non_ha_samples = counter("cortex_distributor_non_ha_samples_received_total",
                                      "The total number of received samples for a user that has HA tracking turned "
                                      "on, but the sample didn't contain both HA labels.", ["user"])
        self.elected_replica_changes = counter("cortex_ha_tracker_elected_replica_changes_total",
                                               "The total number of times the elected replica has changed for a "
                                               "user ID/cluster.", ["user", "cluster"])
        self.instance_rejected = counter("cortex_distributor_instance_rejected_requests_total",
                                         "Requests discarded for hitting per-instance limits", ["reason"])
        self.inflight_push_requests = Gauge("cortex_distributor_inflight_push_requests",
                                            "Current number of inflight push requests in distributor.",
                                            registry=registry)
        self.ingestion_rate = Gauge("cortex_distributor_ingestion_rate_samples_per_second",
                                    "Current ingestion rate in samples/sec that distributor is using to limit "
                                    "access.", registry=registry)
        self.instance_limits = Gauge("cortex_distributor_instance_limits",
                                     "Instance limits used by this distributor.", ["limit"], registry=registry)


class Distributor(Service):
    """Receives pushes, validates and limits them per tenant, and hands them to the ingester."""

    name = "distributor"

    def __init__(self, config, ingester: Ingester, instance_id: str, metrics: Metrics | None = None):
        super().__init__()
        self.config = config
        self.ingester = ingester
        self.overrides = ingester.overrides
        self.instance_id = instance_id
        self.max_message_size = config.distributor.max_recv_msg_size
        self.metrics = DistributorMetrics(metrics)
        self.request_limiter = TenantLimiter()
        self.ingestion_limiter = TenantLimiter()
        self.ha_enabled = config.distributor.ha_tracker.enable_ha_tracker
        if self.ha_enabled:
            check_ha_timeouts(self.overrides.defaults)
        self.ha_tracker = HATracker(Path(config.blocks_storage.tsdb.dir) if self.ha_enabled else None)
        self.ha_tracker.elected_changes_listener = (
            lambda tenant, cluster: self.metrics.elected_replica_changes.labels(tenant, cluster).inc())
        self.rates = IngestionRates(config.ingester.rate_update_period)
        instance_limits = config.distributor.instance_limits
        self.max_inflight_push_requests = instance_limits.max_inflight_push_requests
        self.max_ingestion_rate = instance_limits.max_ingestion_rate
        # Pushes between the start of `ingest` and its answer (Mimir counts from its limits middleware,
        # which also runs after the body is decoded).
        self.inflight_push_requests = 0
        # Everything this instance accepted (samples, histograms, exemplars, metadata), per second.
        self.instance_rate = EwmaRate(INSTANCE_RATE_TICK)
        self.metrics.inflight_push_requests.set_function(lambda: self.inflight_push_requests)
        self.metrics.ingestion_rate.set_function(lambda: self.instance_rate.rate)
        self.metrics.instance_limits.labels("max_inflight_push_requests").set(self.max_inflight_push_requests)
        self.metrics.instance_limits.labels("max_ingestion_rate").set(self.max_ingestion_rate)
        retry = config.distributor.retry_after_header
        self.retry_after = (retry.enabled, retry.min_backoff, retry.max_backoff)
        self._tasks: list[asyncio.Task] = []
        # Per tenant, the label limits its head's series were validated under (None: not trusted).
        # Series replayed from the WAL at start count as validated under the limits seen first.
        self._label_limits: dict[str, tuple | None] = {}

    # lifecycle
    async def starting(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._tick_rates()))
        if self.max_ingestion_rate > 0:
            self._tasks.append(loop.create_task(self._tick_instance_rate()))
        if self.ha_enabled:
            self.ha_tracker.load()
            self._tasks.append(loop.create_task(self._maintain_ha()))

    async def stopping(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _tick_rates(self) -> None:
        while True:
            await asyncio.sleep(self.rates.interval)
            self.rates.tick()

    async def _tick_instance_rate(self) -> None:
        while True:
            await asyncio.sleep(INSTANCE_RATE_TICK)
            self.instance_rate.tick()

    async def _maintain_ha(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, self.overrides.defaults["ha_tracker_update_timeout"]))
            try:
                self.ha_tracker.maintain(self.overrides.for_tenant)
            except Exception as exc:  # one failed pass must not end the loop
                kv_log(log, logging.ERROR, "HA tracker maintenance failed", err=f"{type(exc).__name__}: {exc}")

    # remote write
    async def push(self, request: Request) -> Response:
        """POST /api/v1/push: Prometheus remote write 1.0 and 2.0.

        A 2.0 answer, error or not, carries the X-Prometheus-Remote-Write-{Samples,Histograms,
        Exemplars}-Written counts of what passed validation and went to the ingester.

        A Content-Type with a bad parameter gets Mimir's quirk: the 400 is written at once, yet the
        body is still decoded and ingested as 1.0; a later error only adds its line to that 400's body
        (the status is already sent).
        """
        tenant = request.tenant
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_message_size:
            raise HTTPError(400, message_size_error(int(length), self.max_message_size).message)
        exemplars_on = bool(self.overrides.get(tenant, "max_global_exemplars_per_user"))
        content_type = request.headers.get("content-type")
        v2 = False
        content_type_error = None
        try:
            v2 = is_remote_write_v2(content_type)
        except PushDecodeError as exc:
            content_type_error, content_type = exc.message, None
        try:
            try:
                batch = decode_push_body(request.body, request.headers.get("content-encoding"), content_type,
                                         request.headers.get("x-prometheus-remote-write-version"),
                                         max_message_size=self.max_message_size, decode_exemplars=exemplars_on)
            except PushDecodeError as exc:
                nothing = {"samples": 0, "histograms": 0, "exemplars": 0}
                raise HTTPError(exc.status, exc.message, _written_headers(nothing) if v2 else None) from None
            response = self._push_batch(request, tenant, batch, v2)
        except HTTPError as error:
            if content_type_error is not None:
                raise HTTPError(400, f"{content_type_error}\n{error.message}") from None
            raise
        if content_type_error is not None:
            raise HTTPError(400, content_type_error)
        return response

    def _push_batch(self, request: Request, tenant: str, batch, v2: bool) -> Response:
        """Ingest a decoded push; 2.0 answers (and errors) get the written-counts headers."""
        api = self.config.api
        skip_names = (api.skip_label_name_validation_header_enabled and batch.skip_label_validation
                      and request.headers.get("x-mimir-skiplabelnamevalidation", "").lower() == "true")
        skip_count = (api.skip_label_count_validation_header_enabled and batch.skip_label_count_validation
                      and request.headers.get("x-mimir-skiplabelcountvalidation", "").lower() == "true")
        written = {"samples": 0, "histograms": 0, "exemplars": 0} if v2 else None
        try:
            if batch.label_spans is not None:
                # remote write 1.0: labels and samples stay in the batch for the fast path
                response = self.ingest(tenant, None, None, None, None, batch.exemplars, batch.metadata,
                                       batch=batch, histograms=batch.histograms,
                                       from_rule=batch.source == SOURCE_RULE, skip_label_validation=skip_names,
                                       skip_label_count_validation=skip_count,
                                       retry_attempt=request.headers.get("retry-attempt"), written=written)
            else:
                response = self.ingest(tenant, batch.series_labels, batch.sample_offsets.tolist(),
                                       batch.timestamps.tolist(), batch.values.tolist(), batch.exemplars,
                                       batch.metadata, histograms=batch.histograms,
                                       from_rule=batch.source == SOURCE_RULE, skip_label_validation=skip_names,
                                       skip_label_count_validation=skip_count,
                                       retry_attempt=request.headers.get("retry-attempt"), written=written)
        except HTTPError as error:
            if written is not None:
                error.headers.extend(_written_headers(written))
            raise
        if written is not None:
            response.headers.extend(_written_headers(written))
        return response

    def _refuse(self, status: int, message: str, retry_attempt: str | None) -> HTTPError:
        """An error answer; 429 and 5xx carry Retry-After when enabled."""
        enabled, min_backoff, max_backoff = self.retry_after
        headers = []
        if enabled and (status == 429 or status >= 500):
            headers.append(("Retry-After", retry_after_seconds(retry_attempt, min_backoff, max_backoff)))
        return HTTPError(status, message, headers)

    # the shared write path
    def ingest(self, tenant: str, series_pairs, offsets, timestamps, values, exemplars=(), metadata=(), *,
               batch=None, histograms=(), from_rule: bool = False, skip_label_validation: bool = False,
               skip_label_count_validation: bool = False, retry_attempt: str | None = None,
               written: dict | None = None) -> Response:
        """The shared write path of remote write, OTLP and Influx: limits, HA, validation, then the ingester.

        `series_pairs[i]` are series i's (name, value) label pairs in any order; its samples are
        timestamps/values[offsets[i]:offsets[i+1]]. `exemplars` are (series index, label pairs, value,
        timestamp); `metadata` are (type, metric family name, help, unit); `histograms` are (series
        index, native histogram), validated and counted against the rate limit like samples but not
        stored, as the ingester keeps float samples only. `from_rule` marks ruler
        writes (counted in the rule ingestion rate); the skip flags are the already-checked
        X-Mimir-SkipLabel{Name,Count}Validation opt-outs; `retry_attempt` is the client's Retry-Attempt
        header. `written`, when given, receives the "samples", "histograms" and "exemplars" counts
        forwarded to the ingester. Returns the 200 answer or raises HTTPError with Mimir's status
        and message.

        `batch`, instead of series_pairs/offsets/timestamps/values (then None), is a decoded remote
        write 1.0 request (`remotewrite.WriteBatch`): the samples of series the tenant's head already
        holds (validated under the current limits) then go to the head without Python objects
        (mimird._fast.fastappend), the rest through the checks here, with the same outcome.
        """
        self.inflight_push_requests += 1
        try:
            self._check_instance_limits(retry_attempt)
            return self._ingest(tenant, series_pairs, offsets, timestamps, values, exemplars, metadata, batch,
                                histograms, from_rule, skip_label_validation, skip_label_count_validation,
                                retry_attempt, written)
        finally:
            self.inflight_push_requests -= 1

    def _check_instance_limits(self, retry_attempt: str | None) -> None:
        """Mimir's distributor instance limits, checked before anything else: 500 when over one."""
        if 0 < self.max_inflight_push_requests < self.inflight_push_requests:
            self.metrics.instance_rejected.labels(REJECTED_MAX_INFLIGHT).inc()
            raise self._refuse(500, MAX_INFLIGHT_PUSH_REQUESTS_MESSAGE, retry_attempt)
        if self.max_ingestion_rate > 0 and self.instance_rate.rate >= self.max_ingestion_rate:
            self.metrics.instance_rejected.labels(REJECTED_MAX_INGESTION_RATE).inc()
            raise self._refuse(500, MAX_INGESTION_RATE_MESSAGE, retry_attempt)

    def _ingest(self, tenant, series_pairs, offsets, timestamps, values, exemplars, metadata, batch, histograms,
                from_rule, skip_label_validation, skip_label_count_validation, retry_attempt, written) -> Response:
        m = self.metrics
        limits = self.overrides.for_tenant(tenant)
        if batch is not None:
            total_samples = batch.num_samples
            n_series = batch.num_series
        else:
            total_samples = len(timestamps)
            n_series = len(series_pairs)
        m.requests_in.labels(tenant).inc()
        m.samples_in.labels(tenant).inc(total_samples)
        if exemplars:
            m.exemplars_in.labels(tenant).inc(len(exemplars))
        if metadata:
            m.metadata_in.labels(tenant).inc(len(metadata))

        request_rate = limits["request_rate"]
        if request_rate > 0 and not self.request_limiter.allow(tenant, request_rate, limits["request_burst_size"], 1):
            m.discarded_samples.labels(v.RATE_LIMITED, tenant).inc(total_samples)
            raise self._refuse(_rate_limited_status(limits), request_rate_message(request_rate,
                                                                                 limits["request_burst_size"]),
                               retry_attempt)

        if exemplars and not limits["max_global_exemplars_per_user"]:
            exemplars = ()  # Mimir clears them unread when the tenant may not store any
        drop_label = None
        if limits["accept_ha_samples"] and n_series:
            first = batch.labels_of(0) if batch is not None else series_pairs[0]
            drop_label = self._ha_dedupe(tenant, first, limits, total_samples)

        now_ms = int(time.time() * 1000)
        bounds = v.SampleTimeBounds(now_ms, limits)
        label_limits = tuple(limits[name] for name in _LABEL_LIMITS)
        skipping = skip_label_validation or skip_label_count_validation
        cacheable = batch is not None and batch.label_spans is not None
        fast = None
        if batch is not None:
            fast = self._plan_fast(tenant, batch, label_limits, bounds, drop_label)
            if fast is not None:
                indices = fast.slow_indices
                labels_of = batch.labels_of
                offsets = fast.slow_offsets.tolist()
                timestamps, values = fast.slow_timestamps.tolist(), fast.slow_values.tolist()
            else:
                indices = range(n_series)
                labels_of = batch.series_labels.__getitem__
                offsets = batch.sample_offsets.tolist()
                timestamps, values = batch.timestamps.tolist(), batch.values.tolist()
        else:
            indices = range(n_series)
            labels_of = series_pairs.__getitem__
        fast_samples = fast.fast_samples if fast is not None else 0
        histograms_by_series: dict[int, list] = {}
        for index, histogram in histograms:
            histograms_by_series.setdefault(index, []).append(histogram)
        histogram_count = 0
        first_error = None
        kept_labels: list[Labels] = []
        kept_offsets = [0]
        kept_ts: list[int] = []
        kept_values: list[float] = []
        kept_index: dict[int, Labels] = {}
        kept_positions: list[int] = []
        duplicates = 0
        # Label validity depends only on the labels and these limits: a series the head already holds
        # passed the same checks when it was created, unless the limits changed since.
        known_series = self._validated_series(tenant, limits, skipping)
        # `position` counts the series going this way (all, or the fast path's slow ones); `index` is
        # the series' index in the request, which exemplars and histograms refer to.
        for position, index in enumerate(indices):
            labels = canonical_labels(labels_of(index), drop_label)
            lo, hi = offsets[position], offsets[position + 1]
            if not labels:
                continue  # Mimir drops label-less series without a word
            if labels in known_series:
                problem = None
            else:
                problem = v.validate_labels(labels, limits, skip_label_validation, skip_label_count_validation)
            start = len(kept_ts)
            if problem is None and hi > lo:
                problem, duplicates_here = self._collect_samples(labels, timestamps, values, lo, hi, bounds,
                                                                 kept_ts, kept_values, start)
                duplicates += duplicates_here
            if problem is None and index in histograms_by_series:
                problem, valid_histograms = v.check_histograms(histograms_by_series[index], labels, bounds)
                if problem is not None:
                    del kept_ts[start:], kept_values[start:]
                else:
                    histogram_count += valid_histograms
            if problem is not None:
                reason, message = problem
                # Mimir counts one discarded sample per rejected series, at the first failed check.
                m.discarded_samples.labels(reason, tenant).inc()
                first_error = first_error or message
                continue
            if len(kept_ts) == kept_offsets[-1] and not exemplars:
                continue
            kept_labels.append(labels)
            kept_offsets.append(len(kept_ts))
            kept_index[index] = labels
            kept_positions.append(index)
        if duplicates:
            m.discarded_samples.labels(v.SAMPLE_DUPLICATE_TIMESTAMP, tenant).inc(duplicates)
        samples_kept = len(kept_ts) + fast_samples

        earliest = min(kept_ts) if kept_ts else None
        if fast_samples:
            earliest = fast.min_t if earliest is None else min(earliest, fast.min_t)
        kept_exemplars = self._valid_exemplars(tenant, exemplars, kept_index, earliest, now_ms, bounds,
                                               limits["max_exemplars_per_series_per_request"])
        kept_metadata = []
        for entry in metadata:
            cleaned, problem = v.clean_metadata(entry, limits)
            if problem is not None:
                m.discarded_metadata.labels(problem[0], tenant).inc()
                first_error = first_error or problem[1]
            else:
                kept_metadata.append(cleaned)

        if not samples_kept and not histogram_count and not kept_metadata and not kept_exemplars:
            if first_error is not None:
                raise HTTPError(400, first_error)
            return Response(200)

        cost = samples_kept + histogram_count + len(kept_exemplars) + len(kept_metadata)
        rate = limits["ingestion_rate"]
        burst = ingestion_burst_size(limits)
        if not self.ingestion_limiter.allow(tenant, rate, burst, cost):
            m.discarded_samples.labels(v.RATE_LIMITED, tenant).inc(samples_kept)
            message = ingestion_burst_message(burst, cost) if cost > burst else ingestion_rate_message(rate, burst)
            raise self._refuse(_rate_limited_status(limits), message, retry_attempt)
        self.instance_rate.add(cost)

        try:
            result = self.ingester.push(tenant, kept_labels, kept_offsets, kept_ts, kept_values,
                                        exemplars=kept_exemplars, metadata=kept_metadata, fast=fast,
                                        positions=kept_positions,
                                        # only remote write 1.0 batches can use the series cache
                                        validated_under=None if skipping or not cacheable else label_limits)
        except IngesterUnavailable as exc:
            raise self._refuse(503, f"failed pushing to ingester {self.instance_id}: {exc}", retry_attempt) from None
        if written is not None:
            written.update(samples=samples_kept, histograms=histogram_count, exemplars=len(kept_exemplars))
        m.received_requests.labels(tenant).inc()
        m.received_samples.labels(tenant).inc(samples_kept)
        if kept_exemplars:
            m.received_exemplars.labels(tenant).inc(len(kept_exemplars))
        if kept_metadata:
            m.received_metadata.labels(tenant).inc(len(kept_metadata))
        for reason, count in result.discarded.items():
            m.discarded_samples.labels(DISCARD_REASONS.get(reason, reason), tenant).inc(count)
        self.rates.add(tenant, result.samples_appended, from_rule)
        if result.first_error is not None:
            raise HTTPError(400, f"failed pushing to ingester {self.instance_id}: user={tenant}: "
                                 f"{result.first_error}")
        if first_error is not None:
            raise HTTPError(400, first_error)
        return Response(200)

    @staticmethod
    def _collect_samples(labels, timestamps, values, lo, hi, bounds, kept_ts, kept_values, start):
        """Append one series' samples (first of each timestamp) to the kept lists, or undo and report.

        Returns ((reason, message) or None, number of duplicate-timestamp samples skipped).
        """
        series_ts = timestamps[lo:hi]
        low = bounds.min_ms
        if (max(series_ts) <= bounds.max_ms and (low is None or min(series_ts) >= low)
                and (hi - lo == 1 or len(set(series_ts)) == hi - lo)):
            # the usual case, all in builtins: every sample in the window, no repeated timestamp
            kept_ts.extend(series_ts)
            kept_values.extend(values[lo:hi])
            return None, 0
        metric = v.metric_name_of(labels) or ""
        seen: set[int] = set()
        duplicates = 0
        for i in range(lo, hi):
            t = timestamps[i]
            if t in seen:
                duplicates += 1
                continue
            seen.add(t)
            problem = bounds.check(t, metric)
            if problem is not None:
                del kept_ts[start:], kept_values[start:]  # the first bad sample rejects the whole series
                return problem, duplicates
            kept_ts.append(t)
            kept_values.append(values[i])
        return None, duplicates

    def _plan_fast(self, tenant: str, batch, label_limits: tuple, bounds: v.SampleTimeBounds,
                   drop_label: str | None):
        """The fast part of a remote write 1.0 request (Head.plan_fast_append), or None when there is
        nothing to look up: a new tenant, or a series cache emptied because the label limits changed."""
        db = self.ingester.tenants.get(tenant)
        if db is None or batch.label_spans is None:  # a new tenant, or remote write 2.0
            return None
        cache = db.head.series_cache
        if cache.validated_under != label_limits:
            cache.clear()  # validated under other label limits: they are checked again and re-added
            cache.validated_under = label_limits
        if not len(cache):
            return None
        return db.head.plan_fast_append(batch, bounds.min_ms, bounds.max_ms, drop_label)

    def _validated_series(self, tenant: str, limits: dict, skipping: bool):
        """The tenant's head series (already validated), or an empty dict when that no longer holds."""
        fingerprint = tuple(limits[name] for name in _LABEL_LIMITS)
        recorded = self._label_limits.setdefault(tenant, fingerprint)
        if skipping or recorded != fingerprint:
            self._label_limits[tenant] = None  # series created under other rules: validate everything
            return {}
        db = self.ingester.tenants.get(tenant)
        return db.head.by_labels if db is not None else {}

    def _valid_exemplars(self, tenant, exemplars, kept_index, earliest_sample, now_ms, bounds, per_series_limit=0):
        """The exemplars of kept series that pass Mimir's checks, with sorted labels; the rest are counted.

        `earliest_sample` is the oldest kept sample's timestamp (None: no sample kept).

        With `per_series_limit` > 0 (max_exemplars_per_series_per_request) a series keeps only its
        first that many exemplars, before the other checks, as Mimir truncates.
        """
        if not exemplars:
            return []
        earliest = min(earliest_sample, now_ms) if earliest_sample is not None else now_ms
        min_ts = earliest - v.EXEMPLAR_MAX_AGE_MS
        kept = []
        per_series: dict[int, int] = {}
        for index, ex_labels, value, ts in exemplars:
            labels = kept_index.get(index)
            if labels is None:
                continue
            if per_series_limit > 0:
                seen = per_series[index] = per_series.get(index, 0) + 1
                if seen > per_series_limit:
                    self.metrics.discarded_exemplars.labels(v.TOO_MANY_EXEMPLARS_PER_SERIES_PER_REQUEST,
                                                            tenant).inc()
                    continue
            reason = v.exemplar_discard_reason(ex_labels, ts, min_ts, bounds.max_ms)
            if reason is not None:
                self.metrics.discarded_exemplars.labels(reason, tenant).inc()
                continue
            if not v.storable_labels(ex_labels):
                continue  # Mimir would keep the raw bytes; they cannot be stored as text here
            kept.append((labels, tuple(sorted(ex_labels)), value, ts))
        return kept

    def _ha_dedupe(self, tenant: str, first_series, limits: dict, total_samples: int) -> str | None:
        """Decide a request by its first series' HA labels: the label to strip, or raise HTTPError."""
        cluster, replica = find_ha_labels(first_series, limits["ha_cluster_label"], limits["ha_replica_label"])
        if not cluster or not replica or len(replica.encode()) > limits["max_label_value_length"]:
            self.metrics.non_ha_samples.labels(tenant).inc(total_samples)
            return None
        if self.ha_enabled:
            try:
                self.ha_tracker.check_replica(tenant, cluster, replica, limits)
            except HADecline as exc:
                if exc.status == 202:
                    self.metrics.deduped_samples.labels(tenant, cluster).inc(total_samples)
                else:
                    self.metrics.discarded_samples.labels(v.TOO_MANY_HA_CLUSTERS, tenant).inc(total_samples)
                raise HTTPError(exc.status, exc.message) from None
        # Mimir strips the replica label even when the tracker itself is off.
        return limits["ha_replica_label"]

    # statistics
    def user_stats(self, tenant: str) -> dict:
        """Mimir's UserStats for one tenant: EWMA ingestion rates and the head's series count."""
        db = self.ingester.tenants.get(tenant)
        return self.rates.stats(tenant, db.head.num_series if db is not None else 0)

    def all_user_stats(self) -> list[dict]:
        """Every tenant's stats, by series count (descending) then tenant ID."""
        tenants = set(self.ingester.tenants) | self.rates.tenants()
        rows = [{"userID": tenant, **self.user_stats(tenant)} for tenant in tenants]
        rows.sort(key=lambda row: (-row["numSeries"], row["userID"]))
        return rows
