"""Red team 71: a tool's note that carries calls it answers itself still ends its turn, so a
sibling's answer falls out of the turn and the repair answers that call a second time.

What was done: as red team 70's scene (``read`` and ``pay`` in one turn, both allowed, the
``answer_open_calls`` repair wired; every wiring; sync and async), but ``read``'s ``Command``
adds a model note that records a call it made and answered itself
(``AIMessage(tool_calls=[lookup z1])`` followed by ``ToolMessage(z1)``), which
``tool_results`` applies (``_proposes_calls`` only refuses calls a result does not answer).

Observed: ``contract.proposes_calls`` takes that note for a model turn (it has calls), so the
turn's answers stop at it: ``pay``'s answer, written after it, belongs to no turn, and on the
next run the repair answers ``pay`` a second time.

Expected: a note a tool writes ends no turn whether or not it records calls it answered
itself; every tool call gets exactly one answer.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool, InjectedToolCallId, StructuredTool
from langgraph.types import Command
from mediation_kit import (
    USER,
    WIRINGS,
    Ledger,
    Script,
    mediation_engine,
    mediation_tools,
    thread_config,
    wired_graph,
)

from langchain_opa_guard.testing import tool_call

engine = mediation_engine

TURN = AIMessage(
    "",
    id="turn-1",
    tool_calls=[tool_call("read", {"item": "i"}, "b1"), tool_call("pay", {"amount": 5}, "a1")],
)


def _noting_read(ledger: Ledger) -> BaseTool:
    def read(item: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> Any:
        """Read an item."""
        ledger.record("read", tool_call_id, {"item": item})
        return Command(
            update={
                "messages": [
                    ToolMessage(f"{item}: contents", tool_call_id=tool_call_id),
                    AIMessage(
                        "(noted: looked the item up)",
                        tool_calls=[tool_call("lookup", {"item": item}, "z1")],
                    ),
                    ToolMessage("lookup: found", tool_call_id="z1"),
                ]
            }
        )

    return StructuredTool.from_function(read)


def _answers(messages: list[BaseMessage]) -> Counter[str]:
    return Counter(m.tool_call_id for m in messages if isinstance(m, ToolMessage))


def _graph(wiring: str, ledger: Ledger, engine: Any) -> Any:
    tools = [_noting_read(ledger), *(t for t in mediation_tools(ledger) if t.name == "pay")]
    script = Script([TURN, "done", "done again"])
    return wired_graph(engine, wiring, tools, script, answer_open=True)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("wiring", WIRINGS)
def test_a_call_that_ran_is_not_answered_again_after_a_self_answered_note(
    engine: Any, wiring: str, mode: str
) -> None:
    ledger = Ledger()
    graph = _graph(wiring, ledger, engine)
    config = thread_config(f"rt71-note-{wiring}-{mode}")

    def run(value: Any) -> Any:
        if mode == "async":
            return asyncio.run(graph.ainvoke(value, config, context={"user": USER}))
        return graph.invoke(value, config, context={"user": USER})

    run({"messages": [HumanMessage("read i and pay 5")]})
    assert sorted(ledger.names()) == ["pay", "read"]  # both allowed, both ran once
    out = run({"messages": [HumanMessage("thanks, anything else?")]})
    answers = _answers(out["messages"])
    assert answers["b1"] == 1, answers
    assert answers["a1"] == 1, [
        (type(m).__name__, m.content) for m in out["messages"] if isinstance(m, ToolMessage)
    ]
