"""A small pool of kept-alive ``http.client`` connections: ``OPAServer``'s default client.

A policy decision is one short POST to a server that is usually a sidecar on loopback, so
the client's own per-request work is a large share of the round trip; the standard
library's connection is the leanest way to send it. A connection is checked out for one
request at a time; one that the server closed while idle is replaced and the request sent
again once (a decision query has no side effects). An idle connection with bytes waiting on
it (a reply no request asked for: a proxy that sent one twice) is never reused: the next
request would read them as its own reply.

The deadline bounds the whole request: every read of the reply, its status line and headers
included, gets only what is left of it, so a server that drips its reply a byte at a time
cannot stretch a decision past ``timeout``.

``max_connections`` is a hard cap: a request waits for a free connection, within its
deadline. A forked child never touches its parent's sockets: it starts with an empty pool.
"""

from __future__ import annotations

import http.client
import io
import math
import select
import socket
import ssl
import threading
import time
from typing import Any, Protocol
from urllib.parse import urlsplit

from langchain_opa_guard.engines.workers import reset_after_fork

__all__ = ["ConnectionPool", "ResponseTooLarge", "Transport", "remaining"]


class ResponseTooLarge(Exception):
    """The reply was larger than the client accepts."""


class Transport(Protocol):
    """What ``OPAServer`` sends its requests through."""

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        deadline: float,
        max_bytes: int | None = None,
    ) -> tuple[int, bytes]:
        """Send one request to ``path`` (under the server's URL); ``(status, body)``.
        ``max_bytes`` replaces the transport's reply size limit for this request.

        Raises ``TimeoutError`` past ``deadline`` (``time.monotonic()``), ``OSError`` or
        ``http.client`` errors for transport failures, :class:`ResponseTooLarge`.
        """
        ...

    def close(self) -> None:
        """Release the connections."""
        ...


