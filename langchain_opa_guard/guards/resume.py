"""A turn that waited for a reviewer, on resume: what runs and what is answered.

When the graph resumes, the guard asks the reviewer (:func:`ask`; the first pass pauses the
graph there), then decides the turn again (:func:`to_recheck`): every call of the turn under the
policy and the subject in force now, so an approval is never honoured for a call the policy has
since denied, even where nothing announces the change (OPA's Data API, a bundle without
revision). An edited call goes through its tool's schema and back to the policy with its new
arguments. :func:`settle_review` then applies the answers: what runs, what is answered, and the
model's message as its calls run.

Example:
    ```python
    answers = ask(ticket)
    found = to_recheck(ticket, answers, user, tools_by_name, metadata_of)
    decided = dict(zip(found.keys, decisions_for(found.documents), strict=True))
    reviewed = settle_review(ticket, answers, decided, found.edits, "full", engine)
    ```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from langchain_core.messages import AIMessage, ToolCall

from langchain_opa_guard.contract import call_document, metadata_for
from langchain_opa_guard.decision import Decision, ErrorType
from langchain_opa_guard.engines.engine import PolicyEngine
from langchain_opa_guard.guards.approval import ReviewAnswer, ask_reviewer
from langchain_opa_guard.guards.denials import (
    DenialStyle,
    denial_message,
    rejection_message,
    response_message,
)
from langchain_opa_guard.guards.prepared_calls import changed_keys, message_as_run, prepared_call
from langchain_opa_guard.guards.seals import decided_revision

__all__ = ["Rechecks", "Reviewed", "ask", "settle_review", "to_recheck"]


@dataclass
class Rechecks:
    """What must be decided again on resume, keyed ``"edit:<id>"`` / ``"recheck:<id>"``.

    Attributes:
        keys: One key per policy input to decide.
        names: The tool name of each (for its metric label and rules).
        documents: The policy input of each, with the subject in force now.
        edits: Each edited call as it would run, and the reason it cannot run (or ``None``).
    """

    keys: list[str] = field(default_factory=list)
    names: list[Any] = field(default_factory=list)
    documents: list[dict[str, Any]] = field(default_factory=list)
    edits: dict[str, tuple[ToolCall, str | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class Reviewed:
    """What a reviewed turn becomes: the calls that run, the answers for the others, and the
    model's message as its calls run (the ticket's own message when nothing changed)."""

    allowed: list[ToolCall]
    replies: list[Any]
    ai_message: AIMessage
    revision: str | None = None
    """The policy revision the calls that run were decided under (decided again on
    resume); their hand-over is bound to it."""


def ask(ticket: Mapping[str, Any]) -> dict[str, ReviewAnswer]:
    """Pause the graph for a reviewer; on resume, their answer per waiting call id."""
    pending = ticket["pending"]
    answers = ask_reviewer(pending)
    return {str(p["call"].get("id")): a for p, a in zip(pending, answers, strict=True)}


def to_recheck(
    ticket: Mapping[str, Any],
    answers: Mapping[str, ReviewAnswer],
    user: Any,
    tools_by_name: Mapping[str, Any],
    metadata_of: Mapping[str, Any],
) -> Rechecks:
    """The policy inputs to decide again on resume, with ``user`` (the subject now).

    Edited calls go through the tool's schema and back to the policy with their new
    arguments; every other call of the turn is decided again under the policy and the
    subject in force now.
    """
    found = Rechecks()
    # Every call is decided again on the turn as it now stands: each edit in its place.
    edited_docs: dict[str, dict[str, Any]] = {}
    for item in ticket["pending"]:
        call = item["call"]
        call_id = str(call.get("id"))
        answer = answers[call_id]
        if answer.action == "edit" and answer.args is not None and item["document"]:
            tool = tools_by_name.get(call.get("name"))
            edited = cast(ToolCall, {**call, "args": dict(answer.args)})
            view, problem = prepared_call(tool, edited)
            found.edits[call_id] = (edited, problem)
            if problem is None:
                doc = call_document(view, metadata_for(metadata_of, call.get("name")))
                edited_docs[str(doc["call_id"])] = doc

    def add(key: str, call: Mapping[str, Any], document: Mapping[str, Any] | None) -> None:
        if not document:
            return
        turn = document.get("turn")
        if edited_docs and isinstance(turn, list):
            turn = [
                edited_docs.get(str(t.get("call_id")), t) if isinstance(t, Mapping) else t
                for t in turn
            ]
            document = {**document, "turn": turn}
        found.keys.append(key)
        found.names.append(call.get("name"))
        found.documents.append({**document, "user": user})

    for item in ticket["pending"]:
        call = item["call"]
        call_id = str(call.get("id"))
        if call_id in found.edits:
            if call_id in edited_docs:
                add(f"edit:{call_id}", call, {**item["document"], "tool": edited_docs[call_id]})
        else:
            add(f"recheck:{call_id}", call, item["document"])
    for call in ticket["allowed"]:
        document = ticket.get("documents", {}).get(str(call.get("id")))
        add(f"recheck:{call.get('id')}", call, document)
    return found


def settle_review(
    ticket: Mapping[str, Any],
    answers: Mapping[str, ReviewAnswer],
    decided: Mapping[str, Decision],
    edits: Mapping[str, tuple[ToolCall, str | None]],
    denial_style: DenialStyle,
    engine: PolicyEngine,
) -> Reviewed:
    """Apply the reviewer's answers and the decisions made again on resume."""
    allowed: list[ToolCall] = []
    replies: list[Any] = []
    rewritten: dict[str, list[str]] = {}

    def as_rewritten(call: ToolCall, again: Decision | None) -> ToolCall:
        """The call as the policy allows it now: its current rewrite, if it has one."""
        if again is None or not again.allow or again.shadowed or again.args is None:
            return call
        new = cast(ToolCall, {**call, "args": dict(again.args)})
        if new.get("args") != call.get("args"):
            rewritten[str(call.get("id"))] = changed_keys(call, new)
        return new

    proposed: Mapping[str, Any] = ticket.get("proposed") or {}
    for raw in ticket["allowed"]:
        call = cast(ToolCall, raw)
        again = decided.get(f"recheck:{call.get('id')}")
        if again is None:  # never decided again: it does not run on an old decision
            replies.append(denial_message(_not_decided_again(engine), call, denial_style))
        elif again.allow:
            # Decided again as the model proposed it: the policy's rewrite now, if any.
            allowed.append(as_rewritten(proposed.get(str(call.get("id")), call), again))
        else:  # the policy or the subject changed while the graph waited
            replies.append(denial_message(again, call, denial_style))
    for item in ticket["pending"]:
        call = cast(ToolCall, item["call"])
        call_id = str(call.get("id"))
        answer = answers[call_id]
        again = decided.get(f"recheck:{call_id}")
        if again is not None and not (again.allow or again.require_approval):
            replies.append(denial_message(again, call, denial_style))
        elif answer.action == "approve":
            allowed.append(as_rewritten(call, again))
        elif answer.action == "edit" and call_id in edits:
            edited, problem = edits[call_id]
            if problem is not None:
                failure = Decision.failure(ErrorType.INVALID_CALL, problem)
                replies.append(denial_message(failure, edited, denial_style))
                continue
            decision = decided.get(f"edit:{call_id}") or _not_decided_again(engine)
            if not (decision.allow or decision.require_approval):
                replies.append(denial_message(decision, edited, denial_style))
                continue
            if decision.allow and decision.args is not None and not decision.shadowed:
                # The policy's rewrite of the edited arguments is what runs.
                edited = cast(ToolCall, {**edited, "args": dict(decision.args)})
                rewritten[call_id] = changed_keys(call, edited)
            allowed.append(edited)
        elif answer.action == "respond":
            replies.append(response_message(call, answer.reason or ""))
        else:
            replies.append(rejection_message(call, answer.reason, denial_style))
    ai_message: AIMessage = ticket.get("proposed_message") or ticket["ai_message"]
    ran = {str(c.get("id")): c for c in allowed}
    shown = [ran.get(str(c.get("id")), c) for c in ai_message.tool_calls]
    revision = decided_revision(d.revision for d in decided.values())
    return Reviewed(allowed, replies, message_as_run(ai_message, shown, rewritten), revision)


def _not_decided_again(engine: PolicyEngine) -> Decision:
    """The fail-closed decision for a call that has no decision made on this resume."""
    return Decision.failure(
        ErrorType.ENGINE,
        "the call was not decided again when the run resumed; it does not run on an "
        "earlier decision",
        engine=getattr(engine, "engine_name", ""),
        policy=getattr(engine, "policy", ""),
    )
