"""A granted call runs once per decided turn in this process.

A turn is *decided* by a LangGraph task: the guard node's, or the middleware's
``after_model``. :func:`decided_turn` names it by that task and the model's message, and
:func:`run_once` runs a granted call of it only if that call of that turn has not started in
this process yet, whatever arguments an answer gives it. Two resumes of one checkpoint (a
double click, two reviewers answering at once) run the same deciding task, so the second finds
the call claimed and answers it without running it; a replay from a checkpoint before the
decision runs a new deciding task (LangGraph saves the replay as a fork of the thread), so the
turn is decided, and its calls run, again.

Example:
    ```python
    turn = decided_turn(ai_message.id, config)  # in the task that decides the turn
    answer = run_once(request, execute, turn)  # where the tool runs
    ```
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from langchain_core.messages import ToolMessage
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command

from langchain_opa_guard.guards.denials import guard_answer

__all__ = [
    "CLAIMS",
    "arun_once",
    "claim_key",
    "decided_turn",
    "deciding_task",
    "forget_answers",
    "run_once",
    "started_calls",
    "task_scope",
]

logger = logging.getLogger(__name__)

Execute = Callable[[ToolCallRequest], "ToolMessage | Command[Any]"]
AsyncExecute = Callable[[ToolCallRequest], Awaitable["ToolMessage | Command[Any]"]]


class _Claims:
    """Calls that started running in this process, so one never starts twice.

    A call is claimed when it starts and released if it raises (a retry, or a tool that
    paused with ``interrupt()``, may run it again); a run that is cancelled (a node's
    ``timeout=``, a cancelled run) keeps its claim, marked abandoned: cancelling a task does
    not stop a sync tool's worker thread, nor undo what an async tool did before it was
    cancelled. Bounded: the oldest claims are dropped past ``limit``. Runs in other
    processes are not seen: serialize the runs of one thread across processes, as
    LangGraph's own server does.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._keys: OrderedDict[tuple[str, ...], object] = OrderedDict()
        self._limit = limit
        self._answers: OrderedDict[tuple[str, ...], dict[str, Any]] = OrderedDict()
        self._answers_limit = 256
        # Calls whose claim was released (their tool raised, so a retry may run them): they
        # started, and may have done their work before that (:meth:`started`). Rare, and
        # bounded like the claims.
        self._released: OrderedDict[tuple[str, ...], None] = OrderedDict()
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    def claim(self, key: tuple[str, ...], owner: str | None = None) -> bool:
        """Take ``key``; ``False`` if it is taken, unless by the same ``owner`` (a task
        LangGraph runs again takes its own claim again)."""
        with self._lock:
            if key in self._keys:
                return owner is not None and self._keys[key] == owner
            self._keys[key] = owner
            if len(self._keys) > self._limit:
                self._keys.popitem(last=False)
            return True

    def release(self, key: tuple[str, ...]) -> None:
        with self._lock:
            if self._keys.pop(key, _MISSING) is not _MISSING:
                self._released[key] = None
                if len(self._released) > self._limit:
                    self._released.popitem(last=False)

    def abandon(self, key: tuple[str, ...]) -> None:
        """Keep ``key`` claimed for good: its run was cancelled and may still be going, or
        may have done its work."""
        with self._lock:
            if key in self._keys:
                self._keys[key] = _ABANDONED

    def abandoned(self, key: tuple[str, ...]) -> bool:
        with self._lock:
            return self._keys.get(key) is _ABANDONED

    def keep(self, key: tuple[str, ...], answer: Any) -> None:
        """Keep the answer of a call that shares its task with others, for a retry of that
        task (:meth:`kept`); kept by turn (bounded: the oldest turns go first) and dropped
        once the task is done (:meth:`forget`)."""
        with self._lock:
            self._answers.setdefault(key[:-1], {})[key[-1]] = answer
            if len(self._answers) > self._answers_limit:
                self._answers.popitem(last=False)

    def kept(self, key: tuple[str, ...]) -> Any:
        with self._lock:
            return self._answers.get(key[:-1], {}).get(key[-1])

    def started(self, thread: str, message_id: str, call_ids: Collection[str]) -> set[str]:
        """Those of ``call_ids`` whose call of the model message ``message_id`` started in
        ``thread`` in this process (running, done, cancelled or failed after it started),
        whatever task decided the turn."""
        suffix = "/" + message_id
        # A scan of every claim: only the repair of a cut-off turn asks, which is rare.
        with self._lock:
            return {
                key[2]
                for keys in (self._keys, self._released)
                for key in keys
                if len(key) == 3
                and key[0] == thread
                and key[2] in call_ids
                and key[1].endswith(suffix)
            }

    def forget(self, turn: tuple[str, ...]) -> None:
        with self._lock:
            self._answers.pop(turn, None)


