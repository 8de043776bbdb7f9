"""A property test of complete mediation over generated turns, wirings and resumes.

Hypothesis generates conversations (mixed allow / deny / approval calls, turns kept as
messages or as streamed chunks, ids duplicated within a turn and reused across turns), runs
them through the guard node or the ``create_agent`` middleware with an in-memory or SQLite
checkpointer, pauses before the tools, and answers every approval request at random. Across
all of them:

* a call that ran had an allow for exactly its arguments, or a reviewer approved that call
  (by id, in its turn) with exactly those arguments, or edited it to arguments the policy
  then allowed (its rewrite of them included);
* nothing ran twice;
* every call id of every turn got exactly one answer.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Sequence
from typing import Annotated, Any

from conftest import TEST_POLICIES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import BaseTool, InjectedToolCallId, StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import InjectedState, tools_condition
from langgraph.types import Command
from mediation_kit import POLICY, USER, assert_one_answer_per_id

from langchain_opa_guard import (
    EmbeddedPolicy,
    GuardedToolNode,
    OPAGuardMiddleware,
    PolicyGuardNode,
)
from langchain_opa_guard.testing import ScriptedChatModel

ENGINE = EmbeddedPolicy(TEST_POLICIES, policy=POLICY)

CALLS = st.one_of(
    st.builds(lambda i: ("read", {"item": i}), st.sampled_from(["a", "b"])),
    st.builds(
        lambda to: ("send", {"to": to, "body": "x"}),
        st.sampled_from(["a@ok.test", "b@ask.test", "c@ask.test", "eve@evil.test"]),
    ),
    st.builds(lambda a: ("pay", {"amount": a}), st.sampled_from([10, 5000, "12", "5000"])),
    st.builds(
        lambda s, n: ("search", {"scope": s, "limit": n}),
        st.sampled_from(["mine", "all"]),
        st.sampled_from([5, 50]),
    ),
)
IDS = st.sampled_from(["0", "1", "a"])
TURN = st.lists(st.tuples(CALLS, IDS), min_size=1, max_size=4)
EDITS = {
    "send": {"to": "z@ok.test", "body": "edited"},
    "search": {"scope": "mine", "limit": 40},
    "pay": {"amount": 7},
    "read": {"item": "edited"},
}


def turns_seen(state: Any) -> int:
    messages = state.get("messages", []) if isinstance(state, dict) else []
    return sum(1 for m in messages if isinstance(m, AIMessage) and m.tool_calls)


class Runs:
    def __init__(self) -> None:
        self.items: list[tuple[int, str, str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def tools(self) -> list[BaseTool]:
        def make(name: str, fields: dict[str, type]) -> BaseTool:
            def body(
                state: Annotated[dict[str, Any], InjectedState],
                tool_call_id: Annotated[str, InjectedToolCallId],
                **args: Any,
            ) -> str:
                with self.lock:
                    self.items.append((turns_seen(state), name, tool_call_id, dict(args)))
                return f"{name} ran"

            from pydantic import create_model

            schema = create_model(  # type: ignore[call-overload]
                name,
                state=(Annotated[dict[str, Any], InjectedState], ...),
                tool_call_id=(Annotated[str, InjectedToolCallId], ...),
                **{k: (v, ...) for k, v in fields.items()},
            )
            return StructuredTool.from_function(
                body, name=name, description=name, args_schema=schema
            )

        return [
            make("read", {"item": str}),
            make("send", {"to": str, "body": str}),
            make("pay", {"amount": int}),
            make("search", {"scope": str, "limit": int}),
        ]


def message_for(calls: Sequence[tuple[tuple[str, dict[str, Any]], str]], chunk: bool) -> AIMessage:
    if chunk:
        return AIMessageChunk(
            content="",
            tool_call_chunks=[
                {"name": n, "args": json.dumps(a), "id": i, "index": k}
                for k, ((n, a), i) in enumerate(calls)
            ],
        )
    return AIMessage(
        "",
        tool_calls=[{"name": n, "args": a, "id": i, "type": "tool_call"} for (n, a), i in calls],
    )


def reply_for(turns: list[AIMessage]) -> Any:
    def reply(messages: Sequence[BaseMessage]) -> AIMessage:
        done = sum(1 for m in messages if isinstance(m, AIMessage))
        return turns[done] if done < len(turns) else AIMessage("done")

    return reply


def build(surface: str, turns: list[AIMessage], runs: Runs, saver: Any, pause: bool) -> Any:
    tools = runs.tools()
    if surface == "middleware":
        model = ScriptedChatModel(script=[reply_for(turns)] * 16)
        return create_agent(
            model,
            tools,
            middleware=[OPAGuardMiddleware(ENGINE, registry=tools)],
            checkpointer=saver,
        )
    node = GuardedToolNode(tools)
    reply = reply_for(turns)
    builder = StateGraph(MessagesState)
    builder.add_node(
        "agent", RunnableLambda(lambda s: {"messages": [reply(s["messages"])]}, name="agent")
    )
    builder.add_node("guard", PolicyGuardNode(ENGINE, registry=node, max_repeated_denials=None))
    builder.add_node("tools", node)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=saver, interrupt_before=["tools"] if pause else None)


def verdict(name: str, args: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    decision = ENGINE.decide({"version": 1, "tool": {"name": name, "args": args}})
    return decision.verdict, (dict(decision.args) if decision.args is not None else None)


def allowed_as_run(name: str, args: dict[str, Any]) -> bool:
    """The policy allows exactly these arguments (they are their own rewrite)."""
    kind, rewrite = verdict(name, args)
    return kind == "allow" and (rewrite is None or rewrite == args)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    turns=st.lists(st.tuples(TURN, st.booleans()), min_size=1, max_size=3),
    surface=st.sampled_from(["node", "middleware"]),
    saver_kind=st.sampled_from(["memory", "sqlite"]),
    mode=st.sampled_from(["sync", "async"]),
    pause=st.booleans(),
    answers=st.randoms(use_true_random=False),
)
def test_no_call_runs_without_an_allow_for_exactly_it(
    turns: list[tuple[list[Any], bool]],
    surface: str,
    saver_kind: str,
    mode: str,
    pause: bool,
    answers: Any,
) -> None:
    if saver_kind == "sqlite":
        if mode == "async":
            mode = "sync"  # the SQLite saver here is the sync one
        saver: Any = SqliteSaver(sqlite3.connect(":memory:", check_same_thread=False))
    else:
        saver = InMemorySaver()
    runs = Runs()
    messages = [message_for(calls, chunk) for calls, chunk in turns]
    graph = build(surface, messages, runs, saver, pause and surface == "node")
    config = {"configurable": {"thread_id": "p"}}
    approved: dict[tuple[int, str], list[dict[str, Any]]] = {}

    def invoke(value: Any) -> dict[str, Any]:
        if mode == "sync":
            return graph.invoke(value, config, context={"user": USER})  # type: ignore[no-any-return]
        return asyncio.run(graph.ainvoke(value, config, context={"user": USER}))  # type: ignore[no-any-return]

    result = invoke({"messages": [("user", "go")]})
    for _ in range(12):
        state = graph.get_state(config)
        if not state.next:
            break
        if not state.interrupts:  # paused before the tools
            result = invoke(None)
            continue
        (pending,) = state.interrupts
        turn_index = turns_seen(state.values)
        decisions = []
        for request in pending.value["requests"]:
            kind = answers.choice(["approve", "reject", "edit"])
            key = (turn_index, request["tool_call_id"])
            if kind == "approve":
                approved.setdefault(key, []).append(dict(request["args"]))
                decisions.append({"type": "approve"})
            elif kind == "edit":
                edited = EDITS[request["name"]]
                what, rewrite = verdict(request["name"], edited)
                if what in ("allow", "approval"):
                    approved.setdefault(key, []).append(rewrite or edited)
                decisions.append(
                    {"type": "edit", "edited_action": {"name": request["name"], "args": edited}}
                )
            else:
                decisions.append({"type": "reject", "message": "no"})
        result = invoke(Command(resume={"decisions": decisions}))
    assert not graph.get_state(config).next, "the run did not finish"

    # Nothing ran twice (a call is its turn and its id).
    keys = [(turn, call_id) for turn, _, call_id, _ in runs.items]
    assert len(keys) == len(set(keys)), runs.items
    # Everything that ran was allowed for exactly its arguments, or approved by id.
    for turn, name, call_id, args in runs.items:
        assert allowed_as_run(name, args) or args in approved.get((turn, call_id), []), (
            turn,
            name,
            call_id,
            args,
            approved,
        )
    # Every call id of every turn answered exactly once.
    assert_one_answer_per_id(result["messages"])
