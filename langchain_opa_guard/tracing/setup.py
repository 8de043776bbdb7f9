"""``configure_tracing``: the one place the library installs OpenTelemetry providers.

Nothing else in the package touches global OTel state; this function does so only when
the application calls it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

__all__ = ["TracingSetup", "configure_tracing"]


@dataclass
class TracingSetup:
    """The providers ``configure_tracing`` made; ``shutdown()`` flushes and stops them."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def force_flush(self, timeout_millis: int = 30_000) -> None:
        self.tracer_provider.force_flush(timeout_millis)
        self.meter_provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def configure_tracing(
    service_name: str = "langchain-opa-guard",
    endpoint: str | None = None,
    *,
    protocol: str | None = None,
    headers: Mapping[str, str] | None = None,
    span_exporter: SpanExporter | None = None,
    span_processors: Sequence[SpanProcessor] = (),
    metric_readers: Sequence[MetricReader] | None = None,
    set_global: bool = True,
) -> TracingSetup:
    """Set up a TracerProvider and MeterProvider exporting over OTLP.

    The standard ``OTEL_*`` environment variables apply: ``OTEL_EXPORTER_OTLP_ENDPOINT``
    (and the per-signal variants), ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``http/protobuf`` by
    default, or ``grpc``), ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME``,
    ``OTEL_RESOURCE_ATTRIBUTES`` and the batch processor's ``OTEL_BSP_*``.

    Args:
        service_name: ``service.name``, unless ``OTEL_SERVICE_NAME`` is set.
        endpoint: OTLP base endpoint (``http://localhost:4318``); overrides the env vars.
        protocol: ``"http/protobuf"`` or ``"grpc"``; overrides the env vars.
        headers: Extra exporter headers.
        span_exporter: Export spans here instead of OTLP (for example an in-memory exporter).
        span_processors: More span processors to add.
        metric_readers: Metric readers (default: a periodic OTLP exporter).
        set_global: Install the providers as the global ones (the default).

    Example:
        ```python
        from langchain_opa_guard import OTelCallbackHandler, configure_tracing

        setup = configure_tracing("support-agent", endpoint="http://localhost:4318")
        graph.invoke(inputs, config={"callbacks": [OTelCallbackHandler()]})
        setup.shutdown()
        ```
    """
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service_name}
    resource = Resource.create(attributes)
    protocol = (
        protocol
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    tracer_provider = TracerProvider(resource=resource)
    exporter = span_exporter or _span_exporter(protocol, endpoint, headers)
    tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    for processor in span_processors:
        tracer_provider.add_span_processor(processor)
    if metric_readers is None:
        metric_readers = [
            PeriodicExportingMetricReader(_metric_exporter(protocol, endpoint, headers))
        ]
    meter_provider = MeterProvider(resource=resource, metric_readers=list(metric_readers))
    if set_global:
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
    return TracingSetup(tracer_provider, meter_provider)


def _span_exporter(
    protocol: str, endpoint: str | None, headers: Mapping[str, str] | None
) -> SpanExporter:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

        return Grpc(endpoint=endpoint, headers=dict(headers) if headers else None)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http

    url = f"{endpoint.rstrip('/')}/v1/traces" if endpoint else None
    return Http(endpoint=url, headers=dict(headers) if headers else None)


def _metric_exporter(protocol: str, endpoint: str | None, headers: Mapping[str, str] | None):  # type: ignore[no-untyped-def]
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter as Grpc,
        )

        return Grpc(endpoint=endpoint, headers=dict(headers) if headers else None)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as Http

    url = f"{endpoint.rstrip('/')}/v1/metrics" if endpoint else None
    return Http(endpoint=url, headers=dict(headers) if headers else None)
