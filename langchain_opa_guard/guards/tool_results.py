"""What a tool's result may not do: propose or dispatch tool calls of its own.

A tool may return a LangGraph ``Command`` (an update of the state, a ``goto``). Tool calls
come from the model and are decided by the policy, turn by turn; a tool's ``Command`` that
writes a new model message with calls (nobody decides them, and nobody answers them: the
next model request carries them open) or sends calls to a tools node itself (a ``Send`` with
a call, which that tools task runs again under the interceptor) is not applied. The call
that returned it is answered with an error saying so (its tool did run). A ``Command`` that
carries the conversation's own messages on (a hand-off to another agent) is applied as it is.

Example:
    ```python
    refused = refused_result(request, result)
    return refused if refused is not None else result
    ```
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage, convert_to_messages
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command, Send

from langchain_opa_guard.guards.denials import guard_answer

__all__ = ["CALL_PAYLOADS", "refused_result"]

logger = logging.getLogger(__name__)

CALL_PAYLOADS = frozenset({"tool_call_with_context", "opa_guard.calls"})
"""The ``__type`` of a ``Send`` payload that carries tool calls to a tools node (a
``ToolNode``'s own, the guard's)."""

_NOT_APPLIED = (
    'The tool "{name}" ran, but its result was not applied: it {what}. Tool calls come '
    "from the model and are decided by the policy."
)


def refused_result(request: ToolCallRequest, result: Any) -> ToolMessage | None:
    """The answer that replaces ``result`` when it is a ``Command`` proposing or sending
    tool calls (see the module), else ``None``."""
    if not isinstance(result, Command):
        return None
    what = None
    if any(_sends_calls(target) for target in _targets(result.goto)):
        what = "sent tool calls to a tools node"
    elif _proposes_calls(result.update, request.state):
        what = "proposed tool calls of its own"
    if what is None:
        return None
    call = request.tool_call
    name, call_id = call.get("name"), call.get("id")
    logger.warning("the result of tool call %r (%s) %s; it was not applied", name, call_id, what)
    text = _NOT_APPLIED.format(name=name, what=what)
    return guard_answer(call, text, f"the tool's result {what}")


def _targets(goto: Any) -> Iterable[Any]:
    return goto if isinstance(goto, (list, tuple)) else (goto,)


def _sends_calls(target: Any) -> bool:
    arg = target.arg if isinstance(target, Send) else None
    return isinstance(arg, Mapping) and arg.get("__type") in CALL_PAYLOADS


def _proposes_calls(update: Any, state: Any) -> bool:
    """Whether ``update`` writes a model message with calls that is not one of the state's
    own model messages carried on (same id, none but its calls) and whose calls the update
    does not answer itself."""
    written = list(_messages(update))
    proposed = [
        m for m in written if isinstance(m, AIMessage) and (m.tool_calls or m.invalid_tool_calls)
    ]
    if not proposed:
        return False
    own = {m.id: set(_call_ids(m)) for m in _messages(state) if isinstance(m, AIMessage)}
    answered = {m.tool_call_id for m in written if isinstance(m, ToolMessage)}
    for message in proposed:
        ids = _call_ids(message)
        if message.id is not None and message.id in own and set(ids) <= own[message.id]:
            continue  # the conversation's own message, carried on (a hand-off)
        if any(i not in answered for i in ids):
            return True
    return False


def _call_ids(message: AIMessage) -> list[Any]:
    return [c.get("id") for c in (*message.tool_calls, *message.invalid_tool_calls)]


def _messages(values: Any) -> Iterable[Any]:
    """The messages among the values of a state or an update (a mapping, a list of
    ``(key, value)`` pairs or of messages, a state object), whatever their channel's name;
    message-like dicts and tuples as the state's reducer will read them."""
    if isinstance(values, Mapping):
        items: Iterable[Any] = values.values()
    elif isinstance(values, (list, tuple)):
        items = (v[1] if isinstance(v, tuple) and len(v) == 2 else v for v in values)
    else:
        items = (getattr(values, "messages", None),)
    for value in items:
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, BaseMessage):
                yield item
            elif isinstance(item, (Mapping, tuple)):
                try:
                    yield from convert_to_messages([item])  # type: ignore[list-item]
                except (ValueError, TypeError, KeyError, NotImplementedError):
                    continue
