"""Answers for the calls a cut-off turn left open, before the model is asked again.

A turn can be decided and then never reach its tools: the run hits its ``recursion_limit``
between the guard and the tools, a stream is closed while the guard decides, an edit is
written with ``update_state`` after the guard, or an approval question is left open. When
the next input is a new message instead of a resume, LangGraph drops the pending tasks and
the turn's calls stay without an answer, and OpenAI-style APIs reject the next model request
(every tool call id needs a tool message right after its model message).

:func:`repaired_messages` answers each such call with a ``ToolMessage`` (``status="error"``)
saying it did not run, placed right after the answers its turn already has;
:func:`answer_open_calls` is the LangGraph node that writes the repaired conversation as
LangChain's own repairs do (``RemoveMessage(id=REMOVE_ALL_MESSAGES)`` followed by the whole
list). ``OPAGuardMiddleware`` does the same in ``before_agent``. Nothing runs those calls
afterwards: their tools task was dropped, and a call that has its answer is never routed to
the tools again. The answers carry the guard's record (``response_metadata``): a call that
did not start in this process reads in ``input.history`` with a ``null`` decision (its outcome
is not known here: another process may have run it, or the answer that says so was trimmed
away), so a rule that counts what the conversation may have done (an untrusted read) still
counts it. A call whose tool had started in this process (its tool raised, or a sibling's
did, and the answers were lost with the step), or that the middleware's kept history records
as run, is answered as one that may have taken effect: the model is told to check before
asking again, and ``input.history`` reads it as allowed. One the kept history records as
refused is answered as refused.

Example:
    ```python
    from langchain_opa_guard.guards.open_calls import repaired_messages

    fixed = repaired_messages(messages)  # None when every call has its answer
    ```
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, RemoveMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_config
from langgraph.graph.message import REMOVE_ALL_MESSAGES

from langchain_opa_guard.contract import proposes_calls, state_messages
from langchain_opa_guard.guards.claims import started_calls
from langchain_opa_guard.guards.denials import guard_answer
from langchain_opa_guard.guards.kept_history import ORIGIN_KEY

__all__ = [
    "OPEN_CALL_REASON",
    "STARTED_CALL_REASON",
    "answer_open_calls",
    "kept_outcomes",
    "open_call_answer",
    "open_call_ids",
    "repaired_messages",
]

OPEN_CALL_REASON = "the conversation went on before the call's tools ran"
"""The reason the guard's record gives for a call answered by :func:`open_call_answer`."""

STARTED_CALL_REASON = "the call started, but its answer was lost when the conversation went on"
"""The reason given for a call that had started in this process when its answer was lost."""


def open_call_answer(
    call: Mapping[str, Any],
    *,
    unreadable: bool = False,
    started: bool = False,
    refused: bool = False,
) -> ToolMessage:
    """The answer of a call left open by a cut-off turn: it did not run here, and the model
    may ask for it again; ``input.history`` shows it with a ``null`` decision (its outcome is
    not known for sure). ``unreadable``: a call of the model's ``invalid_tool_calls`` (its
    arguments did not parse). ``started``: its tool had started (in this process, or as the
    middleware's kept history records), so it may have done its work: the model is told to
    check first, and ``input.history`` counts it as allowed (as having run). ``refused``: the
    kept history records it as refused, and it stays refused."""
    name = call.get("name")
    name = name if isinstance(name, str) and name else "unknown"
    named = {**call, "name": name}
    if refused and not started:
        text = (
            f'The tool call "{name}" did not run: it was refused, and its answer is no longer '
            "in the conversation."
        )
        return guard_answer(named, text, OPEN_CALL_REASON)
    if started:
        text = (
            f'The tool call "{name}" started, but the conversation went on (a new message '
            "came in) before its result was saved: it may have taken effect. Check before "
            "proposing it again."
        )
        return guard_answer(named, text, STARTED_CALL_REASON, verdict="allow")
    if unreadable:
        text = (
            f'The tool call "{name}" did not run: its arguments could not be read (malformed '
            "or cut short), and the conversation went on before it was answered. Propose it "
            "again with valid arguments if it is still needed."
        )
    else:
        text = (
            f'The tool call "{name}" did not run: the conversation went on (a new message '
            "came in) before its tools ran. Propose it again if it is still needed."
        )
    return guard_answer(named, text, OPEN_CALL_REASON, verdict=None)


