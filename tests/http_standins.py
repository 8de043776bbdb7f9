"""Tiny local stand-ins for an OPA server (a broken, hung or hostile one, or a proxy in front
of a real one) for the HTTP client's tests.

:class:`StandIn` listens on a free port of ``127.0.0.1``, accepts in a daemon thread and
hands each connection to a handler on a thread of its own; a subclass overrides
:meth:`StandIn.handle`, or a handler is passed in.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any


def read_input(customer_id: str = "CUST-1") -> dict[str, Any]:
    """A decision input: an admin reads a customer's details (call ``c1``)."""
    return {
        "version": 1,
        "tool": {
            "name": "get_customer_details",
            "args": {"customer_id": customer_id},
            "call_id": "c1",
        },
        "user": {"id": "user-123", "role": "admin"},
        "context": {},
        "turn": [],
        "history": [],
    }


def read_head(client: socket.socket) -> bytes:
    """What the client sent up to the end of its request's head (less if it closed first)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = client.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


class StandIn:
    """A local server at :attr:`url` whose every connection goes to ``handler`` (or
    :meth:`handle`) on a daemon thread; the connection is closed after it, and an
    ``OSError`` in it (the client gave up) ends it quietly. :attr:`stopping` is set by
    :meth:`stop`, for handlers that wait."""

    def __init__(
        self,
        handler: Callable[[socket.socket], None] | None = None,
        *,
        scheme: str = "http",
        backlog: int = 16,
    ) -> None:
        self.handler = handler or self.handle
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.url = f"{scheme}://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stopping = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def handle(self, client: socket.socket) -> None:
        """Serve one connection (subclasses)."""
        raise NotImplementedError

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(client,), daemon=True).start()

    def _connection(self, client: socket.socket) -> None:
        try:
            self.handler(client)
        except OSError:
            pass
        finally:
            client.close()

    def stop(self) -> None:
        self.stopping.set()
        self.sock.close()
