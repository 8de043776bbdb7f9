"""Red team 55: what was tried and held (these pass).

1. The dropped turn's tools payload sent back in the same input as the new message,
   ``Command(update={"messages": [<request>]}, goto=Send("tools", payload))``: LangGraph
   applies the update before the Send's step, the check reads the request after the turn,
   nothing runs and nothing is answered (guard node and edge).
2. ``create_agent`` with ``ToolCallLimitMiddleware`` (``run_limit=1``, "continue") before the
   guard middleware: the model proposes two allowed reads; the limit answers the second, the
   first runs; each call gets one answer.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import ToolCallLimitMiddleware
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command, Send
from mediation_kit import (
    READ,
    USER,
    Ledger,
    Script,
    assert_one_answer_per_id,
    mediation_engine,  # noqa: F401 - the engine fixture
    mediation_tools,
    messages,
    node_graph,
    runs_of,
    thread_config,
    turn,
)
from replay_kit import tools_input_seen

from langchain_opa_guard import EmbeddedPolicy, OPAGuardMiddleware
from langchain_opa_guard.testing import ScriptedChatModel, tool_call


@pytest.mark.parametrize("wiring", ["node", "edge"])
def test_payload_sent_back_in_the_same_input_as_the_new_message_runs_nothing(
    engine: EmbeddedPolicy, wiring: str
) -> None:
    ledger = Ledger()
    script = Script([turn(tool_call("read", READ, "r1"), id="a1"), "ok", "ok", "ok"])
    graph = node_graph(
        engine, script, ledger, checkpointer=InMemorySaver(), wiring=wiring, answer_open=True
    )
    config = thread_config(f"rt55-pin-same-input-{wiring}")
    payload = asyncio.run(tools_input_seen(graph, config))
    assert runs_of(ledger, "r1") == 0
    graph.invoke(
        Command(update={"messages": [("user", "never mind")]}, goto=Send("tools", payload)),
        config,
        context={"user": USER},
    )
    assert runs_of(ledger, "r1") == 0, ledger.runs
    # (No second answer either. The run entered at the Send, not at START, so
    # ``answer_open_calls`` did not run: the call is left unanswered, as any caller's
    # ``Command(update=<a request>, goto=...)`` leaves a turn, guard or not.)
    answers = [m for m in messages(graph, config) if isinstance(m, ToolMessage)]
    assert len(answers) <= 1, [m.content for m in answers]


def test_tool_call_limit_beside_the_guard_middleware(engine: EmbeddedPolicy) -> None:
    ledger = Ledger()
    script = Script(
        [
            AIMessage(
                "",
                id="a1",
                tool_calls=[tool_call("read", READ, "r1"), tool_call("read", READ, "r2")],
            ),
            "ok",
            "ok",
        ]
    )
    tools = mediation_tools(ledger)
    graph: Any = create_agent(
        ScriptedChatModel(script=[script.reply] * 8),
        tools,
        middleware=[
            ToolCallLimitMiddleware(run_limit=1),
            OPAGuardMiddleware(engine, registry=tools),
        ],
        checkpointer=InMemorySaver(),
    )
    config = thread_config("rt55-pin-limit")
    out = graph.invoke({"messages": [("user", "go")]}, config, context={"user": USER})
    assert runs_of(ledger, "r1") == 1 and runs_of(ledger, "r2") == 0, ledger.runs
    assert_one_answer_per_id(out["messages"])
    assert sorted(m.tool_call_id for m in out["messages"] if isinstance(m, ToolMessage)) == [
        "r1",
        "r2",
    ]
