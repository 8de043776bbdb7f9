"""Red team 58 (false refusal): a branch beside the guard that trims the conversation in the
same step.

What was done: ``agent -> guard -> tools -> agent`` (the README's node wiring), and a
``memory`` node the agent also goes to, in parallel with the guard, that removes the
oldest message (``RemoveMessage``: a trimming step that keeps the context short). The
model proposes an allowed read ``r1``; the guard hands it to the tools in the next step,
by which time ``memory``'s removal (written in the guard's step) is in the conversation.

Observed: the check refuses the hand-over ("the conversation before it changed": the
fingerprint's first ``n`` ids no longer match, one of them was trimmed); ``r1`` neither runs
nor is answered, and the agent is asked again with ``a2``'s call left without an answer.

Expected (README): a hand-over LangGraph delivers runs; every tool call gets exactly one
answer.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import HumanMessage, RemoveMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition
from mediation_kit import (
    READ,
    USER,
    Ledger,
    Script,
    mediation_engine,
    mediation_tools,
    runs_of,
    thread_config,
    turn,
)

from langchain_opa_guard import EmbeddedPolicy, GuardedToolNode, PolicyGuardNode
from langchain_opa_guard.testing import tool_call

engine = mediation_engine


def _graph(engine: EmbeddedPolicy, ledger: Ledger, script: Script) -> Any:
    tools = GuardedToolNode(mediation_tools(ledger))
    guard = PolicyGuardNode(engine, registry=tools)

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [script.reply(state["messages"])]}

    def memory(state: MessagesState) -> dict[str, Any]:
        msgs = state["messages"]
        if len(msgs) > 2 and isinstance(msgs[0], HumanMessage):
            return {"messages": [RemoveMessage(id=msgs[0].id)]}
        return {}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", RunnableLambda(agent, name="agent"))
    builder.add_node("memory", RunnableLambda(memory, name="memory"))
    builder.add_node("guard", guard)
    builder.add_node("tools", tools)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", "__end__": "memory"})
    builder.add_edge("agent", "memory")
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=InMemorySaver())


# Known and documented (README, "Sealed hand-overs"): a hand-over is bound to the messages
# before its turn by count and ids, so a node that removes one of them in the turn's step,
# beside the guard, makes LangGraph's own delivery read as a moved turn. Strict, so that the
# day the binding tolerates removals this is turned on.
@pytest.mark.xfail(
    strict=True, reason="a trim beside the guard in the turn's step: known, documented"
)
def test_a_trim_beside_the_guard_leaves_its_hand_over_to_run(engine: EmbeddedPolicy) -> None:
    ledger = Ledger()
    script = Script(["hello", turn(tool_call("read", READ, "r1"), id="a2"), "ok", "ok"])
    graph = _graph(engine, ledger, script)
    config = thread_config("rt58-trim")
    graph.invoke({"messages": [("user", "hi")]}, config, context={"user": USER})
    graph.invoke({"messages": [("user", "read i")]}, config, context={"user": USER})
    msgs = graph.get_state(config).values["messages"]
    answers = [m for m in msgs if isinstance(m, ToolMessage) and m.tool_call_id == "r1"]
    assert runs_of(ledger, "r1") == 1, (ledger.runs, [type(m).__name__ for m in msgs])
    assert len(answers) == 1, [m.content for m in answers]
