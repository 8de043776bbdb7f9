"""Red team 45: a call whose grant no longer holds is decided by the middleware's fallback
(``ToolCallGuard``) *outside* the middleware inside it, so a change that inner middleware
makes after that decision runs unchecked.

``OPAGuardMiddleware.wrap_tool_call`` runs a granted call through ``CheckedTool`` (a change by
an inner middleware is refused where the tool runs). When the call's grant does not hold any
more (a policy reload, ``grant_ttl`` passed: README, "a grant made before a reload grants
nothing after it"), ``checked_request`` returns ``None`` and the call goes to
``self.guard.wrap_tool_call(request, handler)``: the interceptor decides the call as the model
proposed it and then calls ``handler``, which is the rest of the middleware chain, with no
check where the tool runs. Whatever an inner middleware (listed after the guard, as the README
asks) then does to ``request.tool_call`` runs as changed.

The natural trigger is LangChain 1.5's ``HumanInTheLoopMiddleware(interrupt_mode="per_call")``:
its question is asked inside ``wrap_tool_call``, i.e. after the guard granted the call, and a
reviewer's ``edit`` is applied there (``_apply_edit``). A review that outlasts ``grant_ttl``
(10 minutes) or a policy bundle pushed while the question waits is enough.

README: "Wherever it sits, a call changed after the decision never runs unchecked"; "a call
without a grant ... is decided where it runs"; the guard's own approvals: "An edit goes through
the tool's schema and the policy again: a deny still denies". Not documented as a limit.
"""

from __future__ import annotations

import asyncio
import inspect
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_POLICIES
from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from mediation_kit import (
    POLICY,
    USER,
    Ledger,
    PayTimesTen,
    Script,
    answers_per_turn,
    mediation_tools,
)

from langchain_opa_guard import EmbeddedPolicy, OPAGuardMiddleware
from langchain_opa_guard.guards import seals
from langchain_opa_guard.testing import ScriptedChatModel, tool_call

PER_CALL = "interrupt_mode" in inspect.signature(HumanInTheLoopMiddleware).parameters
needs_per_call = pytest.mark.skipif(
    not PER_CALL, reason="HumanInTheLoopMiddleware(interrupt_mode='per_call') is LangChain 1.5+"
)


def _engine(tmp_path: Path) -> tuple[EmbeddedPolicy, Path]:
    """The mediation policy (pay > 1000 denied) from a copy that can be changed and reloaded."""
    shutil.copytree(TEST_POLICIES, tmp_path / "policies")
    return EmbeddedPolicy(tmp_path / "policies", policy=POLICY), tmp_path / "policies"


def _push_new_bundle(engine: EmbeddedPolicy, root: Path) -> None:
    """An operator pushes a policy change (here only a comment, same rules) and reloads."""
    rego = root / "mediation.rego"
    rego.write_text(rego.read_text() + "\n# reviewed by the security team\n")
    engine.reload()


