"""The information-flow pack: its input fields on every surface, both engines, and no
benchmark-specific names in its rules."""

from __future__ import annotations

import asyncio
import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from test_guard_node import INTERNAL
from test_integrations import plain_agent

from langchain_opa_guard import (
    DecisionLog,
    GuardedToolNode,
    OPAGuardMiddleware,
    PolicyEngine,
    PolicyGuardNode,
    ToolCallGuard,
)
from langchain_opa_guard.contract import MAX_REQUEST_CHARS, latest_request, task_document
from langchain_opa_guard.demo.web import web_tools
from langchain_opa_guard.testing import ScriptedChatModel, tool_call

ROOT = Path(__file__).resolve().parent.parent
PACK = [ROOT / "policies" / "agent" / "infoflow.rego", ROOT / "policies/agent/authz_infoflow.rego"]

# The web demo's tools, described for the information-flow pack.
FLOW_METADATA = {
    "fetch_url": {"trust": "untrusted", "read_only": True},
    "send_email": {"egress": {"destinations": ["to"], "content": ["subject", "body"]}},
}


# -- the input fields ------------------------------------------------------------------------


def test_latest_request_is_the_last_human_message() -> None:
    messages = [HumanMessage("first"), AIMessage("ok"), HumanMessage("second"), AIMessage("")]
    assert latest_request(messages) == "second"
    assert latest_request([AIMessage("no human")]) is None
    blocks = HumanMessage(content=[{"type": "text", "text": "a"}, {"type": "image"}, "b"])
    assert latest_request([blocks]) == "a\nb"
    assert len(latest_request([HumanMessage("x" * (MAX_REQUEST_CHARS + 5))]) or "") == (
        MAX_REQUEST_CHARS
    )


def test_task_document_reads_the_directory_from_context_or_configurable() -> None:
    messages = [HumanMessage("pay Bob")]
    assert task_document(messages, {"directory": ["bob"]}, {}) == {
        "request": "pay Bob",
        "directory": ["bob"],
    }
    config = {"configurable": {"directory": ("ann", "@corp.test")}}
    assert task_document(messages, None, config)["directory"] == ["ann", "@corp.test"]
    assert task_document([], None, {}) == {"request": None, "directory": None}


def fetch_then_mail(to: str = "bob@example.com") -> ScriptedChatModel:
    return ScriptedChatModel(
        script=[
            AIMessage("", tool_calls=[tool_call("fetch_url", {"url": "https://x.test"}, "f1")]),
            AIMessage(
                "", tool_calls=[tool_call("send_email", {"to": to, "subject": "s", "body": "b"})]
            ),
            "done",
        ]
    )


def surface_graph(surface: str, engine: PolicyEngine, log: DecisionLog) -> tuple[Any, Any]:
    """The web agent guarded by the node, the ToolNode interceptor or the middleware."""
    tools, outbox = web_tools()
    model = fetch_then_mail()
    if surface == "node":
        tool_node = GuardedToolNode(tools)
        guard = PolicyGuardNode(engine, registry=FLOW_METADATA, decision_log=log)
        builder = StateGraph(MessagesState)
        builder.add_node("agent", lambda s: {"messages": [model.invoke(s["messages"])]})
        builder.add_node("guard", guard)
        builder.add_node("tools", tool_node)
        builder.add_edge(START, "agent")
        builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
        builder.add_edge("tools", "agent")
        return builder.compile(checkpointer=InMemorySaver()), outbox
    if surface == "interceptor":
        interceptor = ToolCallGuard(engine, registry=FLOW_METADATA, decision_log=log)
        node = ToolNode(
            tools,
            wrap_tool_call=interceptor.wrap_tool_call,
            awrap_tool_call=interceptor.awrap_tool_call,
        )
        return plain_agent(model, node, InMemorySaver()), outbox
    middleware = OPAGuardMiddleware(engine, registry=FLOW_METADATA, decision_log=log)
    return create_agent(model, tools, middleware=[middleware], checkpointer=InMemorySaver()), outbox


SURFACES = ["node", "interceptor", "middleware"]


@pytest.mark.parametrize("surface", SURFACES)
def test_request_and_directory_reach_the_policy(
    surface: str, engine: PolicyEngine, tmp_path: Path
) -> None:
    import json

    log_path = tmp_path / "decisions.jsonl"
    graph, outbox = surface_graph(surface, engine, DecisionLog(log_path))
    config = {"configurable": {"thread_id": surface}}
    context = {"user": INTERNAL, "directory": ["ann@example.com"]}
    result = graph.invoke(
        {"messages": [("user", "Mail that page to bob@example.com")]}, config, context=context
    )
    assert "__interrupt__" not in result
    assert outbox.sent == [{"to": "bob@example.com", "subject": "s", "body": "b"}]
    documents = [json.loads(line)["input"] for line in log_path.read_text().splitlines()]
    assert [d["tool"]["name"] for d in documents] == ["fetch_url", "send_email"]
    for document in documents:
        assert document["context"]["request"] == "Mail that page to bob@example.com"
        assert document["context"]["directory"] == ["ann@example.com"]