def _turn_calls(message: AIMessage) -> list[tuple[str, Mapping[str, Any], bool]]:
    """``(id, call, unreadable)`` for each call of ``message`` that an answer can name (a
    non-empty text id), ``tool_calls`` first, each id once."""
    found: list[tuple[str, Mapping[str, Any], bool]] = []
    seen: set[str] = set()
    entries = [(c, False) for c in message.tool_calls]
    entries += [(c, True) for c in getattr(message, "invalid_tool_calls", None) or ()]
    for call, unreadable in entries:
        call_id = call.get("id") if isinstance(call, Mapping) else None
        if isinstance(call_id, str) and call_id and call_id not in seen:
            seen.add(call_id)
            found.append((call_id, call, unreadable))
    return found


def _turn_answers(messages: Sequence[Any], start: int) -> set[str]:
    """The call ids answered by the tool messages from ``start`` up to the next model turn
    (a model message with calls): a turn's answers, as ``input.history`` pairs them (ids are
    unique only within a turn; some servers reuse short ids)."""
    answered: set[str] = set()
    for message in messages[start:]:
        if proposes_calls(message):
            break
        if isinstance(message, ToolMessage):
            answered.add(message.tool_call_id)
    return answered


def open_call_ids(messages: Sequence[Any]) -> list[str]:
    """The ids of the calls in ``messages`` that have no answer in their turn, in order."""
    found: list[str] = []
    for index, message in enumerate(messages):
        if isinstance(message, AIMessage) and (message.tool_calls or message.invalid_tool_calls):
            answered = _turn_answers(messages, index + 1)
            found += [i for i, _, _ in _turn_calls(message) if i not in answered]
    return found


def kept_outcomes(
    messages: Sequence[Any], kept: Sequence[Mapping[str, Any]]
) -> dict[tuple[str, str], str]:
    """What a kept history (the middleware's, entries with their origin ``[model message id,
    position]``) records of the calls of ``messages``, by ``(message id, call id)``:
    ``"refused"`` for a denied call, ``"ran"`` for one answered otherwise. Calls it records
    as unanswered, or not at all, are left out."""
    by_origin: dict[tuple[str, int], str] = {}
    for entry in kept:
        origin = entry.get(ORIGIN_KEY)
        if not (isinstance(origin, list | tuple) and len(origin) == 2):
            continue
        message_id, position = origin
        decision, status = entry.get("decision"), entry.get("status")
        if not isinstance(message_id, str) or not isinstance(position, int):
            continue
        if decision == "deny":
            by_origin[(message_id, position)] = "refused"
        elif decision is not None and status in ("success", "error"):
            by_origin[(message_id, position)] = "ran"
    outcomes: dict[tuple[str, str], str] = {}
    if not by_origin:
        return outcomes
    for message in messages:
        if not (isinstance(message, AIMessage) and isinstance(message.id, str)):
            continue
        for position, call in enumerate(message.tool_calls):
            outcome = by_origin.get((message.id, position))
            call_id = call.get("id")
            if outcome is not None and isinstance(call_id, str):
                outcomes[(message.id, call_id)] = outcome
    return outcomes


