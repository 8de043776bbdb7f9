"""Tools, graphs and checks for the complete-mediation tests (``tests/policies/mediation.rego``).

Every tool records what really ran (its name, call id and arguments), so a test can compare
the executions with the calls the policy allowed. The helpers at the end run a checkpointed
graph sync or async and answer the questions it asks a reviewer (interrupt / resume); a module
that imports :func:`mediation_engine` gets it as its ``engine`` fixture.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import BaseTool, InjectedToolCallId, StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command, Interrupt, interrupt
from opa_process import ROOT

from langchain_opa_guard import (
    EmbeddedPolicy,
    GuardedToolNode,
    OPAGuardMiddleware,
    PolicyEngine,
    PolicyGuardNode,
    ToolCallGuard,
    answer_open_calls,
    guard_tools,
)
from langchain_opa_guard.testing import tool_call

POLICY = "mediation/decision"

WIRING = os.environ.get("OPA_GUARD_TEST_WIRING", "node")
"""How :func:`node_graph` puts the guard after the reasoning node: ``"node"`` (a
``tools_condition`` edge to the guard node) or ``"edge"`` (the guard's own edge,
``PolicyGuardNode.edge``). ``make test`` runs the node-graph suites both ways."""
USER = {"id": "u-1", "role": "tester"}
ASK = {"to": "a@ask.test", "body": "x"}
"""``send`` arguments the policy asks a human about."""
READ = {"item": "i"}
"""``read`` arguments the policy allows."""
APPROVE = {"decisions": [{"type": "approve"}]}
REJECT = {"decisions": [{"type": "reject", "message": "no"}]}


@pytest.fixture(scope="module", name="engine")
def mediation_engine() -> EmbeddedPolicy:
    """The ``engine`` fixture of a module that imports it: ``tests/policies`` embedded,
    deciding :data:`POLICY`."""
    return EmbeddedPolicy(ROOT / "tests" / "policies", policy=POLICY)


# Known and open (README, "Nothing runs twice"): a Command(goto=<the guard node>) sent into a
# run, with a resume or while a question waits, starts a second guard task that decides the
# turn again, so its allowed calls run again and the human is asked again. Strict, so that
# the day the guard refuses such a task these tests are turned on.
GOTO_GUARD_DECIDES_AGAIN = pytest.mark.xfail(
    strict=True, reason="known: a Command(goto=<guard>) sent into the run decides the turn again"
)


class Ledger:
    """What the tools really did: ``(tool, call_id, args)``, in order."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def record(self, name: str, call_id: str, args: dict[str, Any]) -> str:
        with self._lock:
            self.runs.append((name, call_id, args))
        return f"{name} ran"

    def names(self) -> list[str]:
        return [name for name, _, _ in self.runs]


