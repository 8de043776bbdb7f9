"""Red team 7: a lone surrogate in an argument's *key* is not caught by ``arguments_problem``.

``arguments_problem`` (BAD_TEXT) walks the values of every object, never its keys. A model
that writes ``{"options": {"X\\ud800": "v"}}`` gets past it; the policy input then cannot be
encoded (``jsonable`` keeps keys as they are), and the engine fails: the call is denied,
fail closed, but as an *engine failure* (``policy engine failed: the policy input could
not be encoded as JSON``), not as the ``invalid_call`` the README promises for arguments the
policy input cannot carry. And since every call's document holds the whole turn
(``input.turn``), one such call makes the engine fail for every call of its turn: a
harmless sibling (``read``) is denied with it, and each denial counts as an engine failure
(``invalid_input``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from conftest import TEST_POLICIES
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import BaseTool, StructuredTool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition
from surface_kit import SURFACES, run_turn

from langchain_opa_guard import EmbeddedPolicy, GuardedToolNode, PolicyEngine, PolicyGuardNode
from langchain_opa_guard.plain_json import BAD_TEXT, arguments_problem
from langchain_opa_guard.testing import tool_call

POLICY = "mediation/decision"
USER = {"id": "u-1", "role": "tester"}
LONE = json.loads('"\\ud800"')


@pytest.fixture
def engine() -> PolicyEngine:
    return EmbeddedPolicy(TEST_POLICIES, policy=POLICY)


def fetch_tools(fetched: list[Any]) -> list[BaseTool]:
    def read(url: str, options: dict[str, Any] | None = None) -> str:
        """Read a page (the test policy allows any call of ``read``)."""
        fetched.append((url, options))
        return "page"

    return [StructuredTool.from_function(read)]


def test_arguments_problem_reads_keys_too() -> None:
    assert arguments_problem({"options": {f"X{LONE}": "v"}}) == BAD_TEXT
    assert arguments_problem({f"url{LONE}": "https://ok.test/"}) == BAD_TEXT


@pytest.mark.parametrize("surface", SURFACES)
def test_a_lone_surrogate_in_a_key_is_an_invalid_call_not_an_engine_failure(
    engine: PolicyEngine, surface: str
) -> None:
    fetched: list[Any] = []
    answer, _ = run_turn(
        surface,
        engine,
        fetch_tools(fetched),
        "read",
        {"url": "https://ok.test/", "options": {f"X{LONE}": "v"}},
        "invoke",
        context={"user": USER},
    )
    assert fetched == []
    assert answer.status == "error"
    assert answer.response_metadata["opa_guard"]["error"] == "invalid_call", answer.content
    assert "lone surrogate" in str(answer.content), answer.content


def test_one_call_with_a_bad_key_does_not_take_its_sibling_down(engine: PolicyEngine) -> None:
    fetched: list[Any] = []
    tools = fetch_tools(fetched)
    turn = AIMessage(
        "",
        tool_calls=[
            tool_call("read", {"url": "https://ok.test/a"}, "good"),
            tool_call("read", {"url": "https://ok.test/b", "options": {f"X{LONE}": 1}}, "bad"),
        ],
        id="turn-1",
    )
    script = iter([turn])
    node = GuardedToolNode(tools)
    builder = StateGraph(MessagesState)
    builder.add_node("agent", lambda s: {"messages": [next(script, AIMessage("done"))]})
    builder.add_node("guard", PolicyGuardNode(engine, registry=node))
    builder.add_node("tools", node)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    builder.add_edge("tools", "agent")
    graph: Any = builder.compile()
    result = graph.invoke({"messages": [("user", "go")]}, context={"user": USER})
    answers = {m.tool_call_id: m for m in result["messages"] if isinstance(m, ToolMessage)}
    assert answers["bad"].status == "error"
    assert answers["good"].status == "success", answers["good"].content
    assert fetched == [("https://ok.test/a", None)]
