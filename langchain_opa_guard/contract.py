"""The policy input contract (version 1): one document per proposed tool call.

```text
input.version   1
input.tool      {name, args, call_id, metadata}      the call being decided
input.user      the subject: runtime context "user", else config["configurable"]["user"]
input.context   {thread_id, path, node, agent, tools, step, tenant, request, directory}
                request: the text of the latest human message (the user's request for the
                current task), null when there is none; directory: the trusted directory
                from the runtime context or configurable "directory", null when none
input.turn      [{name, args, call_id, metadata}, ...]  every call of the same model turn
input.history   [{name, args, call_id, metadata, decision, reasons, status}, ...]
                the conversation's earlier tool calls, oldest first; decision is "allow",
                "deny" or "approval", null when unanswered; status is the ToolMessage's
                "success"/"error", or "pending"
```

Everything in the document is plain JSON: values that JSON cannot hold (objects, sets, NaN)
are converted, so a policy never sees a Python-specific value.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import hashlib
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolCall, ToolMessage

__all__ = [
    "CONTRACT_VERSION",
    "MCP_METADATA_KEY",
    "GUARD_ARTIFACT_KEY",
    "jsonable",
    "whole_jsonable",
    "arguments_problem",
    "canonical_json",
    "value_digest",
    "NestingTooDeep",
    "MAX_DEPTH",
    "DIGEST_DEPTH",
    "TOO_DEEP",
    "call_document",
    "metadata_for",
    "history_documents",
    "latest_request",
    "task_document",
    "subject_from",
    "where_document",
    "policy_input",
    "state_messages",
    "thread_id",
    "tool_label",
]

CONTRACT_VERSION = 1
"""Version of the input document; bumped on any incompatible change."""

GUARD_ARTIFACT_KEY = "opa_guard"
"""Key of the decision record on the guard's own ToolMessages.

The record is in the message's ``artifact`` (for people and logs) and in its
``response_metadata``, which is the copy the history trusts: a tool's output can become its
message's ``artifact`` (``response_format="content_and_artifact"``), so an artifact could be
written by whoever wrote a web page; ``response_metadata`` of a tool's answer is set by code,
never by a tool's output."""

MCP_METADATA_KEY = "mcp"
"""Key of ``{"server", "tool", "digest"}`` in an MCP tool's metadata (``input.tool.metadata``);
see :mod:`langchain_opa_guard.guards.mcp`."""

MAX_DEPTH = 64
"""How deeply values may nest in the policy input. Context values nested deeper are cut off
with ``"..."`` (:func:`jsonable`); a tool call's arguments never are: a call whose arguments
nest deeper is refused before the policy is asked (:func:`arguments_problem`)."""

DIGEST_DEPTH = 256
"""How deeply a value may nest for a digest of it (:func:`canonical_json`) to cover it whole."""

TOO_DEEP = (
    f"the tool call's arguments are nested more than {MAX_DEPTH} levels deep, "
    "deeper than the policy input can hold, so the policy cannot decide them"
)
"""Why a call whose arguments nest deeper than :data:`MAX_DEPTH` is refused."""

_MAX_DEPTH = MAX_DEPTH


class NestingTooDeep(ValueError):
    """A value nests deeper than a conversion that must keep it whole allows."""

MAX_REQUEST_CHARS = 16_384
"""``input.context.request`` is cut to this many characters (a longer request only ever
loses text, so a rule that trusts what the request names trusts less, never more)."""


# Values that are their own JSON (no lone surrogates in ASCII text, finite numbers are
# checked below): kept as they are without a call.
_SCALARS = frozenset({bool, int, type(None)})


