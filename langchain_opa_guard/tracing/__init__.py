"""OpenTelemetry: spans and metrics for agent steps, policy decisions and tool runs.

:mod:`.callback_handler` turns LangChain's callbacks into spans, :mod:`.decision_spans` records
a decision's span and metric samples, :mod:`.telemetry` holds the tracer, meters and redaction,
:mod:`.attributes` the attribute names, :mod:`.setup` the opt-in provider setup, and
:mod:`.span_tree` prints a finished trace. Nothing here decides or guards anything.

Example:
    ```python
    from langchain_opa_guard import OTelCallbackHandler, configure_tracing

    setup = configure_tracing(service_name="my-agent")
    graph.invoke(inputs, config={"callbacks": [OTelCallbackHandler()]})
    ```
"""
