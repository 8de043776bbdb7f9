"""Telemetry settings shared by the callback handler and the guard's decision spans.

Content (arguments, results, messages, policy inputs) is off by default. Opt-in capture goes
through a redaction hook and a size cap; a keyed hash of each policy input is recorded
instead, so an auditor can match a decision to its input without the trace holding it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from langchain_opa_guard.tracing import attributes as A
from langchain_opa_guard.version import __version__

__all__ = ["Telemetry", "Redactor", "CAPTURE_CONTENT_ENV", "HASH_KEY_ENV"]

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
"""The GenAI conventions' switch for content capture, read when ``capture_content=None``."""

HASH_KEY_ENV = "LANGCHAIN_OPA_GUARD_HASH_KEY"
"""Key for the input hashes; without it each process uses a random key."""

DEFAULT_MAX_ATTRIBUTE_BYTES = 2048
"""Tempo's default limit for one attribute value."""

Redactor = Callable[[str, Any], Any]
"""``(attribute_name, value) -> value``: applied to captured content before it is recorded."""

_PROCESS_KEY = os.urandom(32)

_DURATION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class Telemetry:
    """Tracer, meter and content rules for one handler or guard."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        *,
        capture_content: bool | None = None,
        redact: Redactor | None = None,
        max_attribute_bytes: int = DEFAULT_MAX_ATTRIBUTE_BYTES,
        hash_key: bytes | str | None = None,
    ) -> None:
        self.tracer = trace.get_tracer(
            A.INSTRUMENTATION_NAME, __version__, tracer_provider=tracer_provider
        )
        meter = metrics.get_meter(
            A.INSTRUMENTATION_NAME, __version__, meter_provider=meter_provider
        )
        if capture_content is None:
            capture_content = os.environ.get(CAPTURE_CONTENT_ENV, "").lower() in (
                "1",
                "true",
                "yes",
            )
        self.capture_content = capture_content
        self.redact = redact
        self.max_attribute_bytes = max_attribute_bytes
        key = hash_key if hash_key is not None else os.environ.get(HASH_KEY_ENV)
        self._hash_key = key.encode() if isinstance(key, str) else (key or _PROCESS_KEY)
        self.decisions = meter.create_counter(
            A.METRIC_DECISIONS, unit="{decision}", description="Policy decisions on tool calls"
        )
        self.decision_duration = meter.create_histogram(
            A.METRIC_DECISION_DURATION,
            unit="s",
            description="Time to reach a policy decision on one tool call",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.tool_duration = meter.create_histogram(
            A.METRIC_EXECUTE_TOOL_DURATION,
            unit="s",
            description="Duration of tool executions",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.operation_duration = meter.create_histogram(
            A.METRIC_CLIENT_OPERATION_DURATION,
            unit="s",
            description="Duration of GenAI client operations",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.token_usage = meter.create_histogram(
            A.METRIC_CLIENT_TOKEN_USAGE, unit="{token}", description="Tokens used per operation"
        )

    def records_spans(self) -> bool:
        """Whether :attr:`tracer` may record a span now: ``False`` only while it is OTel's
        global tracer and no provider is set (OTel's own no-op then answers every span), read
        each time (a provider set later counts at once)."""
        tracer = self.tracer
        if isinstance(tracer, trace.NoOpTracer):
            return False
        if isinstance(tracer, trace.ProxyTracer):
            return not isinstance(trace.get_tracer_provider(), _NO_OP_PROVIDERS)
        return True

    def content(self, name: str, value: Any) -> str | None:
        """``value`` as a capped, redacted JSON string when capture is on, else ``None``."""
        if not self.capture_content:
            return None
        if self.redact is not None:
            value = self.redact(name, value)
            if value is None:
                return None
        return self.cap(value if isinstance(value, str) else _to_json(value))

    def cap(self, text: str) -> str:
        """Cut ``text`` to the attribute size limit (in UTF-8 bytes)."""
        data = text.encode("utf-8", "replace")
        if len(data) <= self.max_attribute_bytes:
            return text
        marker = "...[truncated]"
        keep = max(self.max_attribute_bytes - len(marker), 0)
        return data[:keep].decode("utf-8", "ignore") + marker

    def input_hash(self, document: Mapping[str, Any]) -> str:
        """A keyed hash (HMAC-SHA256) of a policy input's canonical JSON."""
        data = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str).encode()
        return "hmac-sha256:" + hmac.new(self._hash_key, data, hashlib.sha256).hexdigest()


_NO_OP_PROVIDERS = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)


def _to_json(value: Any) -> str:
    try:
        return json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)
