"""Red team 4: OPAGuardMiddleware answers a call without an id twice.

Attack: the model (some providers send calls without ids) proposes a call whose ``id`` is
``None``. ``after_model`` denies it before the policy is asked and answers it with a
``ToolMessage`` whose ``tool_call_id`` is ``""`` (`answer_id`). create_agent's routing then
still finds the call pending (its id, ``None``, is not among the answers' ids) and sends it
to the tools node, where the middleware's ``wrap_tool_call`` finds no grant, decides it again
through its ToolCallGuard fallback and answers it a second time.

README promise (guard table): "a call without a usable id, or an id used twice in the turn:
denied before the policy is asked; one answer per id, nothing of it runs"; and "Every tool
call gets exactly one answer ... so the history stays valid for OpenAI-style APIs".

Observed: two error ToolMessages for the one call (the guard node answers it once, the
control). Nothing runs.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from conftest import TEST_POLICIES
from langchain.agents.middleware import AgentMiddleware
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.prebuilt import ToolNode
from mediation_kit import (
    POLICY,
    USER,
    Ledger,
    Script,
    agent_graph,
    assert_one_answer_per_id,
    mediation_tools,
    node_graph,
)

from langchain_opa_guard import EmbeddedPolicy, PolicyEngine, ToolCallGuard


@pytest.fixture
def engine() -> PolicyEngine:
    return EmbeddedPolicy(TEST_POLICIES, policy=POLICY)


@pytest.mark.parametrize("surface", ["guard node (control)", "middleware"])
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_call_without_an_id_gets_one_answer(
    engine: PolicyEngine, surface: str, asynchronous: bool
) -> None:
    ledger = Ledger()
    turn = AIMessage(
        "", tool_calls=[{"name": "read", "args": {"item": "a"}, "id": None, "type": "tool_call"}]
    )
    build = agent_graph if surface == "middleware" else node_graph
    graph = build(engine, Script([turn]), ledger, checkpointer=InMemorySaver())
    args: tuple[Any, ...] = (
        {"messages": [("user", "go")]},
        {"configurable": {"thread_id": f"no-id-{surface}-{asynchronous}"}},
    )
    if asynchronous:
        import asyncio

        result = asyncio.run(graph.ainvoke(*args, context={"user": USER}))
    else:
        result = graph.invoke(*args, context={"user": USER})
    answers = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    assert ledger.runs == []
    assert len(answers) == 1, [(m.tool_call_id, m.content[:60]) for m in answers]


def _unnamed(item: str, call_id: Any) -> dict[str, Any]:
    return {"name": "read", "args": {"item": item}, "id": call_id, "type": "tool_call"}


TURNS = {
    "no id": [_unnamed("a", None)],
    "empty id": [_unnamed("a", "")],
    "two without id beside one with": [
        _unnamed("a", None),
        {"name": "read", "args": {"item": "b"}, "id": "r1", "type": "tool_call"},
        _unnamed("c", ""),
    ],
}


def _interceptor_graph(engine: PolicyEngine, script: Script, ledger: Ledger) -> Any:
    from test_integrations import plain_agent

    from langchain_opa_guard.testing import ScriptedChatModel

    tools = mediation_tools(ledger)
    guard = ToolCallGuard(engine, registry=tools)
    node = ToolNode(
        tools, wrap_tool_call=guard.wrap_tool_call, awrap_tool_call=guard.awrap_tool_call
    )
    return plain_agent(ScriptedChatModel(script=[script.reply] * 4), node, InMemorySaver())


class DropIds(AgentMiddleware):  # type: ignore[type-arg]
    """Takes the ids off the model's calls in ``after_model``, after the guard decided the
    turn (it runs before the guard's ``after_model``): the guard decides the turn again."""

    def after_model(self, state: Any, runtime: Any) -> Any:
        message = state["messages"][-1]
        if not isinstance(message, AIMessage) or not message.tool_calls:
            return None
        calls = [{**c, "id": None} for c in message.tool_calls]
        return {"messages": [message.model_copy(update={"tool_calls": calls})]}


def _run(graph: Any, asynchronous: bool, thread: str) -> dict[str, Any]:
    import asyncio

    args: tuple[Any, ...] = (
        {"messages": [("user", "go")]},
        {"configurable": {"thread_id": thread}},
    )
    if asynchronous:
        return asyncio.run(graph.ainvoke(*args, context={"user": USER}))  # type: ignore[no-any-return]
    return graph.invoke(*args, context={"user": USER})  # type: ignore[no-any-return]


@pytest.mark.parametrize("calls", list(TURNS))
@pytest.mark.parametrize("surface", ["guard node", "middleware", "interceptor"])
@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_every_call_without_an_id_gets_one_answer_on_every_surface(
    engine: PolicyEngine, surface: str, asynchronous: bool, calls: str
) -> None:
    """Each call answered exactly once, by the id it carries in the history (the middleware
    gives an id-less call one of its own; the guard node and the interceptor cannot change
    the model's message, and answer it under the empty id), nothing without an id runs, and
    a call with an id beside them is decided as usual."""
    ledger = Ledger()
    script = Script([AIMessage("", tool_calls=TURNS[calls])])
    if surface == "middleware":
        graph = agent_graph(engine, script, ledger, checkpointer=InMemorySaver())
    elif surface == "guard node":
        graph = node_graph(engine, script, ledger, checkpointer=InMemorySaver())
    else:
        graph = _interceptor_graph(engine, script, ledger)
    result = _run(graph, asynchronous, f"ids-{surface}-{calls}-{asynchronous}")
    assert ledger.runs == ([("read", "r1", {"item": "b"})] if "one with" in calls else [])
    messages = result["messages"]
    answers = [m for m in messages if isinstance(m, ToolMessage)]
    turn = next(m for m in messages if isinstance(m, AIMessage) and m.tool_calls)
    if surface == "middleware":
        assert_one_answer_per_id(messages)
        assert all(isinstance(c["id"], str) and c["id"] for c in turn.tool_calls)
    else:
        named = {c["id"] for c in turn.tool_calls if c["id"]}
        assert Counter(a.tool_call_id for a in answers if a.tool_call_id) == Counter(named)
        unnamed_calls = len(turn.tool_calls) - len(named)
        # The guard node answers the empty id once (one answer per id); the ToolNode runs
        # each call once, so the interceptor answers each one.
        expected = 1 if surface == "guard node" else unnamed_calls
        assert sum(1 for a in answers if not a.tool_call_id) == expected
    unnamed = [a for a in answers if a.response_metadata.get("opa_guard", {}).get("error")]
    assert unnamed and all("has no id" in a.content for a in unnamed)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_ids_taken_off_after_the_decision_get_one_answer_each(
    engine: PolicyEngine, asynchronous: bool
) -> None:
    """A middleware that takes the ids off after the guard decided: the guard decides the
    turn again, gives each call an id and answers each once; nothing runs."""
    ledger = Ledger()
    turn = AIMessage(
        "",
        tool_calls=[
            {"name": "read", "args": {"item": "a"}, "id": "r1", "type": "tool_call"},
            {"name": "read", "args": {"item": "b"}, "id": "r2", "type": "tool_call"},
        ],
    )
    graph = agent_graph(
        engine, Script([turn]), ledger, checkpointer=InMemorySaver(), after=[DropIds()]
    )
    result = _run(graph, asynchronous, f"dropped-{asynchronous}")
    assert ledger.runs == []
    messages = result["messages"]
    assert_one_answer_per_id(messages)
    decided = next(m for m in messages if isinstance(m, AIMessage) and m.tool_calls)
    assert len({c["id"] for c in decided.tool_calls}) == 2
    assert all(c["id"] not in ("r1", "r2") for c in decided.tool_calls)
