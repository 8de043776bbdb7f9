"""Red team 27: a sealed grant holds forever, in any thread, in any graph of the process.

The seals bind what a hand-over grants (each call's name and arguments, the message id, the
deciding task) but not the thread it was decided in, the policy revision that decided it,
nor the graph or guard that decided it. Run-once claims are kept per ``(thread, turn, call
id)`` and per process. So a caller who has seen one sealed tools payload
(``stream_mode="tasks"`` shows every task's input; a LangGraph server streams it to its API
clients) Sends it, later, to the tools node

* of another thread, after the operator revoked the permission (a policy reload that denies
  every payment); or
* of the same thread from another worker (the deployment's shared ``OPA_GUARD_SEAL_KEY``,
  claims kept only in the process that ran the call), likewise after the reload; or
* of another graph in the same process, whose guard has a stricter policy;

and the tool runs a call the policy in force there denies. (A fork or a replay from an
earlier checkpoint decides the turn again on the policy in force: only the sealed payload
carries the old permission.)
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command, Send
from mediation_kit import POLICY, USER, Ledger, Script, node_graph
from opa_process import ROOT

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.guards import claims, seals

BEFORE = """
package rt27pay

default decision := {"allow": true, "reasons": []}
"""

AFTER = """
package rt27pay

# Payments revoked.
default decision := {"allow": true, "reasons": []}

decision := {"allow": false, "reasons": [{"code": "revoked", "message": "revoked"}]} if {
	input.tool.name == "pay"
}
"""

PERMISSIVE = """
package rt27open

default decision := {"allow": true, "reasons": []}
"""


class Payer(Script):
    """A model that asks to pay 500 in every turn, with fresh message and call ids."""

    def __init__(self, turns: int) -> None:
        super().__init__([])
        self.left = turns

    def reply(self, messages: Sequence[BaseMessage]) -> AIMessage:
        done = sum(1 for m in messages if isinstance(m, AIMessage))
        if done >= self.left:
            return AIMessage("done", id=str(uuid.uuid4()))
        call = {"name": "pay", "args": {"amount": 500}, "id": f"call-{uuid.uuid4().hex[:8]}"}
        return AIMessage("", tool_calls=[{**call, "type": "tool_call"}], id=str(uuid.uuid4()))


def engine_for(tmp_path: Any, text: str, package: str) -> EmbeddedPolicy:
    directory = tmp_path / package
    directory.mkdir()
    (directory / "policy.rego").write_text(text)
    return EmbeddedPolicy(directory, policy=f"{package}/decision")


def run_capturing_tools(graph: Any, config: Any) -> list[dict[str, Any]]:
    seen = []
    inputs = {"messages": [("user", "pay the invoice")]}
    for event in graph.stream(inputs, config, context={"user": USER}, stream_mode="tasks"):
        if event.get("name") == "tools" and "input" in event:
            seen.append(copy.deepcopy(event["input"]))
    return seen


def payments(ledger: Ledger) -> list[str]:
    return [call_id for name, call_id, _ in ledger.runs if name == "pay"]


@pytest.mark.parametrize("where", ["another thread", "same thread, another worker"])
def test_a_replayed_tools_payload_runs_a_payment_the_policy_now_denies(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    monkeypatch.setenv(seals.KEY_ENV, "the deployment's shared secret")  # as the README asks
    engine = engine_for(tmp_path, BEFORE, "rt27pay")
    ledger = Ledger()
    graph = node_graph(engine, Payer(1), ledger, checkpointer=InMemorySaver())

    thread_a = {"configurable": {"thread_id": "rt27-a"}}
    [payload] = run_capturing_tools(graph, thread_a)
    assert len(payments(ledger)) == 1

    # The operator revokes payments.
    (tmp_path / "rt27pay" / "policy.rego").write_text(AFTER)
    engine.reload()

    thread_b = {"configurable": {"thread_id": "rt27-b"}}
    run_capturing_tools(graph, thread_b)  # control: the model's payment is now denied
    assert len(payments(ledger)) == 1
    denial = [
        m
        for m in graph.get_state(thread_b).values["messages"]
        if isinstance(m, ToolMessage) and m.status == "error"
    ]
    assert denial and "revoked" in str(denial[0].content)

    if where == "another thread":
        target = thread_b
    else:
        target = thread_a
        monkeypatch.setattr(claims, "CLAIMS", claims._Claims())  # the next worker's memory

    graph.invoke(Command(goto=Send("tools", payload)), target, context={"user": USER})

    # Expected: no payment runs once the policy denies payments.
    assert len(payments(ledger)) == 1, ledger.runs


def test_a_tools_payload_of_one_graph_runs_in_another_graph_of_the_process(
    tmp_path: Any,
) -> None:
    # Two assistants in one server process: a sandbox whose policy allows everything, and
    # the production graph (tests/policies/mediation.rego: pay over 1000 is denied).
    sandbox = node_graph(
        engine_for(tmp_path, PERMISSIVE, "rt27open"),
        Script([AIMessage("", tool_calls=[_pay(99999, "p1")], id="m1")]),
        Ledger(),
        checkpointer=InMemorySaver(),
    )
    [payload] = run_capturing_tools(sandbox, {"configurable": {"thread_id": "sandbox"}})

    ledger = Ledger()
    production = node_graph(
        EmbeddedPolicy(ROOT / "tests" / "policies", policy=POLICY),
        Script(["hi"]),
        ledger,
        checkpointer=InMemorySaver(),
    )
    config = {"configurable": {"thread_id": "prod"}}
    production.invoke({"messages": [("user", "hi")]}, config, context={"user": USER})
    production.invoke(Command(goto=Send("tools", payload)), config, context={"user": USER})

    # Expected: the production guard never allowed it, so it does not run there.
    assert ledger.runs == []


def _pay(amount: int, call_id: str) -> Any:
    return {"name": "pay", "args": {"amount": amount}, "id": call_id, "type": "tool_call"}
