"""The HTTP server on a real loopback socket, on uvloop and on the stdlib event loop.

A test router with echo, slow and failing handlers exercises what the daemon's own endpoints
cannot yet: bodies, chunked and gzip uploads, pipelining, limits and handler crashes.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import time

import httpx
import pytest
import uvloop

from mimird.http.auth import TenantResolver
from mimird.http.errors import HTTPError
from mimird.http.request import Response
from mimird.http.router import Router
from mimird.http.server import HTTPServer


class ServerThread:
    """An HTTPServer running on its own event loop in a background thread."""

    def __init__(self, loop_kind: str, **limits):
        self.loop = uvloop.new_event_loop() if loop_kind == "uvloop" else asyncio.new_event_loop()
        router = Router()
        self.slow_started = threading.Event()

        async def echo(request):
            return Response(200, request.body, "application/octet-stream",
                            [("X-Method", request.method), ("X-Path", request.path),
                             ("X-Query", request.query_string)])

        async def param(request):
            return Response.text(request.params["name"])

        async def slow(request):
            self.slow_started.set()
            await asyncio.sleep(float(request.arg("seconds", "0.5")))
            return Response.text("slow done")

        async def crash(request):
            raise RuntimeError("handler bug")

        async def teapot(request):
            raise HTTPError(418, "short and stout")

        async def tenant(request):
            return Response.text("|".join(request.tenants))

        async def big(request):
            return Response.text("x" * 5000)

        async def huge(request):
            # above the size the server writes after the head instead of joining the two
            return Response(200, bytes(range(256)) * 4096, "application/octet-stream")

        router.add("GET,POST", "/echo", echo)
        router.add("POST", "/gzip", echo, gzip_request=True)
        router.add("POST", "/small", echo, max_body=10)
        router.add("GET", "/things/{name}/get", param)
        router.add("GET", "/slow", slow)
        router.add("GET", "/crash", crash)
        router.add("GET", "/teapot", teapot)
        router.add("GET", "/tenant", tenant, auth=True)
        router.add("GET", "/federated", tenant, auth=True, federated=True)
        router.add("GET", "/big", big)
        router.add("GET,HEAD", "/huge", huge)
        defaults = dict(read_timeout=5.0, read_header_timeout=0.0, idle_timeout=5.0, conn_limit=0,
                        max_body=1 << 20)
        defaults.update(limits)
        self.server = HTTPServer(router, TenantResolver(True, "anonymous", True, 2), **defaults)
        self.port = 0
        started = threading.Event()

        def run():
            asyncio.set_event_loop(self.loop)
            self.port = self.loop.run_until_complete(self.server.start("127.0.0.1", 0))
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        started.wait(5)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 5.0):
        future = asyncio.run_coroutine_threadsafe(self.server.stop(timeout), self.loop)
        future.result(timeout + 5)

    def close(self):
        if not self.server.shutting_down:
            self.stop(1.0)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(params=["uvloop", "asyncio"])
def loop_kind(request):
    return request.param


@pytest.fixture
def server(loop_kind):
    srv = ServerThread(loop_kind)
    yield srv
    srv.close()


def raw_exchange(port: int, payload: bytes, expect_responses: int = 1, timeout: float = 5.0) -> bytes:
    """Send raw bytes and read until `expect_responses` complete responses or the peer closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        data = b""
        deadline = time.monotonic() + timeout
        while data.count(b"HTTP/1.1 ") < expect_responses or not _complete(data, expect_responses):
            if time.monotonic() > deadline:
                break
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def _complete(data: bytes, count: int) -> bool:
    pos = 0
    for _ in range(count):
        head_end = data.find(b"\r\n\r\n", pos)
        if head_end < 0:
            return False
        head = data[pos:head_end].decode("latin-1").lower()
        length = 0
        for line in head.split("\r\n"):
            if line.startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        pos = head_end + 4 + length
        if pos > len(data):
            return False
    return True


def test_routing_404_405_and_params(server):
    assert httpx.get(server.url + "/nope").status_code == 404
    assert httpx.get(server.url + "/nope").text == "404 page not found\n"
    resp = httpx.delete(server.url + "/echo")
    assert resp.status_code == 405
    assert resp.headers["allow"] == "GET, POST"
    assert resp.content == b""
    resp = httpx.get(server.url + "/things/a%2Fb%20c/get")
    assert resp.status_code == 200 and resp.text == "a/b c"
    assert httpx.get(server.url + "/things//get").status_code == 404
    resp = httpx.get(server.url + "/echo?x=1&y=2")
    assert resp.headers["x-query"] == "x=1&y=2"


