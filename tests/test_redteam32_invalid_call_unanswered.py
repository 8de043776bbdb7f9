"""Red team 32: a streamed turn whose chunks for one call do not parse leaves that call unanswered.

A model that streams its turn builds each call from ``tool_call_chunks``; a call whose
argument text does not parse (truncated by ``max_tokens``, a doubled comma) ends
up in the merged message's ``invalid_tool_calls`` with its id, beside the calls that parsed.
The guard node decides the turn's ``tool_calls`` and answers each of them once, but gives the
``invalid_tool_calls`` entry no answer: the history keeps a call id with no ``ToolMessage``.
OpenAI-style APIs reject that history on the next model request (``langchain_openai`` sends
invalid calls back as ``tool_calls``), which is what the README's "every tool call gets exactly
one answer ... so the history stays valid for OpenAI-style APIs" rules out.
``create_agent`` (and so ``OPAGuardMiddleware``) answers such a call
(``_patch_invalid_tool_calls``); the guard node's wiring does not.

Nothing unallowed runs: the finding is the missing answer.
"""

from __future__ import annotations

import uuid
from collections import Counter

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from mediation_kit import POLICY, USER, Ledger, Script, node_graph
from opa_process import ROOT

from langchain_opa_guard import EmbeddedPolicy


def streamed_turn() -> AIMessage:
    """The turn as a streaming model sends it: two calls, the second one's text is broken."""
    chunks = [
        AIMessageChunk(
            "",
            id="m-stream",
            tool_call_chunks=[
                {
                    "name": "read",
                    "args": '{"item": ',
                    "id": "c-ok",
                    "index": 0,
                    "type": "tool_call_chunk",
                }
            ],
        ),
        AIMessageChunk(
            "",
            tool_call_chunks=[
                {"name": None, "args": '"x"}', "id": None, "index": 0, "type": "tool_call_chunk"}
            ],
        ),
        AIMessageChunk(
            "",
            tool_call_chunks=[
                {
                    "name": "pay",
                    "args": '{"amount": 5000,,}',
                    "id": "c-bad",
                    "index": 1,
                    "type": "tool_call_chunk",
                }
            ],
        ),
    ]
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    assert [c["id"] for c in merged.tool_calls] == ["c-ok"]
    assert [c["id"] for c in merged.invalid_tool_calls] == ["c-bad"]
    # What BaseChatModel hands the graph after streaming (message_chunk_to_message).
    return AIMessage(
        "",
        id=merged.id,
        tool_calls=merged.tool_calls,
        invalid_tool_calls=merged.invalid_tool_calls,
    )


@pytest.mark.parametrize("wiring", ["node", "edge"])
def test_an_invalid_call_of_a_streamed_turn_gets_one_answer(wiring: str) -> None:
    engine = EmbeddedPolicy(ROOT / "tests" / "policies", policy=POLICY)
    ledger = Ledger()
    graph = node_graph(
        engine,
        Script([streamed_turn(), "done"]),
        ledger,
        checkpointer=InMemorySaver(),
        wiring=wiring,
    )
    config = {"configurable": {"thread_id": uuid.uuid4().hex}}
    out = graph.invoke({"messages": [("user", "read x")]}, config, context={"user": USER})

    assert ledger.runs == [("read", "c-ok", {"item": "x"})]  # nothing else ran
    messages = out["messages"]
    turn = next(m for m in messages if isinstance(m, AIMessage) and m.id == "m-stream")
    ids = [c["id"] for c in turn.tool_calls] + [c["id"] for c in turn.invalid_tool_calls]
    answers = Counter(
        m.tool_call_id for m in messages[messages.index(turn) + 1 :] if isinstance(m, ToolMessage)
    )
    # Every id the model's turn holds, the broken one included, has exactly one answer.
    assert {i: answers[i] for i in ids} == {"c-ok": 1, "c-bad": 1}, answers
