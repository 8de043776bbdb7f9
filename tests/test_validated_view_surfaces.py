"""The arguments the policy decides are the arguments the tool reads, on every surface.

Companion of ``test_redteam3_validated_view.py`` (which attacks the guard node): the same
three holes through the ToolCallGuard interceptor, the ``create_agent`` middleware and
``guard_tools``, sync and async, on the embedded engine and a real OPA server.

1. A validator that reads state (a contact's name resolved through an address book) must
   read, where the tool runs, what it read when the policy decided; a call that reads
   differently is refused and never runs. The address book changes right after the policy
   decided the mail (:class:`BookChangedAfterDecision`, standing for a sibling call that
   ran in between), so every surface meets the same race deterministically.
2. A field with a ``validation_alias`` is the model's: the policy sees its value.
3. A ``pydantic.v1`` schema is decided as LangChain validates it (``"5000"`` as 5000).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Annotated, Any

import pydantic.v1 as pydantic_v1
import pytest
from conftest import TEST_POLICIES
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import BaseTool, InjectedToolArg, StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import InjectedState, ToolNode, tools_condition
from mediation_kit import POLICY, USER
from pydantic import BaseModel, Field, field_validator

from langchain_opa_guard import (
    EmbeddedPolicy,
    GuardedToolNode,
    OPAGuardMiddleware,
    OPAServer,
    PolicyEngine,
    PolicyGuardNode,
    ToolCallGuard,
    guard_tools,
)
from langchain_opa_guard.decision import Decision
from langchain_opa_guard.guards.injections import injected_fields
from langchain_opa_guard.guards.prepared_calls import prepared_call
from langchain_opa_guard.testing import ScriptedChatModel, tool_call

SURFACES = ["node", "interceptor", "middleware", "guard_tools"]
READ_DIFFERENTLY = "the arguments read differently when run than when decided"


@pytest.fixture(params=["embedded", "opa"])
def mediation_engine(request: pytest.FixtureRequest) -> PolicyEngine:
    """``tests/policies/mediation.rego`` (send to *@ok.test allowed, a payment over 1000
    denied) on each engine."""
    if request.param == "embedded":
        return EmbeddedPolicy(TEST_POLICIES, policy=POLICY)
    client = OPAServer(request.getfixturevalue("opa_url"), policy=POLICY)
    request.addfinalizer(client.close)
    return client


class BookChangedAfterDecision:
    """A decision log that changes the address book as soon as the policy allowed a mail:
    it stands for a sibling call of the same turn ("save contact bob as eve@evil.test")
    that ran between the decision and the mail."""

    def __init__(self, contacts: dict[str, str], enabled: bool) -> None:
        self.contacts = contacts
        self.enabled = enabled
        self.decided: list[str] = []

    def write(self, document: Mapping[str, Any], decision: Decision) -> None:
        tool = document.get("tool") or {}
        self.decided.append(str(tool.get("name")))
        if self.enabled and tool.get("name") == "send" and decision.allow:
            self.contacts["bob"] = "eve@evil.test"


def run_turn(
    surface: str,
    engine: PolicyEngine,
    tools: list[BaseTool],
    calls: list[Any],
    *,
    log: Any = None,
    asynchronous: bool = False,
) -> list[Any]:
    """One model turn with ``calls`` through ``surface``; the conversation's messages."""
    options: dict[str, Any] = {"decision_log": log} if log is not None else {}
    turn = AIMessage("", tool_calls=calls, id="turn-1")
    if surface == "middleware":
        model = ScriptedChatModel(script=[turn, "done"])
        graph: Any = create_agent(
            model, tools, middleware=[OPAGuardMiddleware(engine, registry=tools, **options)]
        )
    else:
        script = iter([turn])
        builder = StateGraph(MessagesState)
        builder.add_node("agent", lambda s: {"messages": [next(script, AIMessage("done"))]})
        if surface == "node":
            node = GuardedToolNode(tools)
            builder.add_node("guard", PolicyGuardNode(engine, registry=node, **options))
            builder.add_node("tools", node)
            builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
        else:
            if surface == "interceptor":
                guard = ToolCallGuard(engine, registry=tools, **options)
                node = ToolNode(
                    tools,
                    wrap_tool_call=guard.wrap_tool_call,
                    awrap_tool_call=guard.awrap_tool_call,
                )
            else:
                node = ToolNode(guard_tools(tools, engine, **options))
            builder.add_node("tools", node)
            builder.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
        builder.add_edge(START, "agent")
        builder.add_edge("tools", "agent")
        graph = builder.compile(checkpointer=InMemorySaver())
    state = {"messages": [("user", "mail the summary to bob")]}
    # A thread of its own: a turn's call runs once per thread (claims span the process).
    config = {"configurable": {"thread_id": uuid.uuid4().hex, "user": USER}}
    if asynchronous:
        result = asyncio.run(graph.ainvoke(state, config, context={"user": USER}))
    else:
        result = graph.invoke(state, config, context={"user": USER})
    return list(result["messages"])


