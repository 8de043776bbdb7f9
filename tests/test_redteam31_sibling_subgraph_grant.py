"""Red team 31: a tools payload sealed by the guard of one subgraph runs in the tools node of
a sibling subgraph built alike, where the policy denies the call.

An application builds its assistants with one factory (``agent -> guard -> tools``, the
same engine, node names and rules) and uses two of them as nodes of a parent graph,
``billing`` and ``support``. The policy tells them apart by ``input.context.path`` (the
README: "the nodes from the outermost graph down to the guard, for subgraphs"): only the
billing assistant may pay. Both pause before their tools (``interrupt_before=["tools"]``, as
the README describes).

The seal binds a hand-over to the guard's scope (engine, node names, rules), the thread, the
time and the revision, not to where in the graph the guard decided it. Both guards have the
same scope, so each tools node accepts the other's hand-overs. The graph's caller reads
billing's pending tools payload from the checkpoint, drops billing's own run of it
(``update_state(..., as_node="tools")`` in billing's namespace) and hands the payload to
support's tools node (``update_state(..., Command(goto=Send("tools", payload)),
as_node="guard")`` in support's namespace). On resume the payment runs in support, with
support's tools and state: a call the policy denies there, never decided there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command, Send
from mediation_kit import USER, Ledger, Script, node_graph

from langchain_opa_guard import EmbeddedPolicy

POLICY = """
package rt31path

default decision := {"allow": true, "reasons": []}

decision := {"allow": false, "reasons": [{"code": "not_billing", "message": "billing pays"}]} if {
	input.tool.name == "pay"
	input.context.path[0] != "billing"
}
"""


def engine_for(tmp_path: Path) -> EmbeddedPolicy:
    directory = tmp_path / "rt31path"
    directory.mkdir()
    (directory / "policy.rego").write_text(POLICY)
    return EmbeddedPolicy(directory, policy="rt31path/decision")


def one_turn(call: dict[str, Any], message_id: str) -> Script:
    return Script([AIMessage("", tool_calls=[call], id=message_id)])


def pending_sends(graph: Any, config: Any) -> list[Any]:
    saved = graph.checkpointer.get_tuple(config)
    return [send.arg for send in saved.checkpoint["channel_values"].get("__pregel_tasks", [])]


def test_billings_payment_runs_in_the_support_subgraph(tmp_path: Path) -> None:
    engine = engine_for(tmp_path)
    billing_ledger, support_ledger = Ledger(), Ledger()
    pay = {"name": "pay", "args": {"amount": 500}, "id": "p1"}
    read = {"name": "read", "args": {"item": "faq"}, "id": "r1"}

    # One factory, two assistants (same engine, same node names and rules).
    billing = node_graph(
        engine, one_turn(pay, "a1"), billing_ledger, interrupt_before=["tools"], wiring="node"
    )
    support = node_graph(
        engine, one_turn(read, "b1"), support_ledger, interrupt_before=["tools"], wiring="node"
    )
    builder = StateGraph(MessagesState)
    builder.add_node("billing", billing)
    builder.add_node("support", support)
    builder.add_edge(START, "billing")
    builder.add_edge(START, "support")
    builder.add_edge("billing", END)
    builder.add_edge("support", END)
    parent = builder.compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "rt31-siblings"}}

    parent.invoke({"messages": [("user", "hello")]}, config, context={"user": USER})
    children = {
        task.name: task.state.config for task in parent.get_state(config, subgraphs=True).tasks
    }

    # Control: the support assistant's own guard denies a payment.
    control = node_graph(engine, one_turn(pay, "c1"), Ledger(), wiring="node")
    outer = StateGraph(MessagesState)
    outer.add_node("support", control)
    outer.add_edge(START, "support")
    outer.add_edge("support", END)
    answers = outer.compile().invoke({"messages": [("user", "pay")]}, context={"user": USER})
    denied = [m for m in answers["messages"] if isinstance(m, ToolMessage)]
    assert denied and denied[0].status == "error" and "billing pays" in str(denied[0].content)

    # The caller moves billing's pending, sealed tools payload to support's tools node.
    [payload] = pending_sends(parent, children["billing"])
    assert [c["name"] for c in payload["calls"]] == ["pay"]
    parent.update_state(children["billing"], {"messages": []}, as_node="tools")
    parent.update_state(children["support"], Command(goto=Send("tools", payload)), as_node="guard")
    parent.invoke(None, config, context={"user": USER})

    # Expected: support's tools node runs no call its guard did not decide; the policy
    # denies payments there.
    assert support_ledger.names().count("pay") == 0, support_ledger.runs