def mediation_tools(ledger: Ledger) -> list[BaseTool]:
    def read(item: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Read an item."""
        return ledger.record("read", tool_call_id, {"item": item})

    def send(to: str, body: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Send a message."""
        return ledger.record("send", tool_call_id, {"to": to, "body": body})

    def pay(amount: int, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Pay an amount."""
        return ledger.record("pay", tool_call_id, {"amount": amount})

    def search(scope: str, limit: int, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Search."""
        return ledger.record("search", tool_call_id, {"scope": scope, "limit": limit})

    def finish(answer: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Give the final answer."""
        return ledger.record("finish", tool_call_id, {"answer": answer})

    tools = [StructuredTool.from_function(f) for f in (read, send, pay, search)]
    tools.append(StructuredTool.from_function(finish, return_direct=True))
    return tools


class Script:
    """A model that answers with the next message of a script (AIMessages or text)."""

    def __init__(self, turns: Sequence[AIMessage | str]) -> None:
        self.turns = list(turns)

    def reply(self, messages: Sequence[BaseMessage]) -> AIMessage:
        done = sum(1 for m in messages if isinstance(m, AIMessage))
        step = self.turns[done] if done < len(self.turns) else "done"
        return AIMessage(step) if isinstance(step, str) else step


def node_graph(
    engine: PolicyEngine,
    script: Script,
    ledger: Ledger,
    *,
    checkpointer: Any = None,
    interrupt_before: Sequence[str] | None = None,
    static_edge: bool = False,
    wrap_tool_call: Any = None,
    wiring: str | None = None,
    answer_open: bool = False,
    read_tool: BaseTool | None = None,
) -> Any:
    """``agent -> guard -> tools -> agent``: the README's wiring (see :data:`WIRING`);
    ``answer_open``: ``START -> answer_open_calls -> agent`` in place of ``START -> agent``;
    ``read_tool``: in place of the ledger's ``read``."""
    own = mediation_tools(ledger)
    if read_tool is not None:
        own = [read_tool, *(t for t in own if t.name != "read")]
    tools = GuardedToolNode(own, wrap_tool_call=wrap_tool_call)

    def agent(state: MessagesState) -> dict[str, Any]:
        return {"messages": [script.reply(state["messages"])]}

    guard = PolicyGuardNode(engine, registry=tools)
    builder = StateGraph(MessagesState)
    builder.add_node("agent", RunnableLambda(agent, name="agent"))
    builder.add_node("guard", guard)
    builder.add_node("tools", tools)
    if answer_open:
        builder.add_node(answer_open_calls)
        builder.add_edge(START, "answer_open_calls")
        builder.add_edge("answer_open_calls", "agent")
    else:
        builder.add_edge(START, "agent")
    if (wiring or WIRING) == "edge":
        builder.add_conditional_edges("agent", guard.edge("guard"), ["guard", "tools", END])
    else:
        builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    if static_edge:
        builder.add_edge("guard", "tools")
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=checkpointer, interrupt_before=interrupt_before)


def agent_graph(
    engine: PolicyEngine,
    script: Script,
    ledger: Ledger,
    *,
    checkpointer: Any = None,
    middleware: Sequence[Any] = (),
    after: Sequence[Any] = (),
) -> Any:
    """``create_agent`` with the guard middleware (``middleware`` before it, ``after`` after)."""
    from langchain_opa_guard.testing import ScriptedChatModel

    model = ScriptedChatModel(script=[script.reply] * 32)
    tools = mediation_tools(ledger)
    return create_agent(
        model,
        tools,
        middleware=[*middleware, OPAGuardMiddleware(engine, registry=tools), *after],
        checkpointer=checkpointer,
    )


class PayTimesTen(AgentMiddleware):  # type: ignore[type-arg]
    """An application's middleware listed after the guard, as the README asks: it changes the
    model's ``pay`` amounts right before the tool runs (multiplies them by 10, a units bug)."""

    @staticmethod
    def _changed(request: Any) -> Any:
        call = request.tool_call
        if call["name"] != "pay":
            return request
        return request.override(tool_call={**call, "args": {"amount": call["args"]["amount"] * 10}})

    def wrap_tool_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        return handler(self._changed(request))

    async def awrap_tool_call(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        return await handler(self._changed(request))


WIRINGS = ("node", "edge", "interceptor", "middleware")
"""The guard's four wirings, as :func:`wired_graph` builds them."""


def wired_graph(
    engine: PolicyEngine,
    kind: str,
    tools: Sequence[BaseTool],
    script: Script,
    *,
    answer_open: bool = False,
    between: Callable[[Any, Any], Awaitable[Any]] | None = None,
    checkpointer: Any = None,
) -> Any:
    """``tools`` guarded in one of :data:`WIRINGS`, the model's turns from ``script``,
    checkpointed: ``create_agent`` with the middleware, or ``agent -> [guard ->] tools -> agent``
    with the guard node (``node``), the guard's edge (``edge``) or a ``ToolNode`` interceptor
    (``interceptor``). ``answer_open``: ``START -> answer_open_calls -> agent``; ``between``: an
    application's async ``wrap_tool_call`` where each wiring has one (a middleware after the
    guard's, the ``ToolNode``'s interceptor around the guard's, ``GuardedToolNode``'s own);
    ``checkpointer``: in place of a fresh ``InMemorySaver``. One more kind than
    :data:`WIRINGS`: ``guard_tools``, a plain ``ToolNode`` of ``guard_tools(tools, engine)``."""
    from langchain_opa_guard.testing import ScriptedChatModel

    saver = checkpointer if checkpointer is not None else InMemorySaver()

    if kind == "middleware":
        model = ScriptedChatModel(script=[script.reply] * 32)
        after: list[Any] = []
        if between is not None:
            wrap = between

            class Between(AgentMiddleware):  # type: ignore[type-arg]
                async def awrap_tool_call(self, request: Any, handler: Any) -> Any:
                    return await wrap(request, handler)

            after.append(Between())
        return create_agent(
            model,
            list(tools),
            middleware=[OPAGuardMiddleware(engine, registry=tools), *after],
            checkpointer=saver,
        )
    builder = StateGraph(MessagesState)
    builder.add_node(
        "agent",
        RunnableLambda(lambda s: {"messages": [script.reply(s["messages"])]}, name="agent"),
    )
    if answer_open:
        builder.add_node(answer_open_calls)
        builder.add_edge(START, "answer_open_calls")
        builder.add_edge("answer_open_calls", "agent")
    else:
        builder.add_edge(START, "agent")
    if kind == "guard_tools":
        builder.add_node("tools", ToolNode(guard_tools(tools, engine)))
        builder.add_conditional_edges("agent", tools_condition)
    elif kind == "interceptor":
        guard = ToolCallGuard(engine, registry=tools)
        outer: Any = guard.awrap_tool_call
        if between is not None:
            wrap_outer = between

            async def around(request: Any, handler: Any) -> Any:
                return await wrap_outer(request, lambda r: guard.awrap_tool_call(r, handler))

            outer = around
        node = ToolNode(tools, wrap_tool_call=guard.wrap_tool_call, awrap_tool_call=outer)
        builder.add_node("tools", node)
        builder.add_conditional_edges("agent", tools_condition)
    else:
        guarded = GuardedToolNode(tools, awrap_tool_call=between)
        policy_guard = PolicyGuardNode(engine, registry=guarded)
        builder.add_node("guard", policy_guard)
        builder.add_node("tools", guarded)
        if kind == "edge":
            builder.add_conditional_edges(
                "agent", policy_guard.edge("guard"), ["guard", "tools", END]
            )
        else:
            builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=saver)


def interceptor_react_agent(
    engine: PolicyEngine,
    ledger: Ledger,
    calls: Sequence[Any],
    *,
    checkpointer: Any = None,
    interrupt_before: Sequence[str] | None = None,
) -> Any:
    """LangGraph's prebuilt ReAct agent (each call sent to the ``ToolNode`` in a task of its
    own) over :func:`mediation_tools` guarded by the ``ToolCallGuard`` interceptor; the
    model proposes ``calls`` in one turn, then says "ok"."""
    import warnings

    from langgraph.prebuilt import create_react_agent

    from langchain_opa_guard.testing import ScriptedChatModel

    tools = mediation_tools(ledger)
    guard = ToolCallGuard(engine, registry=tools)
    node = ToolNode(
        tools, wrap_tool_call=guard.wrap_tool_call, awrap_tool_call=guard.awrap_tool_call
    )
    script = Script([AIMessage("", tool_calls=list(calls)), "ok"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # create_react_agent's deprecation
        return create_react_agent(
            ScriptedChatModel(script=[script.reply] * 8),
            node,
            checkpointer=checkpointer,
            interrupt_before=list(interrupt_before) if interrupt_before else None,
        )


def answers_per_turn(messages: Sequence[BaseMessage]) -> list[Counter[str]]:
    """For each model turn with calls, how many answers each call id got before the next."""
    turns: list[Counter[str]] = []
    for index, message in enumerate(messages):
        if not isinstance(message, AIMessage) or not message.tool_calls:
            continue
        seen: Counter[str] = Counter()
        for later in messages[index + 1 :]:
            if isinstance(later, AIMessage):
                break
            if isinstance(later, ToolMessage):
                seen[later.tool_call_id] += 1
        turns.append(seen)
    return turns


def assert_one_answer_per_id(messages: Sequence[BaseMessage]) -> None:
    for index, message in enumerate(messages):
        if not isinstance(message, AIMessage) or not message.tool_calls:
            continue
        seen: Counter[str] = Counter()
        for later in messages[index + 1 :]:
            if isinstance(later, AIMessage):
                break
            if isinstance(later, ToolMessage):
                seen[later.tool_call_id] += 1
        ids = {str(c.get("id")) for c in message.tool_calls}
        assert set(seen) == ids, (seen, ids)
        assert all(n == 1 for n in seen.values()), seen


# -- runs with a reviewer (interrupt / resume) ----------------------------------------------


def run(graph: Any, value: Any, config: Any, mode: str, user: Any = USER) -> Any:
    """``graph.invoke`` (``mode`` ``"sync"``) or ``ainvoke`` (``"async"``) as ``user``."""
    if mode == "async":
        return asyncio.run(graph.ainvoke(value, config, context={"user": user}))
    return graph.invoke(value, config, context={"user": user})


def thread_config(thread_id: str) -> dict[str, Any]:
    """The run config of the thread ``thread_id``."""
    return {"configurable": {"thread_id": thread_id}}


def messages(graph: Any, config: Any) -> list[BaseMessage]:
    """The thread's messages (none before its first run)."""
    return list(graph.get_state(config).values.get("messages", []))


def answers_after(msgs: Sequence[BaseMessage], message_id: str) -> list[str]:
    """The call ids answered anywhere after the model message ``message_id``."""
    at = next(i for i, m in enumerate(msgs) if m.id == message_id)
    return [m.tool_call_id for m in msgs[at + 1 :] if isinstance(m, ToolMessage)]


def runs_of(ledger: Ledger, call_id: str) -> int:
    """How many times the call ``call_id`` ran."""
    return sum(1 for _, i, _ in ledger.runs if i == call_id)


def _answer_all(graph: Any, config: Any, mode: str, decision: str) -> None:
    for _ in range(4):
        state = graph.get_state(config)
        if not state.interrupts:
            return
        answer = {
            i.id: {"decisions": [{"type": decision}] * len(i.value["requests"])}
            for i in state.interrupts
        }
        run(graph, Command(resume=answer), config, mode)


def reject_all(graph: Any, config: Any, mode: str) -> None:
    """Reject every question still open, until the run ends (four rounds at most)."""
    _answer_all(graph, config, mode, "reject")


def approve_all(graph: Any, config: Any, mode: str) -> None:
    """Approve every question still open, until the run ends (four rounds at most)."""
    _answer_all(graph, config, mode, "approve")


def turn(*calls: Any, id: str = "a1") -> AIMessage:
    """A model message with ``calls``."""
    return AIMessage("", tool_calls=list(calls), id=id)


def send_and_read() -> AIMessage:
    """The turn ``a1``: ``send`` to ``a@ask.test`` (``s1``: the policy asks a human) beside
    ``read`` (``r1``: allowed)."""
    return turn(tool_call("send", ASK, "s1"), tool_call("read", READ, "r1"))


def approval_graph(kind: str, engine: Any, turns: list[Any], ledger: Ledger, **kw: Any) -> Any:
    """The model's ``turns`` in a checkpointed graph guarded by the guard node or edge
    (``kind`` ``"node"``/``"edge"``: :func:`node_graph` answering open calls first) or the
    middleware (``"middleware"``: :func:`agent_graph`)."""
    script = Script(turns)
    if kind == "middleware":
        return agent_graph(engine, script, ledger, checkpointer=InMemorySaver(), **kw)
    return node_graph(
        engine, script, ledger, checkpointer=InMemorySaver(), wiring=kind, answer_open=True, **kw
    )


def paused(
    kind: str, engine: Any, mode: str, thread_id: str
) -> tuple[Any, Ledger, dict[str, Any], Interrupt]:
    """A run paused on :func:`send_and_read` (then the model says "ok") in an
    :func:`approval_graph`, nothing of it run yet: the graph, its ledger, the thread's config
    and the one question."""
    ledger = Ledger()
    graph = approval_graph(kind, engine, [send_and_read(), "ok", "ok", "ok"], ledger)
    config = thread_config(thread_id)
    (question,) = run(graph, {"messages": [("user", "go")]}, config, mode)["__interrupt__"]
    assert ledger.runs == []
    return graph, ledger, config, question


def confirming_read(ledger: Ledger) -> BaseTool:
    """A ``read`` that asks the user (its own ``interrupt()``) before it reads."""

    def read(item: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Read an item after the user confirms."""
        interrupt({"confirm": tool_call_id})
        return ledger.record("read", tool_call_id, {"item": item})

    return StructuredTool.from_function(read)


def read_waiting(
    engine: Any, kind: str, mode: str, thread_id: str, message: AIMessage | None = None
) -> tuple[Any, Ledger, dict[str, Any], list[Any]]:
    """A checkpointed graph (``kind``: ``node`` or ``edge``) whose ``read`` tool waits in its
    own ``interrupt()`` (:func:`confirming_read`), run on ``message`` (one read ``r1`` by
    default) until the tool asks: the graph, its ledger, the thread's config and the
    interrupts waiting."""
    ledger = Ledger()
    graph = node_graph(
        engine,
        Script([message or turn(tool_call("read", READ, "r1")), "ok", "ok"]),
        ledger,
        checkpointer=InMemorySaver(),
        wiring=kind,
        read_tool=confirming_read(ledger),
    )
    config = thread_config(thread_id)
    run(graph, {"messages": [("user", "go")]}, config, mode)
    return graph, ledger, config, list(graph.get_state(config).interrupts)
