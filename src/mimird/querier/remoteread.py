"""Prometheus remote read (`POST <prometheus-http-prefix>/api/v1/read`), as Mimir's querier serves it.

The body is a snappy block of `prometheus.ReadRequest`. The answer is either SAMPLES (a snappy
`ReadResponse`, one `QueryResult` per query, samples cut to each query's range) or STREAMED_XOR_CHUNKS:
a stream of frames `uvarint(len) | CRC32-Castagnoli(message) as big-endian uint32 | message`, each message
a `ChunkedReadResponse` holding one series (a long series spans several frames of at most about 1 MiB),
its samples re-encoded into XOR chunks of at most 120 samples, as Prometheus's series-to-chunks encoder
does. Errors are plain text, as `http.Error` writes them (limit errors 400).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import snappy

from mimird import prompb
from mimird._fast.crc32c import crc32c
from mimird._fast.varint import encode_uvarint
from mimird._fast.xorchunk import encode as encode_xor
from mimird.frontend.stats import frontend
from mimird.http.request import Request, Response
from mimird.querier.queryable import QueryLimitError, TenantQueryable
from mimird.tsdb.labels import Matcher, MatchType

if TYPE_CHECKING:
    from mimird.app import App

MAX_REQUEST_BYTES = 1 << 20  # Mimir's maxRemoteReadQuerySize
MAX_FRAME_BYTES = 1 << 20  # Prometheus's and Mimir's max bytes per streamed frame
SAMPLES_PER_CHUNK = 120  # Prometheus's seriesToChunkEncoderSplit

SAMPLES = 0
STREAMED_XOR_CHUNKS = 1
_RESPONSE_TYPE_NAMES = {SAMPLES: "SAMPLES", STREAMED_XOR_CHUNKS: "STREAMED_XOR_CHUNKS"}
STREAMED_CONTENT_TYPE = "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse"
CHUNK_ENCODING_XOR = 1

_MATCH_TYPES = {0: MatchType.EQUAL, 1: MatchType.NOT_EQUAL, 2: MatchType.REGEX, 3: MatchType.NOT_REGEX}


class RemoteReadError(Exception):
    """A request the handler answers with a plain-text error."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def decode_read_request(body: bytes) -> prompb.ReadRequest:
    """Uncompress and parse a remote read body (400 on anything malformed or over 1 MiB)."""
    if len(body) > MAX_REQUEST_BYTES:
        raise RemoteReadError(400, f"received message larger than max ({len(body)} vs {MAX_REQUEST_BYTES})")
    try:
        raw = snappy.uncompress(body)
    except Exception:  # python-snappy raises several types for corrupt input
        raise RemoteReadError(400, "snappy: corrupt input") from None
    if len(raw) > MAX_REQUEST_BYTES:
        raise RemoteReadError(400, f"received message larger than max ({len(raw)} vs {MAX_REQUEST_BYTES})")
    request = prompb.ReadRequest()
    try:
        request.ParseFromString(raw)
    except Exception as exc:  # google.protobuf.message.DecodeError and friends
        raise RemoteReadError(400, f"proto: {exc}") from None
    return request


def negotiate_response_type(accepted: list[int]) -> int:
    """The first accepted response type this server supports; SAMPLES when the client names none."""
    if not accepted:
        return SAMPLES
    for response_type in accepted:
        if response_type in _RESPONSE_TYPE_NAMES:
            return response_type
    names = " ".join(_RESPONSE_TYPE_NAMES.get(t, str(t)) for t in accepted)
    raise RemoteReadError(400, f"server does not support any of the requested response types: [{names}]; "
                               "supported: map[SAMPLES:{} STREAMED_XOR_CHUNKS:{}]")


def query_matchers(query) -> list[Matcher]:
    """A remote read query's label matchers as storage matchers."""
    out = []
    for matcher in query.matchers:
        match_type = _MATCH_TYPES.get(matcher.type)
        if match_type is None:
            raise RemoteReadError(400, f"invalid matcher type {matcher.type}")
        try:
            out.append(Matcher(match_type, matcher.name, matcher.value))
        except ValueError as exc:
            raise RemoteReadError(400, str(exc)) from None
    return out


