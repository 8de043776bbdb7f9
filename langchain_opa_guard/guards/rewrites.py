"""A policy's argument rewrite, read back through the tool's schema before it may run.

A policy may allow a call with other arguments (``{"allow": true, "args": {...}}``), and the
rewritten call is what runs: its tool validates the rewritten arguments as it would the
model's. A rewrite is written from the call as decided (``input.tool.args``: values the
tool's schema already read), so a validator that changes its own output (one that
percent-decodes a path) would hand the tool a value no one decided. Each guard reads the
rewrite through the tool's schema (:func:`rewrite_problem`) as the decision is settled
(:func:`read_back`, the :class:`~langchain_opa_guard.deciding.Rules` ``rewrite``), and a
rewrite that reads otherwise turns the allow into an ``invalid_call`` deny: its span, the
decision log and the answer to the model all say so. Where the call runs right after its
decision (the interceptor, wrapped tools), the rewrite is read once more right before the
tool runs (:func:`rewrite_refusal`), as any decided call is, for a validator that reads state
a sibling call may have changed.

Example:
    ```python
    Rules(rewrite=partial(read_back, read_file))  # read_file: the tool the call runs
    ```
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from langchain_core.messages import ToolCall, ToolMessage
from langchain_core.tools import BaseTool

from langchain_opa_guard.decision import Decision, ErrorType
from langchain_opa_guard.engines.engine import same_json
from langchain_opa_guard.guards.decided_views import changed_answer
from langchain_opa_guard.guards.prepared_calls import prepared_call
from langchain_opa_guard.guards.tool_readings import reads_alike
from langchain_opa_guard.plain_json import jsonable

__all__ = ["read_back", "rewrite_problem", "rewrite_refusal"]

logger = logging.getLogger(__name__)


def read_back(tool: BaseTool, decision: Decision) -> Decision:
    """``decision`` (an allow), or the deny for a rewrite ``tool`` would read otherwise
    (:func:`rewrite_problem`)."""
    if not decision.allow or decision.shadowed or decision.args is None:
        return decision
    try:
        problem = rewrite_problem(tool, decision.args)
    except Exception:  # noqa: BLE001 - a validator of the tool's own raised: never run unread
        problem = "the policy's argument rewrite cannot be read through the tool's schema"
    if problem is None:
        return decision
    logger.warning("tool %r: %s; the call is denied", tool.name, problem)
    denied = Decision.failure(
        ErrorType.INVALID_CALL,
        problem,
        engine=decision.engine,
        policy=decision.policy,
        decision_id=decision.decision_id,
    )
    return replace(denied, result=decision.result, revision=decision.revision)


def rewrite_refusal(tool: BaseTool | None, call: Mapping[str, Any]) -> ToolMessage | None:
    """Right before a rewritten ``call`` runs: ``None`` while its tool still reads the
    rewrite as written (or reads the same arguments alike every time), else the answer
    for a call that does not run."""
    if tool is None or reads_alike(tool):
        return None
    args = call.get("args")
    if isinstance(args, Mapping) and rewrite_problem(tool, args) is None:
        return None
    return changed_answer(call)


def rewrite_problem(tool: BaseTool | None, rewrite: Mapping[str, Any]) -> str | None:
    """Why a policy's argument rewrite cannot run as the policy wrote it, else ``None``: the
    rewrite read through the tool's schema (:func:`prepared_call`) must read as written, as
    JSON (a number may be written as an integer for a float or decimal field: ``100`` for
    ``100.0``). ``None`` too when there is no tool to read it with (the guard decided the
    model's arguments as they came, and the rewrite runs so).

    Example:
        ```python
        rewrite_problem(read_file, {"path": "%2E%2E%2Fsecrets", "limit": 100})
        # "... would reach the tool as other values: path" for a validator that unquotes path
        ```
    """
    if tool is None:
        return None
    written = dict(rewrite)
    call = ToolCall(name=tool.name, args=written, id="", type="tool_call")
    view, problem = prepared_call(tool, call)
    if problem is not None:
        return f"the policy's argument rewrite cannot run: {problem}"
    read = view.get("args")
    if read is written:
        return None
    if not isinstance(read, Mapping):
        return "the policy's argument rewrite cannot be read through the tool's schema"
    shown = jsonable(read)
    changed = sorted(
        str(k)
        for k in set(shown) | set(written)
        if k not in shown or k not in written or not _reads_as_written(shown[k], written[k])
    )
    if not changed:
        return None
    return (
        "the policy's argument rewrite would reach the tool as other values, read again by "
        "its schema: " + ", ".join(changed[:8])
    )


def _reads_as_written(read: Any, written: Any) -> bool:
    """Whether a value as the tool's schema read it (as JSON) is the value written."""
    if isinstance(read, dict) and isinstance(written, Mapping):
        return read.keys() == written.keys() and all(
            _reads_as_written(v, written[k]) for k, v in read.items()
        )
    if isinstance(read, list) and isinstance(written, (list, tuple)):
        return len(read) == len(written) and all(
            _reads_as_written(a, b) for a, b in zip(read, written, strict=True)
        )
    if _number(read) and _number(written):
        return bool(read == written)
    return same_json(read, written)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
