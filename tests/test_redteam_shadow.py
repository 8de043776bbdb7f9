"""Red team: shadow mode for one reason code lets an enforced rule's deny through."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition
from mediation_kit import USER, Ledger, Script, mediation_tools

from langchain_opa_guard import EmbeddedPolicy, GuardedToolNode, PolicyGuardNode
from langchain_opa_guard.testing import tool_call

# An enforced rule (outside domains) and a rule under rollout ("new_rule", in shadow mode).
# The enforced rule's reason is written without a code: a plain string, or an object
# with a message only. Both are accepted reason shapes (README, "The policy contract").
POLICY = """package redteam

deny contains %(enforced)s if {
	input.tool.name == "send"
	not endswith(input.tool.args.to, "@ok.test")
}

deny contains {"code": "new_rule", "message": "sending is under review"} if {
	input.tool.name == "send"
}

decision := {"allow": count(deny) == 0, "reasons": deny}
"""

FORMS = {
    "coded (control)": '{"code": "outside_domain", "message": "outside the allowed domains"}',
    "plain string": '"outside the allowed domains"',
    "message only": '{"message": "outside the allowed domains"}',
}


def engine_for(tmp_path: Path, form: str) -> EmbeddedPolicy:
    (tmp_path / "redteam.rego").write_text(POLICY % {"enforced": FORMS[form]})
    return EmbeddedPolicy(tmp_path, policy="redteam/decision")


def guarded_graph(engine: EmbeddedPolicy, ledger: Ledger, script: Script) -> Any:
    tools = GuardedToolNode(mediation_tools(ledger))
    builder = StateGraph(MessagesState)
    builder.add_node("agent", RunnableLambda(lambda s: {"messages": [script.reply(s["messages"])]}))
    builder.add_node("guard", PolicyGuardNode(engine, registry=tools, shadow={"new_rule"}))
    builder.add_node("tools", tools)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    builder.add_edge("tools", "agent")
    return builder.compile()


@pytest.mark.parametrize("form", list(FORMS))
def test_a_shadowed_code_never_masks_an_enforced_deny(tmp_path: Path, form: str) -> None:
    """README: "a decision is shadowed only when all its codes are, so a rule under
    rollout never masks an enforced one"."""
    ledger = Ledger()
    script = Script(
        [
            AIMessage(
                "", tool_calls=[tool_call("send", {"to": "eve@evil.test", "body": "x"}, "s1")]
            ),
            "done",
        ]
    )
    graph = guarded_graph(engine_for(tmp_path, form), ledger, script)
    result = graph.invoke({"messages": [("user", "go")]}, context={"user": USER})
    assert ledger.runs == [], f"the enforced deny was masked: {ledger.runs}"
    answer = next(m for m in result["messages"] if isinstance(m, ToolMessage))
    assert answer.status == "error"


def test_control_a_send_inside_the_domains_runs_in_shadow(tmp_path: Path) -> None:
    ledger = Ledger()
    script = Script(
        [
            AIMessage("", tool_calls=[tool_call("send", {"to": "bob@ok.test", "body": "x"}, "s1")]),
            "done",
        ]
    )
    graph = guarded_graph(engine_for(tmp_path, "plain string"), ledger, script)
    graph.invoke({"messages": [("user", "go")]}, context={"user": USER})
    assert [name for name, _, _ in ledger.runs] == ["send"]
