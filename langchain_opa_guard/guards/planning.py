"""Planning a model turn: each call as it would run, and its policy input.

:func:`plan_turn` finds the last model turn still to decide, prepares each call (its arguments
through its tool's schema), and builds each call's input from the contract
(:mod:`langchain_opa_guard.contract`): the call, the subject, where the guard sits, the task,
the turn and the history. A call without a usable id, under an id used twice, with arguments
that do not validate, or whose input ``build_input`` could not build gets its decision here,
before the policy is asked; repeats of an already denied call are counted.

Example:
    ```python
    turn = plan_turn(TurnDecider(engine, registry=tools), state, config, runtime)
    documents = [d for d in turn.inputs if d is not None] if turn else []
    ```
"""

from __future__ import annotations

import copy
import json
import logging
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from langchain_core.messages import AIMessage, AnyMessage, ToolCall, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.runtime import Runtime

from langchain_opa_guard.contract import (
    call_document,
    history_documents,
    jsonable,
    metadata_for,
    policy_input,
    state_messages,
    subject_from,
    task_document,
    where_document,
)
from langchain_opa_guard.decision import Decision, ErrorType
from langchain_opa_guard.engines.engine import PolicyEngine
from langchain_opa_guard.fast_json import loads, plain_dumps
from langchain_opa_guard.guards.decided_views import granted_view
from langchain_opa_guard.guards.denials import answer_id
from langchain_opa_guard.guards.kept_history import (
    merged_history,
    message_history,
    policy_history,
)
from langchain_opa_guard.guards.open_calls import open_call_ids
from langchain_opa_guard.guards.prepared_calls import prepared_call, single_input_name

__all__ = [
    "ALREADY_ANSWERED",
    "NO_ID",
    "UNREADABLE",
    "InputBuilder",
    "PlanSettings",
    "Turn",
    "deny_without_id",
    "plan_turn",
    "unreadable_calls",
]

logger = logging.getLogger(__name__)

InputBuilder = Callable[[dict[str, Any], ToolCall, Any], Mapping[str, Any]]
"""``(default_input, call, state) -> input``: extend or replace the policy input."""


class PlanSettings(Protocol):
    """What planning reads of a guard (a :class:`~langchain_opa_guard.guards.turns.TurnDecider`)."""

    engine: PolicyEngine
    tools_node: str
    agent_node: str
    messages_key: str
    user_key: str
    metadata_of: dict[str, Mapping[str, Any]]
    tools_by_name: dict[str, BaseTool]
    build_input: InputBuilder | None


@dataclass
class Turn:
    """One model turn under evaluation.

    Attributes:
        messages: The conversation, the turn's model message at ``ai_index``.
        ai_index: Where the model's message is in ``messages``.
        ai_message: The model's message.
        calls: Its calls, with the model's arguments (as they run), then its calls whose
            arguments did not parse (:func:`unreadable_calls`, denied before the policy).
        inputs: Each call's policy input, or ``None`` when it is decided without the policy.
        decisions: Each call's decision made before the policy is asked, else ``None``.
        repeats: How often each call (same tool, same arguments) was denied before.
        user: The subject, as the policy sees it.
        views: Each call's ``view_digest`` as decided (checked again where it runs).
    """

    messages: list[AnyMessage]
    ai_index: int
    ai_message: AIMessage
    calls: list[ToolCall]
    inputs: list[dict[str, Any] | None] = field(default_factory=list)
    decisions: list[Decision | None] = field(default_factory=list)
    repeats: list[int] = field(default_factory=list)
    user: Any = None
    views: list[str] = field(default_factory=list)


