"""A small pool of kept-alive ``http.client`` connections for the sync side of ``OPAServer``.

A policy decision is one short POST to a server that is usually a sidecar on loopback, so
the client's own per-request work is a large share of the round trip; the standard
library's connection is the leanest way to send it. A connection is checked out for one
request at a time; one that the server closed while idle is replaced and the request sent
again once (a decision query has no side effects).
"""

from __future__ import annotations

import http.client
import ssl
import threading
import time
from urllib.parse import urlsplit

__all__ = ["ConnectionPool", "ResponseTooLarge"]


def _limit(connection: http.client.HTTPConnection, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("the request ran past its deadline")
    if connection.sock is not None:
        connection.sock.settimeout(remaining)


_STALE = (
    http.client.RemoteDisconnected,
    BrokenPipeError,
    ConnectionResetError,
    http.client.BadStatusLine,
)


class ResponseTooLarge(Exception):
    """The reply was larger than the pool accepts."""


class ConnectionPool:
    """Kept-alive HTTP/1.1 connections to one origin."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        max_idle: int = 32,
        max_response_bytes: int = 1 << 20,
    ) -> None:
        parts = urlsplit(url)
        self.scheme = parts.scheme or "http"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.max_idle = max_idle
        self.max_response_bytes = max_response_bytes
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _new(self) -> http.client.HTTPConnection:
        if self.scheme == "https":
            context = self.ssl_context or ssl.create_default_context()
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=context
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """Send one request; ``(status, body)``. Raises ``OSError``/``http.client`` errors."""
        with self._lock:
            connection = self._idle.pop() if self._idle else None
        reused = connection is not None
        if connection is None:
            connection = self._new()
        try:
            try:
                result = self._send(connection, method, path, body, headers)
            except _STALE:
                connection.close()
                if not reused:
                    raise
                connection = self._new()
                result = self._send(connection, method, path, body, headers)
        except BaseException:
            connection.close()
            raise
        status, content, keep = result
        if keep:
            with self._lock:
                if len(self._idle) < self.max_idle:
                    self._idle.append(connection)
                    return status, content
        connection.close()
        return status, content

    def _send(
        self,
        connection: http.client.HTTPConnection,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
    ) -> tuple[int, bytes, bool]:
        # ``timeout`` bounds the whole request, not each socket operation: a server that
        # drips its reply a byte at a time runs into the same deadline.
        deadline = time.monotonic() + self.timeout
        connection.timeout = self.timeout
        connection.request(method, self.base_path + path, body=body, headers=headers)
        _limit(connection, deadline)
        response = connection.getresponse()
        chunks: list[bytes] = []
        size = 0
        while True:
            _limit(connection, deadline)
            chunk = response.read1(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > self.max_response_bytes:
                raise ResponseTooLarge(size)
            chunks.append(chunk)
        if response.length:  # the server promised more than it sent
            raise http.client.IncompleteRead(b"".join(chunks), response.length)
        response.close()  # fully read: the connection is free for the next request
        return response.status, b"".join(chunks), not response.will_close

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