def answers(messages: list[Any]) -> dict[str, ToolMessage]:
    return {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}


def reasons(message: ToolMessage) -> list[str]:
    record = (message.artifact or {}).get("opa_guard") or {}
    return list(record.get("reasons") or [])


# -- 1. a validator that reads state --------------------------------------------------------


def contact_mail_tools(contacts: dict[str, str], sent: list[str]) -> list[BaseTool]:
    class MailArgs(BaseModel):
        to: str
        body: str

        @field_validator("to")
        @classmethod
        def resolve_contact(cls, value: str) -> str:
            """A contact's name becomes its address."""
            return contacts.get(value.strip().lower(), value)

    def send(to: str, body: str) -> str:
        """Send a message (to: an address, or a contact's name)."""
        sent.append(to)
        return f"sent to {to}"

    return [StructuredTool.from_function(send, args_schema=MailArgs)]


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("changed", [False, True], ids=["book unchanged", "book changed"])
def test_a_call_that_reads_differently_when_run_does_not_run(
    mediation_engine: PolicyEngine, surface: str, asynchronous: bool, changed: bool
) -> None:
    contacts = {"bob": "bob@ok.test"}
    sent: list[str] = []
    log = BookChangedAfterDecision(contacts, changed)
    messages = run_turn(
        surface,
        mediation_engine,
        contact_mail_tools(contacts, sent),
        [tool_call("send", {"to": "bob", "body": "the summary"}, "m1")],
        log=log,
        asynchronous=asynchronous,
    )
    assert "send" in log.decided  # the policy decided the mail (to bob@ok.test)
    answer = answers(messages)["m1"]
    if not changed:
        assert sent == ["bob@ok.test"]
        assert answer.status != "error"
        return
    assert sent == []
    assert answer.status == "error"
    assert reasons(answer) == [READ_DIFFERENTLY]
    assert "read differently" in str(answer.content)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("surface", SURFACES)
def test_a_validator_that_is_not_idempotent_still_runs_once_on_the_models_value(
    mediation_engine: PolicyEngine, surface: str, asynchronous: bool
) -> None:
    """Reading the call again where it runs starts from the model's value each time: a
    validator that percent-decodes is never applied to its own output."""
    from urllib.parse import unquote

    sent: list[str] = []

    class MailArgs(BaseModel):
        to: str
        body: str

        @field_validator("body")
        @classmethod
        def decode(cls, value: str) -> str:
            return unquote(value)

    def send(to: str, body: str) -> str:
        """Send a message."""
        sent.append(body)
        return "sent"

    tools = [StructuredTool.from_function(send, args_schema=MailArgs)]
    messages = run_turn(
        surface,
        mediation_engine,
        tools,
        [tool_call("send", {"to": "a@ok.test", "body": "100%2541"}, "m1")],
        asynchronous=asynchronous,
    )
    assert sent == ["100%41"], answers(messages)["m1"].content


# -- 2. a field with a validation alias -------------------------------------------------------


class AliasedPay(BaseModel):
    amount: int = Field(validation_alias="Amount")


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("surface", SURFACES)
def test_a_value_under_a_validation_alias_is_decided(
    mediation_engine: PolicyEngine, surface: str, asynchronous: bool
) -> None:
    paid: list[int] = []

    def pay(amount: int) -> str:
        """Pay an amount."""
        paid.append(amount)
        return "paid"

    tools = [StructuredTool.from_function(pay, args_schema=AliasedPay)]
    # langchain-core 1.2.9 (the floor) drops a value given under its alias when the tool
    # runs (the tool then fails on its own); the guard must decide it either way.
    try:
        tools[0].invoke({"Amount": 1})
        runs_aliased = True
    except TypeError:
        runs_aliased = False
    paid.clear()
    calls = [tool_call("pay", {"Amount": 5000}, "p1")]
    if runs_aliased:
        calls.append(tool_call("pay", {"Amount": 20}, "p2"))
    messages = run_turn(surface, mediation_engine, tools, calls, asynchronous=asynchronous)
    assert paid == ([20] if runs_aliased else [])
    assert "amount over 1000" in str(answers(messages)["p1"].content)


