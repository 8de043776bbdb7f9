"""Human approval of tool calls: what the reviewer is shown and how their answer is read.

When the policy answers ``{"allow": false, "require_approval": true, ...}`` the guard pauses
the graph with LangGraph's ``interrupt()``. The interrupt's value lists the calls waiting:

```python
{"type": "opa_guard.approval",
 "requests": [{"tool_call_id": "call_1", "name": "send_email", "args": {...},
               "reasons": ["..."], "actions": ["approve", "reject", "edit"]}]}
```

Resume with ``Command(resume=...)`` where the answer is one of:

* ``"approve"`` or ``"reject"``: for every waiting call;
* ``{"action": "reject", "reason": "not today"}``: likewise, with a reason the model sees;
* ``{"action": "edit", "args": {...}}``: run the call with other arguments (checked by the
  policy again; a deny still denies);
* ``{"call_1": "approve", "call_2": {"action": "reject"}}``: one answer per call id;
* a list with one answer per request, in order.

An answer that cannot be read rejects the call (fail closed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["APPROVAL_TYPE", "TICKET_KEY", "ReviewAnswer", "read_answers"]

APPROVAL_TYPE = "opa_guard.approval"
"""The ``type`` of the guard's interrupt value."""

TICKET_KEY = "__opa_guard_approval__"
"""Key of the pending-approval ticket in the guard's own ``Send`` payload."""

_ACTIONS = {"approve", "reject", "edit"}


@dataclass(frozen=True)
class ReviewAnswer:
    """A reviewer's answer on one call."""

    action: str
    args: Mapping[str, Any] | None = None
    reason: str | None = None


def _one(answer: Any) -> ReviewAnswer:
    if isinstance(answer, str) and answer in ("approve", "reject"):
        return ReviewAnswer(answer)
    if isinstance(answer, bool):
        return ReviewAnswer("approve" if answer else "reject")
    if isinstance(answer, Mapping):
        action = answer.get("action", answer.get("type"))
        if action in _ACTIONS:
            args = answer.get("args")
            if action == "edit" and not isinstance(args, Mapping):
                return ReviewAnswer("reject", reason="the reviewer's edit had no arguments")
            reason = answer.get("reason", answer.get("message"))
            return ReviewAnswer(str(action), args, str(reason) if reason is not None else None)
    return ReviewAnswer("reject", reason="the reviewer's answer was not understood")


def read_answers(response: Any, call_ids: Sequence[str]) -> dict[str, ReviewAnswer]:
    """One :class:`ReviewAnswer` per waiting call id, whatever form the resume value took."""
    if isinstance(response, Mapping) and any(k in response for k in call_ids):
        return {cid: _one(response.get(cid)) for cid in call_ids}
    if isinstance(response, Mapping) and "decisions" in response:
        response = response["decisions"]
    if isinstance(response, (list, tuple)):
        answers = list(response) + [None] * (len(call_ids) - len(response))
        return {cid: _one(a) for cid, a in zip(call_ids, answers, strict=False)}
    answer = _one(response)
    return dict.fromkeys(call_ids, answer)