def plan_turn(
    settings: PlanSettings,
    state: Any,
    config: RunnableConfig,
    runtime: Runtime | None,
    kept: Sequence[Mapping[str, Any]] = (),
    request: str | None = None,
) -> Turn | None:
    """The last model turn, each call prepared and given its policy input.

    ``request`` is the user's request as recorded when the run began; without it, the
    latest human message of the conversation is taken.

    ``kept`` holds history entries recorded when earlier turns were decided
    (:mod:`~langchain_opa_guard.guards.kept_history`); the messages' calls are merged
    with them in the order the calls happened, so dropping messages (a middleware
    summarised them away) never drops or reorders what ran.
    """
    messages = state_messages(state, settings.messages_key)
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, AIMessage):
            break
        if not isinstance(message, ToolMessage):
            return None
    else:
        return None
    broken = unreadable_calls(message)
    if not message.tool_calls and not broken:
        return None
    # The calls whose arguments did not parse (invalid_tool_calls) come last: nothing runs
    # them, and each is denied here, so that every call id of the turn gets its one answer.
    first_broken = len(message.tool_calls)
    turn = Turn(list(messages), index, message, [*message.tool_calls, *broken])
    answered = {m.tool_call_id for m in messages[index + 1 :] if isinstance(m, ToolMessage)}

    context = getattr(runtime, "context", None) if runtime is not None else None
    user = subject_from(context, config, settings.user_key)
    where_doc = where_document(
        config, context, agent=settings.agent_node, tools=settings.tools_node
    )
    # Each call as its tool will read it (its arguments through the tool's own schema) is
    # what the policy decides on; the call runs with the model's arguments, and must
    # still read the same where it runs (its view's digest is kept).
    problems: list[str | None] = []
    views: list[ToolCall] = []
    for position, call in enumerate(turn.calls):
        tool = (
            settings.tools_by_name.get(call.get("name"))
            if isinstance(call.get("name"), str)
            else None
        )
        problem: str | None
        if position >= first_broken:
            view, problem = call, UNREADABLE
        else:
            view, problem = prepared_call(tool, call)
        views.append(view)
        problems.append(problem)
        turn.views.append(granted_view(tool, view, problem))
    where_doc.update(task_document(messages[:index], context, config, request))
    docs = [call_document(v, metadata_for(settings.metadata_of, v.get("name"))) for v in views]
    if kept:
        # The calls still in the messages laid over the kept ones by where each came
        # from (never by call id, which the model may reuse), in the order they ran.
        current = message_history(messages[:index], settings.metadata_of)
        history = policy_history(merged_history(kept, current), settings.metadata_of)
    else:
        history = history_documents(messages[:index], settings.metadata_of)
    history = _single_inputs_as_decided(history, settings.tools_by_name)
    if any(entry.get("status") == "pending" for entry in history) and (
        unanswered := open_call_ids(messages[:index])
    ):
        logger.warning(
            "the model was called with %d call(s) of earlier turns unanswered (%s), which "
            "OpenAI-style APIs reject: a turn cut off before its tools and followed by a new "
            "message; put answer_open_calls between START and the agent node",
            len(unanswered),
            ", ".join(unanswered[:5]),
        )
    user_doc = jsonable(user)
    turn.user = user_doc
    denied_before: dict[str, int] = {}
    for entry in history:
        # (A call answered because the conversation went on reads as undecided, not denied.)
        if entry.get("decision") == "deny":
            key = _call_key(entry.get("name"), _as_read(entry, settings.tools_by_name))
            denied_before[key] = denied_before.get(key, 0) + 1
    turn.repeats = (
        [denied_before.get(_call_key(d["name"], d["args"]), 0) for d in docs]
        if denied_before
        else [0] * len(docs)
    )
    # The id each call's answer would carry: one answer per id.
    keys = [answer_id(call) for call in turn.calls]
    seen = Counter(keys)
    first_seen: set[str] = set()
    for call, doc, problem, key in zip(turn.calls, docs, problems, keys, strict=True):
        if key in answered or key in first_seen:
            # Answered already, or a second call under an id the first one answers:
            # one answer per id, and nothing of a duplicated id runs.
            turn.inputs.append(None)
            turn.decisions.append(ALREADY_ANSWERED)
            continue
        first_seen.add(key)
        problem = _invalid_call(call, seen) or problem
        if problem is not None:
            turn.inputs.append(None)
            turn.decisions.append(
                Decision.failure(ErrorType.INVALID_CALL, problem, policy=settings.engine.policy)
            )
            continue
        document = policy_input(doc, user_doc, where_doc, docs, history)
        if settings.build_input is not None:
            try:
                # Its own copy: the calls' documents share their context, user, turn and
                # history, and what one build_input call adds must not reach the others.
                document = dict(settings.build_input(_own_copy(document), call, state))
            except Exception:
                logger.exception("build_input raised; denying the call")
                turn.inputs.append(None)
                turn.decisions.append(
                    Decision.failure(
                        ErrorType.INPUT,
                        "the policy input could not be built",
                        policy=settings.engine.policy,
                    )
                )
                continue
        turn.inputs.append(document)
        turn.decisions.append(None)
    return turn


