"""Calls a cut-off turn left open are answered before the model is asked again, once, as not
run, and nothing runs them afterwards (``answer_open_calls``, ``OPAGuardMiddleware``'s
``before_agent``; red team 34 has the cuts themselves).

The attacks: a resume or an approval sent after the repair, the same call id proposed again
in a later turn, a duplicated id, a fork from a checkpoint before the repair, a sibling whose
tool raised after the call ran. The controls: calls that legitimately wait (a resume, an
approval) and calls the tools answered are never answered by the repair, and a conversation
with no open call gets no write.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Annotated, Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    RemoveMessage,
    ToolMessage,
)
from langchain_core.messages.tool import invalid_tool_call
from langchain_core.tools import BaseTool, InjectedToolCallId, StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.errors import GraphRecursionError
from langgraph.graph.message import REMOVE_ALL_MESSAGES
from langgraph.types import Command
from mediation_kit import (
    POLICY,
    USER,
    WIRING,
    Ledger,
    Script,
    agent_graph,
    answers_per_turn,
    mediation_tools,
    node_graph,
)
from opa_process import ROOT

from langchain_opa_guard import EmbeddedPolicy, OPAGuardMiddleware, answer_open_calls
from langchain_opa_guard.contract import history_documents
from langchain_opa_guard.guards.middleware import HISTORY_KEY
from langchain_opa_guard.guards.open_calls import (
    OPEN_CALL_REASON,
    STARTED_CALL_REASON,
    open_call_ids,
    repaired_messages,
)
from langchain_opa_guard.testing import ScriptedChatModel
from langchain_opa_guard.testing import tool_call as call


@pytest.fixture(scope="module")
def engine() -> EmbeddedPolicy:
    return EmbeddedPolicy(ROOT / "tests" / "policies", policy=POLICY)


def turn(*calls: dict[str, Any], message_id: str = "a1") -> AIMessage:
    return AIMessage("", tool_calls=list(calls), id=message_id)


def repairs(messages: Sequence[BaseMessage]) -> list[str]:
    """The call ids the repair answered."""
    return [
        m.tool_call_id
        for m in messages
        if isinstance(m, ToolMessage)
        and m.response_metadata.get("opa_guard", {}).get("reasons")
        in ([OPEN_CALL_REASON], [STARTED_CALL_REASON])
    ]


def assert_valid(messages: Sequence[BaseMessage]) -> None:
    """What an OpenAI-style API checks: each model turn's call ids answered once each, by
    the tool messages right after it."""
    for index, message in enumerate(messages):
        if not isinstance(message, AIMessage):
            continue
        ids = [c["id"] for c in message.tool_calls]
        ids += [c["id"] for c in message.invalid_tool_calls if c.get("id")]
        after: list[str] = []
        for later in messages[index + 1 :]:
            if not isinstance(later, ToolMessage):
                break
            after.append(later.tool_call_id)
        assert Counter(after) == Counter(set(ids)), (ids, after)


# -- the repair itself ---------------------------------------------------------------------


def test_an_open_call_is_answered_after_its_turn_s_answers_before_the_new_message() -> None:
    messages = [
        HumanMessage("pay both", id="h1"),
        turn(call("pay", {"amount": 1}, "p1"), call("pay", {"amount": 2}, "p2")),
        ToolMessage("pay ran", tool_call_id="p1", id="t1"),
        HumanMessage("and now?", id="h2"),
    ]
    repaired = repaired_messages(messages)
    assert repaired is not None
    assert [getattr(m, "tool_call_id", m.id) for m in repaired] == ["h1", "a1", "p1", "p2", "h2"]
    answer = repaired[3]
    assert isinstance(answer, ToolMessage) and answer.status == "error" and answer.name == "pay"
    assert "did not run" in str(answer.content) and "new message" in str(answer.content)
    assert messages[2] is repaired[2]  # the existing answer is kept as it is
    update = answer_open_calls({"messages": messages})
    assert update is not None
    removal, *rest = update["messages"]
    assert isinstance(removal, RemoveMessage) and removal.id == REMOVE_ALL_MESSAGES
    assert [getattr(m, "tool_call_id", m.id) for m in rest] == ["h1", "a1", "p1", "p2", "h2"]


def test_the_history_reads_an_answered_open_call_as_of_unknown_outcome() -> None:
    """Not denied: another process may have run it, or its answer may have been trimmed
    away, so a rule that counts what the conversation may have done still counts it."""
    messages = [HumanMessage("pay"), turn(call("pay", {"amount": 1}, "p1")), HumanMessage("?")]
    repaired = repaired_messages(messages)
    assert repaired is not None
    (entry,) = history_documents(repaired, {})
    assert (entry["decision"], entry["status"]) == (None, "error")
    assert entry["reasons"] == [OPEN_CALL_REASON]


def test_a_kept_outcome_decides_the_answer() -> None:
    """The middleware's kept history knows what became of a call whose answer is gone."""
    messages = [
        HumanMessage("go"),
        turn(call("pay", {"amount": 1}, "p1"), call("pay", {"amount": 2}, "p2")),
        HumanMessage("?"),
    ]
    repaired = repaired_messages(messages, None, {("a1", "p1"): "ran", ("a1", "p2"): "refused"})
    assert repaired is not None
    first, second = history_documents(repaired, {})
    assert first["decision"] == "allow" and second["decision"] == "deny"
    answers = {m.tool_call_id: str(m.content) for m in repaired if isinstance(m, ToolMessage)}
    assert "may have taken effect" in answers["p1"]
    assert "refused" in answers["p2"]


