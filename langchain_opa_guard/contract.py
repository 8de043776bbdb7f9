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
                "deny" or "approval", null when unanswered or its outcome is unknown (a
                call answer_open_calls answered: status "error"); status is the
                ToolMessage's "success"/"error", or "pending"
```

Everything in the document is plain JSON: values that JSON cannot hold (objects, sets, NaN)
are converted (:mod:`langchain_opa_guard.plain_json`), so a policy never sees a
Python-specific value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolCall, ToolMessage

from langchain_opa_guard.plain_json import jsonable

__all__ = [
    "CONTRACT_VERSION",
    "MCP_METADATA_KEY",
    "GUARD_ARTIFACT_KEY",
    "TOOL_WRITTEN_KEY",
    "GUARD_STATE_PREFIX",
    "jsonable",
    "call_document",
    "metadata_for",
    "history_documents",
    "latest_request",
    "task_document",
    "subject_from",
    "where_document",
    "written_by_tool",
    "proposes_calls",
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
written by whoever wrote a web page; a record in the ``response_metadata`` of what a tool's run
answers (its own ``ToolMessage``, the messages of its ``Command``) is taken out by every guard
(:func:`~langchain_opa_guard.guards.tool_results.without_guard_record`), so only a guard's
answer carries one."""

TOOL_WRITTEN_KEY = "opa_guard_tool_written"
"""Key, in a human message's ``response_metadata``, of the tool call whose result wrote it
(``{"tool": <name>, "call_id": <id>}``).

A tool may hand the model content a tool answer cannot carry (a page, an image) in a human
message of its result; every guard marks such a message where it applies the result, over
anything the tool set, and :func:`latest_request` never takes it for the user's request: its
text is the tool's (perhaps a web page's), not the user's."""

GUARD_STATE_PREFIX = "opa_guard_"
"""How the names of the guard's own state channels and hand-over keys begin (the
middleware's ``opa_guard_request``, ``opa_guard_history``, ``opa_guard_turn`` and
``opa_guard_grants``; the guard node's ``__opa_guard_approval__``): a tool's result that
writes one, or sends one on, is not applied."""

MCP_METADATA_KEY = "mcp"
"""Key of ``{"server", "tool", "digest"}`` in an MCP tool's metadata (``input.tool.metadata``);
see :mod:`langchain_opa_guard.guards.mcp`."""

MAX_REQUEST_CHARS = 16_384
"""``input.context.request`` is cut to this many characters (a longer request only ever
loses text, so a rule that trusts what the request names trusts less, never more)."""


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
            if proposes_calls(later):  # the next turn (a note a tool wrote is not one)
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
    """The text of the latest human message: the user's request for the current task (a
    human message a tool's result wrote is not one: :data:`TOOL_WRITTEN_KEY`).

    Text blocks of a multi-part message are joined with newlines; anything else in it
    (images, files) is left out. ``None`` when no human message is found.

    Example:
        ```python
        from langchain_core.messages import AIMessage, HumanMessage

        latest_request([HumanMessage("Pay the bill"), AIMessage("...")])  # "Pay the bill"
        ```
    """
    for message in reversed(messages):
        if isinstance(message, HumanMessage) and not (
            written_by_tool(message) or _summary(message)
        ):
            return _text_of(message.content)[:MAX_REQUEST_CHARS]
    return None


def _summary(message: BaseMessage) -> bool:
    """Whether ``message`` is a summary of the conversation that LangChain's
    ``SummarizationMiddleware`` wrote in the user's place (``lc_source``), which may repeat
    untrusted text: never the user's request."""
    marks = (message.additional_kwargs or {}, message.response_metadata or {})
    return any(isinstance(m, Mapping) and m.get("lc_source") == "summarization" for m in marks)


def proposes_calls(message: Any) -> bool:
    """Whether ``message`` is a model turn: a model message with calls (parsed or not) that
    no tool's result wrote. A turn's answers are the tool messages after it up to the next
    turn; a model message among them that a tool wrote (a note, with or without calls it
    answers itself: :data:`TOOL_WRITTEN_KEY`) ends nothing."""
    return (
        isinstance(message, AIMessage)
        and bool(message.tool_calls or message.invalid_tool_calls)
        and not written_by_tool(message)
    )


def written_by_tool(message: BaseMessage) -> bool:
    """Whether a guard marked ``message`` as written by a tool's result
    (:data:`TOOL_WRITTEN_KEY`)."""
    metadata = message.response_metadata
    return isinstance(metadata, Mapping) and bool(metadata.get(TOOL_WRITTEN_KEY))


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
