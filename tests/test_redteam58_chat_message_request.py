"""Red team 58: a request written as a ``ChatMessage(role="user")`` does not close a turn.

What was done: the guard node (and the edge) decided a turn proposing an allowed read
``r1``; the caller saw its tools payload (``stream_mode="tasks"``) and closed the stream
before the tools ran. It then dropped the turn with a new request and sent the payload
back in the same input, ``Command(update={"messages": [ChatMessage("never mind",
role="user")]}, goto=Send("tools", payload))`` - exactly red team 55's pinned replay
(``test_redteam55_pins.py``), with the request as a ``ChatMessage`` whose role is "user"
(what chat models send as a user message) instead of a ``HumanMessage``.

Observed: ``live_turn._kind`` knows ``HumanMessage``, ``AIMessage``, ``ToolMessage`` and
dicts, not ``ChatMessage``; the request is read as nothing, the turn as still open, and the
dropped turn's call runs after the request that dropped it. The same with
``create_agent`` and ``OPAGuardMiddleware`` (``on_graph_conversation``): the send runs.
Roles "user" and "human" alike; the same replay with a ``HumanMessage`` runs nothing (the
middleware test's "human" case, which passes). LangChain 1.5 and 1.2 alike.

Expected: as with a ``HumanMessage`` (red team 55's pin): a request after the turn closes
it, nothing of the hand-over runs.
"""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import ChatMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command, Send
from mediation_kit import (
    READ,
    USER,
    Ledger,
    Script,
    mediation_engine,  # noqa: F401 - the engine fixture
    node_graph,
    runs_of,
    thread_config,
    turn,
)
from replay_kit import tools_input_seen

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.testing import tool_call


@pytest.mark.parametrize("role", ["user", "human"])
@pytest.mark.parametrize("wiring", ["node", "edge"])
def test_payload_sent_back_with_a_chat_message_request_runs_nothing(
    engine: EmbeddedPolicy, wiring: str, role: str
) -> None:
    ledger = Ledger()
    script = Script([turn(tool_call("read", READ, "r1"), id="a1"), "ok", "ok", "ok"])
    graph = node_graph(
        engine, script, ledger, checkpointer=InMemorySaver(), wiring=wiring, answer_open=True
    )
    config = thread_config(f"rt58-chat-request-{wiring}-{role}")
    payload = asyncio.run(tools_input_seen(graph, config))
    assert runs_of(ledger, "r1") == 0
    request = ChatMessage("never mind", role=role)
    graph.invoke(
        Command(update={"messages": [request]}, goto=Send("tools", payload)),
        config,
        context={"user": USER},
    )
    assert runs_of(ledger, "r1") == 0, (
        f"the dropped turn's call ran after the request (ChatMessage role={role!r}) that "
        f"dropped it: {ledger.runs}"
    )


@pytest.fixture(scope="module")
def rt53_engine(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedPolicy:
    from replay_kit import POLICY_TEXT

    root = tmp_path_factory.mktemp("redteam58_chat")
    (root / "policy.rego").write_text(POLICY_TEXT)
    return EmbeddedPolicy(root, policy="redteam53/decision")


@pytest.mark.parametrize("request_kind", ["human", "chat-user"])
def test_middleware_call_sent_back_with_a_chat_message_request_runs_nothing(
    rt53_engine: EmbeddedPolicy, request_kind: str
) -> None:
    """The same with ``create_agent`` and ``OPAGuardMiddleware`` (red team 53's policy):
    the caller saw the sealed grants and the call ``s1``, closed the stream, then sent
    ``Command(update={"messages": [<request>]}, goto=Send("tools", <ToolCallWithContext
    with the grants>))``. With a ``HumanMessage`` nothing runs; with a
    ``ChatMessage(role="user")`` the dropped turn's send runs."""
    from langchain_core.messages import HumanMessage
    from test_live_turn_wirings import _graph
    from test_redteam54_middleware_state import GRANTS, _seen_by_the_caller

    ledger = Ledger()
    graph = _graph("middleware", rt53_engine, ledger)
    config = thread_config(f"rt58-chat-request-middleware-{request_kind}")

    async def first() -> object:
        seen = await _seen_by_the_caller(graph, config)
        await asyncio.sleep(0.05)
        return seen

    grants, call = asyncio.run(first())
    assert runs_of(ledger, "s1") == 0
    request = (
        HumanMessage("never mind")
        if request_kind == "human"
        else ChatMessage("never mind", role="user")
    )
    state = {"messages": [HumanMessage("send b a hi")], GRANTS: grants}
    given = {"__type": "tool_call_with_context", "tool_call": call, "state": state}
    graph.invoke(
        Command(update={"messages": [request]}, goto=Send("tools", given)),
        config,
        context={"user": USER},
    )
    assert runs_of(ledger, "s1") == 0, (
        f"the dropped turn's send ran after the request ({request_kind}) that dropped it: "
        f"{ledger.runs}"
    )