def _own_copy(document: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a policy input (plain JSON: through orjson where it can)."""
    text = plain_dumps(document)
    if text is not None:
        copied = loads(text)
        if isinstance(copied, dict):
            return copied
    return copy.deepcopy(document)


ALREADY_ANSWERED = Decision(False, ("already answered",))
"""The decision of a call already answered in the conversation (or a second call under an
id the first one answers): it gets no new answer and nothing of it runs."""


NO_ID = "the tool call has no id"
"""Why a call without a usable id is denied before the policy is asked."""

UNREADABLE = "the tool call's arguments are not valid JSON (the model's text did not parse)"
"""Why a call of the model's ``invalid_tool_calls`` is denied before the policy is asked."""


def unreadable_calls(message: AIMessage) -> list[ToolCall]:
    """The model's calls whose arguments did not parse (``invalid_tool_calls``: a streamed
    call cut short, text that is not JSON), as calls without arguments, for each to be
    answered under its id; those without an id of their own cannot be answered and are
    left out.

    Example:
        ```python
        message = AIMessage("", invalid_tool_calls=[invalid_tool_call(
            name="pay", args='{"amount": 5,,}', id="c1", error=None)])
        assert [c["id"] for c in unreadable_calls(message)] == ["c1"]
        ```
    """
    calls = []
    for entry in getattr(message, "invalid_tool_calls", None) or ():
        call_id = entry.get("id") if isinstance(entry, Mapping) else None
        if not isinstance(call_id, str) or not call_id:
            continue
        name = entry.get("name")
        calls.append(
            ToolCall(
                name=name if isinstance(name, str) else "", args={}, id=call_id, type="tool_call"
            )
        )
    return calls


def deny_without_id(turn: Turn, positions: Collection[int], policy: str) -> None:
    """Deny the calls at ``positions`` as calls without an id, before the policy is asked.

    For a guard that gave those calls an id of its own, so that their one answer can name
    them (``OPAGuardMiddleware``): the call the model sent had none.

    Example:
        ```python
        deny_without_id(turn, {0}, engine.policy)
        ```
    """
    for index in positions:
        turn.inputs[index] = None
        turn.decisions[index] = Decision.failure(ErrorType.INVALID_CALL, NO_ID, policy=policy)


def _as_read(entry: Mapping[str, Any], tools_by_name: Mapping[str, Any]) -> Any:
    """An earlier call's arguments as its tool reads them (as the calls of a turn are
    decided), so the same call sent again counts as a repeat whatever form the model gave
    its values (an amount quoted as text, a key the schema drops)."""
    name, args = entry.get("name"), entry.get("args")
    tool = tools_by_name.get(name) if isinstance(name, str) else None
    if tool is None or not isinstance(name, str) or not isinstance(args, dict):
        return args
    call = ToolCall(name=name, args=args, id="", type="tool_call")
    view, problem = prepared_call(tool, call)
    return args if problem is not None else jsonable(view.get("args"))


def _call_key(name: Any, args: Any) -> str:
    return json.dumps([name, args], sort_keys=True, default=str)


def _invalid_call(call: ToolCall, seen: Mapping[str, int]) -> str | None:
    call_id = call.get("id")
    if not isinstance(call_id, str) or not call_id:
        return NO_ID
    if seen.get(call_id, 0) > 1:
        return "the tool call id is used by more than one call in this turn"
    if not isinstance(call.get("name"), str) or not call.get("name"):
        return "the tool call has no tool name"
    if not isinstance(call.get("args"), Mapping):
        return "the tool call's arguments are not an object"
    return None


def _single_inputs_as_decided(
    history: list[dict[str, Any]], tools_by_name: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """``history`` with each call of a single-input tool holding its one value under the
    name the tool's calls are decided under (``input.tool.args`` has it so: the model may
    send it under any key, such as ``__arg1``), so a policy that looks for an earlier call
    finds it under the same name."""
    found = history
    for index, entry in enumerate(history):
        name, args = entry.get("name"), entry.get("args")
        tool = tools_by_name.get(name) if isinstance(name, str) else None
        if tool is None or not isinstance(args, dict) or len(args) != 1:
            continue
        single = single_input_name(tool)
        if not single or single in args:
            continue
        if found is history:
            found = list(history)
        found[index] = {**entry, "args": {single: next(iter(args.values()))}}
    return found
