"""Red team: a model-controlled argument makes the decision "fail", so a fail-open tool runs
what the policy would deny, rewrite, or send to a human; and the failure sticks to the thread."""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import TEST_POLICIES
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition
from mediation_kit import POLICY, USER, Ledger, Script, mediation_tools

from langchain_opa_guard import (
    EmbeddedPolicy,
    GuardedToolNode,
    OPAServer,
    PolicyEngine,
    PolicyGuardNode,
)
from langchain_opa_guard.testing import tool_call

# What json.loads gives for the JSON text "\ud800": a lone surrogate. A model writes it into
# its tool-call arguments as six plain ASCII characters.
LONE_SURROGATE = json.loads('"\\ud800"')


@pytest.fixture(params=["embedded", "opa"])
def engine(request: pytest.FixtureRequest, opa_url: str) -> Any:
    if request.param == "embedded":
        yield EmbeddedPolicy(TEST_POLICIES, policy=POLICY)
    else:
        server = OPAServer(opa_url, policy=POLICY)
        yield server
        server.close()


def guarded(engine: PolicyEngine, script: Script, ledger: Ledger, **guard: Any) -> Any:
    node = GuardedToolNode(mediation_tools(ledger))
    builder = StateGraph(MessagesState)
    builder.add_node("agent", RunnableLambda(lambda s: {"messages": [script.reply(s["messages"])]}))
    builder.add_node("guard", PolicyGuardNode(engine, registry=node, **guard))
    builder.add_node("tools", node)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    builder.add_edge("tools", "agent")
    return builder.compile()


def test_control_search_all_waits_and_limits_are_capped(engine: PolicyEngine) -> None:
    ledger = Ledger()
    script = Script(
        [
            AIMessage("", tool_calls=[tool_call("search", {"scope": "docs", "limit": 500}, "q1")]),
            "ok",
        ]
    )
    guarded(engine, script, ledger, fail_open={"search"}, approvals="deny").invoke(
        {"messages": [("user", "go")]}, context={"user": USER}
    )
    assert ledger.runs == [("search", "q1", {"scope": "docs", "limit": 10})]


def test_a_neighbouring_argument_cannot_make_a_fail_open_tool_skip_the_policy(
    engine: PolicyEngine,
) -> None:
    """fail_open={"search"} (README: "lets those tools run when the engine *fails* (never
    when the policy denies)"). search(scope="all") needs a human, and limits are capped at
    10. A lone surrogate in another call of the same turn makes every input of the turn
    unencodable; the guard counts that as an engine failure and search runs as proposed."""
    ledger = Ledger()
    script = Script(
        [
            AIMessage(
                "",
                tool_calls=[
                    tool_call("search", {"scope": "all", "limit": 500}, "q1"),
                    tool_call("read", {"item": "x" + LONE_SURROGATE}, "r1"),
                ],
            ),
            "ok",
        ]
    )
    guarded(engine, script, ledger, fail_open={"search"}).invoke(
        {"messages": [("user", "go")]}, context={"user": USER}
    )
    assert ("search", "q1", {"scope": "all", "limit": 500}) not in ledger.runs, ledger.runs


def test_a_huge_echoed_argument_cannot_make_a_fail_open_tool_skip_the_rewrite(
    opa_url: str,
) -> None:
    """The same with OPA's reply size cap (1 MiB): the policy's rewrite echoes the scope, so
    a 1.1 MB scope makes the reply too large, the decision "fails", and search runs with
    limit 500 instead of the policy's 10."""
    engine = OPAServer(opa_url, policy=POLICY)
    try:
        ledger = Ledger()
        scope = "docs " + "x" * 1_100_000
        script = Script(
            [
                AIMessage(
                    "", tool_calls=[tool_call("search", {"scope": scope, "limit": 500}, "q1")]
                ),
                "ok",
            ]
        )
        guarded(engine, script, ledger, fail_open={"search"}).invoke(
            {"messages": [("user", "go")]}, context={"user": USER}
        )
        assert [args["limit"] for _, _, args in ledger.runs] in ([], [10]), (
            f"search ran with limit {[args['limit'] for _, _, args in ledger.runs]}"
        )
    finally:
        engine.close()


def test_one_odd_argument_does_not_deny_the_rest_of_the_conversation(
    engine: PolicyEngine,
) -> None:
    """Fail closed is right for the odd call itself; but the odd arguments stay in
    input.history, so every later call of the thread fails to encode and is denied."""
    ledger = Ledger()
    script = Script(
        [
            AIMessage("", tool_calls=[tool_call("read", {"item": "x" + LONE_SURROGATE}, "r1")]),
            AIMessage("", tool_calls=[tool_call("read", {"item": "a"}, "r2")]),
            "ok",
        ]
    )
    result = guarded(engine, script, ledger).invoke(
        {"messages": [("user", "go")]}, context={"user": USER}
    )
    later = next(
        m for m in result["messages"] if isinstance(m, ToolMessage) and m.tool_call_id == "r2"
    )
    assert ("read", "r2", {"item": "a"}) in ledger.runs, later.content
