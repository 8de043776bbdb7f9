"""A call decided, and the same call about to run: its arguments must read the same.

The policy decides a call as its tool reads it (:func:`~.prepared_calls.prepared_call`); the
tool then validates the model's arguments again when it runs. A validator that reads state
(a contact's name resolved through an address book) can read differently by then, once a
sibling call of the same turn, or anything during a wait for a reviewer, changed that state.
So each grant carries a digest of the call as decided (:func:`view_digest`,
:func:`planned_views`, :func:`decided_views`), and right before the tool runs the call is read
again and refused unless it reads the same (:func:`view_refusal`, :func:`read_differently`).

Example:
    ```python
    decided = view_digest(tool, model_call)  # beside the grant
    refusal = view_refusal(tool, model_call, decided)  # right before the tool runs
    ```
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast

from langchain_core.messages import ToolCall, ToolMessage
from langchain_core.tools import BaseTool
from langgraph.prebuilt.tool_node import ToolCallRequest

from langchain_opa_guard.engines.engine import same_json
from langchain_opa_guard.guards.denials import guard_answer
from langchain_opa_guard.guards.injections import without_injected
from langchain_opa_guard.guards.prepared_calls import prepared_call
from langchain_opa_guard.guards.tool_readings import reading_mark
from langchain_opa_guard.plain_json import value_digest

__all__ = [
    "ALIKE",
    "VIEWS_KEY",
    "changed_answer",
    "decided_views",
    "granted_view",
    "planned_views",
    "prepared_digest",
    "read_differently",
    "tool_refusal",
    "view_digest",
    "view_refusal",
]

logger = logging.getLogger(__name__)

ALIKE = "alike:"
"""How the decided view of a call whose tool reads the same arguments alike every time
begins (:func:`~.tool_readings.reading_mark`, :func:`granted_view`): where a tool that
reads as the deciding one did runs it, the grant that holds its arguments, checked before
:func:`view_refusal`, is enough."""

VIEWS_KEY = "__opa_guard_views__"
"""Where the tools node keeps each granted call's arguments as the policy decided them
(their :func:`view_digest`), checked again right before the tool runs."""


def _digest(*parts: Any) -> str:
    return value_digest(list(parts))


def view_digest(tool: BaseTool | None, call: Mapping[str, Any]) -> str:
    """A digest of ``call`` as ``tool`` reads it now (:func:`prepared_call`), or ``""``
    when there is no tool to read it with (the guard decided the model's arguments)."""
    if tool is None:
        return ""
    return prepared_digest(tool, *prepared_call(tool, cast(ToolCall, call)))


def prepared_digest(tool: BaseTool | None, view: Mapping[str, Any], problem: str | None) -> str:
    """The :func:`view_digest` of a call :func:`prepared_call` gave as ``(view, problem)``
    (so a call decided is not validated twice)."""
    if tool is None:
        return ""
    if problem is not None:
        return _digest("unreadable", view.get("name"), problem)
    return _digest("view", view.get("name"), view.get("args"))


def granted_view(tool: BaseTool | None, view: Mapping[str, Any], problem: str | None) -> str:
    """:func:`prepared_digest` for a call that runs under a grant holding its arguments:
    its tool's :func:`~.tool_readings.reading_mark` (beginning :data:`ALIKE`) when it reads
    the same arguments alike every time (where a tool that reads so runs it, reading it
    again would only repeat the decision's reading)."""
    mark = reading_mark(tool) if tool is not None and problem is None else None
    if mark is not None:
        return mark
    return prepared_digest(tool, view, problem)


def view_refusal(
    tool: BaseTool | None, call: Mapping[str, Any], decided: str | None
) -> ToolMessage | None:
    """``None`` when ``call`` still reads as it did when the policy decided it (``decided``:
    its :func:`view_digest` then; ``""``: decided on the model's arguments, which the grant
    holds; beginning :data:`ALIKE`: a tool reading as this one reads those arguments alike
    every time), else the answer
    for a call that does not run (a call its tool cannot read, see :func:`prepared_call`,
    never runs). Called right before the tool runs: a validator that reads state (an
    address book, a directory) can give another value once something (a sibling call of
    the same turn) changed that state. A call decided on the model's arguments (the guard
    did not know its tool) runs only where its tool reads them as they are."""
    if decided == "":
        return _raw_refusal(tool, call)
    if decided is not None and decided.startswith(ALIKE) and tool is not None:
        return None if reading_mark(tool) == decided else changed_answer(call)
    if decided is not None and tool is not None:
        # A call that cannot be read as its tool reads it (a policy's rewrite that gives a
        # single-input tool two values, say) was never decided as it would run.
        view, problem = prepared_call(tool, cast(ToolCall, call))
        if problem is None and prepared_digest(tool, view, None) == decided:
            return None
    return changed_answer(call)


def _raw_refusal(tool: BaseTool | None, call: Mapping[str, Any]) -> ToolMessage | None:
    """``None`` when the tool reads the model's arguments, on which the policy decided a
    call whose tool the guard did not know, as they are; else the answer for a call that
    does not run (its schema would hand the tool other values than the policy saw)."""
    if tool is None:
        return None
    model = without_injected(tool, cast(ToolCall, call))
    view, problem = prepared_call(tool, model)
    if problem is None and (view is model or same_json(view.get("args"), model.get("args"))):
        return None
    name = call.get("name")
    logger.error(
        "tool call %r (%s) was decided without its tool's schema, which reads its arguments "
        "otherwise (give the guard the tools node as registry=); it did not run",
        name,
        call.get("id"),
    )
    return guard_answer(
        call,
        f'The tool call "{name}" did not run: it was decided without its tool\'s argument '
        "schema, which reads the arguments differently. Do not retry it; tell the user.",
        "decided without the tool's schema",
    )


def tool_refusal(request: ToolCallRequest) -> ToolMessage | None:
    """The answer for a call handed to a tool it does not name (``request.override(tool=...)``
    by an interceptor or a middleware, the call left as it was), else ``None``: the policy
    decided the tool the call names, and two tools that read their arguments alike (one
    schema) are still two tools."""
    tool = request.tool
    call = request.tool_call
    if tool is None or tool.name == call.get("name"):
        return None
    logger.error(
        "tool call %r (%s) was handed to the tool %r; it did not run",
        call.get("name"),
        call.get("id"),
        tool.name,
    )
    return guard_answer(
        call,
        f'The tool call "{call.get("name")}" did not run: it was handed to another tool than '
        "the one it names, which the policy did not decide.",
        "the call was handed to another tool than the one it names",
    )


def changed_answer(call: Mapping[str, Any]) -> ToolMessage:
    """The answer for a call that does not run because its tool reads it differently now
    than when the policy decided it (logged at ERROR)."""
    name = call.get("name")
    logger.error(
        "tool call %r (%s) reads differently now than when the policy decided it; it did not run",
        name,
        call.get("id"),
    )
    return guard_answer(
        call,
        f'The tool call "{name}" did not run: its arguments read differently now than when '
        "the policy decided them (the tool's own validation gave other values, for example "
        "after another call changed what it looks up). Re-plan: propose the call again if it "
        "is still wanted, so it is decided as it will run.",
        "the arguments read differently when run than when decided",
    )


def planned_views(calls: Sequence[Mapping[str, Any]], views: Sequence[str]) -> dict[str, Any]:
    """Each planned call's id -> ``[digest of its arguments, its view_digest]``: checkpointable
    data for :func:`decided_views` to find what the policy decided for each call."""
    return {
        str(c.get("id")): [_digest("args", c.get("name"), c.get("args")), v]
        for c, v in zip(calls, views, strict=True)
    }


def decided_views(
    calls: Sequence[Mapping[str, Any]],
    planned: Mapping[str, Any] | None,
    tools_by_name: Mapping[str, BaseTool],
) -> dict[str, str]:
    """Call id -> the :func:`view_digest` a call that runs must still have: the view the
    policy decided for a call that runs as planned; for a call changed since (a policy's
    rewrite, a reviewer's edit) its view as it reads now, when its grant is made."""
    found: dict[str, str] = {}
    for call in calls:
        call_id = str(call.get("id"))
        entry = (planned or {}).get(call_id)
        if (
            isinstance(entry, (list, tuple))
            and len(entry) == 2
            and entry[0] == _digest("args", call.get("name"), call.get("args"))
        ):
            found[call_id] = str(entry[1])
            continue
        name = call.get("name")
        tool = tools_by_name.get(name) if isinstance(name, str) else None
        found[call_id] = (
            granted_view(tool, *prepared_call(tool, cast(ToolCall, call))) if tool else ""
        )
    return found


def read_differently(request: ToolCallRequest) -> ToolMessage | None:
    """:func:`view_refusal` for a ``GuardedToolNode`` call: the views it was granted with are
    in ``configurable`` under :data:`VIEWS_KEY`."""
    config = getattr(request.runtime, "config", None) or {}
    views = (config.get("configurable") or {}).get(VIEWS_KEY)
    decided = views.get(request.tool_call.get("id")) if isinstance(views, Mapping) else None
    return view_refusal(request.tool, request.tool_call, decided)