def test_keep_alive_and_pipelining_in_order(server):
    requests = b"".join(
        f"GET /echo?n={i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(5)
    ) + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    data = raw_exchange(server.port, requests, expect_responses=6)
    assert data.count(b"HTTP/1.1 200 OK") == 6
    order = [int(part.split(b"\r\n", 1)[0]) for part in data.split(b"X-Query: n=")[1:]]
    assert order == [0, 1, 2, 3, 4]
    assert data.endswith(b"hello")


def test_slow_request_does_not_reorder_pipeline(server):
    payload = (b"GET /slow?seconds=0.3 HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /echo?n=after HTTP/1.1\r\nHost: x\r\n\r\n")
    data = raw_exchange(server.port, payload, expect_responses=2)
    assert data.index(b"slow done") < data.index(b"n=after")


def test_keep_alive_reuses_connection(server):
    with httpx.Client() as client:
        for i in range(3):
            assert client.post(server.url + "/echo", content=f"body{i}".encode()).content == f"body{i}".encode()
        assert server.server.active_connections == 1


def test_chunked_request_body(server):
    payload = (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    data = raw_exchange(server.port, payload)
    assert b"200 OK" in data and data.endswith(b"hello world")


def test_gzip_request_body(server):
    body = b"compressed " * 100
    resp = httpx.post(server.url + "/gzip", content=gzip.compress(body), headers={"Content-Encoding": "gzip"})
    assert resp.status_code == 200 and resp.content == body
    resp = httpx.post(server.url + "/gzip", content=b"not gzip", headers={"Content-Encoding": "gzip"})
    assert resp.status_code == 400
    # a route that does not take gzip sees the body as sent
    raw = gzip.compress(b"abc")
    assert httpx.post(server.url + "/echo", content=raw, headers={"Content-Encoding": "gzip"}).content == raw


def test_gzip_bomb_is_refused(loop_kind):
    srv = ServerThread(loop_kind, max_body=1000)
    try:
        bomb = gzip.compress(b"\0" * 100_000)
        assert len(bomb) < 1000
        resp = httpx.post(srv.url + "/gzip", content=bomb, headers={"Content-Encoding": "gzip"})
        assert resp.status_code == 413
    finally:
        srv.close()


def test_gzip_response(server):
    resp = httpx.get(server.url + "/big", headers={"Accept-Encoding": "gzip"})
    assert resp.headers["content-encoding"] == "gzip"
    assert resp.text == "x" * 5000


@pytest.mark.parametrize("level, xfl", [(1, 4), (9, 2), (-1, 0)])
def test_gzip_responses_at_the_configured_level(loop_kind, level, xfl):
    # the gzip header's XFL byte says "fastest" (4) or "best" (2) for levels 1 and 9, nothing for the default;
    # /big is compressed on the event loop, /huge (above 64 KiB) in a worker thread
    srv = ServerThread(loop_kind, gzip_level=level)
    try:
        for path, body in (("/big", b"x" * 5000), ("/huge", bytes(range(256)) * 4096)):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n"
                             "Connection: close\r\n\r\n".encode())
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            head, payload = data.split(b"\r\n\r\n", 1)
            assert b"content-encoding: gzip" in head.lower()
            assert f"content-length: {len(payload)}".encode() in head.lower()
            assert payload[8] == xfl
            assert gzip.decompress(payload) == body
    finally:
        srv.close()


def test_body_limits(server):
    resp = httpx.post(server.url + "/small", content=b"x" * 11)
    assert resp.status_code == 413
    assert httpx.post(server.url + "/small", content=b"x" * 10).status_code == 200
    # chunked bodies have no Content-Length up front: the limit applies as they arrive
    payload = b"POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n8\r\n12345678\r\n"
    data = raw_exchange(server.port, payload)
    assert data.startswith(b"HTTP/1.1 413")


def test_handler_exception_is_500_and_connection_lives(server):
    with httpx.Client() as client:
        resp = client.get(server.url + "/crash")
        assert resp.status_code == 500
        assert resp.text == "Internal Server Error\n"
        assert client.get(server.url + "/teapot").status_code == 418
        assert client.get(server.url + "/echo").status_code == 200


