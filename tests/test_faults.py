"""Fault injection: every way OPA can fail denies every call, inside a real guarded graph.

A fault-injecting proxy (``fault_proxy.py``) sits in front of a real OPA server; an admin
user asks for three calls that the healthy policy allows, so any deny below is the fault's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import POLICIES, TEST_POLICIES
from fault_proxy import FaultProxy
from langchain_core.messages import ToolMessage
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from opa_process import OPAProcess, free_port
from opentelemetry.trace import StatusCode
from test_guard_node import (
    ADMIN,
    INTERNAL,
    assert_every_call_answered_once,
    check_mixed_result,
    mixed_turn_model,
)
from test_tracing import Recorder

from langchain_opa_guard import (
    Decision,
    EmbeddedPolicy,
    ErrorType,
    OPAServer,
    PolicyGuardNode,
    ToolCallGuard,
)
from langchain_opa_guard.demo import build_agent, customer_db_tools
from langchain_opa_guard.tracing import attributes as A

READ = {
    "version": 1,
    "tool": {
        "name": "get_customer_details",
        "args": {"customer_id": "CUST-001", "fields": {"name": True}},
        "call_id": "probe",
        "metadata": {"toolkit": "CustomerDBTool"},
    },
    "user": INTERNAL,
    "context": {},
    "turn": [],
    "history": [],
}
"""A read the shipped policy allows an internal user (and that the tests take away)."""

GO = {"messages": [("user", "go")]}

# name, proxy mode and options, expected Decision.error, expected words after "policy
# engine failed: ", OPAServer timeout
FAULTS: list[tuple[str, str, dict[str, Any], str, str, float]] = [
    ("delay", "delay", {"delay": 3.0}, ErrorType.TIMEOUT, "OPA did not answer within 0.3s", 0.3),
    ("http_500", "status", {"status": 500}, ErrorType.ENGINE, "could not evaluate", 2.0),
    ("http_503", "status", {"status": 503}, ErrorType.SERVER_ERROR, "OPA answered HTTP 503", 2.0),
    ("http_404", "status", {"status": 404}, ErrorType.HTTP_STATUS, "OPA answered HTTP 404", 2.0),
    ("redirect_307", "redirect", {}, ErrorType.REDIRECT, "a redirect (HTTP 307)", 2.0),
    ("http_401", "status", {"status": 401}, ErrorType.UNAUTHORIZED, "(HTTP 401)", 2.0),
    ("http_403", "status", {"status": 403}, ErrorType.UNAUTHORIZED, "(HTTP 403)", 2.0),
    ("malformed_json", "malformed", {}, ErrorType.MALFORMED, "not valid JSON", 2.0),
    ("result_number", "wrong_type", {"wrong_value": 42}, ErrorType.MALFORMED, "a number", 2.0),
    ("result_string", "wrong_type", {"wrong_value": "yes"}, ErrorType.MALFORMED, "a string", 2.0),
    ("result_null", "wrong_type", {"wrong_value": None}, ErrorType.MALFORMED, "a null", 2.0),
    (
        "result_allow_not_bool",
        "wrong_type",
        {"wrong_value": {"allow": "true"}},
        ErrorType.MALFORMED,
        "no boolean 'allow'",
        2.0,
    ),
    ("huge_5mb", "huge", {}, ErrorType.MALFORMED, "larger than 1048576 bytes", 2.0),
    ("undefined", "undefined", {}, ErrorType.UNDEFINED, "is undefined for this input", 2.0),
    ("closed", "close", {}, ErrorType.UNREACHABLE, "the connection to OPA failed", 2.0),
]


@pytest.fixture
def proxy(opa_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(opa_url) as running:
        yield running


def dead_url() -> str:
    """A loopback URL nothing listens on."""
    return f"http://127.0.0.1:{free_port()}"


def run(graph: Any, user: dict[str, Any], mode: str, config: dict[str, Any] | None = None) -> Any:
    if mode == "invoke":
        return graph.invoke(GO, config or {}, context={"user": user})
    return asyncio.run(graph.ainvoke(GO, config or {}, context={"user": user}))


def tool_messages(result: dict[str, Any]) -> dict[str, ToolMessage]:
    return {m.tool_call_id: m for m in result["messages"] if isinstance(m, ToolMessage)}


def assert_all_failed_closed(
    result: dict[str, Any], executed: list[Any], error: str, words: str
) -> None:
    """Every call of the mixed turn denied with ``error``; nothing ran; the model went on."""
    messages = result["messages"]
    assert_every_call_answered_once(messages)
    answers = tool_messages(result)
    assert set(answers) == {"c-read", "c-pii", "c-upd"}
    for answer in answers.values():
        record = answer.artifact["opa_guard"]
        assert answer.status == "error"
        assert record["verdict"] == "deny"
        assert record["error"] == error, record
        assert record["reasons"][0].startswith("policy engine failed: ")
        assert words in record["reasons"][0]
        assert record["reasons"][0] in answer.content  # what the model is told
        assert "did not run" in answer.content
    assert executed == []
    assert messages[-1].content == "done"


def assert_all_allowed(result: dict[str, Any], db: Any) -> None:
    assert_every_call_answered_once(result["messages"])
    answers = tool_messages(result)
    assert all(a.status == "success" for a in answers.values()), answers
    # Each allowed call runs in a task of its own, so their order is not fixed.
    assert sorted(name for name, _ in db.executed) == [
        "get_customer_details",
        "get_customer_details",
        "update_customer_status",
    ]


# -- the baseline: the proxy passes OPA's answers through ----------------------------


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_healthy_proxy_allows_the_admin_turn(proxy: FaultProxy, mode: str) -> None:
    tools, db = customer_db_tools()
    graph = build_agent(OPAServer(proxy.url), mixed_turn_model(), tools)
    assert_all_allowed(run(graph, ADMIN, mode), db)
    assert proxy.decision_requests >= 3


# -- each fault, through the graph, then recovery with the same client --------------


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
@pytest.mark.parametrize(
    ("fault", "error", "words", "timeout"),
    [pytest.param((m, o), e, w, t, id=name) for name, m, o, e, w, t in FAULTS],
)
def test_fault_denies_every_call_then_recovers(
    proxy: FaultProxy,
    fault: tuple[str, dict[str, Any]],
    error: str,
    words: str,
    timeout: float,
    mode: str,
) -> None:
    tools, db = customer_db_tools()
    client = OPAServer(proxy.url, timeout=timeout)
    graph = build_agent(client, mixed_turn_model(), tools)
    recorder = Recorder()
    config = {"callbacks": [recorder.handler]}

    ran_during_fault: list[Any] = []

    async def both_phases() -> tuple[Any, Any]:
        # One event loop for both phases: the async client (and its pool) is the same.
        proxy.set(fault[0], **fault[1])
        failed = await graph.ainvoke(GO, config, context={"user": ADMIN})
        ran_during_fault.extend(db.executed)
        proxy.set("pass")
        healthy = await graph.ainvoke(GO, context={"user": INTERNAL})
        return failed, healthy

    if mode == "invoke":
        proxy.set(fault[0], **fault[1])
        failed = graph.invoke(GO, config, context={"user": ADMIN})
        ran_during_fault.extend(db.executed)
        proxy.set("pass")
        healthy = graph.invoke(GO, context={"user": INTERNAL})
    else:
        failed, healthy = asyncio.run(both_phases())

    assert proxy.decision_requests >= 3  # the fault really was in the path
    assert_all_failed_closed(failed, ran_during_fault, error, words)

    decisions = recorder.by_name("run_guardrail ")
    assert len(decisions) == 3
    for span in decisions:
        assert span.status.status_code == StatusCode.ERROR
        assert span.attributes[A.ERROR_TYPE] == error
        assert span.attributes[A.OPA_DECISION_ALLOW] is False
        assert span.attributes[A.OPA_DECISION_VERDICT] == "deny"
    assert not recorder.by_name("execute_tool ")
    recorder.provider.shutdown()

    # The same client and graph, the proxy healthy again: each call gets its own decision
    # (a late reply left on a kept-alive connection would show up here as a wrong verdict).
    check_mixed_result(healthy, db)


@pytest.mark.parametrize(
    ("fault", "error", "words", "timeout"),
    [pytest.param((m, o), e, w, t, id=name) for name, m, o, e, w, t in FAULTS],
)
def test_fault_through_a_requests_session(
    proxy: FaultProxy, fault: tuple[str, dict[str, Any]], error: str, words: str, timeout: float
) -> None:
    """With ``session=`` both sides send through the user's ``requests.Session``: the same
    failures, the same words (a session follows redirects by default; the guard never)."""
    client = OPAServer(proxy.url, timeout=timeout, session=requests.Session())

    async def async_side() -> tuple[Decision, Decision]:
        failed = await client.adecide(READ)
        proxy.set("pass")
        recovered = await client.adecide(READ)
        proxy.set(fault[0], **fault[1])
        return failed, recovered

    proxy.set(fault[0], **fault[1])
    sync_failed = client.decide(READ)
    async_failed, async_recovered = asyncio.run(async_side())
    for decision in (sync_failed, async_failed):
        assert not decision.allow
        assert decision.error == error, decision
        assert decision.reasons[0].startswith("policy engine failed: ")
        assert words in decision.reasons[0]
    proxy.set("pass")
    assert client.decide(READ).allow
    assert async_recovered.allow
    client.close()


@pytest.mark.parametrize("stack", ["pool", "session"])
def test_the_client_works_from_one_event_loop_after_another(opa_url: str, stack: str) -> None:
    """``asyncio.run`` twice, as scripts do: nothing in the engine is tied to a loop."""
    options: dict[str, Any] = {"session": requests.Session()} if stack == "session" else {}
    client = OPAServer(opa_url, **options)
    first = asyncio.run(client.adecide(READ))
    second = asyncio.run(client.adecide(READ))
    assert first.allow and first.error is None
    assert second.allow and second.error is None, second
    client.close()


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_unreachable_opa_denies_every_call(mode: str) -> None:
    tools, db = customer_db_tools()
    graph = build_agent(OPAServer(dead_url(), timeout=0.5), mixed_turn_model(), tools)
    assert_all_failed_closed(
        run(graph, ADMIN, mode), db.executed, ErrorType.UNREACHABLE, "unreachable"
    )


# -- timeouts bound the wall time -----------------------------------------------------


def timed(call: Callable[[], Decision]) -> tuple[Decision, float]:
    started = time.perf_counter()
    decision = call()
    return decision, time.perf_counter() - started


@pytest.mark.parametrize("side", ["sync", "async"])
def test_a_silent_opa_is_cut_off_at_the_timeout(proxy: FaultProxy, side: str) -> None:
    client = OPAServer(proxy.url, timeout=0.3)
    proxy.set("delay", delay=5.0)
    if side == "sync":
        decision, elapsed = timed(lambda: client.decide(READ))
    else:
        decision, elapsed = timed(lambda: asyncio.run(client.adecide(READ)))
    assert decision.error == ErrorType.TIMEOUT and not decision.allow
    assert decision.reasons == ("policy engine failed: OPA did not answer within 0.3s",)
    assert elapsed < 1.5, f"decide took {elapsed:.2f}s with timeout=0.3"


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_a_silent_opa_delays_a_whole_turn_by_one_timeout(proxy: FaultProxy, mode: str) -> None:
    tools, db = customer_db_tools()
    graph = build_agent(OPAServer(proxy.url, timeout=0.3), mixed_turn_model(), tools)
    proxy.set("delay", delay=5.0)
    started = time.perf_counter()
    result = run(graph, ADMIN, mode)
    elapsed = time.perf_counter() - started
    assert_all_failed_closed(result, db.executed, ErrorType.TIMEOUT, "within 0.3s")
    assert elapsed < 2.0, f"a turn of three calls took {elapsed:.2f}s"  # decided concurrently


@pytest.mark.parametrize("side", ["sync", "async"])
@pytest.mark.parametrize("stack", ["pool", "session"])
def test_a_slow_drip_reply_is_cut_off_at_the_timeout(
    proxy: FaultProxy, side: str, stack: str
) -> None:
    """A server that sends one byte every 0.1 s never lets a per-read timeout fire.

    ``timeout`` is documented as "Seconds a decision may take, connection included", so the
    whole decision must end near it, however the reply trickles in.
    """
    options: dict[str, Any] = {"session": requests.Session()} if stack == "session" else {}
    client = OPAServer(proxy.url, timeout=0.3, **options)
    proxy.set("trickle", delay=2.5, drip=0.1)
    if side == "sync":
        decision, elapsed = timed(lambda: client.decide(READ))
    else:
        decision, elapsed = timed(lambda: asyncio.run(client.adecide(READ)))
    assert not decision.allow and decision.error is not None
    assert elapsed < 1.5, f"decide took {elapsed:.2f}s with timeout=0.3 (slow-drip reply)"
    assert decision.error == ErrorType.TIMEOUT, decision


@pytest.mark.parametrize("side", ["sync", "async"])
@pytest.mark.parametrize("stack", ["pool", "session"])
def test_a_reply_cut_short_is_a_failure_not_a_decision(
    proxy: FaultProxy, side: str, stack: str
) -> None:
    """``Content-Length`` promises more than arrives: the part that did is no decision,
    even when it happens to be valid JSON that would allow the call."""
    options: dict[str, Any] = {"session": requests.Session()} if stack == "session" else {}
    client = OPAServer(proxy.url, timeout=2.0, **options)
    proxy.set("truncated")
    decision = client.decide(READ) if side == "sync" else asyncio.run(client.adecide(READ))
    assert not decision.allow, decision
    assert decision.error == ErrorType.UNREACHABLE, decision
    assert decision.reasons[0].startswith("policy engine failed: ")


# -- OPA killed and restarted on the same port ----------------------------------------


def test_opa_killed_and_restarted_sync(tmp_path: Path) -> None:
    port = free_port()
    paths = [POLICIES, TEST_POLICIES]
    first = OPAProcess(paths, port=port, log_path=tmp_path / "opa1.log").start()
    try:
        tools, db = customer_db_tools()
        client = OPAServer(first.url, timeout=1.0)
        graph = build_agent(client, mixed_turn_model(), tools)
        assert_all_allowed(graph.invoke(GO, context={"user": ADMIN}), db)

        assert first.process is not None
        first.process.kill()
        first.process.wait()
        db.executed.clear()
        down = graph.invoke(GO, context={"user": ADMIN})
        assert_all_failed_closed(down, db.executed, ErrorType.UNREACHABLE, "")
        assert client.decide(READ).error == ErrorType.UNREACHABLE
    finally:
        first.stop()

    with OPAProcess(paths, port=port, log_path=tmp_path / "opa2.log"):
        db.executed.clear()
        assert_all_allowed(graph.invoke(GO, context={"user": ADMIN}), db)
        assert client.decide(READ).allow
    client.close()


def test_opa_killed_and_restarted_async(tmp_path: Path) -> None:
    port = free_port()
    paths = [POLICIES, TEST_POLICIES]
    first = OPAProcess(paths, port=port, log_path=tmp_path / "opa1.log").start()
    second = OPAProcess(paths, port=port, log_path=tmp_path / "opa2.log")
    tools, db = customer_db_tools()
    client = OPAServer(first.url, timeout=1.0)
    graph = build_agent(client, mixed_turn_model(), tools)

    async def scenario() -> None:
        # One event loop throughout: the same async client and connection pool.
        assert_all_allowed(await graph.ainvoke(GO, context={"user": ADMIN}), db)
        assert first.process is not None
        first.process.kill()
        await asyncio.to_thread(first.process.wait)
        db.executed.clear()
        down = await graph.ainvoke(GO, context={"user": ADMIN})
        assert_all_failed_closed(down, db.executed, ErrorType.UNREACHABLE, "")
        assert (await client.adecide(READ)).error == ErrorType.UNREACHABLE
        await asyncio.to_thread(second.start)
        db.executed.clear()
        assert_all_allowed(await graph.ainvoke(GO, context={"user": ADMIN}), db)
        assert (await client.adecide(READ)).allow
        await client.aclose()

    try:
        asyncio.run(scenario())
    finally:
        first.stop()
        second.stop()


# -- fail-open: an explicit, logged, traced exception for engine failures only ---------


def fail_open_graph(engine: Any, tools: Any) -> Any:
    guard = PolicyGuardNode(engine, registry=tools, fail_open={"get_customer_details"})
    return build_agent(engine, mixed_turn_model(), tools, guard=guard)


def fail_open_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.levelno == logging.WARNING and "fail open" in r.getMessage()
    ]


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_fail_open_lets_only_the_named_tool_run_when_opa_is_down(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    tools, db = customer_db_tools()
    graph = fail_open_graph(OPAServer(dead_url(), timeout=0.5), tools)
    recorder = Recorder()
    with caplog.at_level(logging.WARNING, logger="langchain_opa_guard"):
        result = run(graph, INTERNAL, mode, {"callbacks": [recorder.handler]})

    assert_every_call_answered_once(result["messages"])
    assert [name for name, _ in db.executed] == ["get_customer_details", "get_customer_details"]
    answers = tool_messages(result)
    assert answers["c-read"].status == "success" and answers["c-pii"].status == "success"
    denied = answers["c-upd"]
    assert denied.status == "error"
    assert denied.artifact["opa_guard"]["error"] == ErrorType.UNREACHABLE

    spans = {s.attributes[A.GEN_AI_TOOL_CALL_ID]: s for s in recorder.by_name("run_guardrail ")}
    for opened in ("c-read", "c-pii"):
        assert spans[opened].attributes[A.OPA_DECISION_FAIL_OPEN] is True
        assert spans[opened].attributes[A.ERROR_TYPE] == ErrorType.UNREACHABLE
    assert A.OPA_DECISION_FAIL_OPEN not in spans["c-upd"].attributes
    recorder.provider.shutdown()

    warnings = fail_open_records(caplog)
    assert len(warnings) == 2
    assert all("get_customer_details" in r.getMessage() for r in warnings)


def test_fail_open_never_overrides_a_policy_deny(
    opa_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    tools, db = customer_db_tools()
    graph = fail_open_graph(OPAServer(opa_url), tools)
    recorder = Recorder()
    with caplog.at_level(logging.WARNING, logger="langchain_opa_guard"):
        for mode in ("invoke", "ainvoke"):
            db.executed.clear()
            result = run(graph, INTERNAL, mode, {"callbacks": [recorder.handler]})
            check_mixed_result(result, db)  # c-pii (email) stays denied
    assert not fail_open_records(caplog)
    for span in recorder.by_name("run_guardrail "):
        assert A.OPA_DECISION_FAIL_OPEN not in span.attributes
    recorder.provider.shutdown()


FAIL_OPEN_FAULTS = [
    pytest.param(
        "delay", {"delay": 3.0, "hold_health": True}, ErrorType.TIMEOUT, True, id="timeout_hung"
    ),
    # OPA up (its health check answers) but slow on this input, which the model's arguments
    # can cause (tests/test_redteam22_fail_open_slow_policy.py): not opened.
    pytest.param("delay", {"delay": 3.0}, ErrorType.TIMEOUT, False, id="timeout_slow"),
    pytest.param(
        "status", {"status": 503, "hold_health": True}, ErrorType.SERVER_ERROR, True, id="http_503"
    ),
    pytest.param(
        "close", {"hold_health": True}, ErrorType.UNREACHABLE, True, id="connection_closed"
    ),
    # The same failures while OPA answers its health check (a gateway reporting a slow
    # evaluation as a 504 or a reset, tests/test_redteam23_gateway_timeout_opens.py).
    pytest.param("status", {"status": 503}, ErrorType.SERVER_ERROR, False, id="http_503_up"),
    pytest.param("close", {}, ErrorType.UNREACHABLE, False, id="connection_closed_up"),
    pytest.param("undefined", {}, ErrorType.UNDEFINED, False, id="undefined"),
    pytest.param("malformed", {}, ErrorType.MALFORMED, False, id="malformed_json"),
    pytest.param("wrong_type", {"wrong_value": 42}, ErrorType.MALFORMED, False, id="result_number"),
    pytest.param("status", {"status": 404}, ErrorType.HTTP_STATUS, False, id="http_404"),
    pytest.param("status", {"status": 401}, ErrorType.UNAUTHORIZED, False, id="http_401"),
    pytest.param("redirect", {}, ErrorType.REDIRECT, False, id="redirect"),
]


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
@pytest.mark.parametrize(("fault", "options", "error", "opens"), FAIL_OPEN_FAULTS)
def test_fail_open_applies_to_transport_failures_only(
    proxy: FaultProxy,
    fault: str,
    options: dict[str, Any],
    error: str,
    opens: bool,
    mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """OPA unreachable, hung or answering 502-504, and not answering its health check
    either: a ``fail_open`` tool runs. An answer that is not a decision (undefined,
    malformed, refused, redirected), or any failure while OPA answers its health check (slow
    or failing on this input), is no reason to."""
    tools, db = customer_db_tools()
    graph = fail_open_graph(OPAServer(proxy.url, timeout=0.5), tools)
    proxy.set(fault, **options)
    with caplog.at_level(logging.WARNING, logger="langchain_opa_guard"):
        result = run(graph, INTERNAL, mode)
    assert_every_call_answered_once(result["messages"])
    answers = tool_messages(result)
    assert answers["c-upd"].artifact["opa_guard"]["error"] == error
    ran = [name for name, _ in db.executed]
    if opens:
        assert ran == ["get_customer_details", "get_customer_details"]
        assert len(fail_open_records(caplog)) == 2
    else:
        assert ran == [], f"{fault}: a fail_open tool ran on an answer that is not a decision"
        assert answers["c-read"].artifact["opa_guard"]["error"] == error
        assert not fail_open_records(caplog)


def interceptor_graph(guard: ToolCallGuard, tools: Any) -> Any:
    """agent -> tools, with the guard as the ToolNode's interceptor."""
    node = ToolNode(
        tools, wrap_tool_call=guard.wrap_tool_call, awrap_tool_call=guard.awrap_tool_call
    )
    model = mixed_turn_model()

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", node)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
    builder.add_edge("tools", "agent")
    return builder.compile()


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_fail_open_is_the_same_on_the_tool_node_interceptor(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The per-call surface (interceptor, middleware) honours ``fail_open`` sync and async."""
    tools, db = customer_db_tools()
    guard = ToolCallGuard(
        OPAServer(dead_url(), timeout=0.5), registry=tools, fail_open={"get_customer_details"}
    )
    with caplog.at_level(logging.WARNING, logger="langchain_opa_guard"):
        result = run(interceptor_graph(guard, tools), INTERNAL, mode)
    assert_every_call_answered_once(result["messages"])
    answers = tool_messages(result)
    assert answers["c-upd"].artifact["opa_guard"]["error"] == ErrorType.UNREACHABLE
    assert sorted(name for name, _ in db.executed) == [
        "get_customer_details",
        "get_customer_details",
    ], f"{mode}: fail_open={{'get_customer_details'}} was not honoured"
    assert len(fail_open_records(caplog)) == 2


# -- policy updates: the next call is judged by the new policy -----------------------


def edit_roles(policy_dir: Path, tool: str, change: Callable[[list[str]], list[str]]) -> None:
    data_file = policy_dir / "data.json"
    data = json.loads(data_file.read_text())
    roles = data["agent"]["config"]["tool_roles"]
    roles[tool] = change(roles[tool])
    data_file.write_text(json.dumps(data, indent=2))


def wait_for(predicate: Callable[[], bool], seconds: float = 10.0) -> float:
    """Poll until ``predicate()``; the time it took. Fails the test after ``seconds``."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"not reflected within {seconds}s")


def test_opa_watch_reloads_a_changed_policy_for_the_next_call(tmp_path: Path) -> None:
    policy_dir = tmp_path / "policies"
    shutil.copytree(POLICIES, policy_dir)
    tools, db = customer_db_tools()
    with OPAProcess([policy_dir], extra_args=["--watch"], log_path=tmp_path / "opa.log") as opa:
        client = OPAServer(opa.url)
        graph = build_agent(client, mixed_turn_model(), tools)
        check_mixed_result(graph.invoke(GO, context={"user": INTERNAL}), db)

        # The internal user loses get_customer_details.
        edit_roles(
            policy_dir, "get_customer_details", lambda r: [x for x in r if x != INTERNAL["role"]]
        )
        wait_for(lambda: not client.decide(READ).allow)
        db.executed.clear()
        result = graph.invoke(GO, context={"user": INTERNAL})
        assert_every_call_answered_once(result["messages"])
        assert db.executed == []
        read = tool_messages(result)["c-read"]
        assert read.status == "error" and read.artifact["opa_guard"]["error"] is None
        assert (
            'tool "get_customer_details" is not permitted for role "internal_user"' in read.content
        )

        # ... and gains it back.
        edit_roles(policy_dir, "get_customer_details", lambda r: [*r, INTERNAL["role"]])
        wait_for(lambda: client.decide(READ).allow)
        db.executed.clear()
        check_mixed_result(graph.invoke(GO, context={"user": INTERNAL}), db)
        client.close()


def test_embedded_reload_applies_good_edits_and_refuses_broken_ones(tmp_path: Path) -> None:
    policy_dir = tmp_path / "policies"
    shutil.copytree(POLICIES, policy_dir)
    engine = EmbeddedPolicy(policy_dir)
    tools, db = customer_db_tools()
    graph = build_agent(engine, mixed_turn_model(), tools)
    assert engine.decide(READ).allow
    revision = engine.revision

    edit_roles(
        policy_dir, "get_customer_details", lambda r: [x for x in r if x != INTERNAL["role"]]
    )
    assert engine.decide(READ).allow  # nothing changes before reload()
    engine.reload()
    assert engine.revision != revision
    denied = engine.decide(READ)
    assert not denied.allow and denied.error is None
    assert denied.codes == ("tool_not_permitted_for_role",)
    result = graph.invoke(GO, context={"user": INTERNAL})
    assert db.executed == [] and tool_messages(result)["c-read"].status == "error"
    in_force = engine.revision

    broken_edits: list[tuple[str, str]] = [
        ("agent/broken.rego", "package agent.authz\n\nallow if {\n"),  # syntax error
        ("data.json", '{"agent": {"config": '),  # not JSON
        ("agent/authz.rego", "package agent.other\n\nx := 1\n"),  # the decision disappears
    ]
    for name, text in broken_edits:
        target = policy_dir / name
        original = target.read_bytes() if target.exists() else None
        target.write_text(text)
        with pytest.raises(ValueError):
            engine.reload()
        # The last good policy stays in force, with no engine error.
        assert engine.revision == in_force
        kept = engine.decide(READ)
        assert not kept.allow and kept.error is None
        assert kept.codes == ("tool_not_permitted_for_role",)
        admin_read = engine.decide({**READ, "user": ADMIN})
        assert admin_read.allow and admin_read.error is None
        if original is None:
            target.unlink()
        else:
            target.write_bytes(original)

    db.executed.clear()
    result = graph.invoke(GO, context={"user": INTERNAL})
    assert_every_call_answered_once(result["messages"])
    assert all(m.artifact["opa_guard"]["error"] is None for m in tool_messages(result).values())
    assert db.executed == []

    edit_roles(policy_dir, "get_customer_details", lambda r: [*r, INTERNAL["role"]])
    engine.reload()
    check_mixed_result(graph.invoke(GO, context={"user": INTERNAL}), db)
