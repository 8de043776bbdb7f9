"""Red team 38: the repair's ``RemoveMessage(REMOVE_ALL_MESSAGES)`` and a message another
node writes in the same step.

The attack: a graph adds a second node at ``START`` beside ``answer_open_calls`` (an
application's "add context" node that appends a system note, in parallel with the repair).
When a turn was cut off (a pause before its tools, then a new message), the repair writes
``RemoveMessage(REMOVE_ALL)`` followed by the list it read at the start of the step;
LangGraph applies the step's writes in task order, so a write ordered before the repair's
was removed by it: the note was lost.

The repair cannot see a write made beside it, so it must be the only node writing
``messages`` in its step: ``answer_open_calls``'s docstring and the README say so, and the
README's wiring has it alone after ``START``. This test keeps the application's node in the
wiring that works (after the repair): with a turn cut off and repaired, and without (the
control), both notes are kept.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, SystemMessage
from langchain_core.runnables import RunnableLambda
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition
from mediation_kit import POLICY, USER, Ledger, Script, mediation_tools
from opa_process import ROOT

from langchain_opa_guard import (
    EmbeddedPolicy,
    GuardedToolNode,
    PolicyGuardNode,
    answer_open_calls,
)
from langchain_opa_guard.testing import tool_call as call


def build(script: Script, ledger: Ledger) -> Any:
    engine = EmbeddedPolicy(ROOT / "tests" / "policies", policy=POLICY)
    tool_node = GuardedToolNode(mediation_tools(ledger))
    builder = StateGraph(MessagesState)
    builder.add_node(answer_open_calls)
    builder.add_node(
        "add_context",
        RunnableLambda(
            lambda s: {"messages": [SystemMessage("note: today is Monday")]},
            name="add_context",
        ),
    )
    builder.add_node(
        "agent", RunnableLambda(lambda s: {"messages": [script.reply(s["messages"])]}, name="agent")
    )
    builder.add_node("guard", PolicyGuardNode(engine, registry=tool_node))
    builder.add_node("tools", tool_node)
    builder.add_edge(START, "answer_open_calls")
    builder.add_edge("answer_open_calls", "add_context")
    builder.add_edge("add_context", "agent")
    builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=InMemorySaver(), interrupt_before=["tools"])


@pytest.mark.parametrize("cut_off", [True, False], ids=["repaired", "control"])
def test_a_message_written_beside_the_repair_is_kept(cut_off: bool) -> None:
    ledger = Ledger()
    first = AIMessage("", tool_calls=[call("read", {"item": "a"}, "r1")], id="a1")
    script = Script([first] if cut_off else ["nothing to do"])
    graph = build(script, ledger)
    config: dict[str, Any] = {"configurable": {"thread_id": f"rt38-parallel-{cut_off}"}}
    graph.invoke({"messages": [("user", "read a")]}, config, context={"user": USER})
    # The run paused before its tools (cut_off) and the user writes again.
    graph.invoke({"messages": [("user", "and now?")]}, config, context={"user": USER})
    messages = graph.get_state(config).values["messages"]
    notes = [m for m in messages if isinstance(m, SystemMessage)]
    assert len(notes) == 2, "a note written after the repair was lost"
    assert ledger.runs == []
