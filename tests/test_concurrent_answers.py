"""Two answers to one approval question, sent at once, run the call once.

README ("Human approval"): "Nothing runs twice ... a call of a model turn that already
started in this process does not start again (two resumes sent at once, a double click)."
Two reviewers looking at the same question (a shared approval queue) answer at the same
moment: one approves the call as proposed, the other fixes a typo in it (an edit). Both are
answers to one question about one call, so the call's side effect runs once, whichever
answer gets there first: the run-once claim is for the call of the decided turn, not for the
arguments an answer gives it (a claim keyed by the arguments ran the message twice).

The engine below only holds the two resumes at the re-check until both have read the
waiting checkpoint (the interleaving two concurrent requests get anyway); it decides
exactly as the engine it wraps (embedded, or a real OPA server).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from conftest import TEST_POLICIES
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from mediation_kit import (
    POLICY,
    USER,
    Ledger,
    Script,
    agent_graph,
    interceptor_react_agent,
    node_graph,
)

from langchain_opa_guard import Decision, EmbeddedPolicy, OPAServer, PolicyEngine
from langchain_opa_guard.testing import tool_call


class Together:
    """``inner``; while ``barrier`` is set, each decision waits for the other resume to
    reach its re-check too."""

    def __init__(self, inner: PolicyEngine) -> None:
        self.inner = inner
        self.engine_name = inner.engine_name
        self.policy = inner.policy
        self.in_process = getattr(inner, "in_process", False)
        self.barrier: threading.Barrier | None = None

    def _meet(self) -> None:
        if self.barrier is not None:
            self.barrier.wait(timeout=30)

    def decide(self, input: Mapping[str, Any]) -> Decision:
        self._meet()
        return self.inner.decide(input)

    async def adecide(self, input: Mapping[str, Any]) -> Decision:
        self._meet()  # each resume runs its own event loop, in its own thread
        return await self.inner.adecide(input)

    def decide_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Decision]:
        self._meet()
        return [self.inner.decide(i) for i in inputs]

    async def adecide_many(self, inputs: Sequence[Mapping[str, Any]]) -> list[Decision]:
        self._meet()
        return [await self.inner.adecide(i) for i in inputs]


APPROVE = {"decisions": [{"type": "approve"}]}


def edit(body: str) -> dict[str, Any]:
    return {
        "decisions": [
            {
                "type": "edit",
                "edited_action": {"name": "send", "args": {"to": "a@ask.test", "body": body}},
            }
        ]
    }


ANSWERS = {
    "approve": APPROVE,
    "edit": edit("Quarterly report attached."),
    "other edit": edit("Quarterly report attached, see page 2."),
}


def _answered_at_once(
    engine: PolicyEngine, kind: str, pair: tuple[str, str], use_async: bool, thread: str
) -> tuple[Ledger, list[dict[str, Any]]]:
    """Two threads resume one waiting question at once with the answers named in ``pair``;
    the ledger of what ran and each resume's final state (a refused resume: none)."""
    together = Together(engine)
    ledger = Ledger()
    script = Script(
        [
            AIMessage(
                "",
                tool_calls=[
                    tool_call(
                        "send", {"to": "a@ask.test", "body": "Quartely report attached."}, "s1"
                    )
                ],
            ),
            "ok",
        ]
    )
    maker = node_graph if kind == "node" else agent_graph
    graph = maker(together, script, ledger, checkpointer=InMemorySaver())  # type: ignore[arg-type]
    config = {"configurable": {"thread_id": thread}}
    first = graph.invoke(
        {"messages": [("user", "send the report")]}, config, context={"user": USER}
    )
    assert "__interrupt__" in first and ledger.runs == []

    together.barrier = threading.Barrier(2)
    results: list[dict[str, Any]] = []

    def resume(answer: dict[str, Any]) -> None:
        command = Command(resume=answer)
        try:
            if use_async:
                out = asyncio.run(graph.ainvoke(command, config, context={"user": USER}))
            else:
                out = graph.invoke(command, config, context={"user": USER})
            results.append(out)
        except BaseException:  # noqa: BLE001 - a refused second resume is fine
            pass

    threads = [threading.Thread(target=resume, args=(ANSWERS[name],)) for name in pair]
    for worker in threads:
        worker.start()
    for worker in threads:
        worker.join(timeout=60)
    assert not any(worker.is_alive() for worker in threads)
    return ledger, results


