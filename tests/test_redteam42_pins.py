"""Red team 42: what held. Surprising replies from a stand-in for a broken OPA, and the
library's hands off global state; these pass and pin the behaviour.

Each canned reply below would *allow* the call if read loosely (``"allow": "true"``, ``1``,
a nested ``result``, an error body with HTTP 200, a chunked body cut short, an HTTP/1.0 reply
without a length, a redirect to a server that allows, a batch reply that misses a call):
every one is a fail-closed deny naming the failure, and no reason quotes the reply.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest
from http_standins import StandIn, read_head, read_input

from langchain_opa_guard import ErrorType, OPAServer

SECRET_ARG = "arg-value-7f3a"

READ = read_input(SECRET_ARG)


def _json_reply(body: bytes, status: str = "200 OK", version: str = "HTTP/1.1") -> bytes:
    return (
        f"{version} {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


class CannedServer(StandIn):
    """Answers every request with the same raw bytes, then closes the connection."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        super().__init__()

    def handle(self, client: socket.socket) -> None:
        client.settimeout(5)
        read_head(client)
        client.sendall(self.reply)
        client.shutdown(socket.SHUT_WR)


@pytest.fixture
def allowing_server() -> Iterator[CannedServer]:
    server = CannedServer(_json_reply(b'{"result": {"allow": true}}'))
    yield server
    server.stop()


CASES = [
    ("string_true", _json_reply(b'{"result": {"allow": "true"}}'), ErrorType.MALFORMED),
    ("one", _json_reply(b'{"result": {"allow": 1}}'), ErrorType.MALFORMED),
    ("bare_one", _json_reply(b'{"result": 1}'), ErrorType.MALFORMED),
    ("nested", _json_reply(b'{"result": {"result": {"allow": true}}}'), ErrorType.MALFORMED),
    ("null", _json_reply(b'{"result": null}'), ErrorType.MALFORMED),
    (
        "error_body_200",
        _json_reply(b'{"code": "internal_error", "message": "allow: true"}'),
        ErrorType.UNDEFINED,
    ),
    ("top_level_list", _json_reply(b'[{"result": true}]'), ErrorType.MALFORMED),
    ("html", _json_reply(b"<html>allow</html>"), ErrorType.MALFORMED),
    (
        "chunked_cut_short",
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b'Transfer-Encoding: chunked\r\n\r\n20\r\n{"result": true}',
        ErrorType.UNREACHABLE,
    ),
    (
        "bad_chunk_size",
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{"result": true}\r\n0\r\n\r\n',
        ErrorType.UNREACHABLE,
    ),
    ("status_204", b"HTTP/1.1 204 No Content\r\n\r\n", ErrorType.HTTP_STATUS),
    ("garbage_status", b"HELLO\r\n\r\n", ErrorType.UNREACHABLE),
]