def test_malformed_request_gets_400(server):
    data = raw_exchange(server.port, b"GARBAGE\x00\x01 / HTTP/1.1\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400")
    assert httpx.get(server.url + "/echo").status_code == 200


def test_tenancy(server):
    resp = httpx.get(server.url + "/tenant")
    assert resp.status_code == 401 and resp.text == "no org id\n"
    assert httpx.get(server.url + "/tenant", headers={"X-Scope-OrgID": "team-1"}).text == "team-1"
    resp = httpx.get(server.url + "/tenant", headers={"X-Scope-OrgID": "a|b"})
    assert resp.status_code == 422
    assert resp.text == "too many tenant IDs present in the request. max: 1 actual: 2\n"
    assert httpx.get(server.url + "/federated", headers={"X-Scope-OrgID": "b|a|b"}).text == "a|b"
    resp = httpx.get(server.url + "/federated", headers={"X-Scope-OrgID": "a|b|c"})
    assert resp.status_code == 422 and "max: 2 actual: 3" in resp.text


def test_header_read_timeout_closes_slow_client(loop_kind):
    srv = ServerThread(loop_kind, read_timeout=0.3)
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
            sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n")  # never finishes the headers
            started = time.monotonic()
            assert sock.recv(100) == b""
            assert time.monotonic() - started < 3
        assert httpx.get(srv.url + "/echo").status_code == 200
    finally:
        srv.close()


def test_idle_keep_alive_timeout(loop_kind):
    srv = ServerThread(loop_kind, idle_timeout=0.3)
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as sock:
            sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(1000).startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            assert sock.recv(100) == b""
            assert 0.2 < time.monotonic() - started < 3
    finally:
        srv.close()


def test_header_timeout_after_a_longer_idle_timeout(loop_kind):
    # The idle deadline after the first answer is later than the next request's header deadline: the
    # connection's one timer must still fire in time for the shorter one.
    srv = ServerThread(loop_kind, read_timeout=0.4, idle_timeout=30.0)
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(1000).startswith(b"HTTP/1.1 200")
            time.sleep(0.1)
            sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n")  # never finishes the headers
            started = time.monotonic()
            assert sock.recv(100) == b""
            assert 0.3 < time.monotonic() - started < 3
    finally:
        srv.close()


def test_connection_limit_makes_extra_clients_wait(loop_kind):
    srv = ServerThread(loop_kind, conn_limit=1)
    try:
        first = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        first.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        assert first.recv(1000).startswith(b"HTTP/1.1 200")
        second = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        second.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        second.settimeout(0.3)
        with pytest.raises(TimeoutError):
            second.recv(1000)
        first.close()
        second.settimeout(5)
        assert second.recv(1000).startswith(b"HTTP/1.1 200")
        second.close()
    finally:
        srv.close()


def test_graceful_stop_finishes_in_flight(server):
    result = {}

    def call():
        result["resp"] = httpx.get(server.url + "/slow?seconds=0.5", timeout=5)

    thread = threading.Thread(target=call)
    thread.start()
    assert server.slow_started.wait(5)
    server.stop(timeout=5)
    thread.join(5)
    assert result["resp"].status_code == 200 and result["resp"].text == "slow done"
    assert result["resp"].headers["connection"] == "close"
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/echo", timeout=2)


def test_http10_closes_after_response(server):
    data = raw_exchange(server.port, b"GET /echo HTTP/1.0\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200") and b"Connection: close" in data


def test_large_bodies_arrive_whole_between_pipelined_requests(server):
    body = bytes(range(256)) * 4096
    data = raw_exchange(server.port, b"GET /huge HTTP/1.1\r\nHost: x\r\n\r\nGET /echo?a=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                        b"GET /huge HTTP/1.1\r\nHost: x\r\n\r\n", expect_responses=3)
    head, rest = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK") and f"content-length: {len(body)}".encode() in head.lower()
    assert rest[:len(body)] == body
    head, rest = rest[len(body):].split(b"\r\n\r\n", 1)
    assert b"x-query: a=1" in head.lower() and rest.startswith(b"HTTP/1.1 200 OK")
    assert rest.split(b"\r\n\r\n", 1)[1] == body
    resp = httpx.head(server.url + "/huge", headers={"Accept-Encoding": "identity"})
    assert (resp.status_code, resp.headers["content-length"], resp.content) == (200, str(len(body)), b"")
