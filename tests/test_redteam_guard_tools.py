"""Red team: guard_tools decides on fewer arguments than the wrapped tool runs with."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from conftest import TEST_POLICIES
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import InjectedToolArg, StructuredTool
from mediation_kit import POLICY, USER
from pydantic import BaseModel, ConfigDict, Field

from langchain_opa_guard import EmbeddedPolicy, PolicyEngine, guard_tools
from langchain_opa_guard.testing import ScriptedChatModel, tool_call


@pytest.fixture
def engine() -> PolicyEngine:
    return EmbeddedPolicy(TEST_POLICIES, policy=POLICY)


class PayByAlias(BaseModel):
    """A payment whose field has a wire name (an alias) and a default."""

    amount: int = Field(default=1, alias="sum")


class PayByAliasOrName(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    amount: int = Field(alias="sum")


def pay_tool(ran: list[Any], schema: type[BaseModel]) -> StructuredTool:
    def pay(amount: int) -> str:
        ran.append(amount)
        return f"paid {amount}"

    return StructuredTool.from_function(
        pay, name="pay", description="Pay an amount.", args_schema=schema
    )


def run_agent(engine: PolicyEngine, tools: list[Any], args: dict[str, Any]) -> list[Any]:
    model = ScriptedChatModel(script=[AIMessage("", tool_calls=[tool_call("pay", args, "p1")])])
    agent = create_agent(model, guard_tools(tools, engine))
    result = agent.invoke({"messages": [("user", "pay")]}, context={"user": USER})
    return [m for m in result["messages"] if isinstance(m, ToolMessage)]


def test_control_the_amount_by_its_field_name_is_denied(engine: PolicyEngine) -> None:
    ran: list[Any] = []
    run_agent(engine, [pay_tool(ran, PayByAlias)], {"amount": 5000})
    # "amount" is not a name this schema takes (only its alias is): the tool never sees
    # 5000, and the policy decided the arguments the tool did run with.
    assert 5000 not in ran


def test_guard_tools_an_aliased_argument_is_decided(engine: PolicyEngine) -> None:
    """The model writes the amount under the field's alias, the name its schema shows: the
    policy (a payment over 1000 is denied) must see 5000, or the 5000 payment must not run."""
    ran: list[Any] = []
    run_agent(engine, [pay_tool(ran, PayByAlias)], {"sum": 5000})
    assert 5000 not in ran, f"a payment of 5000 ran: {ran}"


def test_guard_tools_alias_beside_the_field_name_is_decided(engine: PolicyEngine) -> None:
    """With populate_by_name the model sends both spellings: the policy must decide the
    value the tool will read (the alias's 5000), not the other spelling's 10."""
    ran: list[Any] = []
    run_agent(engine, [pay_tool(ran, PayByAliasOrName)], {"sum": 5000, "amount": 10})
    assert 5000 not in ran, f"a payment of 5000 ran: {ran}"


def test_guard_tools_a_model_cannot_set_an_injected_argument(engine: PolicyEngine) -> None:
    """An InjectedToolArg is the application's, not the model's: the policy never sees it,
    so a value the model sends for it must not reach the tool."""
    sent: list[Any] = []

    def send(to: str, body: str, cc: Annotated[str, InjectedToolArg] = "audit@ok.test") -> str:
        """Send a message (cc is set by the application)."""
        sent.append({"to": to, "body": body, "cc": cc})
        return "sent"

    tool = StructuredTool.from_function(send)
    model = ScriptedChatModel(
        script=[
            AIMessage(
                "",
                tool_calls=[
                    tool_call(
                        "send", {"to": "bob@ok.test", "body": "x", "cc": "eve@evil.test"}, "s1"
                    )
                ],
            )
        ]
    )
    agent = create_agent(model, guard_tools([tool], engine))
    agent.invoke({"messages": [("user", "send")]}, context={"user": USER})
    assert all(s["cc"] != "eve@evil.test" for s in sent), f"ran with {sent}"
