"""A fault-injecting HTTP/1.1 proxy in front of a real OPA server (standard library only).

The proxy forwards every request to OPA unchanged until it is switched, at run time, into a
fault mode; then it answers the way a broken, slow or hostile server would:

=============  ================================================================================
mode           what the client gets
=============  ================================================================================
``pass``       OPA's own reply (status, ``Content-Type`` and body)
``delay``      OPA's reply, after ``delay`` seconds of silence
``trickle``    ``200`` headers at once, then the body one byte every ``drip`` seconds, for at
               most ``delay`` seconds; then the connection is closed (a slow-drip server)
``status``     ``status`` (500, 401, 403, 503, ...) with an OPA-like ``{"code", "message"}``
               error body; the message echoes the request's path and ``Authorization``
               header, as a careless server might
``malformed``  ``200`` with a body that is not JSON
``wrong_type`` ``200`` with ``{"result": <wrong_value>}`` (a number by default)
``huge``       ``200`` with a ``huge_bytes`` body that would *allow* the call if it were read
``undefined``  ``200`` with ``{"decision_id": ...}`` and no ``result``
``close``      nothing: the connection is closed once the request has been read
``truncated``  ``200`` announcing a longer body than it sends (``{"result": true}``), then
               the connection is closed: a reply cut short
``redirect``   ``307`` to the same path on OPA itself (``redirect_to``, default: the upstream):
               a client that followed it would get a real decision
=============  ================================================================================

``connections`` counts the TCP connections the proxy accepted; ``requests`` also records
requests sent to it as a forward proxy (their path is then an absolute URL).

``GET /health`` is forwarded, so readiness checks see OPA itself (unless ``hold_health``: then
it gets the fault too, as from an OPA that is hung or cut off).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = ["MODES", "FaultProxy"]

MODES = (
    "pass",
    "delay",
    "trickle",
    "status",
    "malformed",
    "wrong_type",
    "huge",
    "undefined",
    "close",
    "truncated",
    "redirect",
)

_REASONS = {401: "Unauthorized", 403: "Forbidden", 500: "Internal Server Error", 503: "Unavailable"}
_CODES = {401: "unauthorized", 403: "unauthorized", 500: "internal_error", 503: "unavailable"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive towards the client
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read the proxy's counters, not its access log."""

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        proxy = self.server.proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        mode = "pass" if self.path == "/health" and not proxy.hold_health else proxy.mode
        with proxy.lock:
            proxy.requests.append((self.command, self.path, dict(self.headers), body))
        try:
            self._answer(proxy, mode, body)
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            # The client gave up (its timeout): nothing left to answer.
            self.close_connection = True

    def _answer(self, proxy: FaultProxy, mode: str, body: bytes) -> None:
        if mode == "delay" and proxy.stopping.wait(proxy.delay):
            self.close_connection = True
            return
        if mode in ("pass", "delay"):
            status, content_type, content = proxy.forward(
                self.command, self.path, self.headers, body
            )
            self._send(status, content, content_type)
        elif mode == "trickle":
            self._trickle(proxy)
        elif mode == "status":
            error = {
                "code": _CODES.get(proxy.status, "internal_error"),
                "message": (
                    f"error at {self.path} for {self.headers.get('Authorization', '')} "
                    f"via {proxy.upstream}"
                ),
            }
            self._send(proxy.status, json.dumps(error).encode())
        elif mode == "malformed":
            self._send(200, b'{"result": {"allow": true, "reasons": [')
        elif mode == "wrong_type":
            self._send(200, json.dumps({"result": proxy.wrong_value}).encode())
        elif mode == "huge":
            padding = "x" * proxy.huge_bytes
            self._send(200, json.dumps({"result": {"allow": True, "pad": padding}}).encode())
        elif mode == "undefined":
            self._send(200, json.dumps({"decision_id": "undefined-by-proxy"}).encode())
        elif mode == "truncated":
            content = json.dumps({"result": True}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(content) + 100))
            self.end_headers()
            self.wfile.write(content)
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif mode == "redirect":
            self.send_response(307, "Temporary Redirect")
            self.send_header("Location", (proxy.redirect_to or proxy.upstream) + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif mode == "close":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        else:  # pragma: no cover - guarded by FaultProxy.set
            raise ValueError(mode)

    def _send(self, status: int, content: bytes, content_type: str = "application/json") -> None:
        self.send_response(status, _REASONS.get(status))
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)
        self.wfile.flush()

    def _trickle(self, proxy: FaultProxy) -> None:
        content = json.dumps({"result": {"allow": True, "reasons": []}}).encode()
        padded = content + b" " * 10_000  # more than the drip can deliver in time
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(padded)))
        self.end_headers()
        self.wfile.flush()
        steps = max(1, int(proxy.delay / proxy.drip))
        for index in range(steps):
            if proxy.stopping.wait(proxy.drip):
                break
            self.wfile.write(padded[index : index + 1])
            self.wfile.flush()
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: FaultProxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up on a kept-alive connection is not an error here."""

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.proxy.lock:
            self.proxy.connections += 1
        super().process_request(request, client_address)


class FaultProxy:
    """A threaded proxy on ``127.0.0.1:<free port>`` in front of ``upstream`` (OPA's URL).

    Switch faults with :meth:`set`; ``requests`` records every request received as
    ``(method, path, headers, body)``.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        host_port = self.upstream.split("://", 1)[-1]
        host, _, port = host_port.rpartition(":")
        self._upstream_host, self._upstream_port = host, int(port)
        self.mode = "pass"
        self.delay = 0.0
        self.drip = 0.1
        self.status = 500
        self.wrong_value: Any = 42
        self.huge_bytes = 5 * 1024 * 1024
        self.redirect_to: str | None = None
        self.hold_health = False  # True: health checks get the fault too (OPA hung)
        self.connections = 0
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fault-proxy", daemon=True
        )

    def set(self, mode: str, **options: Any) -> FaultProxy:
        """Switch to ``mode`` (one of :data:`MODES`); options set ``delay``, ``status``, ..."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.hold_health = False  # each fault says whether it reaches health checks
        for name, value in options.items():
            if not hasattr(self, name):
                raise AttributeError(name)
            setattr(self, name, value)
        self.mode = mode
        return self

    @property
    def decision_requests(self) -> int:
        """How many requests other than health checks reached the proxy."""
        with self.lock:
            return sum(1 for _, path, _, _ in self.requests if path != "/health")

    def forward(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, str, bytes]:
        """Send the request on to OPA; ``(status, content type, body)``."""
        connection = http.client.HTTPConnection(
            self._upstream_host, self._upstream_port, timeout=10
        )
        parts = urlsplit(path)
        if parts.netloc:  # a forward-proxy request names the whole URL
            path = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            hop = ("host", "connection", "proxy-authorization", "proxy-connection")
            sent = {k: v for k, v in headers.items() if k.lower() not in hop}
            connection.request(method, path, body=body or None, headers=sent)
            response = connection.getresponse()
            content = response.read()
            return response.status, response.getheader("Content-Type", "application/json"), content
        finally:
            connection.close()

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
