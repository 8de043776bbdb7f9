"""What a tool's result may do to the conversation: answer its own call, and add messages.

Tool calls come from the model and are decided by the policy, turn by turn, and each gets
exactly one answer. A tool's result is applied only when it keeps that so:

- a ``ToolMessage`` answers the call that ran, not another one (a model message the result
  writes may come with the answers to its own calls);
- a LangGraph ``Command`` may add messages (each gets an id of its own, so that it replaces
  none; a human message is marked as the tool's, ``TOOL_WRITTEN_KEY`` of
  :mod:`~langchain_opa_guard.contract`, so that its text, perhaps a web page's, is never
  taken for the user's request; a guard's decision record a message carries,
  ``GUARD_ARTIFACT_KEY`` in its ``response_metadata``, is taken out: only a guard writes one)
  and route on, but it may not send tool calls to a tools
  node (a ``Send`` with a call, or a ``goto`` to the node the call runs in: that task would
  run the turn's calls again), write a model message with calls it does not answer itself
  (nobody would decide or answer them), answer another call, or change or remove a message
  the conversation holds (the turn's model message, a sibling's answer: the history the
  policy reads). Messages the conversation holds, written back unchanged (a hand-off that
  carries ``state["messages"]`` on), are left out of the update: they are there already.

A list of results, or anything but one answer or one ``Command``, is not applied either. A
result that does not keep to this is not applied: the call that returned it is answered
with an error saying so (its tool did run). A ``Command`` for the parent graph
(``graph=Command.PARENT``) is checked for sent and proposed calls only (the messages this
graph holds, carried to the parent, count as its own): the parent's conversation is not at
hand.

Why one module: every rule reads the same parse of a result (its messages by channel, as
LangGraph's reducer reads them; the copies of messages the conversation holds; the ids its
model messages propose) and the rewrite that marks and renames what it adds; apart, each rule
would parse the update again and could read it otherwise.

Example:
    ```python
    result = applied_result(request, result)  # right after the granted call ran
    ```
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping
from typing import Any, TypeVar, cast

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    RemoveMessage,
    ToolMessage,
    convert_to_messages,
)
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command, Send

from langchain_opa_guard.contract import GUARD_ARTIFACT_KEY, GUARD_STATE_PREFIX, TOOL_WRITTEN_KEY
from langchain_opa_guard.guards.denials import guard_answer
from langchain_opa_guard.guards.live_turn import graph_messages

__all__ = ["CALL_PAYLOADS", "applied_result", "without_guard_record"]

logger = logging.getLogger(__name__)

CALL_PAYLOADS = frozenset({"tool_call_with_context", "opa_guard.calls"})
"""The ``__type`` of a ``Send`` payload that carries tool calls to a tools node (a
``ToolNode``'s own, the guard's)."""

_NOT_APPLIED = (
    'The tool "{name}" ran, but its result was not applied: it {what}. Tool calls come '
    "from the model and are decided by the policy, and each gets one answer."
)


def applied_result(
    request: ToolCallRequest, result: ToolMessage | Command[Any], messages_key: str = "messages"
) -> ToolMessage | Command[Any]:
    """``result`` as it may be applied (see the module): its own answer or ``Command`` with
    the messages it adds given ids of their own, without the messages it writes back
    unchanged, or the answer saying it was not applied. ``messages_key``: the conversation's
    channel, where LangGraph's reducer reads plain text as a human message too."""
    call_id = request.tool_call.get("id")
    if isinstance(result, ToolMessage):
        if result.tool_call_id != call_id:
            return _not_applied(request, "answered another call")
        # An id of its own: an answer cannot replace a message of the conversation.
        return result if result.id is None else result.model_copy(update={"id": None})
    if not isinstance(result, Command):  # a list of results, or anything else
        return _not_applied(request, "returned something other than one answer or Command")
    node = _node_of(request)
    held = {m.id: m for m in _messages(request.state) if m.id is not None}
    for target in _targets(result.goto):
        if _sends_calls(target) or (node is not None and _node_named(target) == node):
            return _not_applied(request, "sent tool calls to a tools node")
        if isinstance(target, Send) and _proposes_calls(_new(target.arg, held, messages_key)):
            return _not_applied(request, "sent tool calls of its own")
        if isinstance(target, Send) and _writes_guard_state(target.arg):
            return _not_applied(request, "wrote the guard's own state")
    if _writes_guard_state(result.update):
        return _not_applied(request, "wrote the guard's own state")
    goto = _marked_sends(request, result.goto, held, messages_key)
    if goto is None:
        return _not_applied(request, "sent a human message that cannot be marked as its own")
    copies: set[str] = set()
    written = []
    channels = _message_channels(request.state, result.update, messages_key)
    for message in _messages(result.update, channels):
        if message.id is not None and message.id in held and message == held[message.id]:
            copies.add(message.id)  # written back unchanged (a hand-off)
            continue
        written.append(message)
    marked = any(isinstance(m, _MARKED) for m in written)
    if marked and not isinstance(result.update, (Mapping, list, tuple)):
        # (A state object: its messages cannot be marked as the tool's.)
        return _not_applied(request, "wrote a message that cannot be marked as its own")
    mark = _marker(request) if marked else None
    # (Also for a hand-off to the parent, whose conversation holds this one's calls.)
    noted = {i for m in written if isinstance(m, AIMessage) for i in _call_ids(m)}
    if noted and noted & _proposed_ids(request, messages_key):
        # A note whose calls take the ids of the conversation's: its answers would read as
        # theirs.
        return _not_applied(request, "answered another call")
    own = {call_id, *noted}
    if any(isinstance(m, ToolMessage) and m.tool_call_id not in own for m in written):
        return _not_applied(request, "answered another call")
    if result.graph is not None:
        # The parent's conversation is not at hand: the conversation this graph holds goes
        # to it as it is, what the tool adds marked and without guard records.
        if _proposes_calls(written):
            return _not_applied(request, "proposed tool calls of its own")
        if mark is None and goto is result.goto and not any(_has_record(m) for m in written):
            return result
        return Command(
            graph=result.graph,
            update=_rewritten(result.update, copies, channels, mark=mark, fresh_ids=False),
            resume=result.resume,
            goto=goto,
        )
    if any(isinstance(m, RemoveMessage) for m in written):
        return _not_applied(request, "removed messages of the conversation")
    if any(m.id is not None and m.id in held for m in written):
        return _not_applied(request, "changed messages of the conversation")
    if _proposes_calls(written):
        return _not_applied(request, "proposed tool calls of its own")
    unchanged = all(m.id is None and not _has_record(m) for m in written)
    if not copies and mark is None and goto is result.goto and unchanged:
        return result
    return Command(
        graph=result.graph,
        update=_rewritten(result.update, copies, channels, mark=mark),
        resume=result.resume,
        goto=goto,
    )


