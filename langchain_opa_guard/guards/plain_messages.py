"""A model's message rebuilt as a plain ``AIMessage`` holding exactly the calls given: no
streamed chunks, raw provider calls or tool-call content blocks left to bring other calls
back after a checkpoint round trip.

Example:
    ```python
    from langchain_opa_guard.guards.plain_messages import content_without_calls, plain_message

    replaced = plain_message(message, allowed_calls, content_without_calls(message))
    ```
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage

__all__ = ["content_without_calls", "over_current", "plain_message"]


def content_without_calls(message: AIMessage) -> Any:
    """``message``'s content without provider tool-call blocks (``tool_use``, ``tool_call``),
    which would bring the model's calls back after a checkpoint round trip."""
    content: Any = message.content
    if isinstance(content, list):
        content = [
            b
            for b in content
            if not (isinstance(b, Mapping) and b.get("type") in ("tool_use", "tool_call"))
        ]
    return content


def plain_message(message: AIMessage, tool_calls: Sequence[Any], content: Any) -> AIMessage:
    """A plain ``AIMessage`` in place of ``message`` (same id, name and metadata) holding
    exactly ``tool_calls``: no streamed chunks and no raw provider calls in
    ``additional_kwargs`` to rebuild other calls from.

    Raises:
        ValueError, TypeError, KeyError: The calls cannot make a valid message.
    """
    extra = {
        k: v
        for k, v in message.additional_kwargs.items()
        if k not in ("tool_calls", "function_call")
    }
    return AIMessage(
        content=content,
        tool_calls=list(tool_calls),
        invalid_tool_calls=list(message.invalid_tool_calls),
        additional_kwargs=extra,
        response_metadata=dict(message.response_metadata),
        usage_metadata=message.usage_metadata,
        id=message.id,
        name=message.name,
    )


def over_current(current: AIMessage, decided: AIMessage, updated: AIMessage) -> AIMessage:
    """``updated`` (the decided message with its calls as they will run, and the guard's
    notes added to its text) with the text other middleware gave the message since it was
    decided (``current``: a redaction of the model's output), so that settling the turn
    does not bring back what they took out."""
    if updated is decided or current.content == decided.content:
        return updated
    base, now, text = (
        content_without_calls(decided),
        content_without_calls(current),
        updated.content,
    )
    if isinstance(text, str) and isinstance(base, str) and isinstance(now, str):
        added = text[len(base) :] if text.startswith(base) else ""
        content: Any = (now + added) if now else added.lstrip("\n")
    elif isinstance(text, list) and isinstance(base, list) and isinstance(now, list):
        content = [*now, *text[len(base) :]] if text[: len(base)] == base else now
    else:
        content = now
    return updated.model_copy(update={"content": content})
