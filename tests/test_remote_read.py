"""Remote read (`POST /prometheus/api/v1/read`) through the daemon: a real snappy ReadRequest answered with
SAMPLES and with STREAMED_XOR_CHUNKS, the stream decoded frame by frame (uvarint size, CRC32-Castagnoli,
ChunkedReadResponse) and its XOR chunks decoded back to the pushed samples."""

from __future__ import annotations

import signal
import struct
import time

import numpy as np
import pytest
import snappy

from conftest import Daemon, remote_write
from mimird import prompb
from mimird._fast.crc32c import crc32c
from mimird._fast.varint import decode_uvarint
from mimird._fast.xorchunk import decode

PATH = "/prometheus/api/v1/read"
BASE = (int(time.time() * 1000) // 60_000 - 120) * 60_000
STEP = 15_000
LONG = [(BASE + i * STEP, float(i) * 0.5) for i in range(300)]  # three chunks: 120 + 120 + 60 samples
SHORT = [(BASE + i * STEP, 42.0) for i in range(5)]
HEADERS = {"X-Scope-OrgID": "reader", "Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
           "X-Prometheus-Remote-Read-Version": "0.1.0"}


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    proc = Daemon(tmp_path_factory.mktemp("remoteread"), []).start()
    series = {(("__name__", "cpu"), ("host", "a")): LONG, (("__name__", "cpu"), ("host", "b")): SHORT,
              (("__name__", "mem"), ("host", "a")): SHORT}
    assert remote_write(proc, "reader", series).status_code == 200
    yield proc
    proc.stop(signal.SIGKILL)


def read_request(matchers, start, end, accepted=()) -> bytes:
    request = prompb.ReadRequest()
    query = request.queries.add(start_timestamp_ms=start, end_timestamp_ms=end)
    for match_type, name, value in matchers:
        query.matchers.add(type=match_type, name=name, value=value)
    request.accepted_response_types.extend(accepted)
    return snappy.compress(request.SerializeToString())


def labels_of(message) -> dict:
    return {label.name: label.value for label in message.labels}


def test_samples_response(reader):
    body = read_request([(0, "__name__", "cpu")], BASE + STEP, BASE + 3 * STEP)
    response = reader.post(PATH, content=body, headers=HEADERS)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-protobuf"
    assert response.headers["content-encoding"] == "snappy"
    decoded = prompb.ReadResponse()
    decoded.ParseFromString(snappy.uncompress(response.content))
    (result,) = decoded.results
    assert [labels_of(ts) for ts in result.timeseries] == [{"__name__": "cpu", "host": "a"},
                                                          {"__name__": "cpu", "host": "b"}]
    assert [(s.timestamp, s.value) for s in result.timeseries[0].samples] == LONG[1:4]
    assert [(s.timestamp, s.value) for s in result.timeseries[1].samples] == SHORT[1:4]


def test_regex_and_negative_matchers(reader):
    body = read_request([(2, "__name__", "cpu|mem"), (1, "host", "b")], BASE, BASE + 10 * STEP, accepted=[0])
    response = reader.post(PATH, content=body, headers=HEADERS)
    decoded = prompb.ReadResponse()
    decoded.ParseFromString(snappy.uncompress(response.content))
    assert [labels_of(ts) for ts in decoded.results[0].timeseries] == [{"__name__": "cpu", "host": "a"},
                                                                      {"__name__": "mem", "host": "a"}]


def decode_frames(data: bytes) -> list:
    messages = []
    pos = 0
    while pos < len(data):
        size, pos = decode_uvarint(data, pos)
        (checksum,) = struct.unpack_from(">I", data, pos)
        pos += 4
        payload = data[pos:pos + size]
        pos += size
        assert crc32c(payload) == checksum
        message = prompb.ChunkedReadResponse()
        message.ParseFromString(payload)
        messages.append(message)
    return messages


def test_streamed_xor_chunks(reader):
    body = read_request([(0, "__name__", "cpu")], BASE, BASE + 400 * STEP, accepted=[1, 0])
    response = reader.post(PATH, content=body, headers=HEADERS)
    assert response.status_code == 200
    assert response.headers["content-type"] == \
        "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse"
    frames = decode_frames(response.content)
    assert [len(f.chunked_series) for f in frames] == [1, 1]
    assert all(f.query_index == 0 for f in frames)
    first, second = (f.chunked_series[0] for f in frames)
    assert labels_of(first) == {"__name__": "cpu", "host": "a"} and labels_of(second)["host"] == "b"
    assert [len(c.data) > 0 and c.type for c in first.chunks] == [1, 1, 1]
    samples = []
    for chunk in first.chunks:
        ts, vals = decode(chunk.data)
        assert (chunk.min_time_ms, chunk.max_time_ms) == (int(ts[0]), int(ts[-1]))
        samples += list(zip(ts.tolist(), vals.tolist(), strict=True))
    assert [len(decode(c.data)[0]) for c in first.chunks] == [120, 120, 60]
    assert samples == LONG
    ts, vals = decode(second.chunks[0].data)
    assert np.array_equal(ts, [t for t, _ in SHORT]) and np.array_equal(vals, [v for _, v in SHORT])


def test_errors(reader):
    unsupported = reader.post(PATH, content=read_request([(0, "__name__", "cpu")], 0, 1, accepted=[7]),
                              headers=HEADERS)
    assert unsupported.status_code == 400
    assert unsupported.text.startswith("server does not support any of the requested response types: [7]")
    corrupt = reader.post(PATH, content=b"\xff\xff\xff\xff\xff garbage", headers=HEADERS)
    assert corrupt.status_code == 400 and corrupt.headers["content-type"].startswith("text/plain")
    bad_regex = reader.post(PATH, content=read_request([(2, "__name__", "(")], 0, 1), headers=HEADERS)
    assert bad_regex.status_code == 400
    assert reader.post(PATH, content=read_request([], 0, 1)).status_code == 401
