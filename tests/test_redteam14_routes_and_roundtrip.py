# ruff: noqa: E501
"""Red team 14: routes around the guard node, and a decided turn carried through a checkpoint.

* The agent node sends the model's call straight to the tools node (``Command(goto="tools")``
  or ``Command(goto=Send("tools", call))``, LangGraph's per-call ``Send`` pattern), bypassing the
  guard: the ``GuardedToolNode`` must raise ``GuardWiringError`` and run nothing.
* A turn waits for a reviewer with an allowed payment whose schema reads a ``Decimal``, a
  ``set`` and a ``SecretStr``; the checkpoint is resumed by a fresh graph object (another
  process, as far as the guard can tell): what runs must be what the policy saw.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import InjectedToolCallId, StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition
from langgraph.types import Command, Send
from opa_process import OPAProcess
from pydantic import BaseModel, SecretStr

from langchain_opa_guard import GuardedToolNode, GuardWiringError, OPAServer, PolicyGuardNode
from langchain_opa_guard.testing import tool_call

POLICY = """package redteam14

import rego.v1

default decision := {"allow": false, "reasons": [{"code": "default_deny", "message": "no rule"}]}

decision := {"allow": true, "reasons": []} if {
	input.tool.name == "pay"
	is_number(input.tool.args.amount)
	input.tool.args.amount <= 1000
	not "vip" in input.tool.args.tags
	input.tool.args.token == "t-ok"
}

decision := {"allow": false, "require_approval": true, "reasons": [{"code": "ask", "message": "a human must approve"}]} if {
	input.tool.name == "send"
}
"""

USER = {"id": "u-1", "role": "tester"}


@pytest.fixture(scope="module")
def opa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OPAProcess]:
    root = tmp_path_factory.mktemp("redteam14")
    (root / "policy.rego").write_text(POLICY)
    with OPAProcess([root], log_path=root / "opa.log") as server:
        yield server


@pytest.fixture
def engine(opa: OPAProcess) -> Iterator[OPAServer]:
    client = OPAServer(opa.url, policy="redteam14/decision")
    yield client
    client.close()


class PayArgs(BaseModel):
    amount: Decimal
    tags: set[str]
    token: SecretStr


def make_tools(runs: list[tuple[str, Any]]) -> list[StructuredTool]:
    def pay(amount: Decimal, tags: set[str], token: SecretStr) -> str:
        """Pay an amount."""
        runs.append(("pay", (amount, tags, token.get_secret_value())))
        return "paid"

    def send(to: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Send a message."""
        runs.append(("send", to))
        return "sent"

    return [
        StructuredTool.from_function(pay, args_schema=PayArgs),
        StructuredTool.from_function(send),
    ]


def guarded_graph(engine: OPAServer, turns: list[Any], runs: list[Any], saver: Any) -> Any:
    tools = GuardedToolNode(make_tools(runs))

    def agent(state: MessagesState) -> dict[str, Any]:
        done = sum(1 for m in state["messages"] if isinstance(m, AIMessage))
        step = turns[done] if done < len(turns) else AIMessage("done")
        return {"messages": [step]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", RunnableLambda(agent, name="agent"))
    builder.add_node("guard", PolicyGuardNode(engine, registry=tools))
    builder.add_node("tools", tools)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=saver)


@pytest.mark.parametrize("route", ["goto", "send"])
def test_agent_routing_straight_to_tools_runs_nothing(engine: OPAServer, route: str) -> None:
    runs: list[Any] = []
    tools = GuardedToolNode(make_tools(runs))
    call = tool_call("pay", {"amount": "5000", "tags": ["vip"], "token": "t-bad"}, "p1")

    def agent(state: MessagesState) -> Command[Any]:
        message = AIMessage("", tool_calls=[call])
        if route == "goto":
            return Command(update={"messages": [message]}, goto="tools")
        return Command(update={"messages": [message]}, goto=Send("tools", call))

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent, destinations=("guard", "tools"))
    builder.add_node("guard", PolicyGuardNode(engine, registry=tools))
    builder.add_node("tools", tools)
    builder.add_edge(START, "agent")
    builder.add_edge("tools", END)
    graph = builder.compile()
    with pytest.raises(GuardWiringError):
        graph.invoke({"messages": [("user", "pay")]}, context={"user": USER})
    assert runs == []


@pytest.mark.parametrize("amount", ["999.99", "1000.000000000000000000001", 1000.5])
def test_checkpointed_turn_resumed_by_a_fresh_graph_runs_what_was_decided(
    engine: OPAServer, amount: Any
) -> None:
    saver = InMemorySaver()
    turns = [
        AIMessage(
            "",
            tool_calls=[
                tool_call("pay", {"amount": amount, "tags": ["a", "a"], "token": "t-ok"}, "p1"),
                tool_call("send", {"to": "bob@example.com"}, "s1"),
            ],
        ),
        AIMessage("ok"),
    ]
    config = {"configurable": {"thread_id": f"rt14-roundtrip-{amount}"}}
    first_runs: list[Any] = []
    first = guarded_graph(engine, turns, first_runs, saver).invoke(
        {"messages": [("user", "go")]}, config, context={"user": USER}
    )
    assert first["__interrupt__"]
    assert first_runs == []
    runs: list[Any] = []
    guarded_graph(engine, turns, runs, saver).invoke(
        Command(resume={"decisions": [{"type": "approve"}]}), config, context={"user": USER}
    )
    paid = [args for name, args in runs if name == "pay"]
    assert ("send", "bob@example.com") in runs
    for value, tags, token in paid:
        assert value <= 1000, f"pay ran with {value!r}, over the limit the policy enforces"
        assert tags == {"a"} and token == "t-ok"
    if Decimal(str(amount)) <= 1000:
        assert [p[0] for p in paid] == [Decimal(str(amount))]
    else:
        assert paid == []
