"""The guard as the agent's edge when the agent's step does not finish: a run cancelled while
the edge decides, and the agent's step retried (``RetryPolicy``) after the edge decided.

The edge decides inside the agent's task: its decisions reach the tools only in that task's
writes. A task that is cancelled or fails writes nothing, so what the edge decided in it must
never run, and the step run again decides its own turn again.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import RetryPolicy
from mediation_kit import (
    POLICY,
    USER,
    Ledger,
    Script,
    assert_one_answer_per_id,
    mediation_tools,
    node_graph,
)
from opa_process import ROOT

from langchain_opa_guard import EmbeddedPolicy, GuardedToolNode, PolicyGuardNode
from langchain_opa_guard.testing import tool_call

TEST_POLICIES = ROOT / "tests" / "policies"
READ = tool_call("read", {"item": "a"}, "r1")
PAY = tool_call("pay", {"amount": 5000}, "p1")  # denied by the test policy


class HeldPolicy(EmbeddedPolicy):
    """The real embedded engine, whose async turn decisions wait while ``held`` (a policy
    that takes its time), so that a run can be cancelled while the edge decides."""

    def __init__(self) -> None:
        super().__init__(TEST_POLICIES, policy=POLICY)
        self.held = True
        self.entered: asyncio.Event | None = None
        self.turns = 0

    async def adecide_many(self, inputs: Any) -> Any:
        self.turns += 1
        if self.held:
            assert self.entered is not None
            self.entered.set()
            await asyncio.sleep(3600)
        return await super().adecide_many(inputs)


def test_a_run_cancelled_while_the_edge_decides_runs_nothing_and_resumes_decided_again() -> None:
    engine = HeldPolicy()
    ledger = Ledger()
    script = Script([AIMessage("", tool_calls=[READ, PAY]), "done"])
    graph = node_graph(engine, script, ledger, checkpointer=InMemorySaver(), wiring="edge")
    config = {"configurable": {"thread_id": "cancelled"}}

    async def scenario() -> dict[str, Any]:
        engine.entered = asyncio.Event()
        run = asyncio.create_task(
            graph.ainvoke({"messages": [("user", "go")]}, config, context={"user": USER})
        )
        await asyncio.wait_for(engine.entered.wait(), 30)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        await asyncio.sleep(0.05)  # anything left over would run now
        assert ledger.runs == []
        # Nothing of the cancelled step was kept: no proposed turn, no decision, no answer.
        state = await graph.aget_state(config)
        assert not any(isinstance(m, (AIMessage, ToolMessage)) for m in state.values["messages"])
        engine.held = False
        return await graph.ainvoke(None, config, context={"user": USER})

    result = asyncio.run(scenario())
    assert ledger.names() == ["read"]
    assert engine.turns == 2  # the resumed step decided its turn again
    assert_one_answer_per_id(result["messages"])
    answers = {m.tool_call_id: m for m in result["messages"] if isinstance(m, ToolMessage)}
    assert answers["r1"].status == "success"
    assert answers["p1"].status == "error"


class FlakyAfterTheEdge:
    """A second router of the agent's step that fails the step's first attempt after the
    edge has decided (routers run in the order they were added)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, state: MessagesState) -> list[str]:
        self.calls += 1
        if self.calls == 1:
            raise ConnectionError("the step failed after the edge decided")
        return []


class ChangingModel:
    """The first attempt proposes an allowed read; the retried attempt proposes a payment."""

    def __init__(self) -> None:
        self.attempts = 0

    def __call__(self, state: MessagesState) -> dict[str, Any]:
        if any(isinstance(m, AIMessage) for m in state["messages"]):
            return {"messages": [AIMessage("done")]}
        self.attempts += 1
        turn = [READ] if self.attempts == 1 else [PAY]
        return {"messages": [AIMessage("", tool_calls=turn)]}


@pytest.mark.parametrize("checkpointer", [None, "memory"])
def test_a_retried_agent_step_does_not_use_what_the_edge_decided_in_the_failed_attempt(
    checkpointer: str | None,
) -> None:
    ledger = Ledger()
    tools = GuardedToolNode(mediation_tools(ledger))
    guard = PolicyGuardNode(EmbeddedPolicy(TEST_POLICIES, policy=POLICY), registry=tools)
    model, flaky = ChangingModel(), FlakyAfterTheEdge()
    builder = StateGraph(MessagesState)
    builder.add_node(
        "agent",
        RunnableLambda(model, name="agent"),
        retry_policy=RetryPolicy(max_attempts=3, initial_interval=0.01, jitter=False),
    )
    builder.add_node("guard", guard)
    builder.add_node("tools", tools)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", guard.edge("guard"), ["guard", "tools", END])
    builder.add_conditional_edges("agent", flaky, [])
    builder.add_edge("tools", "agent")
    graph = builder.compile(checkpointer=InMemorySaver() if checkpointer else None)
    config = {"configurable": {"thread_id": "retried"}}
    result = graph.invoke({"messages": [("user", "go")]}, config, context={"user": USER})
    assert model.attempts == 2 and flaky.calls >= 2
    # The failed attempt's read was decided (allowed) but its writes were dropped: it never
    # runs, and the retried attempt's payment is decided on its own (denied).
    assert ledger.runs == []
    assert_one_answer_per_id(result["messages"])
    answers = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    assert [(m.tool_call_id, m.status) for m in answers] == [("p1", "error")]
