"""Pins on the LangGraph behaviour the package relies on where no public API says it.

Each test names what it pins; the README's "Compatibility" note lists the same items. When
one of these fails after a LangGraph upgrade, the behaviour it describes has changed and the
matching part of the package needs a look.
"""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig, RunnableLambda
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.runtime import Runtime
from test_guard_node import INTERNAL, mixed_turn_model
from test_tracing import Recorder

from langchain_opa_guard import EmbeddedPolicy, PolicyGuardNode
from langchain_opa_guard.demo import build_agent, customer_db_tools


def test_pin_runnable_callable_injects_config_and_runtime() -> None:
    """``PolicyGuardNode`` subclasses ``langgraph._internal._runnable.RunnableCallable``
    (private): LangGraph hands a node the run's config and ``Runtime`` (the subject comes
    from ``runtime.context``) when its function asks for ``config`` and ``runtime``."""
    from langgraph._internal._runnable import RunnableCallable

    seen: dict[str, Any] = {}

    def node(state: MessagesState, config: RunnableConfig, runtime: Runtime[Any]) -> Any:
        seen["config"], seen["runtime"] = config, runtime
        return {}

    assert issubclass(PolicyGuardNode, RunnableCallable)
    builder = StateGraph(MessagesState)
    builder.add_node("guard", RunnableCallable(node, name="guard", trace=False))
    builder.add_edge(START, "guard")
    builder.add_edge("guard", END)
    builder.compile().invoke({"messages": []}, context={"user": INTERNAL})
    assert seen["config"]["metadata"]["langgraph_node"] == "guard"
    assert seen["runtime"].context == {"user": INTERNAL}


def test_pin_destinations_are_read_from_the_instance_call_annotation(
    embedded: EmbeddedPolicy,
) -> None:
    """The guard declares where it may go through the return annotation of an
    instance-level ``__call__`` (``Command[Literal[tools, agent]]``); LangGraph reads it
    when the node is added without ``destinations=`` and draws both edges."""
    graph = build_agent(embedded, mixed_turn_model(), customer_db_tools()[0])
    edges = {(e.source, e.target) for e in graph.get_graph().edges}
    assert {("guard", "tools"), ("guard", "agent")} <= edges
    renamed = PolicyGuardNode(embedded, tools="run_tools", agent="model")
    annotation = renamed.__call__.__annotations__["return"]
    assert "run_tools" in str(annotation) and "model" in str(annotation)


def test_pin_a_node_span_per_task_from_the_checkpoint_namespace() -> None:
    """``OTelCallbackHandler`` finds a graph node's own run through LangGraph's run
    metadata (``langgraph_node``, ``langgraph_checkpoint_ns``): one span per node, even
    when a runnable inside it, or a subgraph node, has the node's name."""
    inner = StateGraph(MessagesState)
    inner.add_node("step", RunnableLambda(lambda s: {}, name="step"))
    inner.add_edge(START, "step")
    inner.add_edge("step", END)
    subgraph = inner.compile(name="step")
    outer = StateGraph(MessagesState)
    outer.add_node("step", subgraph)
    outer.add_edge(START, "step")
    outer.add_edge("step", END)
    recorder = Recorder()
    outer.compile().invoke({"messages": []}, {"callbacks": [recorder.handler]})
    nodes = [s for s in recorder.spans if s.attributes.get("langgraph.node") == "step"]
    assert len(nodes) == 2, [s.name for s in recorder.spans]  # the outer node, the inner one
    outer_span, inner_span = sorted(nodes, key=lambda s: s.start_time or 0)
    assert recorder.parent_of(inner_span) is not None
    ancestors = []
    current = recorder.parent_of(inner_span)
    while current is not None:
        ancestors.append(current)
        current = recorder.parent_of(current)
    assert outer_span in ancestors
    recorder.provider.shutdown()


def test_pin_hidden_runs_get_no_span_of_their_own() -> None:
    """LangGraph tags its internal runnables ``langsmith:hidden`` (a LangSmith
    convention); the handler folds such runs into their parent's span."""
    hidden = RunnableLambda(lambda s: {}, name="internal_write").with_config(
        tags=["langsmith:hidden"]
    )
    builder = StateGraph(MessagesState)
    builder.add_node("work", lambda s, config: hidden.invoke(s, config))
    builder.add_edge(START, "work")
    builder.add_edge("work", END)
    recorder = Recorder()
    builder.compile().invoke({"messages": []}, {"callbacks": [recorder.handler]})
    names = [s.name for s in recorder.spans]
    assert "internal_write" not in names and "work" in names
    recorder.provider.shutdown()


def test_pin_the_guard_runs_a_whole_turn_under_one_node_span(embedded: EmbeddedPolicy) -> None:
    recorder = Recorder()
    tools, _ = customer_db_tools()
    graph = build_agent(embedded, mixed_turn_model(), tools)
    graph.invoke(
        {"messages": [("user", "go")]},
        {"callbacks": [recorder.handler]},
        context={"user": INTERNAL},
    )
    (guard,) = [s for s in recorder.spans if s.attributes.get("langgraph.node") == "guard"]
    decisions = recorder.by_name("run_guardrail ")
    assert len(decisions) == 3
    assert all(recorder.parent_of(d) == guard for d in decisions)
    recorder.provider.shutdown()
