"""Red team 31: a ``RetryPolicy`` on the parent node that holds a guarded subgraph runs the
subgraph's completed, allowed calls again.

A parent graph uses a compiled guarded agent (``agent -> guard -> tools`` or ``create_agent``
with ``OPAGuardMiddleware``) as one of its nodes, with a ``RetryPolicy`` for a flaky model
API, the usual setting for a node that calls a model. The model fails once *after* the
turn's payment ran. LangGraph retries the parent's node, which runs the subgraph again from
its START; inside it every task id is new, so the guard's run-once claim (keyed by the
deciding task's namespace, :func:`langchain_opa_guard.guards.claims.decided_turn`) does not
recognise the same model message ``a1`` and call ``p1``, and pays again. This holds with the
subgraph's default (inherited) checkpointer and with none.

The README: "a task LangGraph runs again (a ``RetryPolicy`` ...) runs that call again, never
its neighbours" and "a call of a decided turn that already started in this process does not
start again". The accepted exception is a tool retried after *it* raised; here the tool
succeeded and the model raised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import RetryPolicy
from mediation_kit import POLICY, USER, Ledger, Script, agent_graph, node_graph
from opa_process import ROOT

from langchain_opa_guard import EmbeddedPolicy


@pytest.fixture(scope="module")
def engine() -> EmbeddedPolicy:
    return EmbeddedPolicy(ROOT / "tests" / "policies", policy=POLICY)


class FlakyAfterPaying(Script):
    """Turn 1 pays 100 (allowed); the model API then fails once, and answers on retry."""

    def __init__(self) -> None:
        super().__init__(
            [
                AIMessage(
                    "",
                    tool_calls=[{"name": "pay", "args": {"amount": 100}, "id": "p1"}],
                    id="a1",
                )
            ]
        )
        self.failed = False

    def reply(self, messages: Sequence[BaseMessage]) -> AIMessage:
        if sum(isinstance(m, AIMessage) for m in messages) == 1 and not self.failed:
            self.failed = True
            raise ConnectionError("model API: 503")
        return super().reply(messages)


@pytest.mark.parametrize("surface", ["guard node", "middleware"])
@pytest.mark.parametrize("child_checkpointer", [None, False], ids=["inherited", "none"])
def test_a_retried_subgraph_pays_again(
    engine: EmbeddedPolicy, surface: str, child_checkpointer: Any
) -> None:
    ledger = Ledger()
    build = agent_graph if surface == "middleware" else node_graph
    child = build(engine, FlakyAfterPaying(), ledger, checkpointer=child_checkpointer)
    builder = StateGraph(MessagesState)
    builder.add_node(
        "assistant",
        child,
        retry_policy=RetryPolicy(max_attempts=2, initial_interval=0.01, retry_on=ConnectionError),
    )
    builder.add_edge(START, "assistant")
    builder.add_edge("assistant", END)
    parent = builder.compile(checkpointer=InMemorySaver())

    parent.invoke(
        {"messages": [("user", "pay the invoice")]},
        {"configurable": {"thread_id": f"rt31-retry-{surface}-{child_checkpointer}"}},
        context={"user": USER},
    )

    # Expected: call p1 of model message a1 was decided once, ran, and does not run again.
    assert [c for n, c, _ in ledger.runs if n == "pay"] == ["p1"], ledger.runs
