"""Whether a hand-over's turn is still open in the conversation the graph holds now.

The guard hands a decided turn on in a ``Send`` (the tools node's payload, the edge's
decisions, a turn waiting for approval). LangGraph delivers it in the next step, or again
from the checkpoint that holds it (a resume, a retry, a fork from that checkpoint); in each
case the graph's conversation still ends with the turn, its granted calls unanswered. A
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

from langgraph._internal._constants import CONFIG_KEY_READ

__all__ = ["request_turn_open", "turn_still_open"]

logger = logging.getLogger(__name__)

_GONE_ON = frozenset({"human", "ai", "user", "assistant"})
"""Message types that mean the conversation went on past a turn (a new request, a model's
next message)."""


def turn_still_open(
    config: Mapping[str, Any] | None,
    messages_key: str,
    message_id: Any,
    call_ids: Collection[str] = (),
    *,
    missing: bool = False,
) -> bool:
    """Whether the conversation the graph holds now still holds the model's message
    ``message_id``, proposing ``call_ids``, with no request or model message after it, and
    none of ``call_ids`` answered after it (``missing``: the answer when the message is not
    in it at all).

    Holds where it cannot be told: outside a LangGraph task, a message without an id, a
    graph whose state has no ``messages_key`` channel.
    """
    read = ((config or {}).get("configurable") or {}).get(CONFIG_KEY_READ)
    if message_id is None or not callable(read):
        return True
    try:
        live = read(messages_key, False)
    except Exception:  # noqa: BLE001 - no such channel: nothing to tell from
        return True
    if not isinstance(live, Sequence) or isinstance(live, (str, bytes)):
        return True
    for index in range(len(live) - 1, -1, -1):
        if _field(live[index], "id") == message_id and _kind(live[index]) in ("ai", "assistant"):
            after = live[index + 1 :]
            break
    else:
        if missing:
            return True
        logger.warning(
            "a hand-over of the guard for model message %r arrived after that message left "
            "the conversation; nothing of it runs",
            message_id,
        )
        return False
    proposed = {_field(c, "id") for c in (_field(live[index], "tool_calls") or ())}
    if not proposed.issuperset(call_ids):
        # The message under that id proposes other calls (a model that reused the id: the
        # graph replaced the turn the hand-over was made for).
        logger.warning(
            "a hand-over of the guard for calls model message %r no longer proposes arrived; "
            "nothing of it runs",
            message_id,
        )
        return False
    for message in after:
        kind = _kind(message)
        if kind in _GONE_ON or (kind == "tool" and _field(message, "tool_call_id") in call_ids):
            logger.warning(
                "a hand-over of the guard for model message %r arrived after the conversation "
                "went on (sent back into the run); nothing of it runs",
                message_id,
            )
            return False
    return True


def _field(message: Any, name: str) -> Any:
    if isinstance(message, Mapping):
        return message.get(name)
    return getattr(message, name, None)


def _kind(message: Any) -> Any:
    if isinstance(message, Mapping):
        return message.get("type") or message.get("role")
    return getattr(message, "type", None)


def request_turn_open(request: Any, messages_key: str, *, missing: bool = False) -> bool:
    """:func:`turn_still_open` for the turn of a ``ToolNode``'s call (``request``: a
    ``ToolCallRequest``): the model message in the state the request carries that holds the
    call, read in the conversation the graph holds now."""
    call_id = (getattr(request, "tool_call", None) or {}).get("id")
    state = getattr(request, "state", None)
    live = state.get(messages_key) if isinstance(state, Mapping) else None
    if live is None and state is not None and not isinstance(state, Mapping):
        live = getattr(state, messages_key, None)
    message_id = None
    if isinstance(live, Sequence) and not isinstance(live, (str, bytes)):
        for message in reversed(live):
            if _kind(message) in ("ai", "assistant") and any(
                _field(c, "id") == call_id for c in (_field(message, "tool_calls") or ())
            ):
                message_id = _field(message, "id")
                break
    config = getattr(getattr(request, "runtime", None), "config", None)
    return turn_still_open(config, messages_key, message_id, {str(call_id)}, missing=missing)