def test_nothing_open_means_no_write() -> None:
    messages = [
        HumanMessage("pay"),
        turn(call("pay", {"amount": 1}, "p1")),
        ToolMessage("pay ran", tool_call_id="p1"),
        AIMessage("done"),
        HumanMessage("thanks"),
    ]
    assert repaired_messages(messages) is None
    assert answer_open_calls({"messages": messages}) is None
    assert answer_open_calls({"messages": []}) is None


def test_an_answer_of_another_turn_does_not_close_a_reused_id() -> None:
    """Ids are unique only within a turn (some servers reuse short ids): the answer of
    turn 1's ``c1`` says nothing about turn 2's ``c1``."""
    messages = [
        turn(call("read", {"item": "x"}, "c1"), message_id="a1"),
        ToolMessage("read ran", tool_call_id="c1"),
        turn(call("pay", {"amount": 5}, "c1"), message_id="a2"),
        HumanMessage("and now?"),
    ]
    assert open_call_ids(messages) == ["c1"]
    repaired = repaired_messages(messages)
    assert repaired is not None
    assert repairs(repaired) == ["c1"] and repaired.index(repaired[3]) == 3
    assert_valid(repaired)


def test_invalid_calls_with_ids_and_duplicated_ids_get_one_answer_each() -> None:
    broken = invalid_tool_call(name="pay", args='{"amount": 5,,}', id="bad", error=None)
    nameless = invalid_tool_call(name=None, args="{", id="bad2", error=None)
    no_id = invalid_tool_call(name="pay", args="{", id=None, error=None)
    message = AIMessage(
        "",
        tool_calls=[call("pay", {"amount": 1}, "d1"), call("pay", {"amount": 2}, "d1")],
        invalid_tool_calls=[broken, nameless, no_id],
        id="a1",
    )
    repaired = repaired_messages([message, HumanMessage("?")])
    assert repaired is not None
    assert repairs(repaired) == ["d1", "bad", "bad2"]
    assert "could not be read" in str(repaired[2].content)
    assert repaired[3].name == "unknown"
    assert_valid(repaired)


# -- graphs: the cut, the repair, and what may come after it ---------------------------------


def pay_100() -> Script:
    return Script([turn(call("pay", {"amount": 100}, "p1"))])