_ABANDONED = object()
_MISSING = object()

CLAIMS = _Claims()


def task_scope(config: Mapping[str, Any] | None) -> str | None:
    """The LangGraph task ``config`` belongs to: its checkpoint namespace, which ends with
    the task's id (LangGraph derives it from the checkpoint the task runs from, the node and
    the task's path). Two runs resuming one checkpoint (a double click) run the same task;
    a replay from an earlier checkpoint runs new ones, in the fork LangGraph saves for it."""
    if not isinstance(config, Mapping):
        return None
    configurable = config.get("configurable") or {}
    metadata = config.get("metadata") or {}
    scope = configurable.get("checkpoint_ns") or metadata.get("langgraph_checkpoint_ns")
    return scope if isinstance(scope, str) and scope else None


def deciding_task(config: Mapping[str, Any] | None) -> str | None:
    """The task that decides a turn, named so that LangGraph running a subgraph again from
    its ``START`` names it alike: in the outermost graph the task itself (its checkpoint
    namespace); in a subgraph, the tasks that run the subgraph (with their ids, LangGraph's
    retry attempt marks left out), then the deciding node's name and the subgraph's step.

    A parent that resumes a subgraph keeping no checkpoints (``checkpointer=False``), or
    retries the node holding one (``RetryPolicy``), runs the same outer task again, while
    every task inside the subgraph gets a new id: named by its own id, a turn the subgraph
    decided before would be a new turn, and its calls would run again. Two runs of one
    subgraph (two ``Send``s to it, two steps of the graph holding it) keep their own names.

    Example:
        ```python
        deciding_task({"configurable": {"checkpoint_ns": "guard:1f0e"}})  # "guard:1f0e"
        deciding_task({"configurable": {"checkpoint_ns": "billing:9a2c|1|guard:77d1"},
                       "metadata": {"langgraph_step": 2}})  # "billing:9a2c|guard@2"
        ```
    """
    namespace = task_scope(config)
    if namespace is None:
        return None
    parts = [part for part in namespace.split("|") if part and not part.isdigit()]
    if len(parts) < 2:
        return namespace
    step = ((config or {}).get("metadata") or {}).get("langgraph_step")
    return "|".join(parts[:-1]) + "|" + parts[-1].split(":", 1)[0] + f"@{step}"


def decided_turn(message_id: Any, config: Mapping[str, Any] | None) -> str | None:
    """The identity of a decided model turn: the task that decided it
    (:func:`deciding_task`) and the model's message. A call of one decided turn runs at
    most once in this process, whatever arguments an answer gives it (:func:`run_once`); a
    turn decided again (a replay from a checkpoint before the decision) is a turn of its
    own, whose calls run again.

    Example:
        ```python
        turn = decided_turn(ai_message.id, config)  # in the node that decides the turn
        run_once(request, execute, turn)  # where the tool runs
        ```
    """
    scope = deciding_task(config)
    if message_id is None or scope is None:
        return None  # outside a LangGraph task there is no step to run a second time
    return f"{scope}/{message_id}"


def claim_key(request: ToolCallRequest, turn: Any) -> tuple[str, str, str] | None:
    """``(thread, decided turn, call id)`` of a granted call: one decided turn's call runs
    once, whatever its arguments (an approval and an edit sent at once are both answers to
    one question, and the call runs for one of them)."""
    call_id = request.tool_call.get("id")
    if turn is None or not isinstance(call_id, str):
        return None
    return _key(getattr(request.runtime, "config", None), turn, call_id)


