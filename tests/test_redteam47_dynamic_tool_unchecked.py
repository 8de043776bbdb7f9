"""Red team 47: a tool the middleware first sees where it runs (LangChain's dynamically
registered tools) runs unchecked after the guard's decision.

LangChain documents two ways to give an agent a tool: pass it to ``create_agent``, or
("Option 2", ``langchain.agents.factory.DYNAMIC_TOOL_ERROR_TEMPLATE``) add it to
``request.tools`` in a middleware's ``wrap_model_call`` and supply it where it runs with
``handler(request.override(tool=my_dynamic_tool))`` in the same middleware's
``wrap_tool_call``. With ``OPAGuardMiddleware`` first (as the README asks), such a call reaches
the guard's ``wrap_tool_call`` with ``request.tool is None``:

* ``middleware_grants._checked`` returns the request unchanged when ``request.tool is None``
  (no ``CheckedTool``, and ``runtime.tools`` is not wrapped either), and so does
  ``bound_request`` for a call without a grant;
* the dynamic tool handed to ``handler`` by the inner middleware is the raw tool, so whatever
  the middleware between them (or the one that supplies the tool) does to the call runs as
  changed;
* the guard decided the call without the tool's schema (it never saw the tool), so the tool
  also reads arguments the policy never saw (``"5000"`` decided as text, run as 5000): the
  guard's own ``decided_views._raw_refusal`` exists for exactly that case but is never
  reached.

None of this is the application bypassing the guard: the dynamic tool goes through
``handler`` as LangChain documents, and the middleware that changes the call is the same one
``tests/test_redteam45_ungranted_edit_runs.py`` uses (refused there for a tool passed to
``create_agent``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, HumanInTheLoopMiddleware
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import BaseTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from mediation_kit import (
    USER,
    Ledger,
    PayTimesTen,
    Script,
    answers_per_turn,
    mediation_engine,  # noqa: F401 - the engine fixture
    mediation_tools,
)

from langchain_opa_guard import EmbeddedPolicy, OPAGuardMiddleware
from langchain_opa_guard.testing import ScriptedChatModel, tool_call

PER_CALL = "interrupt_mode" in inspect.signature(HumanInTheLoopMiddleware).parameters
needs_per_call = pytest.mark.skipif(
    not PER_CALL, reason="HumanInTheLoopMiddleware(interrupt_mode='per_call') is LangChain 1.5+"
)


class _DynamicTool(AgentMiddleware):  # type: ignore[type-arg]
    """LangChain's "Option 2": a tool registered at run time by a middleware, offered to the
    model in ``wrap_model_call`` and supplied where it runs in ``wrap_tool_call``."""

    def __init__(self, tool: BaseTool) -> None:
        super().__init__()
        self.tool = tool

    def wrap_model_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        return handler(request.override(tools=[*request.tools, self.tool]))

    async def awrap_model_call(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        return await handler(request.override(tools=[*request.tools, self.tool]))

    def _supplied(self, request: Any) -> Any:
        if request.tool_call["name"] == self.tool.name:
            return request.override(tool=self.tool)
        return request

    def wrap_tool_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        return handler(self._supplied(request))

    async def awrap_tool_call(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        return await handler(self._supplied(request))


def _agent(
    engine: EmbeddedPolicy,
    ledger: Ledger,
    args: dict[str, Any],
    inner: Callable[[BaseTool], list[Any]],
    checkpointer: Any = None,
) -> Any:
    """``create_agent`` over the mediation tools but ``pay``, which a middleware registers
    dynamically; the model pays ``args`` (call ``p1``) once."""
    tools = mediation_tools(ledger)
    pay = next(t for t in tools if t.name == "pay")
    static = [t for t in tools if t.name != "pay"]
    script = Script([AIMessage("", tool_calls=[tool_call("pay", args, "p1")], id="a1"), "ok"])
    return create_agent(
        ScriptedChatModel(script=[script.reply] * 8),
        static,
        middleware=[OPAGuardMiddleware(engine, registry=static), *inner(pay)],
        checkpointer=checkpointer,
    )


def _invoke(agent: Any, value: Any, config: Any, mode: str) -> Any:
    if mode == "async":
        return asyncio.run(agent.ainvoke(value, config, context={"user": USER}))
    return agent.invoke(value, config, context={"user": USER})


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("order", ["changer_first", "changer_last"])
def test_an_inner_middlewares_change_of_a_dynamic_tools_call_is_refused(
    engine: EmbeddedPolicy, mode: str, order: str
) -> None:
    """Attack: guard first; then an application middleware that multiplies ``pay``'s amount
    by ten before calling ``handler``, and a middleware that registers ``pay`` dynamically
    (LangChain's documented "Option 2"; either order). The model pays 500, which the policy
    allows; the guard grants ``pay(500)``.

    Observed: ``pay`` runs with ``{"amount": 5000}`` (the policy denies pay > 1000): the
    request reached the guard with ``tool=None``, so neither the granted call's
    ``CheckedTool`` nor a wrapped ``runtime.tools`` was put in place, and the dynamic tool
    runs whatever call reaches it.

    Expected: pay(5000) never runs (refused as a changed call, as it is for a ``pay`` passed
    to ``create_agent``); ``p1`` gets one answer."""

    def inner(pay: BaseTool) -> list[Any]:
        changer, supplier = PayTimesTen(), _DynamicTool(pay)
        return [changer, supplier] if order == "changer_first" else [supplier, changer]

    ledger = Ledger()
    agent = _agent(engine, ledger, {"amount": 500}, inner)
    out = _invoke(agent, {"messages": [("user", "pay the 500 invoice")]}, None, mode)
    assert ("pay", "p1", {"amount": 5000}) not in ledger.runs, (
        f"a dynamic tool ran a call changed after the guard granted pay(500): {ledger.runs}"
    )
    assert answers_per_turn(out["messages"]) == [{"p1": 1}]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_dynamic_tool_runs_only_arguments_the_policy_read_as_it_reads_them(
    engine: EmbeddedPolicy, mode: str
) -> None:
    """Attack: guard first, a middleware that registers ``pay`` dynamically after it. The
    model sends ``{"amount": "5000"}`` (a quoted number). The guard never saw ``pay``'s
    schema (the tool is added inside it), so it decides the raw JSON: the mediation policy
    allows a non-number amount. ``pay``'s schema (``amount: int``) reads it as 5000.

    Observed: ``pay`` runs with ``{"amount": 5000}``; the guard's check for a call decided
    without its tool's schema (``decided_views._raw_refusal``: "runs only where its tool reads
    them as they are") is never reached, since no ``CheckedTool`` wraps the dynamic tool.

    Expected: the call does not run as 5000 (refused as decided without its schema, or
    decided as the tool reads it and denied: big_payment); ``pay(5000)`` sent as a number is
    denied, as this test's control shows."""
    ledger = Ledger()
    agent = _agent(engine, ledger, {"amount": "5000"}, lambda pay: [_DynamicTool(pay)])
    out = _invoke(agent, {"messages": [("user", "pay the invoice")]}, None, mode)
    assert ("pay", "p1", {"amount": 5000}) not in ledger.runs, (
        f"the policy decided the text '5000' and the tool paid 5000: {ledger.runs}"
    )
    assert answers_per_turn(out["messages"]) == [{"p1": 1}]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_control_a_dynamic_tools_denied_number_does_not_run(
    engine: EmbeddedPolicy, mode: str
) -> None:
    """Control (passes): the same dynamic ``pay`` with ``{"amount": 5000}`` as a number is
    denied by the policy and never runs; the guard does decide dynamic tools' calls."""
    ledger = Ledger()
    agent = _agent(engine, ledger, {"amount": 5000}, lambda pay: [_DynamicTool(pay)])
    out = _invoke(agent, {"messages": [("user", "pay the invoice")]}, None, mode)
    assert ledger.runs == []
    answer = next(m for m in out["messages"] if isinstance(m, ToolMessage))
    assert answer.status == "error"


@needs_per_call
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_per_call_reviewers_edit_of_a_dynamic_tools_call_is_decided_by_the_policy(
    engine: EmbeddedPolicy, mode: str
) -> None:
    """Attack: guard first, then ``HumanInTheLoopMiddleware(interrupt_mode="per_call")``,
    then the middleware that registers ``pay`` dynamically. The model pays 500 (allowed,
    granted); the per-call question waits inside the tools task; the reviewer edits the
    payment to 5000 (the policy denies it: big_payment). No grant lapses.

    Observed: ``pay`` runs with ``{"amount": 5000}``: HITL's edit changes the call after the
    guard's grant check, and no ``CheckedTool`` stands between it and the dynamic tool.

    Expected: ``pay(5000)`` never runs, as for a ``pay`` passed to ``create_agent``
    (``tests/test_redteam45_ungranted_edit_runs.py``, lapse ``none``)."""
    ledger = Ledger()
    agent = _agent(
        engine,
        ledger,
        {"amount": 500},
        lambda pay: [
            HumanInTheLoopMiddleware(interrupt_on={"pay": True}, interrupt_mode="per_call"),
            _DynamicTool(pay),
        ],
        checkpointer=InMemorySaver(),
    )
    config = {"configurable": {"thread_id": f"rt47-dynamic-hitl-{mode}"}}
    out = _invoke(agent, {"messages": [("user", "pay the 500 invoice")]}, config, mode)
    assert ledger.runs == []
    for question in out.get("__interrupt__", ()):  # (the guard refuses it before it asks)
        edit = {"type": "edit", "edited_action": {"name": "pay", "args": {"amount": 5000}}}
        out = _invoke(agent, Command(resume={question.id: edit}), config, mode)
    assert ("pay", "p1", {"amount": 5000}) not in ledger.runs, (
        f"the reviewer's edit of a dynamic tool's call ran undecided: {ledger.runs}"
    )
    assert answers_per_turn(out["messages"]) == [{"p1": 1}]


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_dynamic_tool_supplied_before_the_guard_runs_checked(
    engine: EmbeddedPolicy, mode: str
) -> None:
    """The remedy the README gives: the middleware that supplies ``pay`` at run time listed
    before ``OPAGuardMiddleware``. The guard then sees the tool: ``pay(500)`` runs, and the
    application's middleware after the guard that makes it 5000 gets a refusal, as for a tool
    passed to ``create_agent``."""
    ledger = Ledger()
    tools = mediation_tools(ledger)
    pay = next(t for t in tools if t.name == "pay")
    static = [t for t in tools if t.name != "pay"]

    def agent_with(after: list[Any]) -> Any:
        script = Script([AIMessage("", tool_calls=[tool_call("pay", {"amount": 500}, "p1")]), "ok"])
        return create_agent(
            ScriptedChatModel(script=[script.reply] * 8),
            static,
            middleware=[_DynamicTool(pay), OPAGuardMiddleware(engine, registry=static), *after],
        )

    out = _invoke(agent_with([]), {"messages": [("user", "pay the 500 invoice")]}, None, mode)
    assert ledger.runs == [("pay", "p1", {"amount": 500})]
    assert answers_per_turn(out["messages"]) == [{"p1": 1}]
    ledger.runs.clear()
    out = _invoke(
        agent_with([PayTimesTen()]), {"messages": [("user", "pay the 500 invoice")]}, None, mode
    )
    assert ledger.runs == []
    (answer,) = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert answer.status == "error" and "did not run" in str(answer.content)