def build(kind: str, engine: EmbeddedPolicy, script: Script, ledger: Ledger, **kw: Any) -> Any:
    """``node``/``edge``: the guard node wiring with ``answer_open_calls`` before the agent;
    ``middleware``: ``create_agent`` with the guard."""
    if kind == "middleware":
        return agent_graph(engine, script, ledger, checkpointer=InMemorySaver(), **kw)
    return node_graph(
        engine,
        script,
        ledger,
        checkpointer=InMemorySaver(),
        wiring=kind,
        answer_open=True,
        **kw,
    )


CUT_BEFORE_TOOLS = {"node": 3, "edge": 2, "middleware": 3}
"""The ``recursion_limit`` that stops each wiring after the decision, before the tools."""

KINDS = ["node", "edge", "middleware"]


def cut(graph: Any, kind: str, config: dict[str, Any], text: str = "pay") -> None:
    with pytest.raises(GraphRecursionError):
        graph.invoke(
            {"messages": [("user", text)]},
            {**config, "recursion_limit": CUT_BEFORE_TOOLS[kind]},
            context={"user": USER},
        )
    assert graph.get_state(config).next == ("tools",)


def say(graph: Any, config: dict[str, Any], text: str = "and now?") -> list[BaseMessage]:
    out = graph.invoke({"messages": [("user", text)]}, config, context={"user": USER})
    return list(out["messages"])


@pytest.mark.parametrize("kind", KINDS)
def test_a_resume_after_the_repair_runs_nothing(engine: EmbeddedPolicy, kind: str) -> None:
    """The repaired turn's tools task is gone: ``invoke(None)`` after the repair (twice, as
    a double click would) runs nothing and adds no answer."""
    ledger = Ledger()
    graph = build(kind, engine, pay_100(), ledger)
    config: dict[str, Any] = {"configurable": {"thread_id": f"resume-after-{kind}"}}
    cut(graph, kind, config)
    messages = say(graph, config)
    assert repairs(messages) == ["p1"]
    for _ in range(2):
        out = graph.invoke(None, config, context={"user": USER})
    assert ledger.runs == []
    assert repairs(out["messages"]) == ["p1"]
    assert_valid(out["messages"])


@pytest.mark.parametrize("kind", KINDS)
def test_the_same_id_proposed_again_is_decided_and_runs_once(
    engine: EmbeddedPolicy, kind: str
) -> None:
    """The model proposes ``p1`` again in the next turn (same id, same payment): it is a
    call of its own, decided and run once; the cut-off ``p1`` never runs. Under the same id
    a payment the policy denies does not run either."""
    ledger = Ledger()
    script = Script(
        [
            turn(call("pay", {"amount": 100}, "p1"), message_id="a1"),
            turn(call("pay", {"amount": 100}, "p1"), message_id="a2"),
            turn(call("pay", {"amount": 5000}, "p1"), message_id="a3"),
        ]
    )
    graph = build(kind, engine, script, ledger)
    config: dict[str, Any] = {"configurable": {"thread_id": f"same-id-{kind}"}}
    cut(graph, kind, config)
    messages = say(graph, config)
    assert [(n, i, a["amount"]) for n, i, a in ledger.runs] == [("pay", "p1", 100)]
    assert [dict(c) for c in answers_per_turn(messages)] == [{"p1": 1}, {"p1": 1}, {"p1": 1}]
    assert repairs(messages) == ["p1"]
    assert_valid(messages)


@pytest.mark.parametrize("kind", KINDS)
def test_a_fork_from_before_the_repair_runs_the_turn_as_before(
    engine: EmbeddedPolicy, kind: str
) -> None:
    """Replaying the checkpoint saved before the new message (the tools still pending) runs
    the turn as it would have run; the repaired branch keeps its one answer per call, and
    the fork has one too: the tool's."""
    ledger = Ledger()
    graph = build(kind, engine, pay_100(), ledger)
    config: dict[str, Any] = {"configurable": {"thread_id": f"fork-{kind}"}}
    cut(graph, kind, config)
    say(graph, config)
    repaired = graph.get_state(config)
    (before,) = [s for s in graph.get_state_history(config) if s.next == ("tools",)]
    fork = graph.invoke(None, before.config, context={"user": USER})
    assert ledger.runs == [("pay", "p1", {"amount": 100})]
    assert repairs(fork["messages"]) == []
    assert_valid(fork["messages"])
    again = graph.get_state(repaired.config).values["messages"]
    assert repairs(again) == ["p1"]
    assert_valid(again)