def remaining(deadline: float) -> float:
    """Seconds left before ``deadline``; raises ``TimeoutError`` when none are."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the request ran past its deadline")
    return left


def _limit(connection: http.client.HTTPConnection, deadline: float) -> None:
    left = remaining(deadline)
    if connection.sock is not None:
        connection.sock.settimeout(left)


_STALE = (
    http.client.RemoteDisconnected,
    BrokenPipeError,
    ConnectionResetError,
    http.client.BadStatusLine,
)


class _DeadlineReader(io.RawIOBase):
    """A socket's bytes, each read bounded by what is left of the request's deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._sock.settimeout(remaining(self._deadline))
        return self._raw.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _DeadlineSocket:
    """What ``HTTPResponse`` reads its reply through: the socket, under a deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))


class _DeadlineResponse(http.client.HTTPResponse):
    """A reply whose status line, headers and body are all read within one deadline
    (``http.client`` gives each socket read the whole timeout again)."""

    def __init__(self, sock: Any, *args: Any, deadline: float, **kwargs: Any) -> None:
        super().__init__(_DeadlineSocket(sock, deadline), *args, **kwargs)  # type: ignore[arg-type]


class _Deadlined:
    """Mixed into a connection: its replies are read within ``deadline``."""

    deadline: float = math.inf

    def response_class(self, sock: Any, *args: Any, **kwargs: Any) -> http.client.HTTPResponse:
        return _DeadlineResponse(sock, *args, deadline=self.deadline, **kwargs)


class _Connection(_Deadlined, http.client.HTTPConnection):  # type: ignore[misc]
    pass


class _TLSConnection(_Deadlined, http.client.HTTPSConnection):  # type: ignore[misc]
    pass


def _has_unread_bytes(connection: http.client.HTTPConnection) -> bool:
    """An idle connection is readable: bytes no request asked for, or the server closed
    it. Either way it must not carry another request."""
    sock = connection.sock
    if sock is None:
        return True
    try:
        pending = getattr(sock, "pending", None)  # TLS: bytes already decrypted
        if pending is not None and pending():
            return True
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class ConnectionPool:
    """Kept-alive HTTP/1.1 connections to one origin, at most ``max_connections`` of them."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 32,
        max_response_bytes: int = 1 << 20,
    ) -> None:
        parts = urlsplit(url)
        self.scheme = parts.scheme or "http"
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if self.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        self.timeout = timeout
        self.ssl_context = ssl_context
        self.max_connections = max_connections
        self.max_response_bytes = max_response_bytes
        self._idle: list[http.client.HTTPConnection] = []
        self._in_use = 0  # connections checked out (the cap counts them with the idle ones)
        self._free = threading.Condition(threading.Lock())
        reset_after_fork(self)

    def _after_fork_in_child(self) -> None:
        # The idle sockets are shared with the parent: a request sent on one here could
        # read the parent's reply. Forget them (closing our copy of a descriptor does not
        # end the parent's connection) and start with a fresh lock and no connection in use.
        idle, self._idle = self._idle, []
        self._in_use = 0
        self._free = threading.Condition(threading.Lock())
        for connection in idle:
            connection.close()

    def _new(self, deadline: float) -> http.client.HTTPConnection:
        left = remaining(deadline)
        if self.scheme == "https":
            context = self.ssl_context or ssl.create_default_context()
            return _TLSConnection(self.host, self.port, timeout=left, context=context)
        return _Connection(self.host, self.port, timeout=left)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        deadline: float | None = None,
        max_bytes: int | None = None,
    ) -> tuple[int, bytes]:
        """Send one request; ``(status, body)``. Raises ``OSError``/``http.client`` errors,
        ``TimeoutError`` once ``deadline`` (default: ``timeout`` from now) has passed."""
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        free = self._free
        with free:
            while self._in_use >= self.max_connections:
                if not free.wait(remaining(deadline)) and self._in_use >= self.max_connections:
                    raise TimeoutError("no connection to OPA became free before the deadline")
            self._in_use += 1
            connection = self._idle.pop() if self._idle else None
        keep = False
        try:
            if connection is not None and _has_unread_bytes(connection):
                connection.close()
                connection = None
            limit = self.max_response_bytes if max_bytes is None else max_bytes
            connection, status, content, keep = self._request(
                connection, method, path, body, headers, deadline, limit
            )
            return status, content
        finally:
            with free:
                self._in_use -= 1
                if keep and connection is not None:
                    self._idle.append(connection)
                free.notify()

    def _request(
        self,
        connection: http.client.HTTPConnection | None,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        deadline: float,
        limit: int,
    ) -> tuple[http.client.HTTPConnection, int, bytes, bool]:
        reused = connection is not None
        if connection is None:
            connection = self._new(deadline)
        try:
            try:
                result = self._send(connection, method, path, body, headers, deadline, limit)
            except _STALE:
                connection.close()
                if not reused:
                    raise
                connection = self._new(deadline)
                result = self._send(connection, method, path, body, headers, deadline, limit)
        except BaseException:
            connection.close()
            raise
        status, content, keep = result
        if not keep:
            connection.close()
        return connection, status, content, keep

    def _send(
        self,
        connection: http.client.HTTPConnection,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        deadline: float,
        limit: int,
    ) -> tuple[int, bytes, bool]:
        # The deadline bounds the whole request, not each socket operation: a server that
        # drips its reply a byte at a time runs into the same deadline.
        connection.timeout = remaining(deadline)
        connection.deadline = deadline  # type: ignore[attr-defined]
        _limit(connection, deadline)
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
            if size > limit:
                raise ResponseTooLarge(size)
            chunks.append(chunk)
        if response.length:  # the server promised more than it sent
            raise http.client.IncompleteRead(b"".join(chunks), response.length)
        response.close()  # fully read: the connection is free for the next request
        return response.status, b"".join(chunks), not response.will_close

    def close(self) -> None:
        """Close every idle connection."""
        with self._free:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
