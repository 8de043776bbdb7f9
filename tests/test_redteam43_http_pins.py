"""Red team 43, part C: the OPA client's deadline-bounded reads. Nothing broke; these pin
what was tried (all pass on this branch).

1. A TLS server that drips its handshake (a handshake record header announcing 16 KiB, then
   one byte every 0.1 s for 3 s): every ``recv`` of the handshake would get the whole socket
   timeout again, but the decision still ends at ``timeout`` with a fail-closed ``timeout``
   deny, on the built-in pool and on a ``requests.Session``, sync and async.
2. The ``requests.Session`` path with every slot held by requests to a server that never
   answers: each later decision still ends near ``timeout`` (``timeout`` deny), none waits
   for the hung ones.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from http_standins import StandIn, read_input

from langchain_opa_guard import ErrorType, OPAServer

TIMEOUT = 0.3
READ = read_input()


class StallServer(StandIn):
    """Accepts connections; ``drip``: answers a TLS ClientHello with a handshake record
    header for 16 KiB and then one byte every 0.1 s for 3 s; else reads and never answers."""

    def __init__(self, drip: bool) -> None:
        self.drip = drip
        super().__init__(scheme="https" if drip else "http", backlog=64)

    def handle(self, client: socket.socket) -> None:
        client.settimeout(10)
        client.recv(65536)
        if self.drip:
            client.sendall(b"\x16\x03\x03\x40\x00")
            for _ in range(30):
                if self.stopping.wait(0.1):
                    return
                client.sendall(b"\x02")
        else:
            self.stopping.wait(5)


@pytest.fixture
def drip_server() -> Iterator[StallServer]:
    server = StallServer(drip=True)
    yield server
    server.stop()


@pytest.fixture
def silent_server() -> Iterator[StallServer]:
    server = StallServer(drip=False)
    yield server
    server.stop()


def decide(client: OPAServer, side: str) -> tuple[Any, float]:
    started = time.monotonic()
    decision = client.decide(READ) if side == "sync" else asyncio.run(client.adecide(READ))
    return decision, time.monotonic() - started


@pytest.mark.parametrize("side", ["sync", "async"])
@pytest.mark.parametrize("stack", ["pool", "session"])
def test_a_dripped_tls_handshake_is_cut_off_at_the_timeout(
    drip_server: StallServer, side: str, stack: str
) -> None:
    if stack == "session":
        session = requests.Session()
        session.verify = False
        options: dict[str, Any] = {"session": session}
    else:
        options = {"verify": False}
    client = OPAServer(drip_server.url, timeout=TIMEOUT, verify_policy=False, **options)
    try:
        decision, elapsed = decide(client, side)
    finally:
        client.close()
    assert not decision.allow and decision.error == ErrorType.TIMEOUT, decision
    assert elapsed < 1.5, f"{elapsed:.2f}s with timeout={TIMEOUT} (handshake dripped)"


@pytest.mark.parametrize("side", ["sync", "async"])
def test_session_slots_held_by_hung_requests_leave_later_decisions_at_the_timeout(
    silent_server: StallServer, side: str
) -> None:
    client = OPAServer(
        silent_server.url,
        timeout=TIMEOUT,
        verify_policy=False,
        max_connections=2,
        session=requests.Session(),
    )
    try:
        for _ in range(6):  # the first two hang in their threads; the rest find no slot
            decision, elapsed = decide(client, side)
            assert not decision.allow and decision.error == ErrorType.TIMEOUT, decision
            assert elapsed < 1.5, f"{elapsed:.2f}s with timeout={TIMEOUT}"
    finally:
        client.close()