@pytest.mark.parametrize("kind", ["node", "middleware"])
def test_an_approval_sent_after_the_new_message_approves_nothing(
    engine: EmbeddedPolicy, kind: str
) -> None:
    """The question is left open, a new message is sent, the repair answers the waiting
    call; then the old answer arrives (by the old interrupt's id too, while a new question
    about another call waits): nothing of the old turn runs, and the new question is not
    answered by it."""
    ledger = Ledger()
    script = Script(
        [
            turn(call("send", {"to": "a@ask.test", "body": "x"}, "s1"), message_id="a1"),
            turn(call("send", {"to": "b@ask.test", "body": "y"}, "s2"), message_id="a2"),
        ]
    )
    graph = build(kind, engine, script, ledger)
    config: dict[str, Any] = {"configurable": {"thread_id": f"approval-after-{kind}"}}
    first = graph.invoke({"messages": [("user", "send")]}, config, context={"user": USER})
    (old,) = first["__interrupt__"]
    second = graph.invoke({"messages": [("user", "never mind")]}, config, context={"user": USER})
    assert repairs(second["messages"]) == ["s1"]
    (new,) = second["__interrupt__"]
    assert new.value["requests"][0]["tool_call_id"] == "s2"
    approve = {"decisions": [{"type": "approve"}]}
    stale = graph.invoke(Command(resume={old.id: approve}), config, context={"user": USER})
    assert ledger.runs == []
    assert [i.id for i in stale["__interrupt__"]] == [new.id]  # still waiting
    graph.invoke(Command(resume={new.id: approve}), config, context={"user": USER})
    assert [i for _, i, _ in ledger.runs] == ["s2"]
    messages = graph.get_state(config).values["messages"]
    assert repairs(messages) == ["s1"]
    assert_valid(messages)


# -- controls: calls that legitimately wait, and conversations with nothing open ------------


@pytest.mark.parametrize("kind", KINDS)
def test_calls_waiting_at_a_pause_run_on_resume_and_are_not_answered_by_the_repair(
    engine: EmbeddedPolicy, kind: str
) -> None:
    ledger = Ledger()
    script = Script([turn(call("read", {"item": "x"}, "r1"), call("pay", {"amount": 1}, "p1"))])
    if kind == "middleware":
        tools = mediation_tools(ledger)
        graph = create_agent(
            ScriptedChatModel(script=[script.reply] * 8),
            tools,
            middleware=[OPAGuardMiddleware(engine, registry=tools)],
            checkpointer=InMemorySaver(),
            interrupt_before=["tools"],
        )
    else:
        graph = build(kind, engine, script, ledger, interrupt_before=["tools"])
    config: dict[str, Any] = {"configurable": {"thread_id": f"pause-{kind}"}}
    graph.invoke({"messages": [("user", "read and pay")]}, config, context={"user": USER})
    assert set(graph.get_state(config).next) == {"tools"} and ledger.runs == []
    out = graph.invoke(None, config, context={"user": USER})
    assert sorted(i for _, i, _ in ledger.runs) == ["p1", "r1"]
    assert repairs(out["messages"]) == []
    assert_valid(out["messages"])


