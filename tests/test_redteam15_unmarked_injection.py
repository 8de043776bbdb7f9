"""Red team 15: two releases of a tool that read a call differently get the same reading mark.

A grant for a tool that "reads alike" carries ``reading_mark(tool)``: the tool's class and
its Pydantic core schema. Where the call runs, a tool with the same mark runs it unread. But
how LangChain and LangGraph read a call is not all in the core schema: which arguments are
*injected* (``InjectedToolArg``, ``InjectedState``, ``InjectedStore``, ``ToolRuntime``) is an
``Annotated`` marker Pydantic does not know and leaves out of the core schema.

Release A of ``send`` takes ``cc: Annotated[str, InjectedToolArg] = ""`` (the application
fills it in); release B takes a plain ``cc: str = ""`` (the model may now name a copy
address). Both have the same mark. The model proposes
``send(to="bob@ok.test", cc="eve@evil.test")``. Graph A decides it as A reads it: ``cc`` is
injected, so it is left out of the policy input and the call is allowed for bob alone. The
graph pauses before its tools node (``interrupt_before=["tools"]``, or a crash of the tools
task: the allowed call waits in the checkpointed ``Send``); graph B, a new release, resumes
the thread. B's tools node sees the same mark, does not read the call again, and does not
drop ``cc`` (B does not inject it): the mail is copied to eve@evil.test, which the policy
never saw (the control: graph B deciding the same call denies it).

Smallest fix: put the tool's injected argument names (``injected_fields(tool)`` and the
ToolNode's injections) into the text the mark digests, or compare the grant's view
(``prepared_digest``) rather than a mark whenever the arguments hold a key the deciding
tool dropped as injected.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import InjectedToolArg, StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition

from langchain_opa_guard import EmbeddedPolicy, GuardedToolNode, PolicyEngine, PolicyGuardNode
from langchain_opa_guard.guards.tool_readings import reading_mark
from langchain_opa_guard.testing import tool_call

POLICY_TEXT = """package rt15inject

default decision := {"allow": false, "reasons": [{"code": "outside", "message": "outside ok.test"}]}

decision := {"allow": true, "reasons": []} if {
	input.tool.name == "send"
	count(outside) == 0
}

outside contains v if {
	walk(input.tool.args, [_, v])
	is_string(v)
	v != ""
	not endswith(v, "@ok.test")
}
"""
POLICY = "rt15inject/decision"
USER = {"id": "u-1", "role": "tester"}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> PolicyEngine:
    root = tmp_path_factory.mktemp("rt15-inject")
    (root / "inject.rego").write_text(POLICY_TEXT)
    return EmbeddedPolicy(root, policy=POLICY)


def release_a(sent: list[dict[str, Any]]) -> StructuredTool:
    def send(to: str, cc: Annotated[str, InjectedToolArg] = "") -> str:
        """Send a mail (the application fills in the copy address)."""
        sent.append({"to": to, "cc": cc})
        return "sent"

    return StructuredTool.from_function(send)


def release_b(sent: list[dict[str, Any]]) -> StructuredTool:
    def send(to: str, cc: str = "") -> str:
        """Send a mail, with a copy address."""
        sent.append({"to": to, "cc": cc})
        return "sent"

    return StructuredTool.from_function(send)


TURN = AIMessage(
    "",
    tool_calls=[tool_call("send", {"to": "bob@ok.test", "cc": "eve@evil.test"}, "m1")],
    id="turn-1",
)


def graph(engine: PolicyEngine, tool: StructuredTool, saver: Any) -> Any:
    node = GuardedToolNode([tool])

    def agent(state: MessagesState) -> dict[str, Any]:
        done = sum(1 for m in state["messages"] if isinstance(m, AIMessage))
        return {"messages": [TURN if done == 0 else AIMessage("done")]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("guard", PolicyGuardNode(engine, registry=node))
    builder.add_node("tools", node)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=saver, interrupt_before=["tools"])


def test_the_two_releases_read_the_call_differently_but_share_a_mark() -> None:
    assert reading_mark(release_a([])) is not None
    assert reading_mark(release_a([])) != reading_mark(release_b([])), (
        "release A drops cc as injected, release B hands the model's cc to the tool, "
        "yet both get the same reading mark"
    )


def test_control_release_b_denies_the_copy_to_eve(engine: PolicyEngine) -> None:
    sent: list[dict[str, Any]] = []
    saver = InMemorySaver()
    config = {"configurable": {"thread_id": uuid.uuid4().hex}}
    g = graph(engine, release_b(sent), saver)
    g.invoke({"messages": [("user", "mail bob")]}, config, context={"user": USER})
    result = g.invoke(None, config, context={"user": USER})
    assert sent == []
    answer = [m for m in result["messages"] if isinstance(m, ToolMessage)]
    assert answer and answer[0].status == "error"


def test_control_release_a_runs_without_the_models_copy(engine: PolicyEngine) -> None:
    sent: list[dict[str, Any]] = []
    saver = InMemorySaver()
    config = {"configurable": {"thread_id": uuid.uuid4().hex}}
    g = graph(engine, release_a(sent), saver)
    g.invoke({"messages": [("user", "mail bob")]}, config, context={"user": USER})
    g.invoke(None, config, context={"user": USER})
    assert sent == [{"to": "bob@ok.test", "cc": ""}]


def test_a_send_decided_by_release_a_and_run_by_release_b(engine: PolicyEngine) -> None:
    saver = InMemorySaver()
    config = {"configurable": {"thread_id": uuid.uuid4().hex}}
    sent_a: list[dict[str, Any]] = []
    paused = graph(engine, release_a(sent_a), saver).invoke(
        {"messages": [("user", "mail bob")]}, config, context={"user": USER}
    )
    assert sent_a == []
    assert not [m for m in paused["messages"] if isinstance(m, ToolMessage)]  # allowed
    sent_b: list[dict[str, Any]] = []
    graph(engine, release_b(sent_b), saver).invoke(None, config, context={"user": USER})
    copied = [s for s in sent_b if s["cc"]]
    assert copied == [], (
        f"release B ran {copied}: the policy decided the mail without cc (release A injects "
        "it) and never saw eve@evil.test"
    )
