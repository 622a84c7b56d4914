"""The HTTP/1.1 server: an asyncio Protocol on uvloop, parsing with httptools.

Requests on one connection are answered in order (keep-alive and pipelining); connections run
concurrently. Limits follow Mimir's server: request read timeouts against slow clients, an idle
keep-alive timeout, an optional connection limit (extra connections wait, as with Go's
LimitListener), and a body size limit. A handler's exception becomes a 500 and a log line; the
connection and the daemon live on.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import time
import traceback
import zlib
from collections import deque
from email.utils import formatdate

import httptools

from mimird.http.auth import TenantResolver
from mimird.http.errors import HTTPError
from mimird.http.request import Request, Response
from mimird.http.router import Router
from mimird.util.logging import kv_log

log = logging.getLogger("mimird.http")

_REASONS = {
    100: "Continue", 200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 206: "Partial Content",
    301: "Moved Permanently", 302: "Found", 303: "See Other", 304: "Not Modified", 307: "Temporary Redirect",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 408: "Request Timeout", 409: "Conflict", 410: "Gone", 411: "Length Required",
    413: "Request Entity Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Entity",
    429: "Too Many Requests", 431: "Request Header Fields Too Large", 499: "Client Closed Request",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout",
}
_STATUS_LINES = {status: f"HTTP/1.1 {status} {reason}\r\n" for status, reason in _REASONS.items()}
_GZIP_MIN_BYTES = 1024
# Bodies from this size are compressed in a worker thread (zlib lets go of the GIL), not on the event loop:
# a 140 KB answer takes milliseconds at the default level, which every other connection would wait for.
_GZIP_OFF_LOOP_BYTES = 64 << 10
_MAX_PIPELINED = 64
_MAX_HEADER_BYTES = 1 << 20  # Go's DefaultMaxHeaderBytes
# Bodies from this size are written after the head rather than joined to it.
_JOIN_MAX_BODY_BYTES = 16 << 10


class _DateCache:
    """The Date header, formatted at most once a second."""

    def __init__(self):
        self.second = 0
        self.value = b""

    def get(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.value = formatdate(now, usegmt=True).encode()
        return self.value


_date = _DateCache()


def gzip_body(body: bytes, level: int) -> bytes:
    """`body` gzip-compressed at `level` (1-9, -1 for zlib's default)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return compressor.compress(body) + compressor.flush()


def inflate_gzip(body: bytes, limit: int) -> bytes:
    """Decompress a gzip body, refusing (413) output larger than `limit` without inflating it all."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise HTTPError(400, f"gzip: invalid compressed body: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise HTTPError(413, f"request body too large: more than {limit} bytes after decompression")
    if not inflater.eof:
        raise HTTPError(400, "gzip: unexpected EOF")
    return out


class HTTPServer:
    """Owns the listening socket, the live connections and the per-request pipeline."""

    def __init__(self, router: Router, resolver: TenantResolver, *, read_timeout: float,
                 read_header_timeout: float, idle_timeout: float, conn_limit: int, max_body: int,
                 metrics=None, gzip_level: int = -1):
        self.router = router
        # -http.response-compression-level: 1-9, or -1 for zlib's default (6, the level Go's default means)
        self.gzip_level = gzip_level
        self.resolver = resolver
        self.read_timeout = read_timeout or None
        self.read_header_timeout = read_header_timeout or self.read_timeout
        self.idle_timeout = idle_timeout or None
        # connections' timers fire at least this often while a timeout is set (HTTPProtocol._arm)
        self.shortest_timeout = min((t for t in (self.read_timeout, self.read_header_timeout, self.idle_timeout)
                                     if t), default=0.0)
        self.conn_limit = conn_limit
        self.max_body = max_body
        self.metrics = metrics
        self.connections: set[HTTPProtocol] = set()
        self.waiting: deque[HTTPProtocol] = deque()
        self.active_connections = 0
        self.shutting_down = False
        self._server: asyncio.AbstractServer | None = None
        self._drained = asyncio.Event()

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port and return the port actually bound."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: HTTPProtocol(self), host, port, backlog=1024,
                                                reuse_address=True)
        return self._server.sockets[0].getsockname()[1]

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let in-flight requests finish for up to `timeout` seconds, close the rest."""
        self.shutting_down = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close_if_idle()
        for conn in list(self.waiting):
            conn.abort()
        if self.connections:
            self._drained.clear()
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except TimeoutError:
                log.warning("graceful shutdown timed out, closing %d connections", len(self.connections))
        for conn in list(self.connections):
            conn.abort()
        if self._server is not None:
            await self._server.wait_closed()

    # Connection accounting: over the limit, new connections are paused until a slot frees.
    def _admit(self, conn: HTTPProtocol) -> bool:
        if self.conn_limit and self.active_connections >= self.conn_limit:
            self.waiting.append(conn)
            return False
        self.active_connections += 1
        return True

    def _release(self, conn: HTTPProtocol, admitted: bool) -> None:
        self.connections.discard(conn)
        if conn in self.waiting:
            self.waiting.remove(conn)
        if admitted:
            self.active_connections -= 1
            while self.waiting and (not self.conn_limit or self.active_connections < self.conn_limit):
                nxt = self.waiting.popleft()
                if nxt.transport is not None and not nxt.transport.is_closing():
                    self.active_connections += 1
                    nxt.admit()
        if not self.connections:
            self._drained.set()

    async def dispatch(self, request: Request) -> Response:
        """Route, authenticate and run one request; every failure becomes a response."""
        response = await self.answer(request)
        self.record(request, response)
        return response

    async def answer(self, request: Request) -> Response:
        """`dispatch` without the bookkeeping: the connection calls `record` once the answer is sent, so
        that the client does not wait for the request metrics."""
        started = time.perf_counter()
        try:
            route, params = self.router.resolve(request.method, request.path)
            request.route, request.params = route, params
            if route.auth:
                request.tenants = self.resolver.tenants(request.headers.get("x-scope-orgid"), route.federated)
            if route.gzip_request and request.headers.get("content-encoding", "").lower() == "gzip":
                limit = route.max_body or self.max_body
                request.body = inflate_gzip(request.body, limit)
            response = await route.handler(request)
        except HTTPError as exc:
            response = Response.error(exc.status, exc.message, exc.headers)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            kv_log(log, logging.ERROR, "request failed", method=request.method, path=request.path,
                   err=f"{type(exc).__name__}: {exc}", trace=traceback.format_exc(limit=8))
            response = Response.error(500, "Internal Server Error")
        request.elapsed = time.perf_counter() - started
        return response

    def record(self, request: Request, response: Response) -> None:
        """Count an answered request in the request metrics and the debug log."""
        if self.metrics is not None:
            route = request.route
            self.metrics.observe_request(request.method, route.name if route else "notfound", response.status,
                                         request.elapsed)
        if log.isEnabledFor(logging.DEBUG):  # the fields cost a few microseconds even when not logged
            kv_log(log, logging.DEBUG, "http request", method=request.method, uri=request.path,
                   status=response.status, duration=f"{request.elapsed * 1000:.3f}ms", remote=request.remote)


class _Resumption:
    """Awaiting it drives on a coroutine that was started outside a task and is suspended on `waiting_on`:
    the task gets what the coroutine yields, the coroutine what the task sends or throws in."""

    __slots__ = ("coro", "waiting_on")

    def __init__(self, coro, waiting_on):
        self.coro = coro
        self.waiting_on = waiting_on

    def __await__(self):
        coro, yielded = self.coro, self.waiting_on
        while True:
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # cancellation, thrown in by the task
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    yielded = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


# Python 3.12 and later start tasks eagerly themselves (HTTPProtocol._kick).
_EAGER_TASKS = sys.version_info >= (3, 12)


async def _resume(coro, waiting_on):
    return await _Resumption(coro, waiting_on)


class HTTPProtocol(asyncio.Protocol):
    """One client connection: parse requests, queue them, answer them in order."""

    def __init__(self, server: HTTPServer):
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.remote = ""
        self.admitted = False
        self.queue: deque[Request | Response] = deque()
        self.worker: asyncio.Task | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        # One timer per connection, moved lazily: `deadline` is when the connection times out (None: not
        # timing out), the timer fires at `timer_at` <= deadline and, if the deadline moved on, re-arms.
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.deadline: float | None = None
        self.closing = False
        self.busy = False
        self.held = bytearray()  # bytes that arrived before a connection-limit slot was free
        self._reset_message()

    # connection lifecycle
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        peer = transport.get_extra_info("peername")
        self.remote = f"{peer[0]}:{peer[1]}" if peer else ""
        self.server.connections.add(self)
        if self.server.shutting_down:
            transport.close()
            return
        if self.server._admit(self):
            self.admitted = True
            self._arm(self.server.read_header_timeout)
        else:
            transport.pause_reading()

    def admit(self) -> None:
        self.admitted = True
        self.transport.resume_reading()
        self._arm(self.server.read_header_timeout)
        if self.held:
            held, self.held = bytes(self.held), bytearray()
            self.data_received(held)

    def connection_lost(self, exc) -> None:
        self._disarm()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.closing = True
        if self.worker is not None and not self.worker.done():
            self.worker.cancel()
        self.server._release(self, self.admitted)
        self.transport = None

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close_if_idle(self) -> None:
        if not self.busy and not self.queue and self.transport is not None:
            self.transport.close()

    # Timers: header/read timeout while a request arrives, idle timeout between requests. A request arms
    # and disarms them three or four times; moving a deadline costs a clock read, where scheduling and
    # cancelling a loop timer each time cost several microseconds per request. The timer fires no later
    # than the shortest timeout from when it was set, so that the header deadline of the next request
    # (30 s by default, after a 120 s idle deadline) is not earlier than the timer and leaves it alone.
    def _arm(self, seconds: float | None) -> None:
        if not seconds:
            self.deadline = None
            return
        now = self.loop.time()
        deadline = now + seconds
        self.deadline = deadline
        if self.timer is None or deadline < self.timer_at:
            if self.timer is not None:
                self.timer.cancel()
            self._schedule(now, deadline)

    def _schedule(self, now: float, deadline: float) -> None:
        at = min(deadline, now + self.server.shortest_timeout)
        self.timer = self.loop.call_at(at, self._timed_out)
        self.timer_at = at

    def _disarm(self) -> None:
        self.deadline = None

    def _timed_out(self) -> None:
        self.timer = None
        deadline = self.deadline
        if deadline is None:
            return
        now = self.loop.time()
        if now < deadline:
            self._schedule(now, deadline)
            return
        self.deadline = None
        if self.transport is not None and not self.busy:
            kv_log(log, logging.DEBUG, "closing connection after timeout", remote=self.remote)
            self.transport.close()

    # parsing
    def _reset_message(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.header_bytes = 0
        self.body = bytearray()
        self.body_limit = self.server.max_body
        self.rejected: Response | None = None

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if not self.admitted:
            # some loops deliver data before pause_reading() in connection_made takes effect
            self.held += data
            self.transport.pause_reading()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(Response.error(400, "protocol upgrades are not supported"))
        except httptools.HttpParserError as exc:
            if self.rejected is not None:
                self._fail(self.rejected)
            else:
                self._fail(Response.error(400, f"Bad Request: {exc}"))

    def _fail(self, response: Response) -> None:
        """Answer a request that could not be read, after those already queued, then close."""
        self.closing = True
        self.transport.pause_reading()
        self.queue.append(response)
        self._kick()

    def on_message_begin(self) -> None:
        self._reset_message()
        self._arm(self.server.read_header_timeout)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > _MAX_HEADER_BYTES:
            self.rejected = Response.error(431, "request header fields too large")
            raise httptools.HttpParserError("headers too large")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        if key in self.headers:
            self.headers[key] += ", " + text
        else:
            self.headers[key] = text

    def on_headers_complete(self) -> None:
        if self.server.read_timeout != self.server.read_header_timeout:
            self._arm(self.server.read_timeout)
        headers = self.headers
        length = headers.get("content-length")
        if (length is None or length == "0") and "transfer-encoding" not in headers:
            return  # no body follows (a GET, typically): its route's body limit does not matter
        path = self.url.split(b"?", 1)[0].decode("latin-1")
        try:
            route, _ = self.server.router.resolve(self.parser.get_method().decode(), path)
            if route.max_body:
                self.body_limit = route.max_body
        except HTTPError:
            pass
        if length is not None and length.isdigit() and int(length) > self.body_limit:
            self.rejected = Response.error(413, f"request body too large: {length} bytes, limit {self.body_limit}")
            raise httptools.HttpParserError("body too large")
        if headers.get("expect", "").lower() == "100-continue":
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if len(self.body) + len(body) > self.body_limit:
            self.rejected = Response.error(413, f"request body too large: limit {self.body_limit} bytes")
            raise httptools.HttpParserError("body too large")
        self.body += body

    def on_message_complete(self) -> None:
        self._disarm()
        path, _, query = self.url.decode("latin-1").partition("?")
        if "#" in path:
            path = path.split("#", 1)[0]
        if path[:1] != "/":
            # absolute-form request target: keep only the path
            after_scheme = path.split("://", 1)[-1]
            path = "/" + after_scheme.split("/", 1)[1] if "/" in after_scheme else "/"
        request = Request(self.parser.get_method().decode(), path, query, self.headers,
                          bytes(self.body) if self.body else b"", self.parser.get_http_version(), self.remote)
        keep_alive = self.parser.should_keep_alive()
        self.queue.append((request, keep_alive))
        if len(self.queue) >= _MAX_PIPELINED:
            self.transport.pause_reading()
        self._kick()

    # answering, strictly in request order
    def _kick(self) -> None:
        if self.worker is not None and not self.worker.done():
            return
        self.worker = None
        if _EAGER_TASKS:
            # 3.12's asyncio.wait_for needs a current task, which only a real task sets.
            task = asyncio.Task(self._work(), loop=self.loop, eager_start=True)
            if not task.done():
                self.worker = task
            elif not task.cancelled() and task.exception() is not None:
                self._work_failed(task.exception())
            return
        # Answer eagerly, as Python 3.12's eager tasks do: most requests (tiny queries, pushes) finish
        # without waiting, and then cost no Task and no trip through the loop's ready queue. Only a
        # request that suspends goes on in a task, in the context its first steps ran in.
        work = self._work()
        context = contextvars.copy_context()
        try:
            waiting_on = context.run(work.send, None)
        except StopIteration:
            return
        except Exception as exc:  # dispatch turns handler errors into responses: this is the server's own bug
            self._work_failed(exc)
            return
        self.worker = self.loop.create_task(_resume(work, waiting_on), context=context)

    def _work_failed(self, exc: BaseException) -> None:
        kv_log(log, logging.ERROR, "answering failed", remote=self.remote, err=f"{type(exc).__name__}: {exc}",
               trace="".join(traceback.format_exception(exc, limit=8)))
        self.abort()

    async def _work(self) -> None:
        while self.queue and self.transport is not None:
            item = self.queue.popleft()
            if isinstance(item, Response):
                self._write(item, keep_alive=False, head=False)
                self.transport.close()
                return
            request, keep_alive = item
            self.busy = True
            response = await self.server.answer(request)
            if len(response.body) >= _GZIP_OFF_LOOP_BYTES and self._wants_gzip(response, request):
                response = self._gzipped(response, await asyncio.to_thread(gzip_body, response.body,
                                                                           self.server.gzip_level))
            self.busy = False
            if self.transport is None:
                self.server.record(request, response)
                return
            keep_alive = keep_alive and not self.server.shutting_down
            self._write(response, keep_alive, head=request.method == "HEAD", request=request)
            self.server.record(request, response)
            if not keep_alive:
                self.closing = True
                self.transport.close()
                return
            if len(self.queue) < _MAX_PIPELINED and not self.closing:
                self.transport.resume_reading()
        if self.transport is not None and not self.closing:
            self._arm(self.server.idle_timeout)

    def _wants_gzip(self, response: Response, request: Request | None) -> bool:
        # Whether the answer goes out gzip-compressed: the route allows it, the client asked, it is large enough.
        return (request is not None and request.route is not None and request.route.gzip_response
                and len(response.body) >= _GZIP_MIN_BYTES and "gzip" in request.headers.get("accept-encoding", "")
                and response.header("Content-Encoding") is None)

    def _gzipped(self, response: Response, body: bytes | None = None) -> Response:
        """`response` with its body (or `body`, already compressed) gzip-compressed."""
        if body is None:
            body = gzip_body(response.body, self.server.gzip_level)
        gzipped = Response(response.status, body, None, response.headers)
        gzipped.headers += [("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")]
        return gzipped

    def _write(self, response: Response, keep_alive: bool, head: bool, request: Request | None = None) -> None:
        if self._wants_gzip(response, request):
            response = self._gzipped(response)
        body = response.body
        headers = response.headers
        status = response.status
        # the status line and the handler's headers as one string, encoded once
        text = [_STATUS_LINES.get(status) or f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"]
        for name, value in headers:
            text.append(f"{name}: {value}\r\n")
        lines = ["".join(text).encode("latin-1", "replace"), b"Date: ", _date.get(), b"\r\n"]
        if status not in (204, 304) and status >= 200:
            lines.append(b"Content-Length: %d\r\n" % len(body))
        if not keep_alive:
            lines.append(b"Connection: close\r\n")
        lines.append(b"\r\n")
        if head or status in (204, 304) or not body:
            self.transport.write(b"".join(lines))
        elif len(body) < _JOIN_MAX_BODY_BYTES:
            lines.append(body)
            self.transport.write(b"".join(lines))
        else:
            # head and body go out in one writev, without copying a large body behind the head first
            self.transport.writelines((b"".join(lines), body))
