"""Red team 49's pins (all pass): what was tried and held.

* A ``StructuredTool`` renamed after the graph is built, so that the ``ToolNode`` finds another
  tool under the name the call gives (the key it registered differs from the tool's name): the
  call is refused on all four wirings.
* ``HumanInTheLoopMiddleware`` (batched) after the guard, a reviewer's edit that switches the
  call to another tool the policy denies: nothing runs, one answer.
* A call name that is not a string never reaches a guard: ``AIMessage`` refuses it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from mediation_kit import (
    POLICY,
    USER,
    WIRINGS,
    Ledger,
    Script,
    agent_graph,
    mediation_tools,
    thread_config,
    turn,
    wired_graph,
)
from opa_process import ROOT
from pydantic import ValidationError

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.testing import tool_call


@pytest.fixture(scope="module")
def engine() -> EmbeddedPolicy:
    return EmbeddedPolicy(ROOT / "tests" / "policies", policy=POLICY)


@pytest.mark.parametrize("kind", WIRINGS)
def test_a_tool_renamed_after_the_graph_is_built_is_refused(
    engine: EmbeddedPolicy, kind: str
) -> None:
    """Pin: the graph is built over the ledger's tools, then ``pay`` is renamed ``read`` and
    ``read`` renamed ``pay_old``. The model calls ``read`` (allowed): the tools node finds
    under ``read`` the object now named ``pay_old``. Refused on every wiring, nothing runs,
    one error answer."""
    ledger = Ledger()
    tools = mediation_tools(ledger)
    by_name = {t.name: t for t in tools}
    graph = wired_graph(
        engine, kind, tools, Script([turn(tool_call("read", {"item": "i"}, "r1")), "ok"])
    )
    by_name["pay"].name = "read"
    by_name["read"].name = "pay_old"
    out = asyncio.run(
        graph.ainvoke(
            {"messages": [("user", "go")]}, thread_config(f"rt49-{kind}"), context={"user": USER}
        )
    )
    answers = [(m.tool_call_id, m.status) for m in out["messages"] if isinstance(m, ToolMessage)]
    assert ledger.runs == []
    assert answers == [("r1", "error")]


@pytest.mark.parametrize(
    ("name", "args"),
    [("send", {"to": "x@evil.test", "body": "b"}), ("pay", {"amount": 5000})],
)
def test_a_reviewer_edit_to_a_denied_tool_does_not_run(
    engine: EmbeddedPolicy, name: str, args: dict[str, Any]
) -> None:
    """Pin: ``HumanInTheLoopMiddleware(interrupt_on={"read": True})`` after the guard; the
    model calls ``read``, the reviewer edits it into ``send`` to ``x@evil.test`` (or a
    ``pay`` of 5000), both denied. Nothing runs; ``r1`` gets one error answer."""
    from langchain.agents.middleware import HumanInTheLoopMiddleware

    ledger = Ledger()
    graph = agent_graph(
        engine,
        Script([turn(tool_call("read", {"item": "i"}, "r1")), "ok", "ok"]),
        ledger,
        checkpointer=InMemorySaver(),
        after=[HumanInTheLoopMiddleware(interrupt_on={"read": True})],
    )
    config = thread_config(f"rt49-hitl-{name}")
    first = graph.invoke({"messages": [("user", "go")]}, config, context={"user": USER})
    assert first.get("__interrupt__")
    edit = {"type": "edit", "edited_action": {"name": name, "args": args}}
    out = graph.invoke(Command(resume={"decisions": [edit]}), config, context={"user": USER})
    answers = [(m.tool_call_id, m.status) for m in out["messages"] if isinstance(m, ToolMessage)]
    assert ledger.runs == []
    assert answers == [("r1", "error")]


@pytest.mark.parametrize("name", [5, None, ["read"]])
def test_a_call_name_that_is_not_text_is_refused_by_the_message(name: Any) -> None:
    """Pin: a model message cannot hold a call whose name is not a string."""
    with pytest.raises(ValidationError):
        AIMessage("", tool_calls=[{"name": name, "args": {}, "id": "x1"}])
