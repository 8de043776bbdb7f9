"""Human approval of tool calls: what the reviewer is shown and how their answer is read.

When the policy answers ``{"allow": false, "require_approval": true, ...}``, the guard node and
the ``create_agent`` middleware pause the graph once per model turn, before anything of the
turn runs, with LangGraph's ``interrupt()``. The interrupt's value has the shape of LangChain's
``HumanInTheLoopMiddleware`` request, plus the guard's own fields:

```python
{"type": "opa_guard.approval",
 "action_requests": [{"name": "send_email", "args": {...}, "description": "..."}],
 "review_configs": [{"action_name": "send_email",
                     "allowed_decisions": ["approve", "edit", "reject", "respond"]}],
 "requests": [{"tool_call_id": "m1", "name": "send_email", "args": {...},
               "reasons": ["..."], "actions": ["approve", "edit", "reject", "respond"]}],
 "answer": "..."}   # how to answer, in words
```

Resume with ``HumanInTheLoopMiddleware``'s answer: one decision per request, in order:

```python
Command(resume={"decisions": [
    {"type": "approve"},
    {"type": "reject", "message": "not to that address"},
    {"type": "edit", "edited_action": {"name": "send_email", "args": {...}}},
    {"type": "respond", "message": "the tool's answer, given by a person"},
]})
```

An edited call is decided by the policy again before it runs (a deny still denies, and the
policy's own rewrite of the edited arguments is what runs); an edit may not change the tool.
When exactly one call waits, a bare ``"approve"``/``"reject"`` or a single decision object is
accepted too. With several waiting calls only a list with one decision per request is: an
answer of another shape or length never approves anything. Where LangGraph validates resume
values (``interrupt(..., response_schema=...)``), such an answer fails the resume and the same
question can be answered again; on older LangGraph it rejects every waiting call.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from langgraph.types import interrupt
from pydantic import BaseModel, ConfigDict, Discriminator, Field, TypeAdapter, ValidationError

__all__ = [
    "APPROVAL_TYPE",
    "TICKET_KEY",
    "VALIDATING",
    "ReviewAnswer",
    "ask_reviewer",
    "approval_request",
    "read_answers",
]

APPROVAL_TYPE = "opa_guard.approval"
"""The ``type`` of the guard's interrupt value."""

TICKET_KEY = "__opa_guard_approval__"
"""Key of the pending-approval ticket in the guard node's own ``Send`` payload."""

DECISIONS = ["approve", "edit", "reject", "respond"]
"""The decisions a reviewer may give on each call."""


@dataclass(frozen=True)
class ReviewAnswer:
    """A reviewer's answer on one call.

    ``action`` is ``"approve"``, ``"reject"``, ``"edit"`` (run ``args`` instead) or
    ``"respond"`` (do not run; ``reason`` is the tool's answer, given by a person).
    """

    action: str
    args: Mapping[str, Any] | None = None
    reason: str | None = None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Approve(_Strict):
    type: Literal["approve"]


class _Reject(_Strict):
    type: Literal["reject"]
    message: str | None = None


class _EditedAction(_Strict):
    name: str
    args: dict[str, Any]


class _Edit(_Strict):
    type: Literal["edit"]
    edited_action: _EditedAction


class _Respond(_Strict):
    type: Literal["respond"]
    message: str


_Decision = Annotated[Union[_Approve, _Reject, _Edit, _Respond], Discriminator("type")]  # noqa: UP007


def _response_type(count: int) -> Any:
    """The answers accepted for ``count`` waiting calls (a Pydantic-validatable type)."""

    class Decisions(_Strict):
        decisions: list[_Decision] = Field(min_length=count, max_length=count)

    if count == 1:
        return Union[Decisions, _Decision, Literal["approve", "reject"]]  # noqa: UP007
    return Decisions


_ADAPTERS: dict[int, TypeAdapter[Any]] = {}


def _adapter(count: int) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(count)
    if adapter is None:
        adapter = _ADAPTERS[count] = TypeAdapter(_response_type(count))
    return adapter


