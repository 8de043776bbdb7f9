"""A middleware listed after ``OPAGuardMiddleware`` (as the README asks) whose ``after_model``
jumps (``{"jump_to": ...}``): its ``after_model`` runs before the guard's, so a jump skips the
guard's settlement of the turn (denials answered, approvals asked, grants given).
Pinned: a jump to ``tools`` runs only the allowed call (decided again where it runs) and
answers each call once; a jump to ``model`` or ``end`` runs nothing of the turn."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from langchain.agents.middleware import AgentMiddleware, hook_config
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from mediation_kit import USER, Ledger, Script, agent_graph, mediation_engine  # noqa: F401

from langchain_opa_guard.testing import tool_call

DENIED_SEND = tool_call("send", {"to": "evil@x.test", "body": "b"}, "c-send")
DENIED_PAY = tool_call("pay", {"amount": 5000}, "c-pay")
ASKED = tool_call("send", {"to": "a@ask.test", "body": "b"}, "c-ask")
READ = tool_call("read", {"item": "i"}, "c-read")


def _jumper(target: str) -> AgentMiddleware:
    class Jump(AgentMiddleware):  # type: ignore[type-arg]
        jumped = False

        @hook_config(can_jump_to=[target])  # type: ignore[list-item]
        def after_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
            last = state["messages"][-1]
            if isinstance(last, AIMessage) and last.tool_calls and not Jump.jumped:
                Jump.jumped = True
                return {"jump_to": target}
            return None

    return Jump()


@pytest.mark.parametrize("target", ["tools", "model", "end"])
def test_a_jump_after_the_guard_runs_nothing_denied(engine: Any, target: str) -> None:
    ledger = Ledger()
    turn = AIMessage("", id="a1", tool_calls=[DENIED_SEND, DENIED_PAY, ASKED, READ])
    graph = agent_graph(
        engine,
        Script([turn, "done"]),
        ledger,
        checkpointer=InMemorySaver(),
        after=[_jumper(target)],
    )
    config: Any = {"configurable": {"thread_id": f"jump-{target}"}}
    graph.invoke({"messages": [("user", "go")]}, config, context={"user": USER})
    ran = {(name, cid) for name, cid, _ in ledger.runs}
    assert ("send", "c-send") not in ran and ("pay", "c-pay") not in ran
    assert ("send", "c-ask") not in ran
    msgs = graph.get_state(config).values["messages"]
    answers = Counter(m.tool_call_id for m in msgs if isinstance(m, ToolMessage))
    assert all(answers[c] <= 1 for c in answers)
    if target == "tools":
        # No grants were given (the guard's after_model was skipped): each call is decided
        # where it runs, the approval counted as a deny; every call gets one answer.
        assert ledger.runs == [("read", "c-read", {"item": "i"})]
        assert answers == Counter({"c-send": 1, "c-pay": 1, "c-ask": 1, "c-read": 1})
    else:
        # Observed: the skipped settlement leaves the turn's calls unanswered in this run
        # (as an unguarded agent would); nothing of the turn runs.
        assert ledger.runs == []
