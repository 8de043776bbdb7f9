# ruff: noqa: E501
"""Red team 14: a turn waiting for a reviewer is resumed by a graph whose tool reads its
arguments another way (a new release deployed while the turn waited, or a second graph
sharing the checkpointer thread).

Graph A's ``pay`` takes ``amount: str`` (a reference). The policy denies a *number* over
1000 and allows any other value, so ``pay(amount="5000")`` is allowed as the text it is. The
same turn holds a ``send`` that waits for a human. The checkpoint is then resumed by graph B,
whose ``pay`` takes ``amount: int``: it runs with the number 5000, which the policy denies
(the control). On resume the call is decided again from the ticket's stored policy input (A's
reading) and its view digest is ``"alike"`` (A's schema reads alike), so B's tool is never
asked how it reads the call.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition
from langgraph.types import Command
from opa_process import OPAProcess

from langchain_opa_guard import GuardedToolNode, OPAServer, PolicyGuardNode
from langchain_opa_guard.testing import tool_call

POLICY = """package redteam14upgrade

import rego.v1

default decision := {"allow": false, "reasons": [{"code": "default_deny", "message": "no rule"}]}

big if {
	is_number(input.tool.args.amount)
	input.tool.args.amount > 1000
}

decision := {"allow": true, "reasons": []} if {
	input.tool.name == "pay"
	not big
}

decision := {"allow": false, "reasons": [{"code": "big", "message": "amount over 1000"}]} if {
	input.tool.name == "pay"
	big
}

decision := {"allow": false, "require_approval": true, "reasons": [{"code": "ask", "message": "a human must approve"}]} if {
	input.tool.name == "send"
}
"""

USER = {"id": "u-1", "role": "tester"}


@pytest.fixture(scope="module")
def opa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OPAProcess]:
    root = tmp_path_factory.mktemp("redteam14-upgrade")
    (root / "policy.rego").write_text(POLICY)
    with OPAProcess([root], log_path=root / "opa.log") as server:
        yield server


@pytest.fixture
def engine(opa: OPAProcess) -> Iterator[OPAServer]:
    client = OPAServer(opa.url, policy="redteam14upgrade/decision")
    yield client
    client.close()


def tools_v1(runs: list[Any]) -> list[StructuredTool]:
    def pay(amount: str) -> str:
        """Pay by reference."""
        runs.append(("pay", amount))
        return "paid"

    def send(to: str) -> str:
        """Send a message."""
        runs.append(("send", to))
        return "sent"

    return [StructuredTool.from_function(pay), StructuredTool.from_function(send)]


def tools_v2(runs: list[Any]) -> list[StructuredTool]:
    def pay(amount: int) -> str:
        """Pay an amount."""
        runs.append(("pay", amount))
        return "paid"

    def send(to: str) -> str:
        """Send a message."""
        runs.append(("send", to))
        return "sent"

    return [StructuredTool.from_function(pay), StructuredTool.from_function(send)]


def graph(engine: OPAServer, tools: list[StructuredTool], turns: list[Any], saver: Any) -> Any:
    node = GuardedToolNode(tools)

    def agent(state: MessagesState) -> dict[str, Any]:
        done = sum(1 for m in state["messages"] if isinstance(m, AIMessage))
        step = turns[done] if done < len(turns) else AIMessage("done")
        return {"messages": [step]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", RunnableLambda(agent, name="agent"))
    builder.add_node("guard", PolicyGuardNode(engine, registry=node))
    builder.add_node("tools", node)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=saver)


def turns() -> list[Any]:
    return [
        AIMessage(
            "",
            tool_calls=[
                tool_call("pay", {"amount": "5000"}, "p1"),
                tool_call("send", {"to": "bob@example.com"}, "s1"),
            ],
        ),
        AIMessage("ok"),
    ]


def test_control_v2_denies_5000(engine: OPAServer) -> None:
    runs: list[Any] = []
    script = [
        AIMessage("", tool_calls=[tool_call("pay", {"amount": "5000"}, "p1")]),
        AIMessage("ok"),
    ]
    g = graph(engine, tools_v2(runs), script, InMemorySaver())
    config = {"configurable": {"thread_id": "rt14-control"}}
    g.invoke({"messages": [("user", "go")]}, config, context={"user": USER})
    assert runs == []


def test_resume_by_a_graph_whose_tool_reads_otherwise(engine: OPAServer) -> None:
    saver = InMemorySaver()
    config = {"configurable": {"thread_id": "rt14-upgrade"}}
    first_runs: list[Any] = []
    first = graph(engine, tools_v1(first_runs), turns(), saver).invoke(
        {"messages": [("user", "go")]}, config, context={"user": USER}
    )
    assert first["__interrupt__"]
    assert first_runs == []
    runs: list[Any] = []
    graph(engine, tools_v2(runs), turns(), saver).invoke(
        Command(resume={"decisions": [{"type": "approve"}]}), config, context={"user": USER}
    )
    assert ("send", "bob@example.com") in runs
    assert ("pay", 5000) not in runs, (
        "pay ran with the number 5000, which the policy denies: the resume decided the ticket's "
        "stored reading (the text '5000') and did not read the call with the tool that runs it"
    )
