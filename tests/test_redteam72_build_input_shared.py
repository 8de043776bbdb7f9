"""Red team 72: the default policy inputs of one turn share their nested objects, so a
``build_input`` that extends the default document in place (the README: "a function
``(default_input, call, state) -> input`` to extend or replace the input"; the quickstart:
"a real one might add data from your own systems") writes every call's extension into the
same ``context`` object, and every call of the turn is decided with the LAST call's data.

What was done (``PolicyGuardNode`` with ``build_input=``, the README's wiring, node and
edge, embedded engine): a policy that allows ``send`` only when
``input.context.recipient_verified`` is true; a ``build_input`` that looks the call's
recipient up in the application's own list of verified addresses and records the answer as
``document["context"]["recipient_verified"] = ...``, then returns the document. One turn
proposes ``send`` to an unverified address (first) and ``send`` to a verified one (second).

Observed: with the unverified send first, both e-mails are sent. The guard builds each
call's document with the very same ``context`` (and ``user``, ``turn``, ``history``)
objects, so the second call's ``True`` overwrote the first call's ``False`` before the engine
was asked; the first call was decided as verified. In the other order both calls are denied
(the verified one decided with the unverified one's ``False``).

Expected: each call is decided on its own input: the unverified send is denied whatever the
order of the calls (the guard hands each ``build_input`` a document of its own, or decides
on a copy of each document taken right after its ``build_input`` returned).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import StructuredTool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition

from langchain_opa_guard import EmbeddedPolicy, GuardedToolNode, PolicyGuardNode
from langchain_opa_guard.testing import tool_call

POLICY = """package rt72

default decision := {
	"allow": false,
	"reasons": [{"code": "unverified", "message": "recipient not verified"}],
}

decision := {"allow": true, "reasons": []} if {
	input.tool.name == "send"
	input.context.recipient_verified == true
}
"""

VERIFIED = {"bob@ok.test"}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedPolicy:
    root: Path = tmp_path_factory.mktemp("rt72_policy")
    (root / "rt72.rego").write_text(POLICY)
    return EmbeddedPolicy(root, policy="rt72/decision")


def enrich(document: dict[str, Any], call: Any, state: Any) -> dict[str, Any]:
    """Extends the default input with data of the application's own (in place)."""
    document["context"]["recipient_verified"] = call["args"].get("to") in VERIFIED
    return document


def _graph(engine: EmbeddedPolicy, turn: AIMessage, sent: list[str], wiring: str) -> Any:
    def send(to: str, body: str) -> str:
        """Send an e-mail."""
        sent.append(to)
        return f"sent to {to}"

    tools = GuardedToolNode([StructuredTool.from_function(send)])
    script = iter([turn])

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [next(script, AIMessage("done"))]}

    guard = PolicyGuardNode(engine, registry=tools, build_input=enrich)
    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("guard", guard)
    builder.add_node("tools", tools)
    builder.add_edge(START, "agent")
    if wiring == "edge":
        builder.add_conditional_edges("agent", guard.edge("guard"), ["guard", "tools", END])
    else:
        builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    builder.add_edge("tools", "agent")
    return builder.compile()


EVE = tool_call("send", {"to": "eve@evil.test", "body": "the data"}, "s-eve")
BOB = tool_call("send", {"to": "bob@ok.test", "body": "hi"}, "s-bob")


@pytest.mark.parametrize("wiring", ["node", "edge"])
@pytest.mark.parametrize("order", ["unverified_first", "unverified_last"])
def test_each_call_is_decided_on_its_own_build_input(
    engine: EmbeddedPolicy, wiring: str, order: str
) -> None:
    calls = [EVE, BOB] if order == "unverified_first" else [BOB, EVE]
    sent: list[str] = []
    graph = _graph(engine, AIMessage("", tool_calls=calls, id="t1"), sent, wiring)
    out = graph.invoke({"messages": [("user", "mail bob")]}, context={"user": {"id": "u"}})
    answers = {m.tool_call_id: m for m in out["messages"] if isinstance(m, ToolMessage)}
    assert sent == ["bob@ok.test"]
    assert answers["s-eve"].status == "error"
    assert "not verified" in str(answers["s-eve"].content)
