"""Shared fixtures: the real daemon as a subprocess on a free loopback port, with its own data dir."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Daemon:
    """A running `mimird` process; `url` is its base URL."""

    def __init__(self, workdir: Path, args: list[str], env: dict[str, str] | None = None):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "mimird.log"
        self.args = [f"-server.http-listen-port={self.port}", *args]
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self, wait_ready: bool = True) -> Daemon:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "mimird", *self.args], cwd=self.workdir,
                                     stdout=self._log, stderr=subprocess.STDOUT, env=self.env)
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mimird exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"mimird not ready after {timeout}s:\n{self.log()}")

    def get(self, path: str, **kwargs) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10, **kwargs)

    def post(self, path: str, **kwargs) -> httpx.Response:
        return httpx.post(self.url + path, timeout=10, **kwargs)

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        return httpx.request(method, self.url + path, timeout=10, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self._log.close()


@pytest.fixture
def start_daemon(tmp_path):
    """Factory: start_daemon(*flags, env=None, wait_ready=True) -> Daemon; all are stopped afterwards."""
    daemons: list[Daemon] = []

    def start(*args: str, env: dict[str, str] | None = None, wait_ready: bool = True) -> Daemon:
        workdir = tmp_path / f"d{len(daemons)}"
        workdir.mkdir()
        daemon = Daemon(workdir, list(args), env)
        daemons.append(daemon)
        return daemon.start(wait_ready)

    yield start
    for daemon in daemons:
        daemon.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """One daemon with default flags (multi-tenancy on) shared by a module's read-only tests."""
    workdir = tmp_path_factory.mktemp("daemon")
    (workdir / "runtime.yaml").write_text("overrides:\n  team-a:\n    ingestion_rate: 500\n")
    proc = Daemon(workdir, ["-runtime-config.file=runtime.yaml"]).start()
    yield proc
    proc.stop(signal.SIGKILL)


def encode_write_request(series: dict, metadata=()) -> bytes:
    """A snappy-compressed remote write 1.0 body: {labels tuple/dict: [(ts_ms, value), ...]}."""
    import snappy

    from mimird import prompb

    request = prompb.WriteRequest()
    for labels, samples in series.items():
        pairs = labels.items() if isinstance(labels, dict) else labels
        ts = request.timeseries.add()
        for name, value in pairs:
            ts.labels.add(name=name, value=value)
        for t, v in samples:
            ts.samples.add(timestamp=t, value=v)
    for mtype, name, help_text, unit in metadata:
        request.metadata.add(type=mtype, metric_family_name=name, help=help_text, unit=unit)
    return snappy.compress(request.SerializeToString())


def remote_write(daemon: Daemon, tenant: str | None, series: dict, metadata=()) -> httpx.Response:
    """POST a remote write request to the daemon as Prometheus would."""
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy",
               "X-Prometheus-Remote-Write-Version": "0.1.0"}
    if tenant is not None:
        headers["X-Scope-OrgID"] = tenant
    return daemon.post("/api/v1/push", content=encode_write_request(series, metadata), headers=headers)


PROMETHEUS = Path("/usr/bin/prometheus")


@contextlib.asynccontextmanager
async def held_slot(queue, tenant: str):
    """Hold one of a QueryQueue's slots for the body of the `async with`, as the query frontend does around
    a handler; yields the seconds spent waiting for it."""
    waited = await queue.acquire(tenant)
    try:
        yield waited
    finally:
        queue.release()


@contextlib.contextmanager
def running_prometheus(workdir: Path, config, *flags: str):
    """Debian's prometheus (`make peers`) on a free loopback port; yields its base URL, stops it after.

    `config` is the prometheus.yml text, or a function of the port that returns it (for a Prometheus
    that scrapes itself).
    """
    port = free_port()
    (workdir / "prometheus.yml").write_text(config(port) if callable(config) else config)
    log_path = workdir / "log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(PROMETHEUS), f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn", *flags],
            cwd=workdir, stdout=subprocess.DEVNULL, stderr=log)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(log_path.read_text(errors="replace"))
                try:
                    if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"prometheus not ready after 30 s:\n{log_path.read_text(errors='replace')}")
                time.sleep(0.1)
            yield url
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class RecordingProxy:
    """An HTTP proxy on a loopback port in front of `target` for peers (Prometheus) talking to mimird: it
    forwards each POST, with X-Scope-OrgID set when `tenant` is given, and keeps (headers with lower-case
    names, body) of every request in `received`."""

    def __init__(self, target: str, tenant: str | None = None):
        self.received: list[tuple[dict[str, str], bytes]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                sent = {name.lower(): value for name, value in self.headers.items()}
                proxy.received.append((sent, body))
                forwarded = {name: value for name, value in sent.items()
                             if name not in ("host", "content-length", "connection")}
                if tenant is not None:
                    forwarded["X-Scope-OrgID"] = tenant
                answer = httpx.post(target + self.path, content=body, headers=forwarded, timeout=10)
                self.send_response(answer.status_code)
                for name in ("Content-Type", "Content-Encoding"):
                    if name in answer.headers:
                        self.send_header(name, answer.headers[name])
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def headers(self) -> list[dict[str, str]]:
        """The headers of every request received, in order."""
        return [headers for headers, _ in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
