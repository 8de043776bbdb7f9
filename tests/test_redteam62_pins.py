"""Red team 62 pins: what was tried against ``OPAServer(batch=True)`` and the built-in HTTP
client with a hostile stand-in for OPA, and held (these pass).

- a batch reply that answers only some of the turn's calls (and one call nobody asked about):
  the unanswered call is an ``undefined`` deny, the stray id grants nothing;
- a batch reply whose entry for one call nests deeper than Python can re-encode: that call
  fails closed, its neighbour is still decided, nothing raises;
- a chunked reply cut off mid-body, and one whose body is followed in the same segment by a
  second reply (an *allow*) that no request asked for: deny, never the smuggled allow.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from http_standins import StandIn, read_head, read_input

from langchain_opa_guard import OPAServer


def turn(*ids: str) -> list[dict[str, Any]]:
    inputs = []
    for call_id in ids:
        document = read_input()
        document["tool"] = {**document["tool"], "call_id": call_id}
        inputs.append(document)
    return inputs


@contextmanager
def serving(handler: Any) -> Iterator[StandIn]:
    server = StandIn(handler)
    try:
        yield server
    finally:
        server.stop()


def replying(raw: bytes) -> Any:
    def handle(client: socket.socket) -> None:
        while read_head(client):
            client.sendall(raw)

    return serving(handle)


def reply(body: bytes, extra: bytes = b"") -> bytes:
    head = (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body + extra


def test_a_partial_batch_denies_the_unanswered_call() -> None:
    body = json.dumps({"result": {"c1": {"allow": True}, "zz": {"allow": True}}}).encode()
    with (
        replying(reply(body)) as server,
        OPAServer(server.url, batch=True, verify_policy=False) as opa,
    ):
        first, second = opa.decide_many(turn("c1", "c2"))
    assert first.allow
    assert not second.allow and second.error == "undefined"


def test_a_batch_entry_too_deep_to_read_fails_that_call_closed() -> None:
    deep = "[" * 900 + "]" * 900
    text = '{"result": {"c1": {"allow": true}, "c2": [' + deep + "]}}"
    with (
        replying(reply(text.encode())) as server,
        OPAServer(server.url, batch=True, verify_policy=False) as opa,
    ):
        decisions = opa.decide_many(turn("c1", "c2"))
    assert len(decisions) == 2
    assert not decisions[1].allow


def test_a_cut_chunked_reply_and_a_smuggled_second_reply_are_denials() -> None:
    deny = json.dumps({"result": {"allow": False, "reasons": ["no"]}}).encode()
    allow = reply(json.dumps({"result": {"allow": True}}).encode())
    cut = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" + b'{"result": {"allow": tr'
    )

    def handle_cut(client: socket.socket) -> None:
        if read_head(client):
            client.sendall(cut)

    with serving(handle_cut) as server, OPAServer(server.url, verify_policy=False) as opa:
        assert not opa.decide(read_input()).allow
    with (
        replying(reply(deny, extra=allow)) as server,
        OPAServer(server.url, verify_policy=False, max_connections=1) as opa,
    ):
        assert [opa.decide(read_input()).allow for _ in range(3)] == [False, False, False]