def test_injected_arguments_are_those_the_annotations_mark() -> None:
    class Args(BaseModel):
        to: str
        cc: str | None = Field(default=None, validation_alias="CC")
        user_id: Annotated[str, InjectedToolArg]
        state: Annotated[dict[str, Any], InjectedState]

    def send(to: str, user_id: str, state: dict[str, Any], cc: str | None = None) -> str:
        """Send."""
        return "sent"

    tool = StructuredTool.from_function(send, args_schema=Args)
    assert "cc" not in tool.tool_call_schema.model_fields  # LangChain leaves it out
    assert injected_fields(tool) == {"user_id", "state"}
    view, problem = prepared_call(
        tool,
        tool_call("send", {"to": "a@ok.test", "CC": "eve@evil.test", "user_id": "forged"}, "s1"),
    )
    assert problem is None
    assert view["args"] == {"to": "a@ok.test", "cc": "eve@evil.test"}


def test_a_model_value_under_an_injected_fields_alias_is_refused() -> None:
    class Args(BaseModel):
        to: str
        user_id: Annotated[str, InjectedToolArg] = Field(alias="UserId")

    def send(to: str, user_id: str) -> str:
        """Send."""
        return "sent"

    tool = StructuredTool.from_function(send, args_schema=Args)
    _, problem = prepared_call(
        tool, tool_call("send", {"to": "a@ok.test", "UserId": "admin"}, "s1")
    )
    assert problem is not None and "UserId" in problem


# -- 3. a Pydantic v1 schema ------------------------------------------------------------------


class PayV1(pydantic_v1.BaseModel):
    amount: int


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("surface", SURFACES)
def test_a_pydantic_v1_schema_is_decided_as_langchain_validates_it(
    mediation_engine: PolicyEngine, surface: str, asynchronous: bool
) -> None:
    paid: list[int] = []

    def pay(amount: int) -> str:
        """Pay an amount."""
        paid.append(amount)
        return "paid"

    tools = [StructuredTool.from_function(pay, args_schema=PayV1)]
    messages = run_turn(
        surface,
        mediation_engine,
        tools,
        [tool_call("pay", {"amount": "5000"}, "p1"), tool_call("pay", {"amount": "20"}, "p2")],
        asynchronous=asynchronous,
    )
    assert paid == [20]
    assert "amount over 1000" in str(answers(messages)["p1"].content)


def test_a_tool_that_parses_its_input_its_own_way_is_refused_at_decision() -> None:
    class OwnParser(StructuredTool):
        def _parse_input(self, tool_input: Any, tool_call_id: str | None) -> Any:
            return {"amount": int(str(tool_input["amount"]).replace("k", "000"))}

    def pay(amount: int) -> str:
        """Pay an amount."""
        return "paid"

    tool = OwnParser.from_function(pay)
    _, problem = prepared_call(tool, tool_call("pay", {"amount": "5k"}, "p1"))
    assert problem is not None and "its own way" in problem


# -- approvals: the address book changes while the turn waits for a human ------------------


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("surface", ["node", "middleware"])
@pytest.mark.parametrize("changed", [False, True], ids=["book unchanged", "book changed"])
def test_an_approved_call_runs_only_as_the_reviewer_saw_it(
    mediation_engine: PolicyEngine, surface: str, asynchronous: bool, changed: bool
) -> None:
    """The reviewer approves the mail to bob@ask.test; while the graph waited, bob became
    eve@evil.test in the address book: the approved call reads differently and does not run."""
    from langgraph.types import Command

    contacts = {"bob": "bob@ask.test"}
    sent: list[str] = []
    tools = contact_mail_tools(contacts, sent)
    turn = AIMessage("", tool_calls=[tool_call("send", {"to": "bob", "body": "hi"}, "m1")])
    if surface == "middleware":
        model = ScriptedChatModel(script=[turn, "done"])
        graph: Any = create_agent(
            model,
            tools,
            middleware=[OPAGuardMiddleware(mediation_engine, registry=tools)],
            checkpointer=InMemorySaver(),
        )
    else:
        script = iter([turn])
        node = GuardedToolNode(tools)
        builder = StateGraph(MessagesState)
        builder.add_node("agent", lambda s: {"messages": [next(script, AIMessage("done"))]})
        builder.add_node("guard", PolicyGuardNode(mediation_engine, registry=node))
        builder.add_node("tools", node)
        builder.add_edge(START, "agent")
        builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
        builder.add_edge("tools", "agent")
        graph = builder.compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": uuid.uuid4().hex}}

    def run(value: Any) -> Any:
        if asynchronous:
            return asyncio.run(graph.ainvoke(value, config, context={"user": USER}))
        return graph.invoke(value, config, context={"user": USER})

    paused = run({"messages": [("user", "mail bob")]})
    assert "__interrupt__" in paused and sent == []
    if changed:
        contacts["bob"] = "eve@evil.test"
    result = run(Command(resume={"decisions": [{"type": "approve"}]}))
    answer = answers(list(result["messages"]))["m1"]
    if not changed:
        assert sent == ["bob@ask.test"]
        return
    assert sent == []
    assert reasons(answer) == [READ_DIFFERENTLY]
