"""The guard node in real LangGraph graphs, on both engines."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.prebuilt.tool_node import ToolRuntime

from langchain_opa_guard import Decision, ErrorType, OPAServer, PolicyEngine, PolicyGuardNode
from langchain_opa_guard.demo import build_agent, customer_db_tools, load_scenarios, scenario_model
from langchain_opa_guard.testing import ScriptedChatModel, tool_call

INTERNAL = {"id": "user-456", "role": "internal_user"}
ADMIN = {"id": "user-123", "role": "admin"}


def assert_every_call_answered_once(messages: list[BaseMessage]) -> None:
    """The history an OpenAI-style API accepts: each call answered once, right after its turn."""
    for index, message in enumerate(messages):
        if not isinstance(message, AIMessage) or not message.tool_calls:
            continue
        answers = []
        for later in messages[index + 1 :]:
            if not isinstance(later, ToolMessage):
                break
            answers.append(later.tool_call_id)
        assert Counter(answers) == Counter(c["id"] for c in message.tool_calls)


def mixed_turn_model() -> ScriptedChatModel:
    return ScriptedChatModel(
        script=[
            AIMessage(
                "",
                tool_calls=[
                    tool_call(
                        "get_customer_details",
                        {"customer_id": "CUST-001", "fields": {"name": True}},
                        "c-read",
                    ),
                    tool_call(
                        "get_customer_details",
                        {"customer_id": "CUST-001", "fields": {"email": True}},
                        "c-pii",
                    ),
                    tool_call(
                        "update_customer_status",
                        {"customer_id": "CUST-002", "new_status": "active"},
                        "c-upd",
                    ),
                ],
            ),
            "done",
        ]
    )


def check_mixed_result(result: dict[str, Any], db: Any) -> None:
    messages = result["messages"]
    assert_every_call_answered_once(messages)
    assert db.executed == [
        ("get_customer_details", {"customer_id": "CUST-001", "fields": {"name": True}})
    ]
    answers = {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}
    assert answers["c-read"].status == "success" and "Ada Lovelace" in answers["c-read"].content
    for denied in ("c-pii", "c-upd"):
        assert answers[denied].status == "error"
        assert "denied by policy" in answers[denied].content
        assert answers[denied].artifact["opa_guard"]["verdict"] == "deny"
    assert "email" in answers["c-pii"].content
    assert messages[-1].content == "done"


def test_mixed_turn_sync(engine: PolicyEngine) -> None:
    tools, db = customer_db_tools()
    graph = build_agent(engine, mixed_turn_model(), tools)
    check_mixed_result(graph.invoke({"messages": [("user", "go")]}, context={"user": INTERNAL}), db)


def test_mixed_turn_async(engine: PolicyEngine) -> None:
    tools, db = customer_db_tools()
    graph = build_agent(engine, mixed_turn_model(), tools)
    result = asyncio.run(graph.ainvoke({"messages": [("user", "go")]}, context={"user": INTERNAL}))
    check_mixed_result(result, db)


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_streaming(engine: PolicyEngine, mode: str) -> None:
    tools, db = customer_db_tools()
    graph = build_agent(engine, mixed_turn_model(), tools)
    args = ({"messages": [("user", "go")]},)
    kwargs: dict[str, Any] = {"context": {"user": INTERNAL}, "stream_mode": "updates"}
    if mode == "stream":
        chunks = list(graph.stream(*args, **kwargs))
    else:

        async def collect() -> list[Any]:
            return [c async for c in graph.astream(*args, **kwargs)]

        chunks = asyncio.run(collect())
    nodes = [next(iter(c)) for c in chunks]
    assert nodes == ["agent", "guard", "tools", "agent"]
    assert len(chunks[1]["guard"]["messages"]) == 2  # the two denials, answered by the guard
    assert [m.tool_call_id for m in chunks[2]["tools"]["messages"]] == ["c-read"]
    assert len(db.executed) == 1


def test_all_allowed_goes_straight_to_tools(engine: PolicyEngine) -> None:
    tools, db = customer_db_tools()
    model = ScriptedChatModel(
        script=[
            AIMessage(
                "",
                tool_calls=[
                    tool_call(
                        "get_customer_details",
                        {"customer_id": "CUST-001", "fields": {"email": True}},
                        "a1",
                    ),
                    tool_call("delete_customer", {"customer_id": "CUST-003"}, "a2"),
                ],
            ),
            "ok",
        ]
    )
    graph = build_agent(engine, model, tools)
    result = graph.invoke({"messages": [("user", "go")]}, context={"user": ADMIN})
    assert_every_call_answered_once(result["messages"])
    assert sorted(name for name, _ in db.executed) == ["delete_customer", "get_customer_details"]


def test_nothing_allowed_goes_back_to_the_agent(engine: PolicyEngine) -> None:
    tools, db = customer_db_tools()
    graph = build_agent(engine, mixed_turn_model(), tools)
    guest = {"id": "user-789", "role": "guest"}
    chunks = list(graph.stream({"messages": [("user", "go")]}, context={"user": guest}))
    assert [next(iter(c)) for c in chunks] == ["agent", "guard", "agent"]
    assert db.executed == []


@pytest.mark.parametrize("scenario", load_scenarios(), ids=lambda s: s.name)
def test_five_scenarios_through_the_graph(engine: PolicyEngine, scenario: Any) -> None:
    tools, db = customer_db_tools()
    graph = build_agent(engine, scenario_model(load_scenarios()), tools)
    result = graph.invoke({"messages": [("user", scenario.query)]}, context={"user": scenario.user})
    assert_every_call_answered_once(result["messages"])
    ran = [name for name, _ in db.executed]
    assert ran == ([scenario.tool] if scenario.expect == "allow" else [])


def test_user_from_configurable_when_no_context(engine: PolicyEngine) -> None:
    tools, db = customer_db_tools()
    graph = build_agent(engine, mixed_turn_model(), tools)
    result = graph.invoke({"messages": [("user", "go")]}, {"configurable": {"user": INTERNAL}})
    check_mixed_result(result, db)


def test_unreachable_opa_denies_everything_inside_the_graph() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tools, db = customer_db_tools()
    graph = build_agent(
        OPAServer(f"http://127.0.0.1:{port}", timeout=0.5), mixed_turn_model(), tools
    )
    for result in (
        graph.invoke({"messages": [("user", "go")]}, context={"user": ADMIN}),
        asyncio.run(graph.ainvoke({"messages": [("user", "go")]}, context={"user": ADMIN})),
    ):
        assert_every_call_answered_once(result["messages"])
        answers = [m for m in result["messages"] if isinstance(m, ToolMessage)]
        assert len(answers) == 3
        for answer in answers:
            assert answer.status == "error"
            assert "OPA is unreachable" in answer.content
            assert answer.artifact["opa_guard"]["error"] == ErrorType.UNREACHABLE
    assert db.executed == []


class RaisingEngine:
    engine_name = "broken"
    policy = "agent/authz/decision"

    def decide(self, input: Any) -> Decision:
        raise RuntimeError("boom")

    async def adecide(self, input: Any) -> Decision:
        raise RuntimeError("boom")

    def decide_many(self, inputs: Any) -> list[Decision]:
        raise RuntimeError("boom")

    async def adecide_many(self, inputs: Any) -> list[Decision]:
        raise RuntimeError("boom")


def test_an_engine_that_raises_denies_and_never_crashes_the_graph() -> None:
    tools, db = customer_db_tools()
    graph = build_agent(RaisingEngine(), mixed_turn_model(), tools)
    result = graph.invoke({"messages": [("user", "go")]}, context={"user": ADMIN})
    result_async = asyncio.run(
        graph.ainvoke({"messages": [("user", "go")]}, context={"user": ADMIN})
    )
    for r in (result, result_async):
        answers = [m for m in r["messages"] if isinstance(m, ToolMessage)]
        assert len(answers) == 3 and all(
            a.artifact["opa_guard"]["error"] == "engine_error" for a in answers
        )
    assert db.executed == []


def test_calls_without_usable_ids_are_denied_and_answered_once(engine: PolicyEngine) -> None:
    tools, db = customer_db_tools()
    read = {"customer_id": "CUST-001", "fields": {"name": True}}
    model = ScriptedChatModel(
        script=[
            AIMessage(
                "",
                tool_calls=[
                    tool_call("get_customer_details", read, "dup"),
                    tool_call("get_customer_details", read, "dup"),
                    tool_call("get_customer_details", read, "fine"),
                ],
            ),
            "ok",
        ]
    )
    graph = build_agent(engine, model, tools)
    result = graph.invoke({"messages": [("user", "go")]}, context={"user": ADMIN})
    answers = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    # One answer per id: the duplicated id is denied once, and nothing of it runs.
    assert sorted(a.tool_call_id for a in answers) == ["dup", "fine"]
    assert [a.status for a in answers if a.tool_call_id == "dup"] == ["error"]
    assert len(db.executed) == 1


def test_the_policy_input_document(embedded: PolicyEngine) -> None:
    seen: list[dict[str, Any]] = []

    def capture(document: dict[str, Any], call: Any, state: Any) -> dict[str, Any]:
        seen.append(document)
        return {**document, "extra": {"from": "builder"}}

    tools, _ = customer_db_tools()
    tool_node_tools = {t.name: t.metadata for t in tools}
    guard = PolicyGuardNode(embedded, registry=tool_node_tools, build_input=capture)
    graph = build_agent(
        embedded, mixed_turn_model(), tools, checkpointer=InMemorySaver(), guard=guard
    )
    config = {"configurable": {"thread_id": "thread-7", "tenant": "acme"}}
    graph.invoke({"messages": [("user", "go")]}, config, context={"user": INTERNAL})
    assert len(seen) == 3
    first = seen[0]
    assert first["version"] == 1
    assert first["tool"] == {
        "name": "get_customer_details",
        "args": {"customer_id": "CUST-001", "fields": {"name": True}},
        "call_id": "c-read",
        "metadata": {"toolkit": "CustomerDBTool"},
    }
    assert first["user"] == INTERNAL
    assert first["context"]["thread_id"] == "thread-7"
    assert first["context"]["tenant"] == "acme"
    assert first["context"]["node"] == "guard" and isinstance(first["context"]["step"], int)
    assert [c["call_id"] for c in first["turn"]] == ["c-read", "c-pii", "c-upd"]
    assert first["history"] == []

    # A second question on the same thread: the earlier calls come back as history.
    seen.clear()
    graph.invoke({"messages": [("user", "again")]}, config, context={"user": INTERNAL})
    history = seen[0]["history"]
    assert [(h["call_id"], h["decision"], h["status"]) for h in history] == [
        ("c-read", "allow", "success"),
        ("c-pii", "deny", "error"),
        ("c-upd", "deny", "error"),
    ]
    assert history[1]["reasons"] and "PII" in history[1]["reasons"][0]


def test_generic_and_custom_denial_text(embedded: PolicyEngine) -> None:
    tools, _ = customer_db_tools()
    for style, expected in (
        ("generic", 'The tool call "update_customer_status" was denied by policy and did not run.'),
        (lambda d, c: f"no ({len(d.reasons)})", "no (1)"),
    ):
        guard = PolicyGuardNode(embedded, registry=tools, denial_style=style)  # type: ignore[arg-type]
        graph = build_agent(embedded, mixed_turn_model(), tools, guard=guard)
        result = graph.invoke({"messages": [("user", "go")]}, context={"user": INTERNAL})
        denial = next(m for m in result["messages"] if getattr(m, "tool_call_id", "") == "c-upd")
        assert str(denial.content).startswith(expected)
        assert "admin" not in str(denial.content)


def test_graph_draws_the_guard(embedded: PolicyEngine) -> None:
    tools, _ = customer_db_tools()
    mermaid = build_agent(embedded, mixed_turn_model(), tools).get_graph().draw_mermaid()
    assert "agent -. &nbsp;tools&nbsp; .-> guard;" in mermaid
    assert "guard -.-> tools;" in mermaid and "guard -.-> agent;" in mermaid
    assert "tools --> agent;" in mermaid


def tools_task_inputs(graph: Any, user: dict[str, Any]) -> list[Any]:
    """The input of every task of the ``tools`` node in one run."""
    seen = []
    for event in graph.stream(
        {"messages": [("user", "Get CUST-001's name")]},
        context={"user": user},
        stream_mode="tasks",
    ):
        if event.get("name") == "tools" and "input" in event:
            seen.append(event["input"])
    return seen


def test_calls_go_to_a_tools_node_that_reads_no_state_without_the_conversation(
    embedded: PolicyEngine,
) -> None:
    from langchain_opa_guard.guards.execution import reads_no_state

    tools, db = customer_db_tools()
    model = ScriptedChatModel(
        script=[
            AIMessage(
                "",
                tool_calls=[
                    tool_call("get_customer_details", {"customer_id": "CUST-001"}, "r1"),
                    tool_call("get_customer_details", {"customer_id": "CUST-002"}, "r2"),
                ],
            ),
            "ok",
        ]
    )
    graph = build_agent(embedded, model, tools)
    inputs = tools_task_inputs(graph, ADMIN)
    # The calls with their grants and no copy of the conversation.
    assert sorted(c["id"] for i in inputs for c in i["calls"]) == ["r1", "r2"]
    assert all(i["state"] == {"messages": []} for i in inputs)
    assert sorted(args["customer_id"] for _, args in db.executed) == ["CUST-001", "CUST-002"]
    from langchain_opa_guard import GuardedToolNode

    assert reads_no_state(GuardedToolNode(tools))
    assert not reads_no_state(GuardedToolNode(tools, wrap_tool_call=lambda r, h: h(r)))
    assert not reads_no_state(tools)


def test_a_tool_that_reads_the_state_gets_the_conversation(embedded: PolicyEngine) -> None:
    from langchain_core.tools import tool

    from langchain_opa_guard import GuardedToolNode
    from langchain_opa_guard.guards.execution import reads_no_state

    seen: list[list[str]] = []

    @tool
    def get_customer_details(customer_id: str, runtime: ToolRuntime) -> str:
        """Read a customer."""
        seen.append([m.type for m in runtime.state["messages"]])
        return "Alice"

    get_customer_details.metadata = {"toolkit": "CustomerDBTool"}
    assert not reads_no_state(GuardedToolNode([get_customer_details]))
    model = ScriptedChatModel(
        script=[
            AIMessage(
                "", tool_calls=[tool_call("get_customer_details", {"customer_id": "C-1"}, "s1")]
            ),
            "ok",
        ]
    )
    graph = build_agent(embedded, model, [get_customer_details])
    inputs = tools_task_inputs(graph, ADMIN)
    # The conversation as the graph holds it, the model's message last (the whole turn).
    assert [m.type for m in inputs[0]["state"]["messages"]] == ["human", "ai"]
    assert seen == [["human", "ai"]]


@pytest.mark.parametrize("reader", ["interceptor", "subclass"])
def test_calls_sent_without_the_state_to_a_node_that_reads_it_run_nothing(
    embedded: PolicyEngine, reader: str
) -> None:
    """The guard sends calls without the state because its registry= reads none; the graph's
    tools node is another one, whose interceptor reads the state: it refuses to run."""
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import tools_condition

    from langchain_opa_guard import GuardedToolNode, GuardWiringError

    tools, db = customer_db_tools()
    seen: list[int] = []

    def reads_state(request: Any, handler: Any) -> Any:
        seen.append(len(request.state["messages"]))
        return handler(request)

    model = ScriptedChatModel(
        script=[
            AIMessage(
                "",
                tool_calls=[tool_call("get_customer_details", {"customer_id": "CUST-001"}, "r1")],
            ),
            "ok",
        ]
    )
    builder = StateGraph(MessagesState)
    builder.add_node("agent", lambda s: {"messages": [model.invoke(s["messages"])]})
    builder.add_node(
        "guard", PolicyGuardNode(embedded, registry=GuardedToolNode(tools), user_key="user")
    )

    class StateReadingNode(GuardedToolNode):
        """A node of one's own that reads the state its own way."""

        def invoke(self, input: Any, config: Any = None, **kwargs: Any) -> Any:
            seen.append(len((input.get("state") or {}).get("messages") or []))
            return super().invoke(input, config, **kwargs)

    tools_node = (
        GuardedToolNode(tools, wrap_tool_call=reads_state)
        if reader == "interceptor"
        else StateReadingNode(tools)
    )
    builder.add_node("tools", tools_node)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    builder.add_edge("tools", "agent")
    graph = builder.compile()
    with pytest.raises(GuardWiringError, match="registry="):
        graph.invoke({"messages": [("user", "Get CUST-001's name")]}, context={"user": ADMIN})
    assert db.executed == []
    assert seen == ([] if reader == "interceptor" else [0])


def test_a_guard_without_a_registry_says_what_the_policy_will_not_see(
    embedded: PolicyEngine, caplog: pytest.LogCaptureFixture
) -> None:
    from langchain_opa_guard import GuardedToolNode

    with caplog.at_level("WARNING", logger="langchain_opa_guard"):
        PolicyGuardNode(embedded)
    assert any("no registry=" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="langchain_opa_guard"):
        PolicyGuardNode(embedded, registry=GuardedToolNode(customer_db_tools()[0]))
    assert not any("no registry=" in r.getMessage() for r in caplog.records)
