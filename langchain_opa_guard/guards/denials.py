"""What the model is told when a call is denied.

Some deployments must not reveal policy details to the model, so the text is configurable:
``"full"`` (the policy's reasons), ``"generic"`` (a fixed sentence), or a function of the
decision and the call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, TypeAlias, Union

from langchain_core.messages import AIMessage, ToolCall, ToolMessage

from langchain_opa_guard.contract import GUARD_ARTIFACT_KEY
from langchain_opa_guard.decision import Decision

__all__ = [
    "answer_id",
    "DenialStyle",
    "decision_record",
    "denial_message",
    "denial_text",
    "changed_call_message",
    "guard_answer",
    "rejection_message",
    "response_message",
    "turn_stopped_message",
]

DenialStyle: TypeAlias = Union[Literal["full", "generic"], Callable[[Decision, ToolCall], str]]  # noqa: UP007
"""How a denial is worded for the model."""

GENERIC_DENIAL = (
    'The tool call "{name}" was denied by policy and did not run. '
    "Do not retry it; choose another action or tell the user it is not permitted."
)


def _name(call: Mapping[str, Any]) -> str:
    name = call.get("name", "")
    return name if isinstance(name, str) else str(name)


def answer_id(call: Mapping[str, Any]) -> str:
    """The ``tool_call_id`` an answer to ``call`` carries (odd ids as text)."""
    call_id = call.get("id")
    return call_id if isinstance(call_id, str) else ("" if call_id is None else str(call_id))


_call_id = answer_id


def denial_text(
    decision: Decision, call: ToolCall, style: DenialStyle = "full", repeats: int = 0
) -> str:
    """The content of the ToolMessage that answers a denied call.

    ``repeats`` counts earlier denials of the same call (same tool, same arguments) in the
    conversation: each repeat gets a firmer answer.
    """
    text = _denial_text(decision, call, style)
    if repeats > 0 and decision.error is None:
        text += (
            f" This exact call has now been denied {repeats + 1} times; proposing it again "
            "will not change the answer."
        )
    return text


def _denial_text(decision: Decision, call: ToolCall, style: DenialStyle) -> str:
    name = _name(call)
    if callable(style):
        return style(decision, call)
    if style == "generic":
        return GENERIC_DENIAL.format(name=name)
    reasons = "; ".join(decision.reasons) or "no reason given"
    if decision.error is not None:
        return (
            f'The tool call "{name}" did not run: it could not be checked against the policy '
            f"({reasons}). It is denied until the policy engine answers; do not retry it now."
        )
    if decision.require_approval:
        return (
            f'The tool call "{name}" did not run: it needs a human\'s approval. Reasons: {reasons}.'
        )
    return (
        f'The tool call "{name}" was denied by policy and did not run. Reasons: {reasons}. '
        "Do not retry the same call; choose another action or tell the user."
    )


def decision_record(decision: Decision) -> dict[str, Any]:
    """The decision as kept in a denial's ``artifact`` (not sent to the model)."""
    return {
        "verdict": decision.verdict,
        "reasons": list(decision.reasons),
        "decision_id": decision.decision_id,
        "error": decision.error,
        "engine": decision.engine,
        "policy": decision.policy,
    }


def denial_message(
    decision: Decision, call: ToolCall, style: DenialStyle = "full", repeats: int = 0
) -> ToolMessage:
    """A ``ToolMessage`` with ``status="error"`` answering the denied ``call``."""
    return ToolMessage(
        content=denial_text(decision, call, style, repeats),
        name=_name(call),
        tool_call_id=_call_id(call),
        status="error",
        artifact={GUARD_ARTIFACT_KEY: decision_record(decision)},
        response_metadata={GUARD_ARTIFACT_KEY: decision_record(decision)},
    )


def rejection_message(
    call: ToolCall | Mapping[str, Any], reason: str | None, style: DenialStyle = "full"
) -> ToolMessage:
    """A ``ToolMessage`` answering a call that a human reviewer rejected."""
    name = _name(call)
    why = reason or "no reason given"
    if style == "full" or callable(style):
        text = (
            f'The tool call "{name}" was rejected by a human reviewer and did not run. '
            f"Reason: {why}. Do not retry it; choose another action or tell the user."
        )
    else:
        text = GENERIC_DENIAL.format(name=name)
    record = {
        "verdict": "deny",
        "reasons": [f"rejected by a human reviewer: {why}"],
        "decision_id": None,
        "error": None,
        "engine": "human",
        "policy": "",
    }
    return ToolMessage(
        content=text,
        name=name,
        tool_call_id=_call_id(call),
        status="error",
        artifact={GUARD_ARTIFACT_KEY: record},
        response_metadata={GUARD_ARTIFACT_KEY: record},
    )


def guard_answer(
    call: ToolCall | Mapping[str, Any],
    text: str,
    reason: str,
    *,
    engine: str = "guard",
    status: Literal["success", "error"] = "error",
    verdict: Literal["allow", "deny"] | None = "deny",
) -> ToolMessage:
    """A ``ToolMessage`` the guard itself gives a call that did not run (``verdict="allow"``:
    one that may have run, whose own answer was lost; ``None``: one whose outcome is not
    known, which ``input.history`` shows with a ``null`` decision)."""
    record = {
        "verdict": verdict,
        "reasons": [reason],
        "decision_id": None,
        "error": None,
        "engine": engine,
        "policy": "",
    }
    return ToolMessage(
        content=text,
        name=_name(call),
        tool_call_id=_call_id(call),
        status=status,
        artifact={GUARD_ARTIFACT_KEY: record},
        response_metadata={GUARD_ARTIFACT_KEY: record},
    )


def turn_stopped_message(call: ToolCall | Mapping[str, Any]) -> ToolMessage:
    """Answer for a call left unrun because the guard ended a looping turn."""
    return guard_answer(
        call,
        f'The tool call "{_name(call)}" did not run: the turn was stopped '
        "after repeated denied calls.",
        "the turn was stopped after repeated denials",
    )


def run_stopped_message(limit: int | None) -> AIMessage:
    """The guard's last word when it ends a run: the model kept proposing a denied call."""
    return AIMessage(
        "I stopped here: I kept proposing a tool call that the policy denies "
        f"({limit} times), so retrying will not help. "
        "Please change the request or ask an administrator about the policy."
    )


def response_message(call: ToolCall | Mapping[str, Any], text: str) -> ToolMessage:
    """A human reviewer's answer given in place of the tool's (the tool did not run)."""
    return guard_answer(
        call,
        text,
        "answered by a human reviewer instead of the tool",
        engine="human",
        status="success",
    )


def unsealed_call_message(call: ToolCall | Mapping[str, Any]) -> ToolMessage:
    """Answer for a call handed to the tools without the guard's seal (forged, or sealed by
    another process)."""
    return guard_answer(
        call,
        f'The tool call "{_name(call)}" did not run: the policy\'s permission for it could '
        "not be verified here. Propose it again to have it decided.",
        "the call's grant could not be verified",
    )


def changed_call_message(call: ToolCall | Mapping[str, Any]) -> ToolMessage:
    """Answer for a call that changed between the policy's decision and its execution."""
    return guard_answer(
        call,
        f'The tool call "{_name(call)}" did not run: it was changed after the policy '
        "allowed it, and only the allowed call may run.",
        "the call was changed after the policy decided it",
    )