def _marked_sends(
    request: ToolCallRequest, goto: Any, held: Mapping[str, BaseMessage], messages_key: str
) -> Any:
    """``goto`` with the human messages its ``Send``s carry that the conversation does not
    hold marked as the tool's (a hand-off of a page to another agent: its guard must not
    take the page for the user's request); ``goto`` itself when there are none; ``None``
    when a ``Send``'s state, an object, cannot be rewritten."""
    targets = list(goto) if isinstance(goto, (list, tuple)) else [goto]
    changed = False
    for index, target in enumerate(targets):
        if not isinstance(target, Send):
            continue
        if not any(isinstance(m, _MARKED) for m in _new(target.arg, held, messages_key)):
            continue
        if not isinstance(target.arg, (Mapping, list, tuple)):
            return None
        channels = _message_channels(target.arg, target.arg, messages_key)
        copies = {
            m.id
            for m in _messages(target.arg, channels)
            if m.id is not None and m.id in held and m == held[m.id]
        }
        arg = _rewritten(target.arg, copies, channels, mark=_marker(request), fresh_ids=False)
        targets[index] = Send(target.node, arg)
        changed = True
    if not changed:
        return goto
    return targets if isinstance(goto, (list, tuple)) else targets[0]


def _proposed_ids(request: ToolCallRequest, messages_key: str) -> set[Any]:
    """The ids of the calls the conversation's model messages propose: in the state the
    request carries and in the one the graph holds (a tools node handed the allowed calls
    alone does not see a denied sibling's)."""
    config = getattr(request.runtime, "config", None)
    live = graph_messages(config, messages_key)
    return {
        i
        for source in (request.state, {messages_key: list(live)})
        for m in _messages(source)
        if isinstance(m, AIMessage)
        for i in _call_ids(m)
    }


