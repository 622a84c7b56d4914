"""The distributor: the way in for pushed samples, on to the ingester.

Remote write bodies are decoded in Cython (`mimird._fast.remotewrite`); each series' labels are put
in Mimir's canonical form (empty values dropped, sorted by name) before the ingester appends them.
"""

from __future__ import annotations

import logging

from mimird.distributor.remotewrite import PushDecodeError, decode_push_body
from mimird.http.errors import HTTPError
from mimird.http.request import Request, Response
from mimird.ingester.ingester import Ingester, IngesterUnavailable
from mimird.services import Service
from mimird.tsdb.head import format_series
from mimird.tsdb.labels import Labels

log = logging.getLogger("mimird.distributor")


def canonical_labels(pairs) -> tuple[Labels | None, str | None]:
    """Sort a series' labels by name and drop empty values; (None, error) on a repeated name."""
    labels = tuple(sorted((name, value) for name, value in pairs if value != ""))
    for index in range(1, len(labels)):
        if labels[index][0] == labels[index - 1][0]:
            name = labels[index][0]
            return None, (f"received a series with duplicate label name, label: '{name}' series: "
                          f"'{format_series(labels)[:200]}' (err-mimir-duplicate-label-names)")
    return labels, None


class Distributor(Service):
    """Receives pushes and hands them to the ingester."""

    name = "distributor"

    def __init__(self, config, ingester: Ingester, instance_id: str):
        super().__init__()
        self.config = config
        self.ingester = ingester
        self.instance_id = instance_id
        self.max_message_size = config.distributor.max_recv_msg_size

    async def push(self, request: Request) -> Response:
        """POST /api/v1/push: Prometheus remote write 1.0."""
        tenant = request.tenant
        exemplars_on = bool(self.ingester.overrides.get(tenant, "max_global_exemplars_per_user"))
        try:
            batch = decode_push_body(request.body, request.headers.get("content-encoding"),
                                     request.headers.get("content-type"),
                                     request.headers.get("x-prometheus-remote-write-version"),
                                     max_message_size=self.max_message_size, decode_exemplars=exemplars_on)
        except PushDecodeError as exc:
            raise HTTPError(exc.status, exc.message) from None

        return self.ingest(tenant, batch.series_labels, batch.sample_offsets.tolist(), batch.timestamps.tolist(),
                           batch.values.tolist(), batch.exemplars, batch.metadata)

    def ingest(self, tenant: str, series_pairs, offsets, timestamps, values, exemplars=(), metadata=()) -> Response:
        """The shared write path of remote write, OTLP and Influx: canonical labels, then the ingester.

        `series_pairs[i]` are series i's (name, value) label pairs in any order; its samples are
        timestamps/values[offsets[i]:offsets[i+1]]. `exemplars` are (series index, label pairs, value,
        timestamp); `metadata` are (type, metric family name, help, unit). Returns the HTTP answer.
        """
        first_error = None
        series_labels: list[Labels] = []
        kept_offsets = [0]
        kept_ts: list[int] = []
        kept_values: list[float] = []
        kept_index: dict[int, Labels] = {}
        for index, pairs in enumerate(series_pairs):
            labels, error = canonical_labels(pairs)
            if labels is None or not labels:
                first_error = first_error or error
                continue
            previous = None
            for i in range(offsets[index], offsets[index + 1]):
                t = timestamps[i]
                if t == previous:
                    continue  # samples sharing a timestamp within one series: the first one wins
                previous = t
                kept_ts.append(t)
                kept_values.append(values[i])
            if len(kept_ts) == kept_offsets[-1] and not exemplars:
                continue
            series_labels.append(labels)
            kept_offsets.append(len(kept_ts))
            kept_index[index] = labels
        kept_exemplars = [(kept_index[i], tuple(sorted(ex_labels)), value, ts)
                          for i, ex_labels, value, ts in exemplars if i in kept_index]
        try:
            result = self.ingester.push(tenant, series_labels, kept_offsets, kept_ts, kept_values,
                                        exemplars=kept_exemplars, metadata=metadata)
        except IngesterUnavailable as exc:
            raise HTTPError(503, f"failed pushing to ingester {self.instance_id}: {exc}") from None
        if result.first_error is not None:
            raise HTTPError(400, f"failed pushing to ingester {self.instance_id}: user={tenant}: "
                                 f"{result.first_error}")
        if first_error is not None:
            raise HTTPError(400, first_error)
        return Response(200)
