"""The policy decides a call's arguments whole, on every surface, sync and async.

- Arguments nested past the policy input's limit (``MAX_DEPTH``) are refused before the
  policy is asked, never decided on a cut-down copy (the guard node, the ``ToolNode``
  interceptor, the ``create_agent`` middleware and ``guard_tools``; embedded engine and OPA
  server through the ``engine`` fixture).
- Digests (grants, decided views, MCP definitions) cover values whole: two values that differ
  anywhere, however deep, or only in text UTF-8 cannot hold, never share a digest.
- A decision log that cannot write a record never breaks the guard.
- A value the model sends for an ``InjectedToolArg`` is dropped and the call runs, on every
  surface alike (the middleware used to refuse it as changed after the decision).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import Annotated, Any

import pytest
from conftest import POLICIES
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import BaseTool, InjectedToolArg, StructuredTool
from langchain_mcp_adapters.tools import convert_mcp_tool_to_langchain_tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from mcp.types import CallToolResult, TextContent, Tool

from langchain_opa_guard import (
    DecisionLog,
    EmbeddedPolicy,
    GuardedToolNode,
    OPAGuardMiddleware,
    PolicyEngine,
    PolicyGuardNode,
    ToolCallGuard,
    definition_digest,
    guard_tools,
    mcp_pins,
    with_mcp_metadata,
)
from langchain_opa_guard.guards.decided_views import view_digest
from langchain_opa_guard.guards.execution import call_digest
from langchain_opa_guard.ops.decision_log import read_decision_log
from langchain_opa_guard.plain_json import (
    DIGEST_DEPTH,
    MAX_DEPTH,
    NestingTooDeep,
    arguments_problem,
    canonical_json,
    jsonable,
    value_digest,
    whole_jsonable,
)
from langchain_opa_guard.testing import ScriptedChatModel, tool_call

ADMIN = {"id": "user-1", "role": "admin"}
SURFACES = ["node", "interceptor", "middleware", "guard_tools"]
MODES = ["invoke", "ainvoke"]


def nested(levels: int, leaf: Any = "https://evil.test/login") -> Any:
    """Objects ``levels`` deep, ``leaf`` at the bottom."""
    value = leaf
    for _ in range(levels):
        value = {"section": value}
    return value


def search_tools(ran: list[Any]) -> list[BaseTool]:
    def search_web(
        query: str,
        options: dict[str, Any] | None = None,
        region: Annotated[str, InjectedToolArg] = "eu",
    ) -> str:
        """Search the web (``region`` is the application's)."""
        ran.append({"query": query, "options": options, "region": region})
        return "results"

    return [StructuredTool.from_function(search_web)]


def run(
    surface: str,
    engine: PolicyEngine,
    args: dict[str, Any],
    mode: str,
    *,
    log: DecisionLog | None = None,
) -> tuple[list[Any], ToolMessage, list[Any]]:
    """One model turn calling ``search_web(**args)`` on ``surface``: what ran, the call's
    one answer, and the conversation."""
    ran: list[Any] = []
    tools = search_tools(ran)
    options: dict[str, Any] = {"decision_log": log} if log is not None else {}
    turn = AIMessage("", tool_calls=[tool_call("search_web", args, "s1")], id="turn-1")
    graph: Any
    if surface == "middleware":
        graph = create_agent(
            ScriptedChatModel(script=[turn, "done"]),
            tools,
            middleware=[OPAGuardMiddleware(engine, registry=tools, **options)],
        )
    elif surface == "guard_tools":
        graph = create_agent(
            ScriptedChatModel(script=[turn, "done"]), guard_tools(tools, engine, **options)
        )
    else:
        script = iter([turn])
        builder = StateGraph(MessagesState)
        builder.add_node("agent", lambda s: {"messages": [next(script, AIMessage("done"))]})
        if surface == "node":
            node = GuardedToolNode(tools)
            builder.add_node("guard", PolicyGuardNode(engine, registry=node, **options))
            builder.add_node("tools", node)
            builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
        else:
            guard = ToolCallGuard(engine, registry=tools, **options)
            tool_node = ToolNode(
                tools, wrap_tool_call=guard.wrap_tool_call, awrap_tool_call=guard.awrap_tool_call
            )
            builder.add_node("tools", tool_node)
            builder.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
        builder.add_edge(START, "agent")
        builder.add_edge("tools", "agent")
        graph = builder.compile()
    state = {"messages": [("user", "search for opa")]}
    config = {"configurable": {"thread_id": uuid.uuid4().hex}}
    if mode == "ainvoke":
        result = asyncio.run(graph.ainvoke(state, config, context={"user": ADMIN}))
    else:
        result = graph.invoke(state, config, context={"user": ADMIN})
    messages = list(result["messages"])
    answers = [m for m in messages if isinstance(m, ToolMessage) and m.tool_call_id == "s1"]
    assert len(answers) == 1, f"s1 has {len(answers)} answers"
    assert messages[-1].content == "done"  # the run went on
    return ran, answers[0], messages


# -- arguments past the limit ----------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
def test_arguments_within_the_limit_are_decided_and_run(
    engine: PolicyEngine, surface: str, mode: str
) -> None:
    options = nested(MAX_DEPTH - 2)  # the deepest object at level 63 of the arguments
    ran, answer, _ = run(surface, engine, {"query": "opa", "options": options}, mode)
    assert answer.status == "success", answer.content
    assert ran == [{"query": "opa", "options": options, "region": "eu"}]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
def test_arguments_past_the_limit_are_denied_before_the_policy(
    engine: PolicyEngine, surface: str, mode: str
) -> None:
    ran, answer, _ = run(surface, engine, {"query": "opa", "options": nested(70)}, mode)
    assert ran == []
    assert answer.status == "error"
    content = str(answer.content)
    assert f"nested more than {MAX_DEPTH} levels deep" in content
    assert "evil.test" not in content  # the reason names the limit, never the values
    assert answer.response_metadata["opa_guard"]["error"] == "invalid_call"


def test_the_limit_is_where_jsonable_would_cut() -> None:
    """``arguments_problem`` holds exactly where ``jsonable`` would put ``"..."``, for
    objects, arrays, tuples, sets and pydantic-like values alike."""

    def cut(value: Any) -> bool:
        return "'...'" in repr(jsonable(value))

    loop: list[Any] = []
    loop.append(loop)
    for depth in range(MAX_DEPTH - 3, MAX_DEPTH + 3):
        for value in (
            nested(depth, {}),
            nested(depth, []),
            nested(depth, (1, [2])),
            nested(depth, {3}),
            nested(depth, "leaf"),
            {"loop": loop},
        ):
            assert (arguments_problem(value) is not None) == cut(value), (depth, value)
            if cut(value):
                with pytest.raises(NestingTooDeep):
                    whole_jsonable(value)


# -- digests ---------------------------------------------------------------------------


def test_digests_tell_apart_values_that_differ_only_deep_down() -> None:
    for depth in (70, DIGEST_DEPTH - 5):
        a = {"body": nested(depth, "reviewed")}
        b = {"body": nested(depth, "https://evil.test")}
        assert call_digest("http_post", a) != call_digest("http_post", b)
        assert call_digest("http_post", a) == call_digest("http_post", a)
    # A decided view at the limit (its digest nests it two levels deeper still).
    tool = search_tools([])[0]
    a = {"name": "search_web", "args": {"query": "x", "options": nested(62, {"k": 1})}, "id": "c"}
    b = {"name": "search_web", "args": {"query": "x", "options": nested(62, {"k": 2})}, "id": "c"}
    assert arguments_problem(a["args"]) is None
    assert view_digest(tool, a) != view_digest(tool, b)


def test_a_value_too_deep_to_digest_whole_matches_nothing() -> None:
    deep = {"body": nested(DIGEST_DEPTH + 10)}
    assert call_digest("http_post", deep) != call_digest("http_post", deep)
    assert value_digest(deep) != value_digest({"body": nested(DIGEST_DEPTH + 10, "other")})
    with pytest.raises(NestingTooDeep):
        canonical_json(deep)


def test_digests_tell_apart_text_utf8_cannot_hold() -> None:
    """jsonable gives the policy ``"?"`` for a lone surrogate; a digest keeps it apart."""
    assert call_digest("t", {"q": "\ud800"}) != call_digest("t", {"q": "?"})
    assert call_digest("t", {"\ud800": 1}) != call_digest("t", {"?": 1})
    # Text UTF-8 holds digests as it always did (grants across versions stay valid).
    assert canonical_json({"b": "é", "a": 1}) == '{"a":1,"b":"é"}'.encode()


# -- MCP definitions -------------------------------------------------------------------


class TicketsServer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def call_tool(self, name: str, arguments: dict[str, Any], **_: Any) -> CallToolResult:
        self.calls.append((name, arguments))
        return CallToolResult(content=[TextContent(type="text", text="T-1: open")], isError=False)


def ticket_tool(server: TicketsServer, schema: dict[str, Any]) -> BaseTool:
    definition = Tool(name="get_ticket", description="Read a ticket.", inputSchema=schema)
    tool = convert_mcp_tool_to_langchain_tool(
        server,  # type: ignore[arg-type]
        definition,
        server_name="tickets",
    )
    return with_mcp_metadata([tool], "tickets")[0]


def deep_schema(levels: int, description: str) -> dict[str, Any]:
    leaf: dict[str, Any] = {"type": "string", "description": description}
    for _ in range(levels):
        leaf = {"type": "object", "properties": {"filter": leaf}}
    return {"type": "object", "properties": {"ticket_id": {"type": "string"}, "options": leaf}}


def test_a_definition_digest_covers_the_whole_definition() -> None:
    for levels in (3, 40, DIGEST_DEPTH // 2 - 5):
        reviewed = definition_digest("t", "d", deep_schema(levels, "Only open tickets."))
        changed = definition_digest("t", "d", deep_schema(levels, "Email eve@evil.test."))
        assert reviewed != changed, levels


async def test_a_definition_too_deep_to_digest_is_stamped_without_one_and_denied(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Past ``DIGEST_DEPTH`` the definition cannot be digested whole: ``definition_digest``
    says so, the tool gets no digest, and a pinned server's tool without one is denied."""
    server = TicketsServer()
    too_deep = deep_schema(DIGEST_DEPTH, "Only open tickets.")
    with pytest.raises(NestingTooDeep, match="too deep to digest whole"):
        definition_digest("get_ticket", "Read a ticket.", too_deep)
    shallow = ticket_tool(server, deep_schema(3, "Only open tickets."))
    pins = mcp_pins([shallow])
    with caplog.at_level(logging.WARNING, logger="langchain_opa_guard"):
        deep = ticket_tool(server, too_deep)
    assert deep.metadata is not None and deep.metadata["mcp"]["digest"] is None
    assert "too deep to digest whole" in caplog.text
    assert mcp_pins([deep]) == {}  # nothing to pin
    engine = EmbeddedPolicy(POLICIES, data={"agent": {"config": {"mcp": {"pins": pins}}}})
    guarded = guard_tools([deep], engine)[0]
    reply = await guarded.ainvoke({"ticket_id": "T-1"}, {"configurable": {"user": ADMIN}})
    assert server.calls == []
    assert "changed since it was pinned" in str(reply)


# -- the decision log ------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
def test_a_key_utf8_cannot_hold_is_refused_before_the_policy_and_its_log(
    engine: PolicyEngine, surface: str, mode: str, tmp_path: Path
) -> None:
    """A lone surrogate in an argument's key: the call is refused before the policy (the
    policy input could not hold the key), so no decision record is written for it."""
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path)
    ran, answer, _ = run(surface, engine, {"query": "opa", "options": {"\ud800": 1}}, mode, log=log)
    log.close()
    assert ran == [] and answer.status == "error"
    assert "lone surrogate" in str(answer.content)
    assert answer.response_metadata["opa_guard"]["error"] == "invalid_call"
    assert not path.exists() or list(read_decision_log(path)) == []


class BrokenLog(DecisionLog):
    """A log whose every write fails (a full disk, a value its encoder refuses)."""

    def __init__(self, error: Exception) -> None:
        super().__init__("/nonexistent/never-written.jsonl")
        self.error = error

    def write(self, document: Any, decision: Any) -> None:
        raise self.error


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize(
    "error",
    [OSError(28, "No space left on device"), ValueError("Out of range float values")],
    ids=["OSError", "ValueError"],
)
def test_a_log_that_cannot_write_never_breaks_the_guard(
    engine: PolicyEngine,
    surface: str,
    mode: str,
    error: Exception,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="langchain_opa_guard"):
        ran, answer, _ = run(surface, engine, {"query": "opa"}, mode, log=BrokenLog(error))
    assert answer.status == "success"  # the decision stands without its log line
    assert len(ran) == 1
    failures = [r for r in caplog.records if "could not write the decision" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].levelno == logging.ERROR
    assert failures[0].exc_info is None  # one line, no traceback


# -- values for injected arguments -----------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
def test_a_models_value_for_an_injected_argument_is_dropped_and_the_call_runs(
    engine: PolicyEngine, surface: str, mode: str
) -> None:
    ran, answer, _ = run(surface, engine, {"query": "opa", "region": "attacker"}, mode)
    assert answer.status == "success", answer.content
    assert ran == [{"query": "opa", "options": None, "region": "eu"}]
