"""Render finished spans as an indented tree, the way an auditor reads a trace.

Example:
    ```python
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from langchain_opa_guard import format_span_tree

    print(format_span_tree(exporter.get_finished_spans()))
    ```
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from opentelemetry.sdk.trace import ReadableSpan

from langchain_opa_guard.tracing import attributes as A

__all__ = ["format_span_tree"]

_SHOWN = (
    A.LANGGRAPH_STEP,
    A.GEN_AI_TOOL_CALL_ID,
    A.OPA_DECISION_VERDICT,
    A.OPA_ENGINE,
    A.OPA_DECISION_ID,
    A.ERROR_TYPE,
    A.GEN_AI_USAGE_INPUT_TOKENS,
    A.GEN_AI_USAGE_OUTPUT_TOKENS,
)


def format_span_tree(spans: Iterable[ReadableSpan], *, reasons: bool = True) -> str:
    """One line per span, children indented under parents, in start order."""
    spans = sorted(spans, key=lambda s: s.start_time or 0)
    ids = {s.context.span_id for s in spans if s.context is not None}
    children: dict[int | None, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        parent = span.parent.span_id if span.parent is not None else None
        children[parent if parent in ids else None].append(span)
    lines: list[str] = []

    def walk(nodes: Sequence[ReadableSpan], depth: int) -> None:
        for span in nodes:
            attrs = span.attributes or {}
            millis = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
            shown = " ".join(f"{k.split('.')[-1]}={attrs[k]!s}" for k in _SHOWN if k in attrs)
            lines.append(f"{'  ' * depth}{span.name}  [{millis:.2f} ms] {shown}".rstrip())
            if reasons:
                shown_reasons = attrs.get(A.OPA_DECISION_REASONS) or attrs.get(
                    A.OPA_DECISION_REASON_CODES
                )
                for reason in shown_reasons or ():  # type: ignore[union-attr]
                    lines.append(f"{'  ' * (depth + 1)}- {reason}")
            if span.context is not None:
                walk(children.get(span.context.span_id, []), depth + 1)

    walk(children.get(None, []), 0)
    return "\n".join(lines)
