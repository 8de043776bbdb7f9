"""Red team 74: a graph's caller names the path the policy reads (``input.context.path``).

The README: ``context.path`` holds "the nodes from the outermost graph down to the guard, for
subgraphs", and red team 31's policy tells two assistants of one factory apart by it (only the
``billing`` assistant may pay). The guard reads the path from the task's checkpoint
namespace, and LangGraph builds every task's namespace on the ``checkpoint_ns`` the caller
puts in the run's ``configurable``. A caller who runs the parent with
``{"configurable": {"checkpoint_ns": "billing"}}`` makes a payment proposed in the
``support`` assistant read as ``path == ["billing", "support", "guard"]``: the policy allows
it and it runs. Expected: the path is the graph's, whatever the caller's config says (or the
run is refused), so the payment is denied in ``support``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from mediation_kit import USER, Ledger, Script, node_graph

from langchain_opa_guard import EmbeddedPolicy

POLICY = """
package rt74path

default decision := {"allow": true, "reasons": []}

decision := {"allow": false, "reasons": [{"code": "not_billing", "message": "billing pays"}]} if {
	input.tool.name == "pay"
	input.context.path[0] != "billing"
}
"""


def engine_for(tmp_path: Path) -> EmbeddedPolicy:
    directory = tmp_path / "rt74path"
    directory.mkdir()
    (directory / "policy.rego").write_text(POLICY)
    return EmbeddedPolicy(directory, policy="rt74path/decision")


def parent_with_support(engine: EmbeddedPolicy, ledger: Ledger, checkpointer: Any) -> Any:
    pay = {"name": "pay", "args": {"amount": 500}, "id": "p1"}
    support = node_graph(
        engine, Script([AIMessage("", tool_calls=[pay], id="s1")]), ledger, wiring="node"
    )
    builder = StateGraph(MessagesState)
    builder.add_node("support", support)
    builder.add_edge(START, "support")
    builder.add_edge("support", END)
    return builder.compile(checkpointer=checkpointer)


@pytest.mark.parametrize("saver", [False, True], ids=["no-checkpointer", "checkpointer"])
def test_caller_named_namespace_makes_support_billing(tmp_path: Path, saver: bool) -> None:
    engine = engine_for(tmp_path)

    # Control: run as the graph is, the support assistant's payment is denied.
    control_ledger = Ledger()
    control = parent_with_support(engine, control_ledger, InMemorySaver() if saver else None)
    out = control.invoke(
        {"messages": [("user", "pay")]},
        {"configurable": {"thread_id": "rt74-control"}},
        context={"user": USER},
    )
    denied = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert denied and denied[0].status == "error" and "billing pays" in str(denied[0].content)
    assert control_ledger.names() == []

    # The caller names a namespace of its own for the run.
    ledger = Ledger()
    graph = parent_with_support(engine, ledger, InMemorySaver() if saver else None)
    try:  # noqa: SIM105
        graph.invoke(
            {"messages": [("user", "pay")]},
            {"configurable": {"thread_id": "rt74-forged", "checkpoint_ns": "billing"}},
            context={"user": USER},
        )
    except Exception:  # noqa: BLE001 - refusing such a run is a correct outcome too
        pass
    assert ledger.names().count("pay") == 0, ledger.runs