@pytest.mark.parametrize("side", ["sync", "async"])
@pytest.mark.parametrize(("reply", "error"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_surprising_reply_is_a_fail_closed_deny(reply: bytes, error: str, side: str) -> None:
    """A stand-in OPA answers with ``reply``: the call is denied, ``error`` names the
    failure, and the reason quotes neither the reply nor the call's arguments."""
    server = CannedServer(reply)
    client = OPAServer(server.url, timeout=1.0, verify_policy=False)
    try:
        decision = client.decide(READ) if side == "sync" else asyncio.run(client.adecide(READ))
    finally:
        client.close()
        server.stop()
    assert not decision.allow, decision
    assert decision.error == error, decision
    assert all(r.startswith("policy engine failed: ") for r in decision.reasons), decision
    text = " ".join(decision.reasons)
    assert SECRET_ARG not in text and "true" not in text and "<html>" not in text, text


def test_http_1_0_reply_without_length_is_read_to_its_end() -> None:
    """An HTTP/1.0 reply with no ``Content-Length`` is read until the server closes; a deny
    in it stays a deny, and the connection is not reused."""
    server = CannedServer(
        b'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{"result": false}'
    )
    client = OPAServer(server.url, timeout=1.0, verify_policy=False)
    try:
        decisions = [client.decide(READ), client.decide(READ)]
    finally:
        client.close()
        server.stop()
    assert [d.allow for d in decisions] == [False, False]
    assert [d.error for d in decisions] == [None, None]


@pytest.mark.parametrize("status", ["301 Moved Permanently", "302 Found", "307 Temporary Redirect"])
def test_a_redirect_to_an_allowing_server_is_not_followed(
    allowing_server: CannedServer, status: str
) -> None:
    """A 3xx pointing at a server that allows everything is a ``redirect`` deny."""
    location = f"{allowing_server.url}/v1/data/agent/authz/decision"
    server = CannedServer(
        f"HTTP/1.1 {status}\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()
    )
    client = OPAServer(server.url, timeout=1.0, verify_policy=False)
    try:
        decision = client.decide(READ)
    finally:
        client.close()
        server.stop()
    assert not decision.allow and decision.error == ErrorType.REDIRECT, decision


def test_a_batch_reply_missing_a_call_denies_that_call_only() -> None:
    """``batch=True``: a reply that decides c1 and an extra id but not c2 allows c1 and
    denies c2 as ``undefined``; the extra id is ignored."""
    reply = {"result": {"c1": {"allow": True}, "c3": {"allow": True}, "C2": True}}
    server = CannedServer(_json_reply(json.dumps(reply).encode()))
    client = OPAServer(server.url, timeout=1.0, verify_policy=False, batch=True)
    first = dict(READ)
    second = {**READ, "tool": {**READ["tool"], "call_id": "c2"}}
    try:
        decisions = client.decide_many([first, second])
    finally:
        client.close()
        server.stop()
    assert [d.allow for d in decisions] == [True, False], decisions
    assert decisions[1].error == ErrorType.UNDEFINED


def test_the_library_leaves_global_state_alone_without_configure_tracing(opa_url: str) -> None:
    """Importing the package, deciding on a real OPA in a guarded graph traced with
    ``OTelCallbackHandler()`` (no providers given) and a ``DecisionLog``: no global tracer or
    meter provider, no propagator change, no root logging handler, no environment change."""
    script = f"""
import logging, os, sys, tempfile
before_env = dict(os.environ)
from opentelemetry import metrics, propagate, trace
textmap = propagate.get_global_textmap()
from langchain_core.messages import AIMessage, HumanMessage
from langchain_opa_guard import DecisionLog, OPAServer, OTelCallbackHandler, PolicyGuardNode
from langchain_opa_guard.demo.customer_db import build_agent, customer_db_tools
from langchain_opa_guard.testing import ScriptedChatModel, tool_call

engine = OPAServer({opa_url!r}, token="tok-secret")
tools, db = customer_db_tools()
log = DecisionLog(os.path.join(tempfile.mkdtemp(), "d.jsonl"))
model = ScriptedChatModel(script=[AIMessage("", tool_calls=[
    tool_call("get_customer_details", {{"customer_id": "CUST-001", "fields": {{"name": True}}}})
])])
graph = build_agent(
    engine, model, tools, guard=PolicyGuardNode(engine, registry=tools, decision_log=log)
)
result = graph.invoke(
    {{"messages": [HumanMessage("hi")]}},
    {{"callbacks": [OTelCallbackHandler()]}},
    context={{"user": {{"id": "user-123", "role": "admin"}}}},
)
engine.close()
log.close()
problems = []
if not db.executed:
    problems.append("the allowed call did not run: the check is not on the decision path")
if trace._TRACER_PROVIDER is not None:
    problems.append("global tracer provider set")
if metrics._internal._METER_PROVIDER is not None:
    problems.append("global meter provider set")
if propagate.get_global_textmap() is not textmap:
    problems.append("global propagator replaced")
if logging.getLogger().handlers:
    problems.append(f"root handlers {{logging.getLogger().handlers}}")
if dict(os.environ) != before_env:
    changed = set(os.environ.items()) ^ set(before_env.items())
    problems.append(f"environment changed: {{sorted(k for k, _ in changed)}}")
print("RESULT", type(result).__name__)
print("PROBLEMS", problems)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "PROBLEMS []" in done.stdout, (done.stdout, done.stderr)
    assert "RESULT dict" in done.stdout, (done.stdout, done.stderr)