class _Later:
    """``time`` as it reads twenty minutes from now (a reviewer who took a coffee break)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset


def _agent(engine: EmbeddedPolicy, ledger: Ledger, inner: list[Any]) -> Any:
    tools = mediation_tools(ledger)
    script = Script(
        [AIMessage("", tool_calls=[tool_call("pay", {"amount": 500}, "p1")], id="a1"), "ok", "ok"]
    )
    return create_agent(
        ScriptedChatModel(script=[script.reply] * 8),
        tools,
        middleware=[OPAGuardMiddleware(engine, registry=tools), *inner],
        checkpointer=InMemorySaver(),
    )


def _invoke(agent: Any, value: Any, config: Any, mode: str) -> Any:
    if mode == "async":
        return asyncio.run(agent.ainvoke(value, config, context={"user": USER}))
    return agent.invoke(value, config, context={"user": USER})


def _pause_then(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    lapse: str,
    inner: list[Any],
    answer: Callable[[Any], Any],
) -> tuple[Ledger, list[Any]]:
    """The model pays 500 (allowed); a per-call question waits inside the tools task; then
    the grant lapses (``lapse``: a policy reload, or the grant's TTL) and the answer comes."""
    engine, root = _engine(tmp_path)
    ledger = Ledger()
    agent = _agent(engine, ledger, inner)
    config = {"configurable": {"thread_id": f"rt45-{mode}-{lapse}"}}
    first = _invoke(agent, {"messages": [("user", "pay the 500 invoice")]}, config, mode)
    (question,) = first["__interrupt__"]
    assert question.value["type"] == "tool_approval"
    assert ledger.runs == []
    if lapse == "reload":
        _push_new_bundle(engine, root)
    elif lapse == "ttl":
        later = _Later()
        monkeypatch.setattr(seals, "time", later)
        later.offset = seals.GRANT_TTL + 600
    out = _invoke(agent, Command(resume={question.id: answer(question)}), config, mode)
    return ledger, list(out["messages"])


EDIT_TO_5000 = {"type": "edit", "edited_action": {"name": "pay", "args": {"amount": 5000}}}


@needs_per_call
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("lapse", ["none", "reload", "ttl"])
def test_a_per_call_reviewers_edit_after_the_grant_lapsed_is_decided_by_the_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, lapse: str
) -> None:
    """Attack: guard first, ``HumanInTheLoopMiddleware(interrupt_mode="per_call")`` after it.
    The model pays 500 (the policy allows it; the guard grants it); the per-call question
    waits inside the tools task. While it waits the grant lapses (a policy bundle is pushed
    and reloaded, or the review takes longer than ``grant_ttl``). The reviewer edits the
    payment to 5000, which the policy denies (``big_payment``).

    Observed: the middleware finds no holding grant, its fallback ``ToolCallGuard`` decides
    ``pay(500)`` (allowed) and calls the inner chain, where HITL swaps in the reviewer's
    ``pay(5000)``; ``pay`` runs with ``{"amount": 5000}``.

    Expected: ``pay(5000)`` never runs (refused as a changed call, or decided and denied), as
    it is without the lapse (``none``, which passes) and as every edit of the guard's own
    approvals is."""
    ledger, msgs = _pause_then(
        tmp_path,
        monkeypatch,
        mode,
        lapse,
        [HumanInTheLoopMiddleware(interrupt_on={"pay": True}, interrupt_mode="per_call")],
        lambda _q: EDIT_TO_5000,
    )
    assert ("pay", "p1", {"amount": 5000}) not in ledger.runs, (
        f"the policy denies pay > 1000, and the reviewer's edit ran: {ledger.runs}"
    )
    assert answers_per_turn(msgs) == [{"p1": 1}]


@needs_per_call
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("lapse", ["none", "reload"])
def test_an_inner_middlewares_rewrite_after_the_grant_lapsed_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, lapse: str
) -> None:
    """Attack: guard first, then per-call HITL, then a user ``wrap_tool_call`` that changes
    ``request.tool_call["args"]`` before calling ``handler`` (pay 500 -> pay 5000). The
    reviewer approves pay(500) as shown.

    Observed: with the grant holding (``none``) the rewrite is refused where the tool runs
    (the README's promise); after a policy reload while the question waited, the fallback
    decides pay(500) and ``pay`` runs with ``{"amount": 5000}``, a call the policy denies and
    nobody saw.

    Expected: pay(5000) never runs in either case."""
    ledger, msgs = _pause_then(
        tmp_path,
        monkeypatch,
        mode,
        lapse,
        [
            HumanInTheLoopMiddleware(interrupt_on={"pay": True}, interrupt_mode="per_call"),
            PayTimesTen(),
        ],
        lambda _q: {"type": "approve"},
    )
    assert ("pay", "p1", {"amount": 5000}) not in ledger.runs, (
        f"a rewrite the policy denies ran after the grant lapsed: {ledger.runs}"
    )
    (answers,) = answers_per_turn(msgs)
    assert answers == {"p1": 1}
    answer = next(m for m in msgs if isinstance(m, ToolMessage))
    assert answer.status == "error"
