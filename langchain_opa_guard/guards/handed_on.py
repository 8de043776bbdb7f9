"""Model turns whose calls a guard handed on (to the tools or to a human) and that are not
back yet, in this process.

A guard node that finds the turn it is asked to decide still out (a question about it
waits, or its calls were sent to the tools and have not all come back) is not looking at a
new turn: a ``Command(resume=..., goto="guard")`` runs a second guard task beside the
resumed one, and deciding the turn there again would ask the human and run its calls a
second time. :func:`still_out` tells the guard so. A replay from a checkpoint before the
decision (time travel) decides the turn, and runs it, again, as LangGraph re-runs any step,
and a task that decided the turn and runs again (a retry) is left to the run-once claims.
A tools task that raised keeps its calls out: LangGraph runs it again on the next
invocation.

Kept per process: a turn handed on in another process (a resume served elsewhere) is not
seen. Runs without a thread id are not tracked (there is nothing to resume).

Example:
    ```python
    form = turn_form(ai_message.tool_calls)
    hand_on(scope, config, ai_message.id, {form}, ["c1", "c2"], before=len(earlier))
    came_back(config, ai_message.id, ["c1"])  # where a tools task ends
    still_out(scope, other_task_config, ai_message.id, form, len(earlier))  # c2 is out
    ```
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from langchain_opa_guard.guards.claims import deciding_task, task_scope
from langchain_opa_guard.guards.tools_payload import call_digest

__all__ = ["came_back", "hand_on", "still_out", "turn_form"]

_LIMIT = 100_000
_lock = threading.Lock()
# (thread, graph, message id) -> {guard scope: (the turn's forms as decided, call ids out,
# the tasks that decided it, how many messages stood before it)}
_Entry = tuple[set[str], set[str], set[str], int]
_out: OrderedDict[tuple[str, str, str], dict[str, _Entry]] = OrderedDict()

# Set in the tasks of a replay (LangGraph's time travel, saved as a fork of the thread).
_REPLAY_KEY = "__pregel_replay_state"


def _reset_after_fork() -> None:
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


def _turn(config: Mapping[str, Any] | None, message_id: Any) -> tuple[str, str, str] | None:
    """``(thread, graph, message id)``, the graph being the task's namespace without the
    task itself (so every task of one graph shares it); ``None`` without a thread."""
    thread = ((config or {}).get("configurable") or {}).get("thread_id")
    namespace = task_scope(config)
    if thread is None or namespace is None or not isinstance(message_id, str) or not message_id:
        return None
    parts = [part for part in namespace.split("|") if part and not part.isdigit()]
    return str(thread), "|".join(parts[:-1]), message_id


def turn_form(calls: Sequence[Any]) -> str:
    """A model turn's calls, each by id, tool name and arguments: a turn edited since
    (``update_state`` with other arguments) is another turn."""
    return "|".join(
        f"{call.get('id')}:{call_digest(call.get('name'), call.get('args'))}"
        if isinstance(call, Mapping)
        else repr(call)
        for call in calls
    )


def hand_on(
    scope: str,
    config: Mapping[str, Any] | None,
    message_id: Any,
    forms: Collection[str],
    call_ids: Collection[Any],
    before: int,
) -> None:
    """The guard ``scope`` handed these calls of the model message ``message_id`` on from
    ``config``'s task (in place of any it handed on before); none: the turn is settled.
    ``forms``: the turn as decided (:func:`turn_form`; as the model wrote it, and as the
    guard rewrote it); ``before``: how many messages stood before it."""
    turn = _turn(config, message_id)
    if turn is None:
        return
    ids = {str(i) for i in call_ids}
    with _lock:
        if not ids:
            _take_back(turn, None, scope)
            return
        scopes = _out.get(turn)
        if scopes is None:
            scopes = _out[turn] = {}
        known = scopes.get(scope)
        tasks = {*(known[2] if known else ()), str(deciding_task(config))}
        scopes[scope] = (set(forms), ids, tasks, before)
        _out.move_to_end(turn)
        while len(_out) > _LIMIT:
            _out.popitem(last=False)


def came_back(config: Mapping[str, Any] | None, message_id: Any, call_ids: Collection[Any]) -> None:
    """A tools task of ``config``'s graph ended with these calls of ``message_id`` answered
    (run, or refused where they run)."""
    turn = _turn(config, message_id)
    if turn is None:
        return
    with _lock:
        _take_back(turn, {str(i) for i in call_ids})


def _take_back(turn: tuple[str, str, str], ids: set[str] | None, scope: str | None = None) -> None:
    """(Under the lock.) The calls ``ids`` of ``turn`` (``None``: all) are back, from
    ``scope``'s hand-over or every guard's; a hand-over with no call out is forgotten."""
    scopes = _out.get(turn)
    if scopes is None:
        return
    for name in [scope] if scope is not None else list(scopes):
        entry = scopes.get(name)
        if entry is None:
            continue
        if ids is None:
            entry[1].clear()
        else:
            entry[1].difference_update(ids)
        if not entry[1]:
            del scopes[name]
    if not scopes:
        del _out[turn]


def still_out(
    scope: str, config: Mapping[str, Any] | None, message_id: Any, form: str, before: int
) -> bool:
    """Calls of the model message ``message_id``, in the form ``form`` (:func:`turn_form`),
    that the guard ``scope`` handed on in this thread and graph have not all come back, and
    ``config``'s task is neither one that decided them (run again: a retry, a double
    resume, a replay on LangGraph 1.0, whose run-once claims answer for it) nor part of a
    replay (time travel decides the turn again, as LangGraph re-runs every step).

    ``before``: how many messages stand before the turn now. More than when it was handed
    on, and the message is a new one proposed later in the conversation (a model that
    reuses message ids, after the first was dropped): a turn of its own. As many or fewer
    (messages removed or trimmed before it) is the same turn."""
    turn = _turn(config, message_id)
    if turn is None:
        return False
    if ((config or {}).get("configurable") or {}).get(_REPLAY_KEY) is not None:
        return False
    with _lock:
        entry = _out.get(turn, {}).get(scope)
        return (
            entry is not None
            and form in entry[0]
            and str(deciding_task(config)) not in entry[2]
            and before <= entry[3]
        )
