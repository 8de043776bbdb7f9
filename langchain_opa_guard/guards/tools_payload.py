"""The guard node's hand-over to the tools node: the allowed calls, their grants, sealed.

The guard node hands a turn's allowed calls to :class:`~.execution.GuardedToolNode` in a
``Send`` payload (:func:`calls_payload`): each call with its *grant* (its id and a digest of
its name and arguments, :func:`call_digest`), the views the policy decided, the decided turn
they run once under, the conversation the tools read, and what the payload is bound to,
under the guard's seal. :func:`task_groups` says how many tasks the calls of a turn take.

Example:
    ```python
    sends = [
        Send("tools", calls_payload(group, state, "messages", earlier, ai_message, config))
        for group in task_groups(allowed, config, ai_message.id)
    ]
    ```
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, cast

from langchain_core.messages import AIMessage, ToolCall
from langchain_core.runnables import RunnableConfig
from langgraph.constants import CONFIG_KEY_CHECKPOINTER

from langchain_opa_guard.fast_json import loads, plain_dumps
from langchain_opa_guard.guards.claims import decided_turn
from langchain_opa_guard.guards.live_turn import fingerprint
from langchain_opa_guard.guards.seals import seal
from langchain_opa_guard.plain_json import value_digest

__all__ = ["PAYLOAD_TYPE", "call_digest", "calls_payload", "sealed_part", "task_groups"]

PAYLOAD_TYPE = "opa_guard.calls"
"""The ``__type`` of the guard node's ``Send`` payload to the tools node."""


def call_digest(name: Any, args: Any) -> str:
    """A digest of a call's tool name and arguments (canonical JSON, SHA-256; see
    :func:`~langchain_opa_guard.plain_json.value_digest`)."""
    return value_digest([name, args])


def task_groups(
    calls: Sequence[ToolCall],
    config: Mapping[str, Any] | None,
    message_id: Any,
    turn_id: str | None = None,
) -> list[list[ToolCall]]:
    """How the allowed calls of a turn go to the tools node, one ``Send`` per group.

    With a checkpointer, one task per call: a task LangGraph runs again (a resume after a
    tool's own ``interrupt()``, a retry policy, a run resumed in another process) runs that
    call again, never its neighbours, whose results are saved. Without one nothing can be
    paused or resumed, so the calls share one task, as in a plain ``ToolNode`` (LangGraph's
    work per task is most of what a task per call costs); a retry of that task runs only
    the calls that have not run, and a call that ran answers with its first result
    (:func:`~.claims.run_once`). A turn that cannot be claimed (a model message without an
    id) keeps a task per call: nothing would stop a retry from running its calls again.
    """
    configurable = (config or {}).get("configurable") or {}
    if (
        len(calls) < 2
        or configurable.get(CONFIG_KEY_CHECKPOINTER) is not None
        or (turn_id or decided_turn(message_id, config)) is None
    ):
        return [[call] for call in calls]
    return [list(calls)]


def calls_payload(
    calls: Sequence[ToolCall],
    state: Any,
    messages_key: str,
    messages: Sequence[Any],
    ai_message: AIMessage,
    config: RunnableConfig | None = None,
    *,
    views: Mapping[str, str] | None = None,
    stateless: bool = False,
    bound: Mapping[str, Any] | None = None,
    turn_id: str | None = None,
    before: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The guard node's ``Send`` payload: the allowed calls, their grants, the views the
    policy decided (call id -> ``view_digest``; a call without one does not run), the state
    (``stateless``: none, for a tools node that :func:`reads_no_state`), the turn as
    decided (``config``: the deciding task's, see :func:`decided_turn`), and what it is
    bound to (``bound``: the guard, the thread, when; see :func:`.seals.binding`) and the
    turn as it was decided (``before``: its :func:`.live_turn.fingerprint`, taken of
    ``messages`` and ``ai_message`` when not given)."""
    plain = [
        cast(
            ToolCall,
            {"name": c["name"], "args": dict(c["args"]), "id": c["id"], "type": "tool_call"},
        )
        for c in calls
    ]
    base = dict(state) if isinstance(state, Mapping) else {}
    # The model's message as the graph holds it closes the conversation the tools read (a
    # tool handing the conversation on writes back the whole turn); the tools node runs only
    # the calls granted here (see GuardedToolNode._parse_input).
    # (A copy: a tool that edits the state it reads in place changes neither the graph's
    # message nor the calls that run.)
    if stateless:
        base[messages_key] = list(messages)
    else:
        calls_copy = [{**c, "args": _copied(c.get("args"))} for c in ai_message.tool_calls]
        turn = ai_message.model_copy(update={"tool_calls": calls_copy})
        base[messages_key] = [*messages, turn]
    payload = {
        "__type": PAYLOAD_TYPE,
        "calls": plain,
        "grant": {c["id"]: call_digest(c["name"], c["args"]) for c in plain},
        "views": {c["id"]: (views or {}).get(str(c["id"])) for c in plain},
        "message_id": ai_message.id,
        "turn": turn_id or decided_turn(ai_message.id, config),
        "state": base,
        "stateless": stateless,
        "binding": dict(bound) if bound is not None else None,
        "before": dict(fingerprint(messages, ai_message) if before is None else before),
    }
    payload["seal"] = seal(PAYLOAD_TYPE, sealed_part(payload))
    return payload


def sealed_part(payload: Mapping[str, Any]) -> dict[str, Any]:
    """What a payload's seal covers: the grants (each call's name and arguments), the views,
    the turn and the message, and the turn's fingerprint (the calls themselves are checked
    against their grants). A payload sealed before fingerprints were (a run paused across an
    upgrade) has none, and its seal covers none."""
    keys = ("grant", "views", "message_id", "turn", "stateless", "binding")
    part = {key: payload.get(key) for key in keys}
    if "before" in payload:
        part["before"] = payload["before"]
    return part


def _copied(value: Any) -> Any:
    """A copy of a call's arguments (plain JSON through orjson, else a deep copy)."""
    text = plain_dumps(value)
    return loads(text) if text is not None else copy.deepcopy(value)