def _node_named(target: Any) -> Any:
    """The node a ``goto`` target runs: its name, or a ``Send``'s node."""
    return target.node if isinstance(target, Send) else target


def _new(values: Any, held: Mapping[str, BaseMessage], messages_key: str) -> list[BaseMessage]:
    """The messages among ``values`` (a ``Send``'s state) that the conversation does not hold."""
    channels = {messages_key, "messages"}
    return [
        m
        for m in _messages(values, channels)
        if not (m.id is not None and m.id in held and m == held[m.id])
    ]


def _writes_guard_state(values: Any) -> bool:
    """Whether ``values`` (an update, a ``Send``'s state) names a channel of the guard's own
    (``opa_guard_*``: the middleware's recorded request, history, turn and grants; the
    guard's hand-over keys): only the guard writes those."""
    return any(
        isinstance(key, str) and key.strip("_").startswith(GUARD_STATE_PREFIX)
        for key, _value in _entries(values)
    )


def _not_applied(request: ToolCallRequest, what: str) -> ToolMessage:
    call = request.tool_call
    name, call_id = call.get("name"), call.get("id")
    logger.warning("the result of tool call %r (%s) %s; it was not applied", name, call_id, what)
    text = _NOT_APPLIED.format(name=name, what=what)
    # (The tool ran: its call reads as allowed in the history, whatever it returned.)
    return guard_answer(call, text, f"the tool's result {what}", verdict="allow")


def _node_of(request: ToolCallRequest) -> str | None:
    config = getattr(request.runtime, "config", None) or {}
    node = (config.get("metadata") or {}).get("langgraph_node")
    return node if isinstance(node, str) and node else None


def _targets(goto: Any) -> Iterable[Any]:
    return goto if isinstance(goto, (list, tuple)) else (goto,)


def _sends_calls(target: Any) -> bool:
    arg = target.arg if isinstance(target, Send) else None
    return isinstance(arg, Mapping) and arg.get("__type") in CALL_PAYLOADS


def _proposes_calls(written: list[BaseMessage]) -> bool:
    """Whether ``written`` holds a model message with calls it does not answer itself."""
    answered = {m.tool_call_id for m in written if isinstance(m, ToolMessage)}
    return any(i not in answered for m in written if isinstance(m, AIMessage) for i in _call_ids(m))


def _call_ids(message: AIMessage) -> list[Any]:
    return [c.get("id") for c in (*message.tool_calls, *message.invalid_tool_calls)]


def _messages(values: Any, channels: Collection[Any] = ()) -> Iterable[BaseMessage]:
    """The messages among the values of a state or an update (a mapping, a list of
    ``(key, value)`` pairs or of messages, a state object), whatever their channel's name;
    message-like dicts and tuples as the state's reducer will read them, and in
    ``channels`` (the conversation's) every item as LangGraph's ``add_messages`` reads it."""
    for key, value in _entries(values):
        loose = key in channels
        for item in _items(value, loose):
            message = _as_message(item, loose)
            if message is not None:
                yield message


def _items(value: Any, loose: bool) -> Iterable[Any]:
    """The items of a channel's value: ``add_messages`` (``loose``) takes anything but a list
    as one message (a ``(role, text)`` tuple too)."""
    if loose:
        return value if isinstance(value, list) else [value]
    return value if isinstance(value, (list, tuple)) else (value,)


def _message_channels(state: Any, update: Any, messages_key: str) -> set[Any]:
    """The keys of ``update`` that are conversations: ``messages_key``, and any whose value
    in ``state`` holds messages."""
    channels: set[Any] = {messages_key}
    for key, _value in _entries(update):
        if key is None or key in channels:
            continue
        held = state.get(key) if isinstance(state, Mapping) else getattr(state, str(key), None)
        if isinstance(held, list) and any(isinstance(m, BaseMessage) for m in held):
            channels.add(key)
    return channels


def _entries(values: Any) -> Iterable[tuple[Any, Any]]:
    if isinstance(values, Mapping):
        return values.items()
    if isinstance(values, (list, tuple)):
        return (v if isinstance(v, tuple) and len(v) == 2 else (None, v) for v in values)
    fields = getattr(values, "__dict__", None)  # a dataclass or a Pydantic model
    return fields.items() if isinstance(fields, dict) else ()


