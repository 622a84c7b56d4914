"""Helpers shared by the distributor tests: richer remote write bodies, stored series, metric values."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import httpx
import snappy

from conftest import Daemon


def now_ms() -> int:
    return int(time.time() * 1000)


def uvarint(value: int) -> bytes:
    """An unsigned protobuf varint."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def write_body(series: list, metadata=(), *, exemplars=None, histograms=None, source: int = 0,
               skip_label_validation=False, skip_label_count_validation=False) -> bytes:
    """A snappy remote write body. `series` is a list of (label pairs, [(ts, value), ...]) so that order and
    repeated names survive; `exemplars` maps a series index to [(label pairs, value, ts)], `histograms` to
    [(schema, ts)] (one observation in the zero bucket); the Mimir-only
    fields (Source = 2, skip_label_validation = 1000, skip_label_count_validation = 1001) are appended raw."""
    return snappy.compress(write_request_bytes(
        series, metadata, exemplars=exemplars, histograms=histograms, source=source,
        skip_label_validation=skip_label_validation, skip_label_count_validation=skip_label_count_validation))


def write_request_bytes(series: list, metadata=(), *, exemplars=None, histograms=None, source: int = 0,
                        skip_label_validation=False, skip_label_count_validation=False) -> bytes:
    """The uncompressed protobuf of `write_body`, with the same arguments."""
    from mimird import prompb

    request = prompb.WriteRequest()
    for index, (pairs, samples) in enumerate(series):
        ts = request.timeseries.add()
        for name, value in pairs:
            ts.labels.add(name=name, value=value)
        for t, v in samples:
            ts.samples.add(timestamp=t, value=v)
        for schema, t in (histograms or {}).get(index, ()):
            ts.histograms.add(schema=schema, timestamp=t, count_int=1, zero_count_int=1)
        for ex_pairs, value, t in (exemplars or {}).get(index, ()):
            exemplar = ts.exemplars.add(value=value, timestamp=t)
            for name, label_value in ex_pairs:
                exemplar.labels.add(name=name, value=label_value)
    for mtype, name, help_text, unit in metadata:
        request.metadata.add(type=mtype, metric_family_name=name, help=help_text, unit=unit)
    raw = request.SerializeToString()
    if source:
        raw += uvarint(2 << 3) + uvarint(source)
    if skip_label_validation:
        raw += uvarint(1000 << 3) + uvarint(1)
    if skip_label_count_validation:
        raw += uvarint(1001 << 3) + uvarint(1)
    return raw


def push(daemon: Daemon, tenant: str, series: list, metadata=(), headers: dict | None = None,
         **options) -> httpx.Response:
    """POST a remote write body built by `write_body` as `tenant`."""
    all_headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
                   "X-Prometheus-Remote-Write-Version": "0.1.0", "X-Scope-OrgID": tenant, **(headers or {})}
    return daemon.post("/api/v1/push", content=write_body(series, metadata, **options), headers=all_headers)


def stored_series(daemon: Daemon, tenant: str) -> set[tuple]:
    """Every series label set the tenant has stored: flush its head to blocks and read them back."""
    from mimird.tsdb.block import BlockReader

    assert daemon.post(f"/ingester/flush?wait=true&tenant={tenant}").status_code == 204
    found = set()
    root = Path(daemon.workdir) / "data" / "blocks" / tenant
    for meta in root.glob("*/meta.json"):
        reader = BlockReader(meta.parent)
        try:
            found.update(labels for _, labels, _ in reader.iter_series())
        finally:
            reader.close()
    return found


def num_series(daemon: Daemon, tenant: str) -> int:
    response = daemon.get("/api/v1/user_stats", headers={"X-Scope-OrgID": tenant})
    assert response.status_code == 200, response.text
    return response.json()["numSeries"]


def metric_value(daemon: Daemon, name: str, **labels: str) -> float:
    """The value of one sample on /metrics (0 when absent)."""
    text = daemon.get("/metrics").text
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def module_daemon(tmp_path_factory, name: str, flags: list[str], runtime_yaml: str | None = None):
    """Start a daemon for a test module (a generator for a module-scoped fixture)."""
    workdir = tmp_path_factory.mktemp(name)
    args = list(flags)
    if runtime_yaml is not None:
        (workdir / "runtime.yaml").write_text(runtime_yaml)
        args.append("-runtime-config.file=runtime.yaml")
    proc = Daemon(workdir, args).start()
    yield proc
    proc.stop(signal.SIGKILL)