@pytest.mark.parametrize("kind", ["node", "middleware"])
def test_an_approved_call_runs_once_and_is_not_answered_by_the_repair(
    engine: EmbeddedPolicy, kind: str
) -> None:
    ledger = Ledger()
    script = Script([turn(call("send", {"to": "a@ask.test", "body": "x"}, "s1"))])
    graph = build(kind, engine, script, ledger)
    config: dict[str, Any] = {"configurable": {"thread_id": f"approved-{kind}"}}
    first = graph.invoke({"messages": [("user", "send")]}, config, context={"user": USER})
    assert first["__interrupt__"]
    resume = Command(resume={"decisions": [{"type": "approve"}]})
    out = graph.invoke(resume, config, context={"user": USER})
    assert [i for _, i, _ in ledger.runs] == ["s1"]
    messages = say(graph, config, "thanks")
    assert repairs(messages) == [] and repairs(out["messages"]) == []
    assert_valid(messages)


@pytest.mark.parametrize("kind", KINDS)
def test_a_conversation_with_no_open_call_gets_no_write(engine: EmbeddedPolicy, kind: str) -> None:
    """Parallel calls the tools answered in their run are not answered again, and the
    repair writes nothing at all (no rewrite of the messages) when nothing is open."""
    ledger = Ledger()
    script = Script([turn(call("read", {"item": "x"}, "r1"), call("pay", {"amount": 1}, "p1"))])
    graph = build(kind, engine, script, ledger)
    config: dict[str, Any] = {"configurable": {"thread_id": f"nothing-open-{kind}"}}
    say(graph, config, "read and pay")
    updates = list(
        graph.stream(
            {"messages": [("user", "thanks")]},
            config,
            context={"user": USER},
            stream_mode="updates",
        )
    )
    node = "OPAGuardMiddleware.before_agent" if kind == "middleware" else "answer_open_calls"
    written = [u[node] for u in updates if node in u]
    assert len(written) == 1
    assert written[0] is None or "messages" not in written[0]
    messages = graph.get_state(config).values["messages"]
    assert sorted(i for _, i, _ in ledger.runs) == ["p1", "r1"]
    assert repairs(messages) == []
    assert_valid(messages)


# -- what the repair says, and what the history reads ---------------------------------------


@pytest.mark.parametrize("kind", ["node", "middleware"])
def test_a_cut_turn_with_invalid_and_duplicated_ids_is_answered_once_per_id(
    engine: EmbeddedPolicy, kind: str
) -> None:
    """Cut before the guard answered anything: a call whose arguments did not parse (with
    an id) and two calls under one id. Each id gets one answer; nothing runs. (The
    middleware decided the turn as the model answered: its denials are the answers.)"""
    ledger = Ledger()
    message = AIMessage(
        "",
        tool_calls=[call("pay", {"amount": 1}, "d1"), call("pay", {"amount": 2}, "d1")],
        invalid_tool_calls=[invalid_tool_call(name="pay", args="{", id="bad", error=None)],
        id="a1",
    )
    graph = build(kind, engine, Script([message]), ledger)
    config: dict[str, Any] = {"configurable": {"thread_id": f"odd-ids-{kind}"}}
    with pytest.raises(GraphRecursionError):
        graph.invoke(
            {"messages": [("user", "pay")]},
            {**config, "recursion_limit": 2},
            context={"user": USER},
        )
    messages = say(graph, config)
    assert ledger.runs == []
    answered = [m.tool_call_id for m in messages if isinstance(m, ToolMessage)]
    assert answered == ["d1", "bad"]
    assert repairs(messages) == (["d1", "bad"] if kind == "node" else [])
    assert_valid(messages)