def samples_response(queryable: TenantQueryable, request: prompb.ReadRequest) -> bytes:
    """The SAMPLES answer: a snappy-compressed ReadResponse."""
    response = prompb.ReadResponse()
    for query in request.queries:
        result = response.results.add()
        matchers = query_matchers(query)
        for labels, ts, vals in queryable.select(matchers, query.start_timestamp_ms, query.end_timestamp_ms):
            series = result.timeseries.add()
            for name, value in labels:
                series.labels.add(name=name, value=value)
            for t, v in zip(ts.tolist(), vals.tolist(), strict=True):
                series.samples.add(timestamp=t, value=v)
    return snappy.compress(response.SerializeToString())


def frame(message: bytes) -> bytes:
    """One frame of a streamed response: uvarint length, CRC32-Castagnoli (big-endian), message."""
    return encode_uvarint(len(message)) + struct.pack(">I", crc32c(message)) + message


def xor_chunks(ts: np.ndarray, vals: np.ndarray) -> Iterator[tuple[int, int, bytes]]:
    """(min time, max time, XOR chunk bytes) of consecutive runs of at most 120 samples."""
    for start in range(0, len(ts), SAMPLES_PER_CHUNK):
        chunk_ts = ts[start:start + SAMPLES_PER_CHUNK]
        chunk_vals = vals[start:start + SAMPLES_PER_CHUNK]
        yield int(chunk_ts[0]), int(chunk_ts[-1]), encode_xor(chunk_ts, chunk_vals)


def streamed_frames(queryable: TenantQueryable, request: prompb.ReadRequest) -> Iterator[bytes]:
    """Frames of the STREAMED_XOR_CHUNKS answer, one series per frame, series in label order per query."""
    for query_index, query in enumerate(request.queries):
        matchers = query_matchers(query)
        for labels, ts, vals in queryable.select(matchers, query.start_timestamp_ms, query.end_timestamp_ms):
            label_msgs = [prompb.Label(name=name, value=value) for name, value in labels]
            budget = MAX_FRAME_BYTES - sum(m.ByteSize() for m in label_msgs)
            chunks: list = []
            left = budget
            pending = list(xor_chunks(np.ascontiguousarray(ts, dtype=np.int64),
                                      np.ascontiguousarray(vals, dtype=np.float64)))
            for position, (lo, hi, data) in enumerate(pending):
                chunk = prompb.Chunk(min_time_ms=lo, max_time_ms=hi, type=CHUNK_ENCODING_XOR, data=data)
                chunks.append(chunk)
                left -= chunk.ByteSize()
                if left > 0 and position + 1 < len(pending):
                    continue
                message = prompb.ChunkedReadResponse(query_index=query_index)
                series = message.chunked_series.add()
                series.labels.extend(label_msgs)
                series.chunks.extend(chunks)
                yield frame(message.SerializeToString())
                chunks = []
                left = budget


class RemoteReadAPI:
    """The `/api/v1/read` handler."""

    def __init__(self, app: App):
        self.app = app

    @frontend
    async def read(self, request: Request) -> Response:
        try:
            read_request = decode_read_request(request.body)
            response_type = negotiate_response_type(list(read_request.accepted_response_types))
            queryable = TenantQueryable(self.app, request.tenants)
            if response_type == STREAMED_XOR_CHUNKS:
                body = await asyncio.to_thread(lambda: b"".join(streamed_frames(queryable, read_request)))
                return Response(200, body, STREAMED_CONTENT_TYPE)
            body = await asyncio.to_thread(samples_response, queryable, read_request)
        except RemoteReadError as exc:
            return Response.error(exc.status, str(exc))
        except QueryLimitError as exc:  # Mimir answers limit errors of remote read with 400
            return Response.error(400, str(exc))
        return Response(200, body, "application/x-protobuf", headers=[("Content-Encoding", "snappy")])
