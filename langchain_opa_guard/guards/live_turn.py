"""Whether a hand-over's turn is still open in the conversation the graph holds now.

The guard hands a decided turn on in a ``Send`` (the tools node's payload, the edge's
decisions, a turn waiting for approval). LangGraph delivers it in the next step, or again
from the checkpoint that holds it (a resume, a retry, a fork from that checkpoint); in each
case the graph's conversation still holds the turn, with no request after it and its granted
calls unanswered. A graph's caller can also send a payload it saw back in later
(``Command(goto=Send(...))``, within ``grant_ttl``, same thread): by then the conversation may
have gone on without the turn (a new message dropped it, its calls answered "did not run",
and a read made since would have the policy deny them), or the caller may have edited it to
look open (the turn moved after the later round, rewritten to propose its calls). The
hand-over carries its turn's :func:`fingerprint` under the guard's seal, and
:func:`turn_still_open` reads the conversation as the graph holds it in the receiving task
(LangGraph's own channel read, what a node's state would be) and tells the two apart.

Example:
    ```python
    if not turn_still_open(config, "messages", payload["message_id"], {"c1", "c2"}):
        ...  # sent back after the conversation went on: nothing of it runs
    ```
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ChatMessage, ToolMessage
from langgraph._internal._constants import CONFIG_KEY_READ

from langchain_opa_guard.plain_json import value_digest

__all__ = [
    "graph_messages",
    "graph_turn",
    "on_graph_conversation",
    "fingerprint",
    "fingerprint_holds",
    "fingerprint_of",
    "request_turn_open",
    "turn_still_open",
]

logger = logging.getLogger(__name__)


def turn_still_open(
    config: Mapping[str, Any] | None,
    messages_key: str,
    message_id: Any,
    calls: Collection[str] = (),
    *,
    missing: bool = False,
    before: Any = None,
    contents: Mapping[str, Any] | None = None,
) -> bool:
    """Whether the conversation the graph holds now still holds the turn open: the model's
    message ``message_id`` (``None``: the last model message proposing ``calls``) proposes
    the calls ``calls`` (ids), it is still the turn the hand-over was made for (``before``:
    its :func:`fingerprint`, when the hand-over carries one), and nothing of a later round
    follows it (``missing``: the answer when no such message is there). A model message
    without an id of its own gets one each time LangGraph's reducer reads it, so the one the
    hand-over names may be under another id: with ``contents`` (call id -> the digest of its
    name and arguments, ``call_digest``), the message proposing exactly those calls stands
    for it.

    A later round is a request (any message but a model message or an answer: a system
    message too) or an answer to a call that neither the turn nor a message before it
    proposes; an answer to one of ``calls`` closes the turn too. Model messages do
    not (a parallel branch of the graph may add one, with calls of its own, in the turn's
    step), nor do answers to the turn's other calls (the guard's denials) or to another
    branch's. Holds where it cannot be told: outside a LangGraph task, nothing to identify
    the turn by, a graph whose state has no ``messages_key`` channel.
    """
    live = _read(config, messages_key) if message_id is not None or calls else None
    if live is None:
        return True
    index = _turn_index(live, message_id, calls)
    if index is None and message_id is not None and calls and contents:
        # (Renamed by the reducer: the turn by its calls, each the very call decided, not
        # another turn's under the same id; the fingerprint then holds it to the turn.)
        index = _turn_index(live, None, calls)
        if index is not None and not _same_calls(live[index], contents):
            index = None
    if index is None:
        if not missing:
            _refused(message_id, calls, "its model message is not in the conversation")
        return missing
    own = _ids(live[index])
    if not own.issuperset(calls):
        # The message under that id proposes other calls (a model that reused the id: the
        # graph replaced the turn the hand-over was made for).
        _refused(message_id, calls, "its model message no longer proposes its calls")
        return False
    why = _changed(live, index, before, own) if isinstance(before, Mapping) else None
    if why is not None:
        _refused(message_id, calls, why)
        return False
    earlier: set[str] | None = None  # the calls proposed before the turn, when needed
    for message in live[index + 1 :]:
        kind = _kind(message)
        if kind == "ai":
            continue
        if kind != "tool":
            break  # a request (or a system message) came after it
        answered = _field(message, "tool_call_id")
        if answered in calls:
            break
        if answered in own:
            continue
        if earlier is None:
            earlier = _proposed_in(live[:index])
        if answered not in earlier:
            break
    else:
        return True
    _refused(message_id, calls, "the conversation went on without it")
    return False


def fingerprint(earlier: Sequence[Any], message: Any) -> dict[str, Any]:
    """What a hand-over of the turn ``message`` is bound to: how many messages came before
    it and a digest of their ids, in order (the conversation its calls were decided on), and
    the ids of the calls it proposes (unreadable ones too)."""
    return {"n": len(earlier), "ids": _digest(earlier), "calls": sorted(_ids(message))}


def fingerprint_of(messages: Sequence[Any], message_id: Any) -> dict[str, Any] | None:
    """:func:`fingerprint` of the model message ``message_id`` (the last of that id) in
    ``messages``, or ``None`` when it is not there."""
    index = _turn_index(messages, message_id, ())
    return None if index is None else fingerprint(messages[:index], messages[index])


def fingerprint_holds(messages: Sequence[Any], message_id: Any, before: Any) -> bool:
    """Whether the model message ``message_id`` in ``messages`` is still the turn
    ``before`` (its :func:`fingerprint`) was taken of (see :func:`turn_still_open`)."""
    index = _turn_index(messages, message_id, ())
    return index is not None and _changed(messages, index, before) is None


def _changed(
    live: Sequence[Any], index: int, before: Mapping[str, Any], own: set[str] | None = None
) -> str | None:
    """Why the turn at ``live[index]`` is not the one ``before`` was taken of, or ``None``.

    The messages the turn was decided after must still come first, in order; what came in
    between since may only be another branch's turn with no answer yet, or answers to calls
    proposed before the turn (another branch's step, written beside the turn's). The turn
    may not propose calls it did not (a caller who rewrote it to make a later round's
    answers its own)."""
    count = before.get("n")
    if not isinstance(count, int) or count > index or _digest(live[:count]) != before.get("ids"):
        return "the conversation before it changed"
    if not (_ids(live[index]) if own is None else own).issubset(before.get("calls") or ()):
        return "its model message proposes calls it did not"
    if count == index:
        return None
    answered = {_field(m, "tool_call_id") for m in live if _kind(m) == "tool"}
    proposed = _proposed_in(live[:count])
    for message in live[count:index]:
        kind = _kind(message)
        if kind == "ai" and _ids(message).isdisjoint(answered):
            proposed |= _ids(message)
        elif kind != "tool" or _field(message, "tool_call_id") not in proposed:
            return "the conversation before it changed"
    return None


def _proposed_in(messages: Sequence[Any]) -> set[str]:
    """The ids of the calls the model messages of ``messages`` propose."""
    return set().union(*(_ids(m) for m in messages if _kind(m) == "ai"))


def _digest(messages: Sequence[Any]) -> str:
    ids = "\0".join(_answer_id(_field(m, "id")) for m in messages)
    return hashlib.sha256(ids.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def graph_turn(
    call_id: Any, state: Any, config: Mapping[str, Any] | None, messages_key: str
) -> tuple[Sequence[Any], Any] | None:
    """The conversation the graph holds now and the id of its model message that proposes
    the call ``call_id``, when ``state`` (a ``ToolNode``'s input) is the graph's: its model
    message proposing the call is one the graph holds (by id). ``None`` otherwise: outside a
    LangGraph task, or a ``ToolNode`` given messages of its own (a loop inside a node)."""
    given = _field(state, messages_key) if state is not None else None
    if not isinstance(call_id, str) or not isinstance(given, Sequence):
        return None
    index = _turn_index(given, None, {call_id})
    message_id = _field(given[index], "id") if index is not None else None
    live = _read(config, messages_key)
    if live is None or message_id is None:
        return None
    if not any(_field(m, "id") == message_id and _kind(m) == "ai" for m in live):
        return None
    return live, message_id


def request_turn_open(request: Any, messages_key: str) -> bool:
    """For the ``ToolCallGuard`` interceptor: whether the turn of the call of ``request`` (a
    ``ToolNode``'s ``ToolCallRequest``) is still open, when the request's model message is
    one the graph holds (:func:`graph_turn`); nothing to tell where it is not."""
    call_id = (getattr(request, "tool_call", None) or {}).get("id")
    config = getattr(getattr(request, "runtime", None), "config", None)
    found = graph_turn(call_id, getattr(request, "state", None), config, messages_key)
    if found is None:
        return True
    return turn_still_open(config, messages_key, found[1], {str(call_id)})


def on_graph_conversation(request: Any, messages_key: str) -> Any | None:
    """For the middleware (``create_agent``'s own graph, whose tools always run a call of
    its conversation): ``request`` with the conversation the graph holds now in place of
    the one its state carries, which a graph's caller can write; ``None`` when no open turn
    of that conversation proposes the call (its id), so that nothing of it runs; the
    request as it is where nothing can be told (outside a LangGraph task)."""
    call_id = (getattr(request, "tool_call", None) or {}).get("id")
    config = getattr(getattr(request, "runtime", None), "config", None)
    live = _read(config, messages_key)
    if live is None or not isinstance(call_id, str):
        return request
    index = _turn_index(live, None, {call_id})
    if index is None or not turn_still_open(
        config, messages_key, _field(live[index], "id"), {call_id}
    ):
        if index is None:
            _refused(None, {call_id}, "no model message of the conversation proposes it")
        return None
    state = getattr(request, "state", None)
    if not isinstance(state, Mapping):
        return request
    return request.override(state={**state, messages_key: list(live)})


def graph_messages(config: Mapping[str, Any] | None, messages_key: str) -> Sequence[Any]:
    """The conversation the graph holds now, read where a task runs (LangGraph's channel
    read in its config); nothing outside a task."""
    return _read(config, messages_key) or ()


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


def _turn_index(live: Sequence[Any], message_id: Any, calls: Collection[str]) -> int | None:
    for index in range(len(live) - 1, -1, -1):
        message = live[index]
        if _kind(message) != "ai":
            continue
        if message_id is not None:
            if _field(message, "id") == message_id:
                return index
        elif _proposes(message, calls, any_of=True):
            return index
    return None


def _same_calls(message: Any, contents: Mapping[str, Any]) -> bool:
    """Whether ``message`` proposes each call of ``contents`` (id -> digest of its name and
    arguments) with that very name and those arguments."""
    proposed = {_field(c, "id"): c for c in (_field(message, "tool_calls") or ())}
    for call_id, digest in contents.items():
        call = proposed.get(call_id)
        if call is None or value_digest([_field(call, "name"), _field(call, "args")]) != digest:
            return False
    return True


def _proposes(message: Any, call_ids: Collection[str], *, any_of: bool = False) -> bool:
    """Whether ``message`` proposes all (``any_of``: one) of the calls ``call_ids``."""
    proposed = _ids(message)
    return not proposed.isdisjoint(call_ids) if any_of else proposed.issuperset(call_ids)


def _ids(message: Any) -> set[str]:
    """The ids the answers to the calls ``message`` proposes carry (its unreadable calls
    too; an id that is not text as its text, as the guard answers it)."""
    ids = set()
    for calls in (_field(message, "tool_calls"), _field(message, "invalid_tool_calls")):
        for call in calls or ():
            call_id = call.get("id") if type(call) is dict else _field(call, "id")
            ids.add(call_id if type(call_id) is str else _answer_id(call_id))
    return ids


def _answer_id(call_id: Any) -> str:
    return call_id if isinstance(call_id, str) else ("" if call_id is None else str(call_id))


def _refused(message_id: Any, calls: Collection[str], why: str) -> None:
    logger.warning(
        "a hand-over of the guard (model message %r, calls %s) arrived after %s (sent back "
        "into the run); nothing of it runs",
        message_id,
        ", ".join(sorted(map(str, calls))) or "-",
        why,
    )


def _field(message: Any, name: str) -> Any:
    # (Exact types first: a message object, a call dict; the ABC check costs more.)
    if isinstance(message, BaseMessage):
        return getattr(message, name, None)
    if type(message) is dict or isinstance(message, Mapping):
        return message.get(name)
    return getattr(message, name, None)


_KINDS = {
    "ai": "ai",
    "assistant": "ai",
    "AIMessageChunk": "ai",
    "tool": "tool",
    "ToolMessageChunk": "tool",
}


def _kind(message: Any) -> str:
    """``"ai"``, ``"tool"`` or ``"other"`` (a request, a system message, anything else): a
    message object by its class (chunks included) or a ``ChatMessage`` by its role, a dict
    by its ``type`` or ``role``."""
    if isinstance(message, AIMessage):
        return "ai"
    if isinstance(message, ToolMessage):
        return "tool"
    if isinstance(message, Mapping):
        kind = message.get("type") or message.get("role")
    else:
        kind = getattr(message, "role", None) if isinstance(message, ChatMessage) else None
    return _KINDS.get(kind, "other") if isinstance(kind, str) else "other"
