"""Whether a hand-over's turn is still open in the conversation the graph holds now.

The guard hands a decided turn on in a ``Send`` (the tools node's payload, the edge's
decisions, a turn waiting for approval). LangGraph delivers it in the next step, or again
from the checkpoint that holds it (a resume, a retry, a fork from that checkpoint); in each
case the graph's conversation still holds the turn, with no request after it and its
granted calls unanswered. A
graph's caller can also send a payload it saw back in later (``Command(goto=Send(...))``,
within ``grant_ttl``, same thread): by then the conversation may have gone on without the
turn (a new message dropped it, its calls answered "did not run", and a read made since
would have the policy deny them). :func:`turn_still_open` reads the conversation as the
graph holds it in the receiving task (LangGraph's own channel read, what a node's state
would be) and tells the two apart.

Example:
    ```python
    if not turn_still_open(config, "messages", payload["message_id"], {"c1", "c2"}):
        ...  # sent back after the conversation went on: nothing of it runs
    ```
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph._internal._constants import CONFIG_KEY_READ

__all__ = ["live_conversation", "request_turn_open", "turn_still_open"]

logger = logging.getLogger(__name__)


def turn_still_open(
    config: Mapping[str, Any] | None,
    messages_key: str,
    message_id: Any,
    call_ids: Collection[str] = (),
    *,
    missing: bool = False,
) -> bool:
    """Whether the conversation the graph holds now still holds the turn: the model's message
    ``message_id`` (``None``: the last model message proposing ``call_ids``), proposing
    ``call_ids``, with no request after it and none of ``call_ids`` answered after it
    (``missing``: the answer when no such message is in it at all).

    Model messages after it do not close it (a parallel branch of the graph may add one in
    the same step); a request does, and so does an answer to one of its calls. Holds where it
    cannot be told: outside a LangGraph task, nothing to identify the turn by, a graph whose
    state has no ``messages_key`` channel.
    """
    live = _read(config, messages_key) if message_id is not None or call_ids else None
    if live is None:
        return True
    index = _turn_index(live, message_id, call_ids)
    if index is None:
        if not missing:
            _refused(message_id, call_ids, "its model message is not in the conversation")
        return missing
    if not _proposed(live[index]).issuperset(call_ids):
        # The message under that id proposes other calls (a model that reused the id: the
        # graph replaced the turn the hand-over was made for).
        _refused(message_id, call_ids, "its model message no longer proposes its calls")
        return False
    for message in live[index + 1 :]:
        kind = _kind(message)
        if kind == "human" or (kind == "tool" and _field(message, "tool_call_id") in call_ids):
            _refused(message_id, call_ids, "the conversation went on without it")
            return False
    return True


def live_conversation(
    config: Mapping[str, Any] | None, messages_key: str, call_id: Any
) -> list[Any] | None:
    """The conversation the graph holds now, when one of its model messages proposes the
    call ``call_id``; else ``None`` (outside a LangGraph task, no such channel, a call the
    graph's conversation does not propose). A call is decided on this conversation rather
    than on the state a request carries, which a graph's caller can write
    (``Command(goto=Send("tools", ...))``)."""
    live = _read(config, messages_key)
    if live is None or _turn_index(live, None, {call_id}) is None:
        return None
    return list(live)


def request_turn_open(request: Any, messages_key: str, *, missing: bool = False) -> bool:
    """:func:`turn_still_open` for the call of a ``ToolNode``'s request (a
    ``ToolCallRequest``): the last model message of the conversation the graph holds that
    proposes it (whatever state the request carries)."""
    call_id = (getattr(request, "tool_call", None) or {}).get("id")
    if not isinstance(call_id, str):
        return True
    config = getattr(getattr(request, "runtime", None), "config", None)
    return turn_still_open(config, messages_key, None, {call_id}, missing=missing)


def _read(config: Mapping[str, Any] | None, messages_key: str) -> Sequence[Any] | None:
    """The ``messages_key`` channel's value now (LangGraph's read of the task's graph), or
    ``None`` where there is none."""
    read = ((config or {}).get("configurable") or {}).get(CONFIG_KEY_READ)
    if not callable(read):
        return None
    try:
        live = read(messages_key, False)
    except Exception:  # noqa: BLE001 - no such channel: nothing to tell from
        return None
    if not isinstance(live, Sequence) or isinstance(live, (str, bytes)):
        return None
    return live


def _turn_index(live: Sequence[Any], message_id: Any, call_ids: Collection[str]) -> int | None:
    for index in range(len(live) - 1, -1, -1):
        message = live[index]
        if _kind(message) != "ai":
            continue
        if message_id is not None:
            if _field(message, "id") == message_id:
                return index
        elif not _proposed(message).isdisjoint(call_ids):
            return index
    return None


def _refused(message_id: Any, call_ids: Collection[str], why: str) -> None:
    logger.warning(
        "a hand-over of the guard (model message %r, calls %s) arrived after %s (sent back "
        "into the run); nothing of it runs",
        message_id,
        ", ".join(sorted(map(str, call_ids))) or "-",
        why,
    )


def _proposed(message: Any) -> set[Any]:
    return {_field(call, "id") for call in (_field(message, "tool_calls") or ())}


def _field(message: Any, name: str) -> Any:
    if isinstance(message, Mapping):
        return message.get(name)
    return getattr(message, name, None)


_KINDS = {
    "ai": "ai",
    "assistant": "ai",
    "AIMessageChunk": "ai",
    "human": "human",
    "user": "human",
    "HumanMessageChunk": "human",
    "tool": "tool",
    "ToolMessageChunk": "tool",
}


def _kind(message: Any) -> str | None:
    """``"ai"``, ``"human"``, ``"tool"`` or ``None``: a message object by its class (chunks
    included), a dict by its ``type`` or ``role``."""
    if isinstance(message, AIMessage):
        return "ai"
    if isinstance(message, HumanMessage):
        return "human"
    if isinstance(message, ToolMessage):
        return "tool"
    if isinstance(message, Mapping):
        kind = message.get("type") or message.get("role")
        return _KINDS.get(kind) if isinstance(kind, str) else None
    return None
