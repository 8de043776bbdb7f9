"""Red team 42: a server that drips its status line and headers stretches a decision far past
``timeout``.

``OPAServer(timeout=...)`` is documented as "Seconds a decision may take, counted from the
call: waiting for a free connection or worker, connecting and reading the reply all count"
(README: "``timeout`` bounds the whole request (body included)"). The existing slow-drip
test (``test_faults.py::test_a_slow_drip_reply_is_cut_off_at_the_timeout``) drips only the
*body*: the client re-arms the socket timeout with what is left before each body read, so
that is cut off. The status line and headers are read inside ``http.client``'s
``getresponse()`` (or urllib3's, for the session transport) with one socket timeout set
before the call: every ``recv`` gets the whole remaining time again, so a server that sends
a byte a little faster than that never trips it.

The stand-in server below is a tiny local HTTP server (a hung or hostile gateway in front of
OPA, or an OPA whose writes are starved): it answers at once with ``HTTP/1.1 200 OK`` and
then one header byte every 0.1 s for about 4 s, then a complete, valid reply that would
allow the call. The client reports ``timeout`` in the end (correctly denied), but only after
the whole drip: about 4 s for ``timeout=0.3``, over ten times the configured bound, on the
sync, the async and the ``requests.Session`` paths alike. A guard turn waits the same (the
guard puts no deadline of its own around the engine).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from http_standins import StandIn, read_head, read_input

from langchain_opa_guard import ErrorType, OPAServer

DRIP = 0.1
DRIP_SECONDS = 3.0
TIMEOUT = 0.3

READ = read_input()


class HeaderDripServer(StandIn):
    """Answers every request with a status line at once, then one header byte per ``DRIP``
    seconds for about ``DRIP_SECONDS`` (plus the header name), then a valid allowing reply."""

    def handle(self, client: socket.socket) -> None:
        client.settimeout(10)
        if b"\r\n\r\n" not in read_head(client):
            return
        client.sendall(b"HTTP/1.1 200 OK\r\n")
        header = b"X-Padding: " + b"a" * int(DRIP_SECONDS / DRIP) + b"\r\n"
        for index in range(len(header)):
            if self.stopping.wait(DRIP):
                return
            client.sendall(header[index : index + 1])
        body = b'{"result": {"allow": true, "reasons": []}}'
        client.sendall(
            b"Content-Type: application/json\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % len(body) + body
        )


@pytest.fixture
def drip_server() -> Iterator[HeaderDripServer]:
    server = HeaderDripServer()
    yield server
    server.stop()


@pytest.mark.parametrize("side", ["sync", "async"])
@pytest.mark.parametrize("stack", ["pool", "session"])
def test_a_dripped_status_line_and_headers_are_cut_off_at_the_timeout(
    drip_server: HeaderDripServer, side: str, stack: str
) -> None:
    """Attack: the server sends ``HTTP/1.1 200 OK`` at once, then its headers one byte every
    0.1 s for about 4 s (then a valid reply that would allow the call).

    Observed: ``decide``/``adecide`` return a ``timeout`` deny only after the whole drip,
    about 4 s with ``timeout=0.3`` (the header read is bounded per ``recv``, not by the
    deadline), on both the built-in pool and a ``requests.Session``.

    Expected: the decision ends near ``timeout`` (a fail-closed ``timeout`` deny well under
    1.5 s), however the reply's head trickles in, as it does for a dripped body.
    """
    options: dict[str, Any] = {"session": requests.Session()} if stack == "session" else {}
    client = OPAServer(drip_server.url, timeout=TIMEOUT, verify_policy=False, **options)
    try:
        started = time.monotonic()
        decision = client.decide(READ) if side == "sync" else asyncio.run(client.adecide(READ))
        elapsed = time.monotonic() - started
    finally:
        client.close()
    assert not decision.allow, decision
    assert elapsed < 1.5, (
        f"the decision took {elapsed:.2f}s with timeout={TIMEOUT} (headers dripped)"
    )
    assert decision.error == ErrorType.TIMEOUT, decision


def test_a_dripped_head_holds_a_whole_turn_past_the_timeout(
    drip_server: HeaderDripServer,
) -> None:
    """Attack: the same dripping server, asked for a turn of three calls (``decide_many``,
    sent concurrently on the engine's workers).

    Observed: the turn returns three ``timeout`` denies after about 4 s with
    ``timeout=0.3``.

    Expected: every call denied (``timeout``) and the turn over in about one ``timeout``.
    """
    client = OPAServer(drip_server.url, timeout=TIMEOUT, verify_policy=False)
    calls = []
    for index in range(3):
        document = dict(READ)
        document["tool"] = {**READ["tool"], "call_id": f"c{index}"}
        calls.append(document)
    try:
        started = time.monotonic()
        decisions = client.decide_many(calls)
        elapsed = time.monotonic() - started
    finally:
        client.close()
    assert [d.allow for d in decisions] == [False, False, False], decisions
    assert elapsed < 1.5, f"the turn took {elapsed:.2f}s with timeout={TIMEOUT}"
    assert {d.error for d in decisions} == {ErrorType.TIMEOUT}, decisions