def approval_request(pending: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The interrupt value for the waiting calls (``{"call": ToolCall, "reasons": [...]}``)."""
    requests = []
    action_requests = []
    for item in pending:
        call = item["call"]
        reasons = [str(r) for r in item.get("reasons", ())]
        description = "Policy asks for a human: " + ("; ".join(reasons) or "approval required")
        requests.append(
            {
                "tool_call_id": call.get("id"),
                "name": call.get("name"),
                "args": call.get("args"),
                "reasons": reasons,
                "actions": list(DECISIONS),
            }
        )
        action_requests.append(
            {"name": call.get("name"), "args": call.get("args"), "description": description}
        )
    count = len(requests)
    answer = (
        f'{{"decisions": [...]}} with exactly {count} decisions, one per request, in order; '
        'each {"type": "approve"}, {"type": "reject", "message": ...}, '
        '{"type": "edit", "edited_action": {"name": ..., "args": {...}}} or '
        '{"type": "respond", "message": ...}'
    )
    if count == 1:
        answer += '; for this single request a bare "approve" or "reject" is accepted too'
    return {
        "type": APPROVAL_TYPE,
        "action_requests": action_requests,
        "review_configs": [
            {"action_name": r["name"], "allowed_decisions": list(DECISIONS)} for r in requests
        ],
        "requests": requests,
        "answer": answer,
    }


def _supports_response_schema() -> bool:
    try:
        return "response_schema" in inspect.signature(interrupt).parameters
    except (TypeError, ValueError):  # pragma: no cover - a C-level or odd callable
        return False


VALIDATING = _supports_response_schema()
"""Whether this LangGraph validates resume values (``interrupt(..., response_schema=...)``):
then a wrong answer fails the resume and can be given again; else it rejects every call."""


def ask_reviewer(pending: Sequence[Mapping[str, Any]]) -> list[ReviewAnswer]:
    """Pause the graph for the waiting calls; on resume, one answer per call, in order."""
    value = approval_request(pending)
    names = [str(item["call"].get("name")) for item in pending]
    if VALIDATING:
        # LangGraph checks the answer before saving it: a wrong one fails the resume and the
        # same question can be answered again.
        response = interrupt(value, response_schema=_response_type(len(pending)))
        return _answers(response, names)
    return read_answers(interrupt(value), names)


def read_answers(response: Any, names: Sequence[str]) -> list[ReviewAnswer]:
    """One :class:`ReviewAnswer` per waiting call (named ``names``), in order.

    An answer that is not one decision per request rejects every call (fail closed).
    """
    try:
        parsed = _adapter(len(names)).validate_python(response)
    except ValidationError:
        reason = "the reviewer's answer could not be read (it must give one decision per request)"
        return [ReviewAnswer("reject", reason=reason) for _ in names]
    return _answers(parsed, names)


def _answers(parsed: Any, names: Sequence[str]) -> list[ReviewAnswer]:
    if isinstance(parsed, BaseModel) and hasattr(parsed, "decisions"):
        decisions = list(parsed.decisions)
    elif isinstance(parsed, Mapping) and "decisions" in parsed:
        decisions = list(parsed["decisions"])
    else:
        decisions = [parsed]
    return [_one(d, name) for d, name in zip(decisions, names, strict=True)]


def _one(decision: Any, name: str) -> ReviewAnswer:
    if isinstance(decision, str):
        return ReviewAnswer(decision)
    if isinstance(decision, Mapping):  # validated already: a plain dict of a model's shape
        decision = TypeAdapter(_Decision).validate_python(decision)
    if isinstance(decision, _Approve):
        return ReviewAnswer("approve")
    if isinstance(decision, _Reject):
        return ReviewAnswer("reject", reason=decision.message)
    if isinstance(decision, _Respond):
        return ReviewAnswer("respond", reason=decision.message)
    if isinstance(decision, _Edit):
        if decision.edited_action.name != name:
            return ReviewAnswer(
                "reject", reason="the reviewer's edit named another tool; an edit may not"
            )
        return ReviewAnswer("edit", args=dict(decision.edited_action.args))
    return ReviewAnswer("reject", reason="the reviewer's answer could not be read")
