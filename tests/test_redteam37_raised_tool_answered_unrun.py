"""Red team 37: a call whose tool started and raised is answered "did not run", and the
model, told to propose it again, sends it a second time.

The attack: the model's turn is one ``send`` to ``bob@ok.test`` (allowed). Its tool does
its work and then raises (the mail went out; reading the server's reply failed), which
fails the step. The user writes again instead of resuming. The claim of the call was
released when its tool raised (so that a retry may run it), so the repair finds no
"started" claim and answers it: "did not run ... Propose it again if it is still
needed", verdict ``deny``. The model does, and the mail goes out twice.

Observed on this branch, in each wiring (guard node, guard edge, ``ToolCallGuard`` with
``create_react_agent(pre_model_hook=answer_open_calls)``, ``create_agent`` with the
middleware): the answer says "did not run" and the ledger holds two sends. The README says
"A call whose tool had already started in this process ... is answered as one that may have
taken effect"; this call's tool had started.

Expected: a call whose tool started in this process, raised or not, is answered "may have
taken effect" (the model is told to check first), so it is not proposed as a call that
never ran. The control: a sibling that raised leaves the other call answered "may have
taken effect" (as ``test_open_calls``).
"""

from __future__ import annotations

import warnings
from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import BaseTool, InjectedToolCallId, StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from mediation_kit import POLICY, USER, Ledger, Script, mediation_tools
from opa_process import ROOT

from langchain_opa_guard import (
    EmbeddedPolicy,
    GuardedToolNode,
    OPAGuardMiddleware,
    PolicyGuardNode,
    ToolCallGuard,
    answer_open_calls,
)
from langchain_opa_guard.testing import ScriptedChatModel
from langchain_opa_guard.testing import tool_call as call

MAIL = {"to": "bob@ok.test", "body": "the report"}


@pytest.fixture(scope="module")
def engine() -> EmbeddedPolicy:
    return EmbeddedPolicy(ROOT / "tests" / "policies", policy=POLICY)


def tools_with_a_send_that_raises(ledger: Ledger) -> list[BaseTool]:
    def send(to: str, body: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Send a message."""
        ledger.record("send", tool_call_id, {"to": to, "body": body})
        if tool_call_id == "s1":
            raise RuntimeError("the mail server's reply could not be read")
        return "sent"

    tools: list[BaseTool] = [StructuredTool.from_function(send)]
    return tools + [t for t in mediation_tools(ledger) if t.name != "send"]


def build(kind: str, engine: EmbeddedPolicy, tools: list[BaseTool], script: Script) -> Any:
    model = ScriptedChatModel(script=[script.reply] * 8)
    if kind == "middleware":
        from langchain.agents import create_agent

        guard = OPAGuardMiddleware(engine, registry=tools)
        return create_agent(model, tools, middleware=[guard], checkpointer=InMemorySaver())
    if kind == "interceptor":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # create_react_agent is deprecated
            from langgraph.prebuilt import create_react_agent

            check = ToolCallGuard(engine, registry=tools)
            node = ToolNode(
                tools, wrap_tool_call=check.wrap_tool_call, awrap_tool_call=check.awrap_tool_call
            )
            return create_react_agent(
                model, node, pre_model_hook=answer_open_calls, checkpointer=InMemorySaver()
            )
    tool_node = GuardedToolNode(tools)
    guard_node = PolicyGuardNode(engine, registry=tool_node)
    builder = StateGraph(MessagesState)
    builder.add_node(answer_open_calls)
    builder.add_node(
        "agent", RunnableLambda(lambda s: {"messages": [script.reply(s["messages"])]}, name="agent")
    )
    builder.add_node("guard", guard_node)
    builder.add_node("tools", tool_node)
    builder.add_edge(START, "answer_open_calls")
    builder.add_edge("answer_open_calls", "agent")
    if kind == "edge":
        builder.add_conditional_edges("agent", guard_node.edge("guard"), ["guard", "tools", END])
    else:
        builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=InMemorySaver())


KINDS = ["node", "edge", "interceptor", "middleware"]


class Heeding(Script):
    """A model that proposes the mail again only when told it did not run (told that it
    may have taken effect, it checks instead: says so and stops)."""

    def reply(self, messages: Any) -> AIMessage:
        told = [m for m in messages if isinstance(m, ToolMessage) and m.tool_call_id == "s1"]
        if told and "did not run" not in str(told[-1].content):
            return AIMessage("I will check whether it went out.")
        return super().reply(messages)


@pytest.mark.parametrize("kind", KINDS)
def test_a_call_whose_tool_raised_after_its_work_is_not_answered_unrun(
    engine: EmbeddedPolicy, kind: str
) -> None:
    ledger = Ledger()
    script = Heeding(
        [
            AIMessage("", tool_calls=[call("send", MAIL, "s1")], id="a1"),
            # what a model does with "did not run ... propose it again if still needed"
            AIMessage("", tool_calls=[call("send", MAIL, "s2")], id="a2"),
        ]
    )
    graph = build(kind, engine, tools_with_a_send_that_raises(ledger), script)
    config: dict[str, Any] = {"configurable": {"thread_id": f"rt37-raised-{kind}"}}
    with pytest.raises(RuntimeError, match="could not be read"):
        graph.invoke({"messages": [("user", "mail bob")]}, config, context={"user": USER})
    out = graph.invoke({"messages": [("user", "and now?")]}, config, context={"user": USER})
    (answer,) = [
        m for m in out["messages"] if isinstance(m, ToolMessage) and m.tool_call_id == "s1"
    ]
    assert "did not run" not in str(answer.content), "a call that ran is called unrun"
    assert answer.response_metadata["opa_guard"]["verdict"] == "allow"
    assert [i for n, i, _ in ledger.runs if n == "send"] == ["s1"], "the mail went out twice"


@pytest.mark.parametrize("kind", KINDS)
def test_control_the_sibling_of_a_tool_that_raised_may_have_taken_effect(
    engine: EmbeddedPolicy, kind: str
) -> None:
    ledger = Ledger()
    script = Script(
        [AIMessage("", tool_calls=[call("pay", {"amount": 5}, "p1"), call("send", MAIL, "s1")])]
    )
    graph = build(kind, engine, tools_with_a_send_that_raises(ledger), script)
    config: dict[str, Any] = {"configurable": {"thread_id": f"rt37-sibling-{kind}"}}
    with pytest.raises(RuntimeError, match="could not be read"):
        graph.invoke({"messages": [("user", "pay, mail")]}, config, context={"user": USER})
    out = graph.invoke({"messages": [("user", "and now?")]}, config, context={"user": USER})
    answers = {m.tool_call_id: m for m in out["messages"] if isinstance(m, ToolMessage)}
    assert "may have taken effect" in str(answers["p1"].content)
    assert [i for n, i, _ in ledger.runs if n == "pay"] == ["p1"]