def repaired_messages(
    messages: Sequence[Any],
    config: Mapping[str, Any] | None = None,
    known: Mapping[tuple[str, str], str] | None = None,
    given: Mapping[tuple[str, str], ToolMessage] | None = None,
) -> list[Any] | None:
    """``messages`` with every call that has no answer in its turn answered by
    :func:`open_call_answer`, right after the tool messages that follow its model message
    (before whatever came next: the new message); ``None`` when no call is open. A call
    whose tool started in this process in ``config``'s thread (a claim of
    :mod:`~langchain_opa_guard.guards.claims`) is answered as one that may have run.
    ``known``: outcomes recorded elsewhere (the middleware's kept history), by ``(model
    message id, call id)``: ``"ran"`` (answered as one that may have run) or ``"refused"``.
    ``given``: answers the caller holds for open calls, by the same key (the policy's
    denials of a turn that waited for approval): given as they are.

    Example:
        ```python
        messages = [HumanMessage("pay"), AIMessage("", tool_calls=[pay_call]),
                    HumanMessage("and now?")]
        repaired_messages(messages)
        # [HumanMessage("pay"), AIMessage(...), ToolMessage(status="error", ...),
        #  HumanMessage("and now?")]
        ```
    """
    repaired: list[Any] = []
    changed = False
    index, count = 0, len(messages)
    while index < count:
        message = messages[index]
        repaired.append(message)
        index += 1
        if not isinstance(message, AIMessage) or not (
            message.tool_calls or message.invalid_tool_calls
        ):
            continue
        answered = _turn_answers(messages, index)
        while index < count and isinstance(messages[index], ToolMessage):
            repaired.append(messages[index])
            index += 1
        open_calls = [c for c in _turn_calls(message) if c[0] not in answered]
        if not open_calls:
            continue
        started = started_calls(config, message.id, {i for i, _, _ in open_calls})
        recorded = known or {}
        for call_id, call, unreadable in open_calls:
            held = (given or {}).get((str(message.id), call_id))
            if isinstance(held, ToolMessage) and held.tool_call_id == call_id:
                repaired.append(held)
                continue
            outcome = recorded.get((str(message.id), call_id))
            repaired.append(
                open_call_answer(
                    call,
                    unreadable=unreadable,
                    started=call_id in started or outcome == "ran",
                    refused=outcome == "refused",
                )
            )
        changed = True
    return repaired if changed else None


def answer_open_calls(state: Any) -> dict[str, Any] | None:
    """A LangGraph node that answers the calls earlier turns left open, before the model
    is called with them.

    A turn cut off between its decision and its tools (a ``recursion_limit`` reached there,
    a stream closed while the guard decides, an edit written with ``update_state`` after
    the guard, an approval question left open) and then followed by a new message instead
    of a resume keeps its calls without an answer: LangGraph drops the pending tools task,
    and OpenAI-style APIs reject the next model request. This node answers each such call
    (``tool_calls``, and ``invalid_tool_calls`` that have an id) with a ``ToolMessage``
    (``status="error"``) saying it did not run, right after its turn's other answers, and
    writes the repaired conversation to ``messages`` as ``RemoveMessage(id=
    REMOVE_ALL_MESSAGES)`` followed by the whole list (the channel needs the
    ``add_messages`` reducer, as ``MessagesState`` has). It writes nothing when no call is
    open. ``input.history`` shows the answered calls as denied, and nothing runs them
    afterwards.

    It rewrites the whole channel, so it must be the only node that writes ``messages`` in
    its step (alone after ``START``, as below): a message another node writes in the same
    step may be removed with the rest. Put it between ``START`` and the node that calls
    the model: a resume
    (``invoke(None, config)``, ``Command(resume=...)``) does not pass through ``START``, so
    calls that legitimately wait (for their tools, for a reviewer) are never answered by
    it. As a ``pre_model_hook`` (``create_react_agent``) it runs before every model call,
    where a call without an answer is just as fatal. ``OPAGuardMiddleware`` does the same
    by itself in ``before_agent``.

    Example:
        ```python
        from langgraph.graph import END, START, MessagesState, StateGraph
        from langgraph.prebuilt import tools_condition

        from langchain_opa_guard import GuardedToolNode, PolicyGuardNode, answer_open_calls

        tool_node = GuardedToolNode(tools)
        builder = StateGraph(MessagesState)
        builder.add_node(answer_open_calls)
        builder.add_node("agent", call_model)
        builder.add_node("guard", PolicyGuardNode(engine, registry=tool_node))
        builder.add_node("tools", tool_node)
        builder.add_edge(START, "answer_open_calls")
        builder.add_edge("answer_open_calls", "agent")
        builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
        builder.add_edge("tools", "agent")
        ```
    """
    try:
        config: RunnableConfig | None = get_config()
    except RuntimeError:  # called outside a graph run
        config = None
    repaired = repaired_messages(state_messages(state), config)
    if repaired is None:
        return None
    return {"messages": [RemoveMessage(id=REMOVE_ALL_MESSAGES), *repaired]}
