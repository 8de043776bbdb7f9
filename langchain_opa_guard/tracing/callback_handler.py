"""A LangChain callback handler that turns an agent run into one OpenTelemetry trace.

Every span is parented explicitly from LangChain's ``parent_run_id`` (lookup and insert under
one lock), and no callback ever attaches an OTel context, so ``invoke``, ``ainvoke``,
``stream``, ``astream`` and parallel tool calls each give one correctly nested trace.

Why one module: LangChain's callback interface is one class with a start, end and error
method per kind of run (chain, chat model, LLM, tool, retriever); they share one registry of
open runs under one lock, which is what keeps each trace nested.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

from langchain_opa_guard.tracing import attributes as A
from langchain_opa_guard.tracing.telemetry import DEFAULT_MAX_ATTRIBUTE_BYTES, Redactor, Telemetry

__all__ = ["OTelCallbackHandler", "telemetry_in"]

_HIDDEN_TAG = "langsmith:hidden"


@dataclass
class _Run:
    span: Span
    root: UUID
    owns_span: bool = True
    node: str | None = None
    kind: str = "chain"
    started: float = field(default_factory=time.perf_counter)
    labels: dict[str, Any] = field(default_factory=dict)
    namespace: str | None = None


class OTelCallbackHandler(BaseCallbackHandler):
    """Emit OpenTelemetry spans for every graph step, model call, tool run and retriever.

    Spans follow the OTel GenAI semantic conventions: ``invoke_agent {name}`` for the graph
    run, one span per graph node (``langgraph.node``, ``langgraph.step``), ``chat {model}``
    with token usage, ``execute_tool {tool}`` with ``gen_ai.tool.name`` and
    ``gen_ai.tool.call.id``, ``retrieval {name}``; ``gen_ai.conversation.id`` is the thread
    id. A :class:`~langchain_opa_guard.PolicyGuardNode` run under this handler nests one
    ``run_guardrail {tool}`` span per decision inside its node's span.

    Content (messages, arguments, results) is off by default; turn it on with
    ``capture_content=True`` or ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``.
    Captured values pass through ``redact`` and are cut to ``max_attribute_bytes``. Whole
    graph states are never recorded.

    Args:
        tracer_provider: Defaults to the global provider.
        meter_provider: Defaults to the global provider.
        capture_content: Record messages, arguments and results (``None``: read the env var).
        redact: ``(attribute, value) -> value`` applied to captured content.
        max_attribute_bytes: Size cap of one captured attribute (2,048: Tempo's default).
        max_runs: Most runs tracked at once; the oldest is ended past that.
        agent_name: Name of the root span (default: the graph's name).
        hash_key: Key of the policy-input hashes on decision spans.

    Example:
        ```python
        from langchain_opa_guard import OTelCallbackHandler, configure_tracing

        configure_tracing(service_name="support-agent")      # OTLP/HTTP, honours OTEL_* vars
        handler = OTelCallbackHandler()
        graph.invoke(inputs, config={"callbacks": [handler]}, context={"user": user})
        ```
    """

    run_inline = True
    raise_error = False

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        *,
        capture_content: bool | None = None,
        redact: Redactor | None = None,
        max_attribute_bytes: int = DEFAULT_MAX_ATTRIBUTE_BYTES,
        max_runs: int = 10_000,
        agent_name: str | None = None,
        hash_key: bytes | str | None = None,
    ) -> None:
        super().__init__()
        self.telemetry = Telemetry(
            tracer_provider,
            meter_provider,
            capture_content=capture_content,
            redact=redact,
            max_attribute_bytes=max_attribute_bytes,
            hash_key=hash_key,
        )
        self.max_runs = max_runs
        self.agent_name = agent_name
        self._runs: OrderedDict[UUID, _Run] = OrderedDict()
        self._lock = threading.Lock()

    # -- lookups used by the guard -----------------------------------------------------

    def context_for(self, run_id: UUID | None) -> otel_context.Context | None:
        """An OTel context whose current span is the span of ``run_id`` (``None`` if unknown)."""
        if run_id is None:
            return None
        with self._lock:
            run = self._runs.get(run_id)
        return trace.set_span_in_context(run.span) if run is not None else None

    @property
    def open_runs(self) -> int:
        """How many runs are being tracked (0 after every run has ended)."""
        with self._lock:
            return len(self._runs)

    # -- registry ----------------------------------------------------------------------

    def _start(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        name: str,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        run_kind: str = "chain",
        node: str | None = None,
        alias: bool = False,
        labels: Mapping[str, Any] | None = None,
        namespace: str | None = None,
    ) -> None:
        evicted: list[_Run] = []
        with self._lock:
            parent = self._runs.get(parent_run_id) if parent_run_id is not None else None
            if namespace is None and parent is not None:
                namespace = parent.namespace
            if alias and parent is not None:
                self._runs[run_id] = _Run(
                    parent.span,
                    parent.root,
                    owns_span=False,
                    node=parent.node,
                    kind=run_kind,
                    namespace=namespace,
                )
                return
            ctx = (
                trace.set_span_in_context(parent.span)
                if parent is not None
                else otel_context.get_current()
            )
            span = self.telemetry.tracer.start_span(
                name, context=ctx, kind=kind, attributes=attributes
            )
            root = parent.root if parent is not None else run_id
            self._runs[run_id] = _Run(
                span, root, node=node, kind=run_kind, labels=dict(labels or {}), namespace=namespace
            )
            while len(self._runs) > self.max_runs:
                evicted.append(self._runs.popitem(last=False)[1])
        for run in evicted:
            if run.owns_span:
                run.span.set_attribute("langchain.run.evicted", True)
                run.span.end()

    def _finish(self, run_id: UUID, error: BaseException | None = None) -> _Run | None:
        with self._lock:
            run = self._runs.pop(run_id, None)
            orphans: list[_Run] = []
            if run is not None and run.root == run_id:
                for other_id in [k for k, r in self._runs.items() if r.root == run_id]:
                    orphans.append(self._runs.pop(other_id))
        if run is None:
            return None
        for orphan in orphans:  # a stream abandoned mid-run: end what it left open
            if orphan.owns_span:
                orphan.span.set_attribute("langchain.run.abandoned", True)
                orphan.span.end()
        if run.owns_span and error is not None:
            _record_error(run.span, error)
        return run

    # -- chains and graph nodes ----------------------------------------------------------

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        metadata = metadata or {}
        tags = tags or []
        name = _run_name(serialized, kwargs)
        conversation = metadata.get("thread_id")
        if parent_run_id is None:
            agent = self.agent_name or name
            attributes: dict[str, Any] = {
                A.GEN_AI_OPERATION_NAME: A.OP_INVOKE_AGENT,
                A.GEN_AI_AGENT_NAME: agent,
                A.LANGCHAIN_RUN_ID: str(run_id),
            }
            if conversation is not None:
                attributes[A.GEN_AI_CONVERSATION_ID] = str(conversation)
            self._start(run_id, None, f"{A.OP_INVOKE_AGENT} {agent}", attributes=attributes)
            return
        namespace = metadata.get("langgraph_checkpoint_ns")
        namespace = namespace if isinstance(namespace, str) and namespace else None
        if _HIDDEN_TAG in tags:
            self._start(run_id, parent_run_id, name, alias=True, namespace=namespace)
            return
        with self._lock:
            parent = self._runs.get(parent_run_id)
        node = metadata.get("langgraph_node")
        # A graph node's own run is the first run of its task: LangGraph gives every task
        # a checkpoint namespace ("node:task-id"), and the runs inside it share it.
        starts_task = namespace is not None and (parent is None or parent.namespace != namespace)
        if node is not None and name == node and starts_task:
            attributes = {A.LANGGRAPH_NODE: str(node), A.LANGCHAIN_RUN_ID: str(run_id)}
            step = metadata.get("langgraph_step")
            if isinstance(step, int):
                attributes[A.LANGGRAPH_STEP] = step
            if conversation is not None:
                attributes[A.GEN_AI_CONVERSATION_ID] = str(conversation)
            self._start(
                run_id,
                parent_run_id,
                str(node),
                attributes=attributes,
                node=str(node),
                namespace=namespace,
            )
            return
        collapse = parent is not None and parent.node == name and parent.owns_span
        self._start(
            run_id,
            parent_run_id,
            name,
            attributes={A.LANGCHAIN_RUN_TYPE: "chain"},
            alias=collapse,
            node=parent.node if parent is not None else None,
            namespace=namespace,
        )

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._finish(run_id)
        if run is not None and run.owns_span:
            run.span.end()

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._finish(run_id, error)
        if run is not None and run.owns_span:
            run.span.end()

    # -- models --------------------------------------------------------------------------

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._model_start(A.OP_CHAT, serialized, messages, run_id, parent_run_id, metadata, kwargs)

    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._model_start(
            A.OP_TEXT_COMPLETION, serialized, prompts, run_id, parent_run_id, metadata, kwargs
        )

    def _model_start(
        self,
        operation: str,
        serialized: dict[str, Any] | None,
        content: Any,
        run_id: UUID,
        parent_run_id: UUID | None,
        metadata: dict[str, Any] | None,
        kwargs: dict[str, Any],
    ) -> None:
        metadata = metadata or {}
        params = kwargs.get("invocation_params") or {}
        model = str(
            metadata.get("ls_model_name")
            or params.get("model")
            or params.get("model_name")
            or _run_name(serialized, kwargs)
        )
        attributes: dict[str, Any] = {
            A.GEN_AI_OPERATION_NAME: operation,
            A.GEN_AI_REQUEST_MODEL: model,
        }
        provider = metadata.get("ls_provider")
        if provider:
            attributes[A.GEN_AI_PROVIDER_NAME] = str(provider)
        for key, attribute in (
            ("ls_temperature", A.GEN_AI_REQUEST_TEMPERATURE),
            ("ls_max_tokens", A.GEN_AI_REQUEST_MAX_TOKENS),
        ):
            value = metadata.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                attributes[attribute] = value
        if metadata.get("thread_id") is not None:
            attributes[A.GEN_AI_CONVERSATION_ID] = str(metadata["thread_id"])
        if self.telemetry.capture_content:
            captured = self.telemetry.content(A.GEN_AI_INPUT_MESSAGES, _messages_json(content))
            if captured is not None:
                attributes[A.GEN_AI_INPUT_MESSAGES] = captured
        labels = {A.GEN_AI_OPERATION_NAME: operation, A.GEN_AI_REQUEST_MODEL: model}
        if provider:
            labels[A.GEN_AI_PROVIDER_NAME] = str(provider)
        self._start(
            run_id,
            parent_run_id,
            f"{operation} {model}",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            run_kind="llm",
            labels=labels,
        )

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._finish(run_id)
        if run is None or not run.owns_span:
            return
        span = run.span
        usage = _usage(response)
        message = _first_message(response)
        response_metadata = getattr(message, "response_metadata", None) or {}
        model = response_metadata.get("model_name") or response_metadata.get("model")
        if model:
            span.set_attribute(A.GEN_AI_RESPONSE_MODEL, str(model))
        finish = response_metadata.get("finish_reason") or response_metadata.get("stop_reason")
        if finish:
            span.set_attribute(A.GEN_AI_RESPONSE_FINISH_REASONS, [str(finish)])
        for key, attribute, token_type in (
            ("input_tokens", A.GEN_AI_USAGE_INPUT_TOKENS, "input"),
            ("output_tokens", A.GEN_AI_USAGE_OUTPUT_TOKENS, "output"),
        ):
            value = usage.get(key)
            if isinstance(value, int):
                span.set_attribute(attribute, value)
                self.telemetry.token_usage.record(
                    value, {**run.labels, A.GEN_AI_TOKEN_TYPE: token_type}
                )
        if message is not None and self.telemetry.capture_content:
            captured = self.telemetry.content(A.GEN_AI_OUTPUT_MESSAGES, _messages_json([[message]]))
            if captured is not None:
                span.set_attribute(A.GEN_AI_OUTPUT_MESSAGES, captured)
        self.telemetry.operation_duration.record(time.perf_counter() - run.started, run.labels)
        span.end()

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._finish(run_id, error)
        if run is not None and run.owns_span:
            labels = {**run.labels, A.ERROR_TYPE: type(error).__name__}
            self.telemetry.operation_duration.record(time.perf_counter() - run.started, labels)
            run.span.end()

    # -- tools ---------------------------------------------------------------------------

    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = _run_name(serialized, kwargs)
        attributes: dict[str, Any] = {
            A.GEN_AI_OPERATION_NAME: A.OP_EXECUTE_TOOL,
            A.GEN_AI_TOOL_NAME: name,
            A.GEN_AI_TOOL_TYPE: "function",
        }
        call_id = kwargs.get("tool_call_id")
        if isinstance(call_id, str):
            attributes[A.GEN_AI_TOOL_CALL_ID] = call_id
        description = (serialized or {}).get("description")
        if isinstance(description, str) and description:
            attributes[A.GEN_AI_TOOL_DESCRIPTION] = self.telemetry.cap(description)
        thread = (metadata or {}).get("thread_id")
        if thread is not None:
            attributes[A.GEN_AI_CONVERSATION_ID] = str(thread)
        attributes.update(A.mcp_span_attributes(metadata))  # a tool's metadata joins the run's
        if self.telemetry.capture_content:
            captured = self.telemetry.content(
                A.GEN_AI_TOOL_CALL_ARGUMENTS, inputs if inputs is not None else input_str
            )
            if captured is not None:
                attributes[A.GEN_AI_TOOL_CALL_ARGUMENTS] = captured
        self._start(
            run_id,
            parent_run_id,
            f"{A.OP_EXECUTE_TOOL} {name}",
            attributes=attributes,
            run_kind="tool",
            labels={A.GEN_AI_TOOL_NAME: name},
        )

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._finish(run_id)
        if run is None or not run.owns_span:
            return
        labels = dict(run.labels)
        if getattr(output, "status", None) == "error":
            run.span.set_attribute(A.ERROR_TYPE, "tool_error")
            run.span.set_status(Status(StatusCode.ERROR))
            labels[A.ERROR_TYPE] = "tool_error"
        if self.telemetry.capture_content:
            captured = self.telemetry.content(
                A.GEN_AI_TOOL_CALL_RESULT, getattr(output, "content", output)
            )
            if captured is not None:
                run.span.set_attribute(A.GEN_AI_TOOL_CALL_RESULT, captured)
        self.telemetry.tool_duration.record(time.perf_counter() - run.started, labels)
        run.span.end()

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._finish(run_id, error)
        if run is not None and run.owns_span:
            labels = {**run.labels, A.ERROR_TYPE: _error_type(error)}
            self.telemetry.tool_duration.record(time.perf_counter() - run.started, labels)
            run.span.end()

    # -- retrievers ----------------------------------------------------------------------

    def on_retriever_start(
        self,
        serialized: dict[str, Any] | None,
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        name = _run_name(serialized, kwargs)
        attributes: dict[str, Any] = {
            A.GEN_AI_OPERATION_NAME: A.OP_RETRIEVAL,
            A.GEN_AI_DATA_SOURCE_ID: name,
        }
        captured = self.telemetry.content("gen_ai.retrieval.query", query)
        if captured is not None:
            attributes["gen_ai.retrieval.query"] = captured
        self._start(
            run_id,
            parent_run_id,
            f"{A.OP_RETRIEVAL} {name}",
            attributes=attributes,
            run_kind="retriever",
        )

    def on_retriever_end(self, documents: Sequence[Any], *, run_id: UUID, **kwargs: Any) -> None:
        run = self._finish(run_id)
        if run is not None and run.owns_span:
            run.span.set_attribute("gen_ai.retrieval.documents.count", len(documents))
            run.span.end()

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._finish(run_id, error)
        if run is not None and run.owns_span:
            run.span.end()


# -- helpers ----------------------------------------------------------------------------


def _run_name(serialized: Mapping[str, Any] | None, kwargs: Mapping[str, Any]) -> str:
    name = kwargs.get("name")
    if isinstance(name, str) and name:
        return name
    if serialized:
        if isinstance(serialized.get("name"), str):
            return str(serialized["name"])
        ids = serialized.get("id")
        if isinstance(ids, list) and ids:
            return str(ids[-1])
    return "unnamed"


def _is_control_flow(error: BaseException) -> bool:
    try:
        from langgraph.errors import GraphBubbleUp
    except ImportError:  # pragma: no cover - langgraph is a dependency
        return False
    return isinstance(error, GraphBubbleUp)


def _error_type(error: BaseException) -> str:
    return type(error).__qualname__


def _record_error(span: Span, error: BaseException) -> None:
    if _is_control_flow(error):
        from langgraph.errors import GraphInterrupt

        if isinstance(error, GraphInterrupt):
            span.set_attribute(A.LANGGRAPH_INTERRUPTED, True)
        return
    if isinstance(error, (GeneratorExit, asyncio.CancelledError)):
        span.set_attribute("langchain.run.cancelled", True)
        return
    span.set_attribute(A.ERROR_TYPE, _error_type(error))
    span.set_status(Status(StatusCode.ERROR, str(error)[:256]))


def _usage(response: LLMResult) -> dict[str, Any]:
    message = _first_message(response)
    usage = getattr(message, "usage_metadata", None)
    if isinstance(usage, Mapping):
        return dict(usage)
    token_usage = (response.llm_output or {}).get("token_usage") or {}
    return {
        "input_tokens": token_usage.get("prompt_tokens"),
        "output_tokens": token_usage.get("completion_tokens"),
    }


def _first_message(response: LLMResult) -> BaseMessage | None:
    try:
        return getattr(response.generations[0][0], "message", None)
    except IndexError:
        return None


def _messages_json(content: Any) -> Any:
    if isinstance(content, list) and content and isinstance(content[0], list):
        return [
            {"role": getattr(m, "type", "unknown"), "content": getattr(m, "content", None)}
            for batch in content
            for m in batch
        ]
    return content


def telemetry_in(config: Mapping[str, Any]) -> tuple[Telemetry, otel_context.Context | None] | None:
    """The telemetry of an :class:`OTelCallbackHandler` among a run's callbacks, with the
    context of the run's current span (so the caller's spans nest in it); ``None`` if the
    run has no such handler."""
    callbacks = config.get("callbacks")
    handlers = getattr(callbacks, "handlers", None)
    if handlers is None and isinstance(callbacks, list):
        handlers = callbacks
    for handler in handlers or ():
        if isinstance(handler, OTelCallbackHandler):
            return handler.telemetry, handler.context_for(getattr(callbacks, "parent_run_id", None))
    return None