@pytest.mark.parametrize("kind", ["node", "middleware"])
@pytest.mark.parametrize("second", ["approve", "edit"], ids=["control", "approve+edit"])
def test_two_reviewers_answering_at_once_send_the_message_once(kind: str, second: str) -> None:
    engine = EmbeddedPolicy(TEST_POLICIES, policy=POLICY)
    thread = f"two-reviewers-{kind}-{second}"
    ledger, results = _answered_at_once(engine, kind, ("approve", second), False, thread)
    sends = [args for name, _, args in ledger.runs if name == "send"]
    assert len(sends) <= 1, f"call s1 ran {len(sends)} times: {sends}"
    assert len(sends) == 1, "one of the two approvals runs the call"
    for out in results:  # every resume that finished answered s1 exactly once
        answers = [m for m in out["messages"] if isinstance(m, ToolMessage)]
        assert [m.tool_call_id for m in answers] == ["s1"], answers


@pytest.mark.parametrize("kind", ["node", "middleware"])
@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("engine_kind", ["embedded", "opa"])
def test_two_different_edits_at_once_run_the_call_once(
    kind: str, use_async: bool, engine_kind: str, request: pytest.FixtureRequest
) -> None:
    """Two edits with different arguments (each valid on its own), sync and async, with the
    embedded engine and a real OPA server: one of them runs."""
    engine: PolicyEngine = (
        EmbeddedPolicy(TEST_POLICIES, policy=POLICY)
        if engine_kind == "embedded"
        else OPAServer(request.getfixturevalue("opa_url"), policy=POLICY)
    )
    thread = f"two-edits-{kind}-{use_async}-{engine_kind}"
    try:
        ledger, results = _answered_at_once(engine, kind, ("edit", "other edit"), use_async, thread)
    finally:
        if isinstance(engine, OPAServer):
            engine.close()
    sends = [args for name, _, args in ledger.runs if name == "send"]
    assert len(sends) == 1, f"call s1 ran {len(sends)} times: {sends}"
    assert sends[0]["body"] in {
        "Quarterly report attached.",
        "Quarterly report attached, see page 2.",
    }
    for out in results:
        answers = [m for m in out["messages"] if isinstance(m, ToolMessage)]
        assert [m.tool_call_id for m in answers] == ["s1"], answers


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_two_resumes_of_a_paused_tool_node_run_the_interceptors_call_once(use_async: bool) -> None:
    """The ToolCallGuard interceptor has no approvals, but a graph paused before its tools
    (``interrupt_before=["tools"]``, a human looking at the proposed calls) is resumed the
    same way: two resumes sent at once (a double click) both run the tools task, and the
    allowed call runs for one of them."""
    together = Together(EmbeddedPolicy(TEST_POLICIES, policy=POLICY))
    ledger = Ledger()
    graph = interceptor_react_agent(
        together,
        ledger,
        [tool_call("send", {"to": "a@ok.test", "body": "hi"}, "s1")],
        checkpointer=InMemorySaver(),
        interrupt_before=["tools"],
    )
    config = {"configurable": {"thread_id": f"interceptor-twice-{use_async}"}}
    graph.invoke({"messages": [("user", "send it")]}, config, context={"user": USER})
    assert ledger.runs == []
    together.barrier = threading.Barrier(2)
    results: list[dict[str, Any]] = []

    def resume() -> None:
        if use_async:
            results.append(asyncio.run(graph.ainvoke(None, config, context={"user": USER})))
        else:
            results.append(graph.invoke(None, config, context={"user": USER}))

    threads = [threading.Thread(target=resume) for _ in range(2)]
    for worker in threads:
        worker.start()
    for worker in threads:
        worker.join(timeout=60)
    assert len(results) == 2
    assert [name for name, _, _ in ledger.runs] == ["send"], ledger.runs
    for out in results:  # each run answered s1 once: one ran it, the other says it ran
        answers = [m for m in out["messages"] if isinstance(m, ToolMessage)]
        assert [m.tool_call_id for m in answers] == ["s1"], answers
