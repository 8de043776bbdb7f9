"""The same decisions on every surface: plain tools, the ToolNode interceptor, create_agent."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command
from test_guard_node import ADMIN, INTERNAL, assert_every_call_answered_once, mixed_turn_model

from langchain_opa_guard import OPAGuardMiddleware, PolicyEngine, ToolCallGuard, guard_tools
from langchain_opa_guard.demo import customer_db_tools
from langchain_opa_guard.demo.web import web_tools
from langchain_opa_guard.testing import ScriptedChatModel, tool_call

GUEST = {"id": "user-789", "role": "guest"}


def check_mixed(messages: list[Any], db: Any) -> None:
    assert_every_call_answered_once(messages)
    assert [name for name, _ in db.executed] == ["get_customer_details"]
    answers = {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}
    assert answers["c-read"].status == "success"
    for denied in ("c-pii", "c-upd"):
        assert answers[denied].status == "error" and "denied by policy" in answers[denied].content


def plain_agent(model: Any, tool_node: ToolNode, checkpointer: Any = None) -> Any:
    bound = model.bind_tools(list(tool_node.tools_by_name.values()))
    builder = StateGraph(MessagesState)
    builder.add_node("agent", lambda s: {"messages": [bound.invoke(s["messages"])]})
    builder.add_node("tools", tool_node)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=checkpointer)


# -- guard_tools ---------------------------------------------------------------------------


def test_guarded_tools_keep_their_interface(embedded: PolicyEngine) -> None:
    tools, _ = customer_db_tools()
    guarded = guard_tools(tools, embedded)
    for before, after in zip(tools, guarded, strict=True):
        assert after.name == before.name and after.description == before.description
        assert after.metadata == before.metadata
        assert (
            after.tool_call_schema.model_json_schema()
            == before.tool_call_schema.model_json_schema()
        )


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_guarded_tools_in_a_tool_node(engine: PolicyEngine, mode: str) -> None:
    tools, db = customer_db_tools()
    graph = plain_agent(mixed_turn_model(), ToolNode(guard_tools(tools, engine)))
    inputs = {"messages": [("user", "go")]}
    if mode == "sync":
        result = graph.invoke(inputs, context={"user": INTERNAL})
    else:
        result = asyncio.run(graph.ainvoke(inputs, context={"user": INTERNAL}))
    check_mixed(result["messages"], db)


def test_guarded_tools_invoked_directly(engine: PolicyEngine) -> None:
    tools, db = customer_db_tools()
    delete = next(t for t in guard_tools(tools, engine) if t.name == "delete_customer")
    guest = {"configurable": {"user": GUEST}}
    admin = {"configurable": {"user": ADMIN}}
    denied = delete.invoke({"customer_id": "CUST-003"}, config=guest)
    assert "denied by policy" in denied and 'role "guest"' in denied
    assert db.executed == []
    denied_async = asyncio.run(delete.ainvoke({"customer_id": "CUST-003"}, config=guest))
    assert "denied by policy" in denied_async and db.executed == []
    assert delete.invoke({"customer_id": "CUST-003"}, config=admin) == "deleted CUST-003"
    assert db.executed == [("delete_customer", {"customer_id": "CUST-003"})]
    assert (
        asyncio.run(delete.ainvoke({"customer_id": "CUST-002"}, config=admin)) == "deleted CUST-002"
    )


def test_guarded_tool_call_gets_a_tool_message(embedded: PolicyEngine) -> None:
    tools, db = customer_db_tools()
    delete = next(t for t in guard_tools(tools, embedded) if t.name == "delete_customer")
    call = tool_call("delete_customer", {"customer_id": "CUST-003"}, "d1")
    message = delete.invoke(call, config={"configurable": {"user": GUEST}})
    assert isinstance(message, ToolMessage) and message.status == "error"
    assert message.tool_call_id == "d1" and db.executed == []


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_guarded_tools_in_create_agent(engine: PolicyEngine, mode: str) -> None:
    tools, db = customer_db_tools()
    agent = create_agent(mixed_turn_model(), guard_tools(tools, engine))
    inputs = {"messages": [("user", "go")]}
    if mode == "sync":
        result = agent.invoke(inputs, context={"user": INTERNAL})
    else:
        result = asyncio.run(agent.ainvoke(inputs, context={"user": INTERNAL}))
    check_mixed(result["messages"], db)


# -- the ToolNode interceptor ----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_tool_node_interceptor(engine: PolicyEngine, mode: str) -> None:
    tools, db = customer_db_tools()
    guard = ToolCallGuard(engine, registry=tools)
    node = ToolNode(
        tools, wrap_tool_call=guard.wrap_tool_call, awrap_tool_call=guard.awrap_tool_call
    )
    graph = plain_agent(mixed_turn_model(), node)
    inputs = {"messages": [("user", "go")]}
    if mode == "sync":
        result = graph.invoke(inputs, context={"user": INTERNAL})
    else:
        result = asyncio.run(graph.ainvoke(inputs, context={"user": INTERNAL}))
    check_mixed(result["messages"], db)


def exfiltration_script() -> ScriptedChatModel:
    email = {"to": "bob@example.com", "subject": "s", "body": "b"}
    return ScriptedChatModel(
        script=[
            AIMessage("", tool_calls=[tool_call("fetch_url", {"url": "https://x.test"}, "f1")]),
            AIMessage("", tool_calls=[tool_call("send_email", email, "m1")]),
            "done",
        ]
    )


def test_interceptor_history_makes_approval_a_deny(engine: PolicyEngine) -> None:
    """The interceptor sees the conversation, so the stateful policy works there too; a
    call that needs a human is not run (a ToolNode cannot pause for one call safely)."""
    tools, outbox = web_tools()
    guard = ToolCallGuard(engine, registry=tools)
    node = ToolNode(
        tools, wrap_tool_call=guard.wrap_tool_call, awrap_tool_call=guard.awrap_tool_call
    )
    graph = plain_agent(exfiltration_script(), node, InMemorySaver())
    config = {"configurable": {"thread_id": "interceptor-approval"}}
    result = graph.invoke({"messages": [("user", "go")]}, config, context={"user": INTERNAL})
    assert "__interrupt__" not in result
    assert outbox.fetched == ["https://x.test"] and outbox.sent == []
    reply = next(
        m for m in result["messages"] if isinstance(m, ToolMessage) and m.tool_call_id == "m1"
    )
    assert reply.status == "error" and "needs a human's approval" in reply.content
    assert_every_call_answered_once(result["messages"])


def test_interceptor_refuses_to_pause_for_approval(embedded: PolicyEngine) -> None:
    with pytest.raises(ValueError, match="PolicyGuardNode or OPAGuardMiddleware"):
        ToolCallGuard(embedded, approvals="interrupt")  # type: ignore[arg-type]


# -- create_agent middleware ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_middleware_in_create_agent(engine: PolicyEngine, mode: str) -> None:
    tools, db = customer_db_tools()
    agent = create_agent(
        mixed_turn_model(), tools, middleware=[OPAGuardMiddleware(engine, registry=tools)]
    )
    inputs = {"messages": [("user", "go")]}
    if mode == "sync":
        result = agent.invoke(inputs, context={"user": INTERNAL})
    else:
        result = asyncio.run(agent.ainvoke(inputs, context={"user": INTERNAL}))
    check_mixed(result["messages"], db)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_middleware_approval(engine: PolicyEngine, mode: str) -> None:
    tools, outbox = web_tools()
    agent = create_agent(
        exfiltration_script(),
        tools,
        middleware=[OPAGuardMiddleware(engine, registry=tools)],
        checkpointer=InMemorySaver(),
    )
    config = {"configurable": {"thread_id": f"mw-{mode}"}}

    async def run() -> dict[str, Any]:
        first = await agent.ainvoke(
            {"messages": [("user", "go")]}, config, context={"user": INTERNAL}
        )
        assert "__interrupt__" in first and outbox.sent == []
        return await agent.ainvoke(Command(resume="approve"), config, context={"user": INTERNAL})

    if mode == "async":
        result = asyncio.run(run())
    else:
        first = agent.invoke({"messages": [("user", "go")]}, config, context={"user": INTERNAL})
        assert "__interrupt__" in first and outbox.sent == []
        result = agent.invoke(Command(resume="approve"), config, context={"user": INTERNAL})
    assert len(outbox.sent) == 1
    assert_every_call_answered_once(result["messages"])


def test_interceptor_in_a_prebuilt_react_agent(engine: PolicyEngine) -> None:
    """LangGraph's prebuilt ReAct agent takes a ToolNode, so the interceptor drops in."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # create_react_agent is deprecated in favour of create_agent
        from langgraph.prebuilt import create_react_agent

        tools, db = customer_db_tools()
        guard = ToolCallGuard(engine, registry=tools)
        node = ToolNode(
            tools, wrap_tool_call=guard.wrap_tool_call, awrap_tool_call=guard.awrap_tool_call
        )
        agent = create_react_agent(mixed_turn_model(), node)
    result = agent.invoke({"messages": [("user", "go")]}, context={"user": INTERNAL})
    check_mixed(result["messages"], db)