def _key(config: Mapping[str, Any] | None, turn: Any, call_id: str) -> tuple[str, str, str]:
    return (*_turn_key(config, turn), call_id)


def _turn_key(config: Mapping[str, Any] | None, turn: Any) -> tuple[str, str]:
    thread = ((config or {}).get("configurable") or {}).get("thread_id")
    return ("" if thread is None else str(thread), str(turn))


def started_calls(
    config: Mapping[str, Any] | None, message_id: Any, call_ids: Collection[str]
) -> set[str]:
    """Those of ``call_ids`` (calls of the model message ``message_id``) that started in
    this process in ``config``'s thread: a tool that started may have done its work even
    when its answer never reached the conversation (a sibling's tool raised, and a new
    message came in instead of a resume). Runs in other processes are not seen."""
    if not isinstance(message_id, str) or not message_id or not call_ids:
        return set()
    thread, _ = _turn_key(config, "")
    return CLAIMS.started(thread, message_id, call_ids)


def forget_answers(config: Mapping[str, Any] | None, turn: Any) -> None:
    """Drop the answers :func:`run_once` kept for the calls of ``turn``: their task is
    done, so it will not be retried."""
    if turn is not None:
        CLAIMS.forget(_turn_key(config, turn))


_ALREADY_RAN = (
    "it already started for this decision (a second run of the same decision, such as a "
    "concurrent resume, a retry or a replay from after the decision, does not repeat its "
    "side effects).",
    "the call already started for this decision",
    "already started for this decision",
)
_CANCELLED = (
    "its run for this decision was cancelled (a timeout, or a cancelled run) after it had "
    "started, and the tool may have completed. Check its effect before proposing it again.",
    "the call's earlier run was cancelled and may have completed",
    "was cancelled after it started for this decision",
)


def _not_again(request: ToolCallRequest, why: tuple[str, str, str]) -> ToolMessage:
    """The answer of a call that does not run again: ``why`` is (what the model reads, the
    short reason, what the log says)."""
    call = request.tool_call
    text, reason, logged = why
    logger.warning(
        "tool call %r (%s) %s; it does not run again", call.get("name"), call.get("id"), logged
    )
    return guard_answer(
        call, f'The tool call "{call.get("name")}" did not run again: {text}', reason
    )


def _taken(request: ToolCallRequest, key: tuple[str, ...]) -> ToolMessage | Command[Any]:
    kept: ToolMessage | Command[Any] | None = CLAIMS.kept(key)
    if kept is not None:
        return kept
    return _not_again(request, _CANCELLED if CLAIMS.abandoned(key) else _ALREADY_RAN)


def run_once(
    request: ToolCallRequest, execute: Execute, turn: Any, *, keep: bool = False
) -> ToolMessage | Command[Any]:
    """Run a granted call of ``turn`` (its :func:`decided_turn`) unless that call of that
    turn already started in this process. ``keep``: the call shares its task with others;
    its answer is kept, so a retry of the task answers it again without running it."""
    key = claim_key(request, turn)
    if key is not None and not CLAIMS.claim(key):
        return _taken(request, key)
    try:
        answer = execute(request)
    except BaseException:
        if key is not None:
            CLAIMS.release(key)
        raise
    if keep and key is not None:
        CLAIMS.keep(key, answer)
    return answer


async def arun_once(
    request: ToolCallRequest, execute: AsyncExecute, turn: Any, *, keep: bool = False
) -> ToolMessage | Command[Any]:
    """Async twin of :func:`run_once`."""
    key = claim_key(request, turn)
    if key is not None and not CLAIMS.claim(key):
        return _taken(request, key)
    try:
        answer = await execute(request)
    except asyncio.CancelledError:
        # Cancelling this task stops neither a sync tool's worker thread nor what an async
        # tool already did: the call stays claimed, so a retry or resume never runs it twice.
        if key is not None:
            CLAIMS.abandon(key)
        raise
    except BaseException:
        if key is not None:
            CLAIMS.release(key)
        raise
    if keep and key is not None:
        CLAIMS.keep(key, answer)
    return answer
