"""The last check of every wiring, where the tool itself starts: the tool the call was
allowed for, with the arguments allowed, whatever ran between the guard and it.

The guard hands an allowed call on to code it does not own: the middleware after
``OPAGuardMiddleware`` and then the ``ToolNode``, a ``ToolNode``'s execution, a wrapped tool's
own ``run``. So while it does, a LangChain configure hook adds :class:`ToolStartCheck` to
every callback manager made in that context; its ``on_tool_start`` fires in the tool's own
``run`` (after the run's other handlers in a sync run) before the tool reads its arguments,
and stops the run (:class:`UncheckedToolRun`, answered as a changed call) unless the tool
starting is the one the call names and its arguments are the ones allowed. A tool that the
checked tool runs in turn is that tool's business.

Example:
    ```python
    answer = run_checked(handler, request)  # request.tool: the granted call's CheckedTool
    ```
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool
from langchain_core.tracers.context import register_configure_hook
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command

from langchain_opa_guard.guards.denials import changed_call_message
from langchain_opa_guard.guards.injections import executed_injections
from langchain_opa_guard.guards.tool_results import without_guard_record
from langchain_opa_guard.guards.tools_payload import call_digest

__all__ = [
    "ToolStartCheck",
    "UncheckedToolRun",
    "arun_checked",
    "checking",
    "expected_digest",
    "run_checked",
]

_EXPECTED: ContextVar[ToolStartCheck | None] = ContextVar(
    "langchain_opa_guard_tool_start_check", default=None
)
# Inert while the variable is unset: only a guard handing an allowed call on sets it.
register_configure_hook(_EXPECTED, inheritable=True)

Allowed = tuple[Any, str]
"""An arguments object and the digest taken of it with its call's name (``call_digest``)."""

# LangChain's own filter of what a tool run reports (read by name, as the check reads what
# that filter leaves: the tool's run is what the check must agree with).
_LANGCHAIN_FILTER_MODULE = getattr(
    getattr(BaseTool, "_filter_injected_args", None), "__module__", ""
)


class UncheckedToolRun(Exception):
    """A tool started for a call other than the one allowed (it did not run)."""

    def __init__(self, call: Mapping[str, Any]) -> None:
        super().__init__(
            f'The tool call "{call.get("name")}" did not run: it was changed after the policy '
            "allowed it, and only the allowed call may run."
        )
        self.call = call


class ToolStartCheck(BaseCallbackHandler):
    """Stops a tool run that is not the allowed call (see the module's docstring).

    The first tool that starts under the check is the call's run: it must be the tool the
    call names, with the arguments allowed. Until that run ends, every other tool that
    starts under the check is taken for one the checked tool runs in turn, wherever it runs
    it (with its config or callbacks, in a thread, in a guard of its own); once it ended, the
    next start is checked again (a middleware that hands the call on twice).
    """

    raise_error = True
    run_inline = True

    def __init__(self, call: Mapping[str, Any], digest: str) -> None:
        self.call = call
        self.name = call.get("name")
        self.digest = digest
        self._lock = threading.Lock()
        self._running: UUID | None = None

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        run_id: UUID,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        with self._lock:
            if self._running is not None:
                return
            # ``inputs``: the arguments the tool is about to read, without the injected ones
            # (LangChain's own filter, which :func:`expected_digest` applies too).
            name = (serialized or {}).get("name")
            if name != self.name or not isinstance(inputs, dict):
                raise UncheckedToolRun(self.call)
            if call_digest(name, inputs) != self.digest:
                raise UncheckedToolRun(self.call)
            self._running = run_id

    def _ended(self, run_id: UUID) -> None:
        with self._lock:
            if self._running == run_id:
                self._running = None

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self._ended(run_id)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._ended(run_id)


def expected_digest(
    tool: BaseTool, name: Any, args: Mapping[str, Any], known: Allowed | None = None
) -> str:
    """The digest :class:`ToolStartCheck` expects for ``tool`` run with ``args`` as the call
    ``name``: the arguments as the tool's run reports them (without the injected ones).

    ``known``: the arguments object a digest was already taken of, and that digest (the
    grant's); it is the answer when ``args`` is that very object and the tool's run reports
    all of it, unchanged.
    """
    visible = _reported(tool, args)
    if visible is args and known is not None and known[0] is args:
        return known[1]
    return call_digest(name, visible if type(visible) is dict else dict(visible))