def _as_message(item: Any, loose: bool = False) -> BaseMessage | None:
    """``item`` as the reducer reads it: a message, a message dict or ``(role, text)``
    tuple; with ``loose`` (a conversation's channel), plain text and ``[role, text]``
    lists as well."""
    if isinstance(item, BaseMessage):
        return item
    if isinstance(item, (Mapping, tuple)) or (
        loose and (isinstance(item, str) or (isinstance(item, list) and len(item) == 2))
    ):
        try:
            converted = convert_to_messages([item])  # type: ignore[list-item]
        except (ValueError, TypeError, KeyError, NotImplementedError):
            return None
        return converted[0] if converted else None
    return None


_MARKED = (HumanMessage, AIMessage)
"""The messages a tool's result writes that are marked as the tool's: one in the user's
name is never the user's request, and one in the model's name (a note, with calls it answers
itself) never a model turn that ends the turn's answers."""


def _marker(request: ToolCallRequest) -> dict[str, Any]:
    """What a human message a tool's result writes carries under :data:`TOOL_WRITTEN_KEY`."""
    call = request.tool_call
    return {"tool": str(call.get("name")), "call_id": str(call.get("id"))}


def _rewritten(
    update: Any,
    copies: set[str],
    channels: Collection[Any] = (),
    *,
    mark: dict[str, Any] | None = None,
    fresh_ids: bool = True,
) -> Any:
    """``update`` without the messages whose ids are in ``copies``, every other message it
    adds with an id of its own (so that it replaces no message the conversation holds, nor
    one written in the same step) and, with ``mark``, each human message it adds marked as
    the tool's (``fresh_ids=False``: a hand-off to the parent graph, whose messages keep
    their ids and whose copies stay)."""

    def fresh(item: Any, loose: bool) -> Any:
        message = _as_message(item, loose)
        if message is None:
            return item
        changes: dict[str, Any] = {}
        if fresh_ids and message.id is not None:
            changes["id"] = None
        if message.id not in copies:
            metadata = dict(message.response_metadata or {})
            if GUARD_ARTIFACT_KEY in metadata:
                del metadata[GUARD_ARTIFACT_KEY]
                changes["response_metadata"] = metadata
            if mark is not None and isinstance(message, _MARKED):
                changes["response_metadata"] = {**metadata, TOOL_WRITTEN_KEY: mark}
        return message.model_copy(update=changes) if changes else item

    def kept(key: Any, value: Any) -> Any:
        loose = key in channels
        if loose or isinstance(value, (list, tuple)):
            items = _items(value, loose)
            return [fresh(v, loose) for v in items if not (fresh_ids and _held(v, copies))]
        return fresh(value, loose)

    if isinstance(update, Mapping):
        return {key: kept(key, value) for key, value in update.items()}
    if isinstance(update, (list, tuple)):
        return [
            (entry[0], kept(*entry)) if isinstance(entry, tuple) and len(entry) == 2 else entry
            for entry in update
        ]
    return update


_Result = TypeVar("_Result")


def _has_record(message: BaseMessage) -> bool:
    metadata = message.response_metadata
    return isinstance(metadata, Mapping) and GUARD_ARTIFACT_KEY in metadata


def without_guard_record(result: _Result) -> _Result:
    """A tool's answer without a guard's decision record in its ``response_metadata``
    (``GUARD_ARTIFACT_KEY``): the history takes that record for the guard's own (a denial,
    so the call counts as not run), and only a guard writes one. A tool that answers with a
    ``ToolMessage`` of its own may put anything there, a server's metadata included;
    anything but a ``ToolMessage`` is returned as it is (a ``Command``'s messages are seen
    to by :func:`applied_result`).

    Example:
        ```python
        answer = without_guard_record(execute(request))  # right where the tool returned
        ```
    """
    if isinstance(result, ToolMessage) and _has_record(result):
        metadata = {k: v for k, v in result.response_metadata.items() if k != GUARD_ARTIFACT_KEY}
        return cast(_Result, result.model_copy(update={"response_metadata": metadata}))
    return result


def _held(item: Any, ids: set[str]) -> bool:
    message = _as_message(item)
    return message is not None and message.id in ids
