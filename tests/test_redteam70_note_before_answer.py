"""Red team 70: a tool's ``Command`` that adds a model note leaves a sibling's answer out of
its turn, and the repair answers that call a second time.

What was done: a tool author follows the pattern the README allows ("a tool's result that
answers its own call and add messages"): the ``read`` tool answers its own call and adds a
short model note (an ``AIMessage`` without calls, as a "thinking" or hand-off tool does). The
model proposes ``read`` and ``pay`` in one turn, both allowed; both run once. The user then
sends a new message (a new run on the thread), with ``answer_open_calls`` wired between
``START`` and the agent as the README asks (and, for ``create_agent``, the middleware's own
``before_agent`` repair).

Observed (all four wirings: guard node, guard edge, ``ToolCallGuard``, middleware; sync and
async; LangGraph 1.2 and 1.0): LangGraph writes the tools' results in the order of the calls,
so the conversation reads ``turn, answer(read), note, answer(pay)``. Answers are paired with a
turn only up to the next model message, so ``pay``'s answer belongs to no turn: the call reads
as open (``pending`` in ``input.history``), and on the next run the repair answers it again
("The tool call "pay" started, but the conversation went on ... it may have taken effect"),
right after the turn, although its result was saved: ``pay`` ends up with two answers.

Expected: every tool call gets exactly one answer (README: "Every tool call gets exactly one
answer ... so the history stays valid"): a call that ran is not answered again as one that
did not run.
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
                    AIMessage("(noted: the item was read)"),
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
def test_a_call_that_ran_is_not_answered_again_after_a_sibling_note(
    engine: Any, wiring: str, mode: str
) -> None:
    ledger = Ledger()
    graph = _graph(wiring, ledger, engine)
    config = thread_config(f"rt70-note-{wiring}-{mode}")

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
