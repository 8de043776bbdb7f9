"""Red team 42: a stray reply left on an idle kept-alive connection is read as the next
call's decision.

The built-in ``ConnectionPool`` puts a connection back in its idle list once a reply is read
to its ``Content-Length``, and hands it to the next request without looking at it. Bytes
that arrive on the idle connection in between (a reply sent twice by a proxy that retried
upstream, the tail of a body longer than its ``Content-Length`` that reached the socket
late, an answer to an earlier request that came after the client had read another) stay in
the socket and are read by the next request's ``getresponse()`` as *its* reply. urllib3
(the ``requests.Session`` transport) checks an idle connection before reuse and drops one
with unread data; the built-in pool does not.

Real OPA here, with a small proxy in front of it that alters the byte stream in one way: it
sends OPA's reply to the first request on a connection twice, the copy 0.1 s later. The
first call (an admin reading a customer's name and email) is allowed by OPA; the second
(an internal user reading the same fields, which OPA denies: PII) is sent on the same
connection and reads the stale copy of the first call's *allow*. The second call is allowed
although OPA denied exactly it.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from http_standins import StandIn

from langchain_opa_guard import OPAServer

ADMIN = {"id": "user-123", "role": "admin"}
INTERNAL = {"id": "user-456", "role": "internal_user"}


def read_input(user: dict[str, Any], call_id: str) -> dict[str, Any]:
    call = {
        "name": "get_customer_details",
        "args": {"customer_id": "CUST-001", "fields": {"name": True, "email": True}},
        "call_id": call_id,
        "metadata": {"toolkit": "CustomerDBTool"},
    }
    return {
        "version": 1,
        "tool": call,
        "user": user,
        "context": {"thread_id": "t-1", "node": "guard", "step": 2},
        "turn": [call],
        "history": [],
    }


class DoublingProxy(StandIn):
    """A keep-alive HTTP/1.1 proxy to OPA that writes the reply to the first request of each
    connection a second time, ``echo_after`` seconds later."""

    def __init__(self, upstream: str, echo_after: float = 0.1) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.echo_after = echo_after
        self.requests = 0
        self.lock = threading.Lock()
        super().__init__()

    def handle(self, client: socket.socket) -> None:
        reader = client.makefile("rb")
        first = True
        while True:
            request_line = reader.readline()
            if not request_line:
                return
            method, path, _ = request_line.decode().split(" ", 2)
            headers: dict[str, str] = {}
            while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip()] = value.strip()
            length = int(headers.get("Content-Length") or 0)
            body = reader.read(length) if length else None
            with self.lock:
                self.requests += 1
            reply = self._forward(method, path, headers, body)
            client.sendall(reply)
            if first:
                first = False
                time.sleep(self.echo_after)
                client.sendall(reply)  # the stray copy

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None
    ) -> bytes:
        connection = http.client.HTTPConnection(*self.upstream, timeout=10)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection")}
            connection.request(method, path, body=body, headers=sent)
            response = connection.getresponse()
            content = response.read()
        finally:
            connection.close()
        return (
            b"HTTP/1.1 %d OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (response.status, len(content))
            + content
        )


@pytest.fixture
def doubling_proxy(opa_url: str) -> Iterator[DoublingProxy]:
    proxy = DoublingProxy(opa_url)
    yield proxy
    proxy.stop()


@pytest.mark.parametrize("stack", ["pool", "session"])
def test_a_stray_reply_on_an_idle_connection_is_not_the_next_calls_decision(
    opa_url: str, doubling_proxy: DoublingProxy, stack: str
) -> None:
    """Attack: a proxy in front of a real OPA sends its reply to the first request of a
    kept-alive connection twice (the copy 0.1 s later). Call 1 (admin reads name and email)
    is allowed; call 2 (internal user reads the same: OPA denies, PII) goes on the same
    connection.

    Observed (built-in pool): call 2 reads the stray copy of call 1's reply and is
    *allowed*, with call 1's decision id; OPA's own deny for call 2 is left in the socket
    for the call after it. The ``requests.Session`` transport drops the connection and gets
    OPA's deny.

    Expected: a connection with unread bytes on it is not reused (or the reply is tied to
    its request); call 2 gets OPA's decision on call 2: a deny.
    """
    with OPAServer(opa_url) as direct:
        assert direct.decide(read_input(ADMIN, "c-1")).allow
        truth = direct.decide(read_input(INTERNAL, "c-2"))
    assert not truth.allow and truth.error is None, truth  # what OPA says of call 2

    options: dict[str, Any] = {"session": requests.Session()} if stack == "session" else {}
    client = OPAServer(doubling_proxy.url, verify_policy=False, **options)
    try:
        first = client.decide(read_input(ADMIN, "c-1"))
        assert first.allow, first
        time.sleep(0.4)  # the connection sits idle in the pool; the stray copy arrives
        second = client.decide(read_input(INTERNAL, "c-2"))
    finally:
        client.close()
    assert not second.allow, (
        f"call 2 was allowed on the stray copy of call 1's reply, though OPA denied it: {second}"
    )
    assert second.decision_id != first.decision_id, (first, second)