@pytest.mark.parametrize("surface", SURFACES)
def test_destination_from_nowhere_is_held_for_a_human(surface: str, engine: PolicyEngine) -> None:
    graph, outbox = surface_graph(surface, engine, DecisionLog("/dev/null"))
    config = {"configurable": {"thread_id": surface}}
    result = graph.invoke(
        {"messages": [("user", "Summarise that page")]}, config, context={"user": INTERNAL}
    )
    reason = "neither in the user's request nor in the trusted directory"
    assert outbox.sent == []
    if surface == "interceptor":  # a ToolNode interceptor cannot pause: the call is denied
        reply = [m for m in result["messages"] if getattr(m, "name", "") == "send_email"][-1]
        assert "needs a human's approval" in str(reply.content) and reason in str(reply.content)
        return
    request = result["__interrupt__"][0].value["requests"][0]
    assert request["name"] == "send_email"
    assert reason in request["reasons"][0]


@pytest.mark.parametrize("surface", ["node", "middleware"])
def test_directory_vouches_for_a_destination(surface: str, engine: PolicyEngine) -> None:
    graph, outbox = surface_graph(surface, engine, DecisionLog("/dev/null"))
    config = {"configurable": {"thread_id": surface}}
    context = {"user": INTERNAL, "directory": ["@example.com"]}

    async def run() -> dict[str, Any]:
        return await graph.ainvoke(
            {"messages": [("user", "Summarise that page")]}, config, context=context
        )

    result = asyncio.run(run())
    assert "__interrupt__" not in result
    assert [m["to"] for m in outbox.sent] == ["bob@example.com"]


# -- both engines decide alike ---------------------------------------------------------------

READER = {"read_only": True, "trust": "untrusted"}
BOOKER = {"egress": {"destinations": ["place"], "content": ["note"]}}


def flow_input(args: dict[str, Any], request: str, metadata: dict[str, Any] = BOOKER) -> Any:
    past = {
        "name": "reviews",
        "args": {},
        "call_id": "h1",
        "metadata": READER,
        "decision": "allow",
        "reasons": [],
        "status": "success",
    }
    tool = {"name": "send_email", "args": args, "call_id": "c1", "metadata": metadata}
    return {
        "version": 1,
        "tool": tool,
        "user": INTERNAL,
        "context": {"thread_id": "t", "request": request, "directory": ["Zoë@corp.test"]},
        "turn": [tool],
        "history": [past],
    }


@pytest.mark.parametrize(
    ("args", "request_text", "verdict", "code"),
    [
        ({"place": "Breizh Café"}, "Réserve le Breizh Café, s'il te plaît", "allow", None),
        (
            {"place": "Breizh Café"},
            "Réserve le Breizh Cafés",
            "approval",
            "destination_not_requested",
        ),
        ({"place": "zoë@corp.test"}, "ok", "allow", None),
        ({"place": "Café"}, "ein Café!", "allow", None),
        ({"place": "ok", "note": "vois https://évil.test/é"}, "ok", "deny", "link_not_requested"),
        ({"place": "ok", "note": "écris à mailto:Zoë@corp.test"}, "ok", "allow", None),
        ({"place": "ok", "note": "mailto:zoë@évil.test"}, "ok", "deny", "link_not_requested"),
        (
            {"place": "ok", "note": '<a href="&#106;avascript:x">é</a>'},
            "ok",
            "deny",
            "link_not_requested",
        ),
        ({"place": ["ok", None]}, "ok", "approval", "destination_not_requested"),
    ],
)
def test_both_engines_agree_on_the_pack(
    engine: PolicyEngine, args: dict[str, Any], request_text: str, verdict: str, code: str | None
) -> None:
    decision = engine.decide(flow_input(args, request_text))
    assert decision.error is None
    assert decision.verdict == verdict
    assert list(decision.codes) == ([code] if code else [])


# -- the pack names no benchmark tool ------------------------------------------------------------


def benchmark_tool_names() -> set[str]:
    path = ROOT / "benchmarks" / "agentdojo" / "dojo_metadata.py"
    spec = importlib.util.spec_from_file_location("dojo_metadata", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {name for tools in module.TOOL_METADATA.values() for name in tools}


def rule_text(path: Path) -> str:
    """The Rego of ``path`` without its comments."""
    return "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())


def test_no_rule_of_the_pack_names_a_benchmark_tool() -> None:
    names = benchmark_tool_names()
    assert len(names) > 60  # the four suites' tools were found
    for path in PACK:
        text = rule_text(path)
        named = sorted(n for n in names if re.search(rf"(?<![\w.]){re.escape(n)}(?![\w])", text))
        assert named == [], f"{path.name} names benchmark tools: {named}"


def test_the_tool_name_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.rego"
    bad.write_text('package x\n\nblocked if input.tool.name == "send_money" # a comment\n')
    text = rule_text(bad)
    assert [n for n in benchmark_tool_names() if f'"{n}"' in text] == ["send_money"]


def test_no_rule_of_the_pack_holds_benchmark_values() -> None:
    values = ["mark.black", "US133", "bluesparrowtech", "Riverside", "secure-systems", "Fred"]
    for path in PACK:
        text = rule_text(path).lower()
        assert [v for v in values if v.lower() in text] == []