def jsonable(value: Any, _depth: int = 0) -> Any:
    """Convert ``value`` into plain JSON data (dict, list, str, int, float, bool, None).

    Non-finite floats become strings (``"NaN"``, ``"Infinity"``), lone surrogates in
    strings ``"?"`` (UTF-8 cannot hold them), sets and tuples lists,
    dataclasses and pydantic models their fields, and anything else its ``str()``.
    Nesting deeper than 64 levels is cut off with ``"..."``: for context documents only;
    see :func:`whole_jsonable` for values that must never be cut.
    """
    # The common case first, by exact type: plain JSON from a model or a schema dump.
    kind = type(value)
    if kind is dict and _depth < _MAX_DEPTH:
        return {
            k if type(k) is str else str(k): v if type(v) in _SCALARS else jsonable(v, _depth + 1)
            for k, v in value.items()
        }
    if kind is list and _depth < _MAX_DEPTH:
        return [v if type(v) in _SCALARS else jsonable(v, _depth + 1) for v in value]
    if kind is str:
        try:
            value.encode()
        except UnicodeEncodeError:  # lone surrogates (JSON can carry "\ud800"): as "?"
            return value.encode("utf-8", "replace").decode()
        return value
    return _plain(value, _depth, _MAX_DEPTH, False)


def whole_jsonable(value: Any, limit: int = MAX_DEPTH) -> Any:
    """:func:`jsonable`, never cut: a value nested deeper than ``limit`` levels raises.

    Raises:
        NestingTooDeep: ``value`` nests deeper than ``limit`` (where :func:`jsonable`
            would put ``"..."``).

    Example:
        ```python
        whole_jsonable({"a": [1, {"b": 2}]})  # {"a": [1, {"b": 2}]}
        ```
    """
    return _plain(value, 0, limit, True)


def arguments_problem(args: Any) -> str | None:
    """Why a call's arguments cannot be given to the policy whole (:data:`TOO_DEEP`), or
    ``None`` when they can.

    Example:
        ```python
        arguments_problem({"body": {"text": "hi"}})  # None
        ```
    """
    return None if _fits(args, 0) else TOO_DEEP


_FLAT = frozenset({bool, int, type(None), str, float})


def _fits(value: Any, depth: int) -> bool:
    """Whether :func:`jsonable` keeps ``value`` (at ``depth``) whole: plain JSON walked
    without copying it, anything else converted as :func:`whole_jsonable` would."""
    kind = type(value)
    if kind is dict:
        return depth < _MAX_DEPTH and all(
            type(v) in _FLAT or _fits(v, depth + 1) for v in value.values()
        )
    if kind is list:
        return depth < _MAX_DEPTH and all(type(v) in _FLAT or _fits(v, depth + 1) for v in value)
    if kind in _FLAT:
        return True
    try:
        _plain(value, depth, _MAX_DEPTH, True)
    except NestingTooDeep:
        return False
    return True


