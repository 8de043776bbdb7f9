"""A model's values for injected arguments never run, whatever the LangGraph version.

The policy never sees the arguments the application and LangGraph supply (an
``InjectedToolArg``, the graph state, the call id), so a value the model sends for one is
nobody's decision. Newer ``ToolNode`` releases drop such values themselves; older ones (the
floor versions ``make test-min`` installs) ran them. The guard drops them itself where the
call runs: on every surface (guard node + ``GuardedToolNode``, the ``ToolCallGuard``
interceptor, the ``create_agent`` middleware, ``guard_tools``), sync and async, embedded
engine and OPA server, for a call allowed as it came and for one the policy rewrote.
"""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from conftest import TEST_POLICIES
from langchain_core.tools import BaseTool, InjectedToolArg, InjectedToolCallId, StructuredTool
from langgraph.prebuilt import InjectedState
from surface_kit import MODES, SURFACES, run_turn

from langchain_opa_guard import EmbeddedPolicy, OPAServer, PolicyEngine
from langchain_opa_guard.guards.injections import without_injected
from langchain_opa_guard.testing import tool_call

POLICY = "mediation/decision"  # read: allowed; search: limit capped at 10 (a rewrite)
USER = {"id": "u-1", "role": "tester"}


@pytest.fixture(params=["embedded", "opa"])
def engine(request: pytest.FixtureRequest) -> Any:
    if request.param == "embedded":
        yield EmbeddedPolicy(TEST_POLICIES, policy=POLICY)
        return
    client = OPAServer(request.getfixturevalue("opa_url"), policy=POLICY)
    yield client
    client.close()


def read_tools(ran: list[dict[str, Any]]) -> list[BaseTool]:
    def read(
        item: str,
        state: Annotated[dict[str, Any], InjectedState],
        tool_call_id: Annotated[str, InjectedToolCallId],
        region: Annotated[str, InjectedToolArg] = "eu",
    ) -> str:
        """Read an item (``region`` is the application's)."""
        messages = state.get("messages") if isinstance(state, dict) else None
        ran.append(
            {
                "item": item,
                "region": region,
                "call_id": tool_call_id,
                "real_state": isinstance(messages, list) and len(messages) >= 2,
                "forged_state": isinstance(state, dict) and "forged" in state,
            }
        )
        return "read"

    return [StructuredTool.from_function(read)]


def search_tools(ran: list[dict[str, Any]]) -> list[BaseTool]:
    def search(scope: str, limit: int, region: Annotated[str, InjectedToolArg] = "eu") -> str:
        """Search (``region`` is the application's)."""
        ran.append({"scope": scope, "limit": limit, "region": region})
        return "found"

    return [StructuredTool.from_function(search)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
def test_forged_injected_values_are_dropped_and_the_call_runs(
    engine: PolicyEngine, surface: str, mode: str
) -> None:
    ran: list[dict[str, Any]] = []
    forged = {
        "item": "a",
        "region": "attacker",
        "state": {"forged": True},
        "tool_call_id": "someone-else",
    }
    answer, _ = run_turn(
        surface, engine, read_tools(ran), "read", forged, mode, context={"user": USER}
    )
    assert answer.status == "success", answer.content
    assert ran == [
        {
            "item": "a",
            "region": "eu",
            "call_id": "c1",
            "real_state": True,
            "forged_state": False,
        }
    ]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
def test_a_forged_injected_value_is_dropped_from_a_policy_rewrite_too(
    engine: PolicyEngine, surface: str, mode: str
) -> None:
    ran: list[dict[str, Any]] = []
    args = {"scope": "docs", "limit": 50, "region": "attacker"}
    answer, _ = run_turn(
        surface, engine, search_tools(ran), "search", args, mode, context={"user": USER}
    )
    assert answer.status == "success", answer.content
    assert ran == [{"scope": "docs", "limit": 10, "region": "eu"}]


def test_without_injected_drops_only_the_injected_arguments() -> None:
    tool = read_tools([])[0]
    call = tool_call("read", {"item": "a", "region": "x", "state": {}, "tool_call_id": "y"}, "c1")
    assert without_injected(tool, call)["args"] == {"item": "a"}
    assert without_injected(tool, call)["id"] == "c1"
    plain = tool_call("read", {"item": "a"}, "c1")
    assert without_injected(tool, plain) is plain  # nothing to drop: the call itself
    assert without_injected(None, call) is call  # an unknown tool: nothing known to drop
