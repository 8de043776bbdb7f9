"""Operating policies: rewrites, shadow mode, visibility, denial loops, resume re-checks."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import POLICIES, TEST_POLICIES
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.prebuilt import ToolNode
from langgraph.types import Command
from opa_process import OPAProcess, opa_binary
from test_approval import EMAIL, exfiltration_model
from test_guard_node import ADMIN, INTERNAL, assert_every_call_answered_once, mixed_turn_model
from test_integrations import plain_agent
from test_tracing import Recorder, run_mixed

from langchain_opa_guard import (
    EmbeddedPolicy,
    OPAGuardMiddleware,
    OPAServer,
    PolicyEngine,
    PolicyGuardNode,
    ToolCallGuard,
    visible_tools,
)
from langchain_opa_guard.demo import build_agent, customer_db_tools
from langchain_opa_guard.demo.web import web_tools
from langchain_opa_guard.testing import ScriptedChatModel, tool_call
from langchain_opa_guard.tracing import attributes as A

GUEST = {"id": "user-789", "role": "guest"}


# -- argument rewrites ---------------------------------------------------------------------


def search_tool(seen: list[dict[str, Any]]) -> StructuredTool:
    def search_orders(query: str, limit: int) -> str:
        seen.append({"query": query, "limit": limit})
        return f"{limit} orders"

    return StructuredTool.from_function(search_orders, description="Search orders.")


def rewrite_engines(opa_url: str) -> list[PolicyEngine]:
    return [
        EmbeddedPolicy(TEST_POLICIES, policy="rewrite/decision"),
        OPAServer(opa_url, policy="rewrite/decision"),
    ]


def test_a_rewritten_call_is_what_runs(opa_url: str) -> None:
    for engine in rewrite_engines(opa_url):
        seen: list[dict[str, Any]] = []
        tool = search_tool(seen)
        model = ScriptedChatModel(
            script=[
                AIMessage(
                    "",
                    tool_calls=[tool_call("search_orders", {"query": "late", "limit": 5000}, "s1")],
                ),
                "done",
            ]
        )
        rec = Recorder()
        graph = build_agent(engine, model, [tool])
        result = graph.invoke(
            {"messages": [("user", "go")]}, {"callbacks": [rec.handler]}, context={"user": ADMIN}
        )
        assert seen == [{"query": "late", "limit": 100}], engine
        ai = next(m for m in result["messages"] if isinstance(m, AIMessage) and m.tool_calls)
        assert ai.tool_calls[0]["args"] == {"query": "late", "limit": 100}  # history = what ran
        assert "[policy: the arguments of search_orders (s1) were adjusted: limit]" in ai.content
        (span,) = rec.by_name("run_guardrail")
        assert span.attributes[A.OPA_ARGS_REWRITTEN] is True
        assert (
            span.attributes[A.OPA_ARGS_PROPOSED_HASH] != span.attributes[A.OPA_ARGS_EXECUTED_HASH]
        )
        assert_every_call_answered_once(result["messages"])


def test_a_rewrite_through_the_interceptor(opa_url: str) -> None:
    for engine in rewrite_engines(opa_url):
        seen: list[dict[str, Any]] = []
        tool = search_tool(seen)
        guard = ToolCallGuard(engine)
        node = ToolNode(
            [tool], wrap_tool_call=guard.wrap_tool_call, awrap_tool_call=guard.awrap_tool_call
        )
        model = ScriptedChatModel(
            script=[
                AIMessage(
                    "", tool_calls=[tool_call("search_orders", {"query": "q", "limit": 999}, "s2")]
                ),
                "done",
            ]
        )
        result = asyncio.run(plain_agent(model, node).ainvoke({"messages": [("user", "go")]}))
        assert seen == [{"query": "q", "limit": 100}]
        answer = next(m for m in result["messages"] if isinstance(m, ToolMessage))
        assert answer.content.startswith(
            "[policy: the arguments were adjusted before the call ran: limit]"
        )


# -- shadow mode -----------------------------------------------------------------------------


def test_shadow_mode_runs_and_counts_would_deny(engine: PolicyEngine) -> None:
    tools, db = customer_db_tools()
    guard = PolicyGuardNode(engine, registry=tools, shadow=True)
    rec = Recorder()
    graph = build_agent(engine, mixed_turn_model(), tools, guard=guard)
    result = graph.invoke(
        {"messages": [("user", "go")]}, {"callbacks": [rec.handler]}, context={"user": INTERNAL}
    )
    assert len(db.executed) == 3  # nothing enforced
    assert_every_call_answered_once(result["messages"])
    shadowed = [s for s in rec.by_name("run_guardrail") if s.attributes.get(A.OPA_DECISION_SHADOW)]
    assert sorted(s.attributes[A.GEN_AI_TOOL_CALL_ID] for s in shadowed) == ["c-pii", "c-upd"]
    assert all(s.attributes[A.OPA_DECISION_WOULD] == "would_deny" for s in shadowed)
    counts: dict[str, int] = {}
    for point in rec.metric_points(A.METRIC_DECISIONS):
        verdict = point.attributes[A.OPA_DECISION_VERDICT]
        counts[verdict] = counts.get(verdict, 0) + point.value
    assert counts == {"allow": 1, "would_deny": 2}


def test_shadow_mode_per_rule(engine: PolicyEngine) -> None:
    tools, db = customer_db_tools()
    guard = PolicyGuardNode(engine, registry=tools, shadow={"pii_fields_for_role"})
    graph = build_agent(engine, mixed_turn_model(), tools, guard=guard)
    result = graph.invoke({"messages": [("user", "go")]}, context={"user": INTERNAL})
    ran = sorted(str(args.get("fields")) for name, args in db.executed)
    assert [name for name, _ in db.executed] == ["get_customer_details", "get_customer_details"]
    assert ran == ["{'email': True}", "{'name': True}"]
    denied = {
        m.tool_call_id
        for m in result["messages"]
        if isinstance(m, ToolMessage) and m.status == "error"
    }
    assert denied == {"c-upd"}  # the enforced rule still denies


def test_shadow_mode_in_the_middleware(engine: PolicyEngine) -> None:
    tools, db = customer_db_tools()
    agent = create_agent(
        mixed_turn_model(),
        tools,
        middleware=[OPAGuardMiddleware(engine, registry=tools, shadow={"update_customer_status"})],
    )
    agent.invoke({"messages": [("user", "go")]}, context={"user": INTERNAL})
    assert sorted(name for name, _ in db.executed) == [
        "get_customer_details",
        "update_customer_status",
    ]


# -- tool visibility -------------------------------------------------------------------------


def test_visible_tools_follow_the_policy(engine: PolicyEngine) -> None:
    tools = [*customer_db_tools()[0], *web_tools()[0]]
    names = lambda user: [t.name for t in visible_tools(engine, tools, user=user)]  # noqa: E731
    assert names(GUEST) == ["fetch_url"]
    assert names(INTERNAL) == ["get_customer_details", "fetch_url", "send_email"]
    assert len(names(ADMIN)) == 5
    assert names(None) == []


def test_visible_tools_fail_closed() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = OPAServer(f"http://127.0.0.1:{port}", timeout=0.3)
    assert visible_tools(dead, customer_db_tools()[0], user=ADMIN) == []


def test_the_middleware_binds_only_visible_tools(engine: PolicyEngine) -> None:
    bound: list[list[str]] = []

    class Recording(ScriptedChatModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            bound.append([getattr(t, "name", "") for t in tools])
            return self

    tools = [*customer_db_tools()[0], *web_tools()[0]]
    model = Recording(script=["hello"])
    agent = create_agent(
        model, tools, middleware=[OPAGuardMiddleware(engine, registry=tools, visibility=True)]
    )
    agent.invoke({"messages": [("user", "hi")]}, context={"user": GUEST})
    assert bound == [["fetch_url"]]


# -- denial loops ------------------------------------------------------------------------


def stubborn_model() -> tuple[ScriptedChatModel, list[int]]:
    turns: list[int] = []

    def again(messages: Any) -> AIMessage:
        turns.append(1)
        return AIMessage("", tool_calls=[tool_call("delete_customer", {"customer_id": "CUST-003"})])

    return ScriptedChatModel(script=[again] * 50), turns


def test_a_model_repeating_a_denied_call_is_stopped(engine: PolicyEngine) -> None:
    tools, db = customer_db_tools()
    model, turns = stubborn_model()
    graph = build_agent(engine, model, tools)
    result = graph.invoke(
        {"messages": [("user", "delete it")]}, {"recursion_limit": 60}, context={"user": GUEST}
    )
    assert len(turns) == 3 and db.executed == []
    denials = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    assert "denied 2 times" in denials[1].content and "denied 3 times" in denials[2].content
    assert "I stopped here" in result["messages"][-1].content
    assert_every_call_answered_once(result["messages"])


def test_the_loop_limit_is_configurable(embedded: PolicyEngine) -> None:
    tools, _ = customer_db_tools()
    model, turns = stubborn_model()
    guard = PolicyGuardNode(embedded, registry=tools, max_repeated_denials=5)
    graph = build_agent(embedded, model, tools, guard=guard)
    graph.invoke({"messages": [("user", "x")]}, {"recursion_limit": 60}, context={"user": GUEST})
    assert len(turns) == 5


# -- resume re-checks -------------------------------------------------------------------------


def approval_graph(engine: PolicyEngine, thread: str) -> tuple[Any, Any, dict[str, Any]]:
    tools, outbox = web_tools()
    graph = build_agent(engine, exfiltration_model(), tools, checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": thread}}
    first = graph.invoke({"messages": [("user", "go")]}, config, context={"user": INTERNAL})
    assert "__interrupt__" in first and outbox.sent == []
    return graph, outbox, config


def test_a_subject_changed_while_waiting_is_checked_again(engine: PolicyEngine) -> None:
    graph, outbox, config = approval_graph(engine, "recheck-subject")
    # The user lost their role while the graph waited: the approval is not honoured.
    result = graph.invoke(Command(resume="approve"), config, context={"user": GUEST})
    assert outbox.sent == []
    reply = next(
        m for m in result["messages"] if isinstance(m, ToolMessage) and m.tool_call_id == "m1"
    )
    assert 'not permitted for role "guest"' in reply.content
    assert_every_call_answered_once(result["messages"])


def test_a_policy_changed_while_waiting_is_checked_again(tmp_path: Path) -> None:
    copy = tmp_path / "policies"
    shutil.copytree(POLICIES, copy, ignore=shutil.ignore_patterns("*_test.rego"))
    engine = EmbeddedPolicy(copy)
    graph, outbox, config = approval_graph(engine, "recheck-revision")
    data = json.loads((copy / "data.json").read_text())
    data["agent"]["config"]["tool_roles"]["send_email"] = ["admin"]
    (copy / "data.json").write_text(json.dumps(data))
    engine.reload()
    result = graph.invoke(Command(resume="approve"), config, context={"user": INTERNAL})
    assert outbox.sent == []
    reply = next(
        m for m in result["messages"] if isinstance(m, ToolMessage) and m.tool_call_id == "m1"
    )
    assert "not permitted" in reply.content


def test_an_opa_bundle_revision_change_is_checked_again(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(POLICIES, bundle, ignore=shutil.ignore_patterns("*_test.rego"))
    (bundle / ".manifest").write_text(json.dumps({"revision": "r1", "roots": [""]}))
    with OPAProcess([], extra_args=["--bundle", "--watch", str(bundle)]) as opa:
        engine = OPAServer(opa.url)
        graph, outbox, config = approval_graph(engine, "recheck-opa")
        assert engine.current_revision() == "r1"
        data = json.loads((bundle / "data.json").read_text())
        data["agent"]["config"]["tool_roles"]["send_email"] = ["admin"]
        (bundle / "data.json").write_text(json.dumps(data))
        (bundle / ".manifest").write_text(json.dumps({"revision": "r2", "roots": [""]}))
        deadline = time.monotonic() + 15
        while engine.current_revision() != "r2" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert engine.current_revision() == "r2"
        result = graph.invoke(Command(resume="approve"), config, context={"user": INTERNAL})
        assert outbox.sent == []
        reply = next(
            m for m in result["messages"] if isinstance(m, ToolMessage) and m.tool_call_id == "m1"
        )
        assert "not permitted" in reply.content


def test_decisions_from_an_opa_bundle_carry_its_revision(tmp_path: Path) -> None:
    archive = tmp_path / "bundle.tar.gz"
    import subprocess

    subprocess.run(
        [opa_binary(), "build", "--revision", "rev-7", "-o", str(archive), str(POLICIES)],
        check=True,
        capture_output=True,
    )
    with OPAProcess([], extra_args=["--bundle", str(archive)]) as opa:
        engine = OPAServer(opa.url)
        rec = Recorder()
        run_mixed(engine, rec, "invoke")
        revisions = {s.attributes.get(A.OPA_POLICY_REVISION) for s in rec.by_name("run_guardrail")}
        assert revisions == {"rev-7"}
        assert engine.current_revision() == "rev-7"
        assert EmbeddedPolicy(archive).revision == "rev-7"


@pytest.mark.parametrize("answer", ["approve", "reject"])
def test_an_unchanged_resume_keeps_the_decision(engine: PolicyEngine, answer: str) -> None:
    graph, outbox, config = approval_graph(engine, f"recheck-none-{answer}")
    graph.invoke(Command(resume=answer), config, context={"user": INTERNAL})
    assert outbox.sent == ([EMAIL] if answer == "approve" else [])