def _reported(tool: BaseTool, args: Mapping[str, Any]) -> Mapping[str, Any]:
    """``args`` as ``tool``'s run reports them to its callbacks (``inputs``): ``args``
    itself when LangChain's own filter leaves out none of its keys.

    LangChain's filter (``BaseTool._filter_injected_args``) drops keys by name only: those
    its ``FILTERED_ARGS`` names, those injected through the tool's function signature, and
    those its ``args_schema`` annotates as injected. It reads the schema's annotations on
    every call, so the keys it drops are kept here per tool, schema and set of keys. A tool
    class with a filter of its own (which may read the values: leave out ``None``, mask a
    secret) is asked with the arguments themselves, every time.
    """
    filtered = getattr(tool, "_filter_injected_args", None)
    if callable(filtered):
        own = getattr(type(tool), "_filter_injected_args", None)
        if getattr(own, "__module__", "") == _LANGCHAIN_FILTER_MODULE:
            hidden = _hidden_keys(tool, filtered, args)
        else:
            try:
                reported = filtered(dict(args))
            except Exception:  # noqa: BLE001 - as LangChain's run would fail it, not run it
                reported = None
            if isinstance(reported, dict):
                return reported
            hidden = None
    else:
        hidden = None
    if hidden is None:
        hidden = executed_injections(tool)
    if hidden and not hidden.isdisjoint(args):
        return {k: v for k, v in args.items() if k not in hidden}
    return args


_FILTERS: dict[int, tuple[weakref.ref[BaseTool], Any, dict[frozenset[str], frozenset[str]]]] = {}
_FILTERS_LOCK = threading.Lock()
_FILTERS_MAX = 4096


def _hidden_keys(
    tool: BaseTool, filtered: Callable[[dict[str, Any]], Any], args: Mapping[str, Any]
) -> frozenset[str] | None:
    """The keys of ``args`` that LangChain's own filter (``filtered``, ``tool``'s) leaves
    out, kept per tool, schema and set of keys (``None``: the filter failed)."""
    keys = frozenset(args)
    schema = getattr(tool, "args_schema", None)
    entry = _FILTERS.get(id(tool))
    if entry is not None and entry[0]() is tool and entry[1] is schema:
        known = entry[2].get(keys)
        if known is not None:
            return known
    try:
        visible = filtered(dict.fromkeys(keys))
    except Exception:  # noqa: BLE001 - a tool whose schema LangChain cannot read
        return None
    if not isinstance(visible, dict):
        return None
    hidden = keys.difference(visible)
    with _FILTERS_LOCK:
        entry = _FILTERS.get(id(tool))
        if entry is None or entry[0]() is not tool or entry[1] is not schema:
            if len(_FILTERS) >= _FILTERS_MAX:
                _FILTERS.clear()
            entry = (weakref.ref(tool), schema, {})
            _FILTERS[id(tool)] = entry
        if len(entry[2]) < _FILTERS_MAX:
            entry[2][keys] = hidden
    return hidden


def _check_for(request: ToolCallRequest, known: Allowed | None = None) -> ToolStartCheck | None:
    """The check for the call ``request`` hands on, as it is now, right before it runs (the
    middleware's ``CheckedTool`` holds the call it granted; ``known``: see
    :func:`expected_digest`)."""
    tool = request.tool
    if isinstance(tool, _checked_tool_class()):
        tool = tool.inner
    call = request.tool_call
    args = call.get("args")
    if tool is None or not isinstance(args, Mapping):
        return None
    return ToolStartCheck(call, expected_digest(tool, call.get("name"), args, known))


_CHECKED_TOOL: list[type[Any]] = []


def _checked_tool_class() -> type[Any]:
    """The middleware's ``CheckedTool`` (imported when first needed: its module imports
    this one)."""
    if not _CHECKED_TOOL:
        from langchain_opa_guard.guards.middleware_grants import CheckedTool

        _CHECKED_TOOL.append(CheckedTool)
    return _CHECKED_TOOL[0]


@contextmanager
def checking(check: ToolStartCheck | None) -> Iterator[None]:
    """While the block runs, the tool that starts in it is checked by ``check``."""
    if check is None:
        yield
        return
    token = _EXPECTED.set(check)
    try:
        yield
    finally:
        _EXPECTED.reset(token)


Result = ToolMessage | Command[Any]


def run_checked(
    handler: Callable[[ToolCallRequest], Result],
    request: ToolCallRequest,
    known: Allowed | None = None,
) -> Result:
    """``handler(request)`` with the tool that starts checked against the call ``request``
    hands on (a request without a tool is handed on as it is; ``known``: the digest the
    caller already took of the call's arguments object, see :func:`expected_digest`)."""
    try:
        with checking(_check_for(request, known)):
            # (What the tool's run answers is the tool's: a guard's record in it is not.)
            return without_guard_record(handler(request))
    except UncheckedToolRun as stopped:
        return changed_call_message(stopped.call)


async def arun_checked(
    handler: Callable[[ToolCallRequest], Awaitable[Result]],
    request: ToolCallRequest,
    known: Allowed | None = None,
) -> Result:
    """Async twin of :func:`run_checked`."""
    try:
        with checking(_check_for(request, known)):
            return without_guard_record(await handler(request))
    except UncheckedToolRun as stopped:
        return changed_call_message(stopped.call)
