"""Red team 43, part A: attacks on the "turn still out" rule that held (all pass here).

1. ``Command(resume={id: approve}, goto=["guard", "guard"])``: one plain guard task, which
   decides nothing; each call of the turn runs once.
2. A tool that itself calls ``interrupt()``, then ``Command(resume=..., goto="guard")``:
   the plain guard task finds the turn still out; each call runs once.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessage
from langchain_core.tools import InjectedToolCallId, StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command, interrupt
from mediation_kit import POLICY, USER, Ledger, Script, node_graph
from opa_process import ROOT
from test_redteam43_handed_on import answers_after, messages, runs_of, tool_graph

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.testing import tool_call

MODES = ("sync", "async")
ASK = {"to": "a@ask.test", "body": "x"}
READ = {"item": "i"}
APPROVE = {"decisions": [{"type": "approve"}]}


@pytest.fixture(scope="module")
def engine() -> EmbeddedPolicy:
    return EmbeddedPolicy(ROOT / "tests" / "policies", policy=POLICY)


def run(graph: Any, value: Any, config: Any, mode: str) -> Any:
    if mode == "async":
        return asyncio.run(graph.ainvoke(value, config, context={"user": USER}))
    return graph.invoke(value, config, context={"user": USER})


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["node", "edge"])
def test_a_resume_with_goto_guard_twice_runs_the_turn_once(
    engine: EmbeddedPolicy, kind: str, mode: str
) -> None:
    ledger = Ledger()
    turn = AIMessage(
        "", tool_calls=[tool_call("send", ASK, "s1"), tool_call("read", READ, "r1")], id="a1"
    )
    graph = node_graph(
        engine,
        Script([turn, "ok", "ok"]),
        ledger,
        checkpointer=InMemorySaver(),
        wiring=kind,
        answer_open=True,
    )
    config = {"configurable": {"thread_id": f"rt43-pin-list-{kind}-{mode}"}}
    (question,) = run(graph, {"messages": [("user", "go")]}, config, mode)["__interrupt__"]
    run(graph, Command(resume={question.id: APPROVE}, goto=["guard", "guard"]), config, mode)
    assert not graph.get_state(config).interrupts
    assert runs_of(ledger, "r1") == 1 and runs_of(ledger, "s1") == 1, ledger.runs
    assert sorted(answers_after(messages(graph, config), "a1")) == ["r1", "s1"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["node", "edge"])
def test_a_tool_interrupt_resumed_with_goto_guard_runs_each_call_once(
    engine: EmbeddedPolicy, kind: str, mode: str
) -> None:
    ledger = Ledger()

    def read(item: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Read an item after the user confirms."""
        interrupt({"confirm": tool_call_id})
        return ledger.record("read", tool_call_id, {"item": item})

    turn = AIMessage(
        "",
        tool_calls=[tool_call("read", READ, "r1"), tool_call("read", {"item": "j"}, "r2")],
        id="a1",
    )
    graph = tool_graph(
        engine, Script([turn, "ok", "ok"]), ledger, StructuredTool.from_function(read), kind
    )
    config = {"configurable": {"thread_id": f"rt43-pin-tool-interrupt-{kind}-{mode}"}}
    run(graph, {"messages": [("user", "go")]}, config, mode)
    waiting = graph.get_state(config).interrupts
    assert len(waiting) == 2 and ledger.runs == []
    run(graph, Command(resume={i.id: True for i in waiting}, goto="guard"), config, mode)
    assert runs_of(ledger, "r1") == 1 and runs_of(ledger, "r2") == 1, ledger.runs
    assert sorted(answers_after(messages(graph, config), "a1")) == ["r1", "r2"]