def canonical_json(value: Any) -> bytes:
    """``value`` as the canonical JSON a digest is taken of: whole (never cut), sorted keys,
    no whitespace, UTF-8 (a lone surrogate, which UTF-8 cannot hold, kept as its own bytes),
    so two different values never give the same text.

    Raises:
        NestingTooDeep: ``value`` nests deeper than :data:`DIGEST_DEPTH` levels.

    Example:
        ```python
        canonical_json({"b": 1, "a": "é"})  # b'{"a":"\xc3\xa9","b":1}'
        ```
    """
    text = json.dumps(
        _plain(value, 0, DIGEST_DEPTH, True, True),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return text.encode("utf-8", "surrogatepass")


def value_digest(value: Any) -> str:
    """The SHA-256 (hex) of :func:`canonical_json` of ``value``. A value too deep to take
    whole gets a digest of its own that nothing else has (random, never equal to another
    digest, its own included), so a check that compares digests refuses it.

    Example:
        ```python
        value_digest(["search", {"query": "opa"}])  # '5d1c...'
        ```
    """
    try:
        return hashlib.sha256(canonical_json(value)).hexdigest()
    except (NestingTooDeep, RecursionError):
        return "unmatched:" + uuid.uuid4().hex


def _plain(value: Any, _depth: int, limit: int, whole: bool, raw: bool = False) -> Any:
    """:func:`jsonable` with its limit; ``whole``: raise past it instead of cutting;
    ``raw``: strings as they are (lone surrogates too)."""
    # The common case first, by exact type: plain JSON from a model or a schema dump.
    kind = type(value)
    if kind is dict and _depth < limit:
        return {
            k if type(k) is str else str(k): v
            if type(v) in _SCALARS
            else _plain(v, _depth + 1, limit, whole, raw)
            for k, v in value.items()
        }
    if kind is list and _depth < limit:
        return [
            v if type(v) in _SCALARS else _plain(v, _depth + 1, limit, whole, raw) for v in value
        ]
    if isinstance(value, str):
        if raw:
            return value
        try:
            value.encode()
        except UnicodeEncodeError:  # lone surrogates (JSON can carry "\ud800"): as "?"
            return value.encode("utf-8", "replace").decode()
        return value
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, decimal.Decimal):  # money: a number, as a policy compares it
        if not value.is_finite():
            return str(value)
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, enum.Enum):
        return _plain(value.value, _depth + 1, limit, whole, raw)
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if _depth >= limit:
        if whole:
            raise NestingTooDeep(f"nested more than {limit} levels deep")
        return "..."
    if isinstance(value, Mapping):
        return {str(k): _plain(v, _depth + 1, limit, whole, raw) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, _depth + 1, limit, whole, raw) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [_plain(v, _depth + 1, limit, whole, raw) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(
            {f.name: getattr(value, f.name) for f in dataclasses.fields(value)},
            _depth + 1,
            limit,
            whole,
            raw,
        )
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            dumped = dump(mode="json")
        except Exception:  # noqa: BLE001 - fall back to the text form
            pass
        else:
            return _plain(dumped, _depth + 1, limit, whole, raw)
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape" if raw else "replace")
    return str(value)


def call_document(call: ToolCall, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``{name, args, call_id, metadata}`` document of one tool call."""
    args = call.get("args")
    return {
        "name": call.get("name") if isinstance(call.get("name"), str) else str(call.get("name")),
        "args": jsonable(args) if args is not None else {},
        "call_id": jsonable(call.get("id")),
        "metadata": jsonable(metadata or {}),
    }


def metadata_for(
    metadata_of: Mapping[str, Mapping[str, Any]], name: Any
) -> Mapping[str, Any] | None:
    """The registered metadata of the tool called ``name`` (``None`` for odd names)."""
    return metadata_of.get(name) if isinstance(name, str) else None


def history_documents(
    messages: Sequence[BaseMessage],
    metadata_of: Mapping[str, Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """The earlier tool calls found in ``messages``, oldest first, with their outcomes.

    Each model turn is paired with the ``ToolMessage``s that follow it, up to the next
    ``AIMessage``: call ids are only unique within a turn (some servers reuse short ids
    across turns), so an answer never counts for a call of another turn.
    """
    history: list[dict[str, Any]] = []
    count = len(messages)
    for index, message in enumerate(messages):
        if not isinstance(message, AIMessage) or not message.tool_calls:
            continue
        answers: dict[str, ToolMessage] = {}
        for later in messages[index + 1 : count]:
            if isinstance(later, AIMessage):
                break
            if isinstance(later, ToolMessage):
                answers.setdefault(later.tool_call_id, later)
        for call in message.tool_calls:
            doc = call_document(call, metadata_for(metadata_of, call.get("name")))
            call_id = call.get("id")
            answer = answers.get(call_id) if isinstance(call_id, str) else None
            record = _guard_record(answer)
            if answer is None:
                doc.update(decision=None, reasons=[], status="pending")
            elif record is not None:
                doc.update(
                    decision=record.get("verdict", "deny"),
                    reasons=list(record.get("reasons", ())),
                    status=answer.status,
                )
            else:
                doc.update(decision="allow", reasons=[], status=answer.status)
            history.append(doc)
    return history


def _guard_record(message: ToolMessage | None) -> Mapping[str, Any] | None:
    if message is None:
        return None
    metadata = message.response_metadata
    if isinstance(metadata, Mapping):
        record = metadata.get(GUARD_ARTIFACT_KEY)
        if isinstance(record, Mapping):
            return record
    return None


def subject_from(context: Any, config: Mapping[str, Any] | None, key: str = "user") -> Any:
    """Find ``key`` in LangGraph's runtime context, else in ``config["configurable"]``."""
    if context is not None:
        if isinstance(context, Mapping):
            if key in context:
                return context[key]
        elif hasattr(context, key):
            return getattr(context, key)
    configurable = (config or {}).get("configurable") or {}
    return configurable.get(key)


def thread_id(config: Mapping[str, Any]) -> str | None:
    """The thread (conversation) id of a run, if it has one."""
    thread = (config.get("configurable") or {}).get("thread_id")
    return str(thread) if thread is not None else None


def state_messages(state: Any, key: str = "messages") -> list[Any]:
    """The message list of a graph state (a dict, an object, or the list itself)."""
    if isinstance(state, list):
        return state
    if isinstance(state, Mapping):
        return list(state.get(key) or [])
    return list(getattr(state, key, None) or [])


def tool_label(name: Any, metadata_of: Mapping[str, Any]) -> str:
    """A bounded metric label for a tool name the model proposed."""
    if not isinstance(name, str) or not name:
        return "_invalid"
    if metadata_of and name not in metadata_of:
        return "_unregistered"
    return name[:64]


def where_document(
    config: Mapping[str, Any],
    context: Any,
    *,
    agent: str | None = None,
    tools: str | None = None,
) -> dict[str, Any]:
    """``input.context``: where in the graph the call happens."""
    metadata = config.get("metadata") or {}
    configurable = config.get("configurable") or {}
    where: dict[str, Any] = jsonable(
        {
            "thread_id": configurable.get("thread_id"),
            "path": _graph_path(
                configurable.get("checkpoint_ns") or metadata.get("checkpoint_ns") or ""
            ),
            "node": metadata.get("langgraph_node"),
            "agent": agent,
            "tools": tools,
            "step": metadata.get("langgraph_step"),
            "tenant": subject_from(context, config, "tenant"),
        }
    )
    return where


def _graph_path(checkpoint_ns: str) -> list[str]:
    """``"outer:<task>|guard:<task>"`` -> ``["outer", "guard"]``: the nodes down to this one."""
    return [part.split(":", 1)[0] for part in checkpoint_ns.split("|") if part]


def policy_input(
    tool: dict[str, Any],
    user: Any,
    where: dict[str, Any],
    turn: list[dict[str, Any]],
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    """The input document of contract version 1."""
    return {
        "version": CONTRACT_VERSION,
        "tool": tool,
        "user": user,
        "context": where,
        "turn": turn,
        "history": history,
    }


def latest_request(messages: Sequence[Any]) -> str | None:
    """The text of the latest human message: the user's request for the current task.

    Text blocks of a multi-part message are joined with newlines; anything else in it
    (images, files) is left out. ``None`` when no human message is found.

    Example:
        ```python
        from langchain_core.messages import AIMessage, HumanMessage

        latest_request([HumanMessage("Pay the bill"), AIMessage("...")])  # "Pay the bill"
        ```
    """
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return _text_of(message.content)[:MAX_REQUEST_CHARS]
    return None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content if isinstance(content, list) else []:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, Mapping) and block.get("type") == "text":
            text = block.get("text")
            if isinstance(text, str):
                parts.append(text)
    return "\n".join(parts)


def task_document(
    messages: Sequence[Any],
    context: Any,
    config: Mapping[str, Any] | None,
    request: str | None = None,
) -> dict[str, Any]:
    """The task fields of ``input.context``: ``request`` and ``directory``.

    ``request`` is the user's request as the guard recorded it when the run began (the
    middleware does, so a summary a model writes later as a human message is never taken
    for it), else :func:`latest_request` of the conversation. ``directory`` is what the
    application put under ``"directory"`` in LangGraph's runtime context (else in
    ``config["configurable"]``): the destinations it trusts for this run, such as the
    user's contacts or existing payees. Policies may also keep a static directory in data.

    Example:
        ```python
        graph.invoke(
            {"messages": [("user", "Refund Bob")]},
            context={"user": user, "directory": ["bob@example.com", "@example.com"]},
        )
        # input.context.request == "Refund Bob"
        # input.context.directory == ["bob@example.com", "@example.com"]
        ```
    """
    return {
        "request": request if request is not None else latest_request(messages),
        "directory": jsonable(subject_from(context, config, "directory")),
    }