def test_a_call_that_ran_before_its_answer_was_lost_is_not_called_unrun(
    engine: EmbeddedPolicy,
) -> None:
    """A sibling's tool raises: the step fails after ``pay`` ran, and a new message drops
    the step with ``pay``'s answer. The repair must not tell the model that the payment
    did not run (it would propose it again): it says it may have taken effect, and the
    history counts it as run."""
    ledger = Ledger()

    def read(item: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Read an item."""
        ledger.record("read", tool_call_id, {"item": item})
        raise RuntimeError("the reader broke")

    tools: list[BaseTool] = [StructuredTool.from_function(read)]
    tools += [t for t in mediation_tools(ledger) if t.name != "read"]
    script = Script([turn(call("pay", {"amount": 100}, "p1"), call("read", {"item": "x"}, "r1"))])
    guard = OPAGuardMiddleware(engine, registry=tools)
    graph = create_agent(
        ScriptedChatModel(script=[script.reply] * 8),
        tools,
        middleware=[guard],
        checkpointer=InMemorySaver(),
    )
    config: dict[str, Any] = {"configurable": {"thread_id": "lost-answer"}}
    with pytest.raises(RuntimeError, match="the reader broke"):
        graph.invoke({"messages": [("user", "pay, read")]}, config, context={"user": USER})
    messages = say(graph, config)
    assert [i for n, i, _ in ledger.runs if n == "pay"] == ["p1"]
    answers = {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}
    assert "may have taken effect" in str(answers["p1"].content)
    assert "did not run" not in str(answers["p1"].content)
    kept = {tuple(e["origin"]): e for e in graph.get_state(config).values[HISTORY_KEY]}
    assert kept[("a1", 0)]["decision"] == "allow"  # counted as run
    assert_valid(messages)


def test_the_middleware_keeps_the_repaired_calls_in_its_history_as_unanswered(
    engine: EmbeddedPolicy,
) -> None:
    ledger = Ledger()
    graph = build("middleware", engine, pay_100(), ledger)
    config: dict[str, Any] = {"configurable": {"thread_id": "kept-history"}}
    cut(graph, "middleware", config)
    say(graph, config)
    values = graph.get_state(config).values
    kept = {tuple(e["origin"]): e for e in values[HISTORY_KEY]}
    assert (kept[("a1", 0)]["decision"], kept[("a1", 0)]["status"]) == (None, "error")
    assert not values.get("opa_guard_grants") and not values.get("opa_guard_turn")


async def test_the_async_paths_repair_alike(engine: EmbeddedPolicy) -> None:
    for kind in KINDS:
        ledger = Ledger()
        graph = build(kind, engine, pay_100(), ledger)
        config: dict[str, Any] = {"configurable": {"thread_id": f"async-{kind}"}}
        with pytest.raises(GraphRecursionError):
            await graph.ainvoke(
                {"messages": [("user", "pay")]},
                {**config, "recursion_limit": CUT_BEFORE_TOOLS[kind]},
                context={"user": USER},
            )
        out = await graph.ainvoke(
            {"messages": [("user", "and now?")]}, config, context={"user": USER}
        )
        assert ledger.runs == []
        assert repairs(out["messages"]) == ["p1"]
        assert_valid(out["messages"])


def test_as_a_pre_model_hook_it_answers_a_cut_turn_of_the_interceptor_wiring(
    engine: EmbeddedPolicy,
) -> None:
    """``create_react_agent(pre_model_hook=answer_open_calls)`` with the ``ToolCallGuard``
    interceptor, paused before its tools (its own ``remaining_steps`` check ends a run
    short of its limit without calls, so the cut here is the pause): a new message instead
    of a resume gets the paused turn answered before the model sees it; the next turn,
    resumed, runs and is left alone."""
    import warnings

    from langgraph.prebuilt import ToolNode

    from langchain_opa_guard import ToolCallGuard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # create_react_agent is deprecated for create_agent
        from langgraph.prebuilt import create_react_agent

    ledger = Ledger()
    tools = mediation_tools(ledger)
    guard = ToolCallGuard(engine, registry=tools)
    node = ToolNode(
        tools, wrap_tool_call=guard.wrap_tool_call, awrap_tool_call=guard.awrap_tool_call
    )
    script = Script(
        [
            turn(call("pay", {"amount": 100}, "p1"), message_id="a1"),
            turn(call("pay", {"amount": 200}, "p2"), message_id="a2"),
        ]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = create_react_agent(
            ScriptedChatModel(script=[script.reply] * 8),
            node,
            pre_model_hook=answer_open_calls,
            checkpointer=InMemorySaver(),
            interrupt_before=["tools"],
        )
    config: dict[str, Any] = {"configurable": {"thread_id": "react-hook"}}
    graph.invoke({"messages": [("user", "pay")]}, config, context={"user": USER})
    assert graph.get_state(config).next == ("tools",)
    say(graph, config)
    out = graph.invoke(None, config, context={"user": USER})
    messages = out["messages"]
    assert [(i, a["amount"]) for _, i, a in ledger.runs] == [("p2", 200)]
    assert repairs(messages) == ["p1"]
    assert_valid(messages)


@pytest.mark.parametrize("kind", KINDS)
def test_a_cut_call_is_not_counted_as_a_denial_when_proposed_again(
    engine: EmbeddedPolicy, kind: str
) -> None:
    """The payment of 5000 is cut off before the guard answered it, then proposed again and
    denied: that is its first denial, not its second (``max_repeated_denials`` counts
    denials, and the repair's answer is none). The middleware had decided the turn as the
    model answered: there the cut call's answer is that denial, and it counts."""
    ledger = Ledger()
    script = Script(
        [
            turn(call("pay", {"amount": 5000}, "p1"), message_id="a1"),
            turn(call("pay", {"amount": 5000}, "p2"), message_id="a2"),
        ]
    )
    if kind == "middleware":
        graph = build(kind, engine, script, ledger)
        config: dict[str, Any] = {"configurable": {"thread_id": f"not-a-denial-{kind}"}}
        with pytest.raises(GraphRecursionError):
            graph.invoke(
                {"messages": [("user", "pay")]},
                {**config, "recursion_limit": 2},
                context={"user": USER},
            )
    else:
        graph = build(kind, engine, script, ledger, interrupt_before=["guard"])
        config = {"configurable": {"thread_id": f"not-a-denial-{kind}"}}
        graph.invoke({"messages": [("user", "pay")]}, config, context={"user": USER})
        assert graph.get_state(config).next == ("guard",)
    messages = say(graph, config)
    while graph.get_state(config).next:  # paused before the guard again (node, edge)
        messages = graph.invoke(None, config, context={"user": USER})["messages"]
    assert ledger.runs == []
    (first,) = [m for m in messages if isinstance(m, ToolMessage) and m.tool_call_id == "p1"]
    (denial,) = [m for m in messages if isinstance(m, ToolMessage) and m.tool_call_id == "p2"]
    assert "denied by policy" in str(denial.content)
    if kind == "middleware":
        assert repairs(messages) == [] and "denied by policy" in str(first.content)
    else:
        assert repairs(messages) == ["p1"]
        assert "times" not in str(denial.content)
    assert_valid(messages)


def test_the_guard_node_names_open_calls_it_meets_when_the_repair_is_not_wired(
    engine: EmbeddedPolicy, caplog: pytest.LogCaptureFixture
) -> None:
    """Without ``answer_open_calls`` the model is called with the cut turn's call open (an
    OpenAI-style API refuses; this scripted model does not). The guard cannot undo that
    request, and does not rewrite the conversation in its own step: it says what to wire."""
    ledger = Ledger()
    script = Script(
        [
            turn(call("pay", {"amount": 100}, "p1"), message_id="a1"),
            turn(call("pay", {"amount": 200}, "p2"), message_id="a2"),
        ]
    )
    graph = node_graph(engine, script, ledger, checkpointer=InMemorySaver())
    config: dict[str, Any] = {"configurable": {"thread_id": "not-wired"}}
    with pytest.raises(GraphRecursionError):  # one step fewer than with the repair node
        graph.invoke(
            {"messages": [("user", "pay")]},
            {**config, "recursion_limit": 1 if WIRING == "edge" else 2},
            context={"user": USER},
        )
    assert graph.get_state(config).next == ("tools",)
    caplog.clear()
    with caplog.at_level("WARNING", logger="langchain_opa_guard"):
        messages = say(graph, config)
    assert any(
        "answer_open_calls" in r.getMessage() and "p1" in r.getMessage() for r in caplog.records
    )
    assert [i for _, i, _ in ledger.runs] == ["p2"]
    assert repairs(messages) == []
