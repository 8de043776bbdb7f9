"""Red team 13: a tool the ``GuardedToolNode`` runs but the guard's registry lacks.

``PolicyGuardNode(engine, registry=[...])`` with a list that misses one of the tools node's
tools decides that tool's calls on the model's raw arguments (there is no tool to read them
with), and the ``GuardedToolNode`` runs them through the tool's schema, whose validator
percent-decodes ``path``: the policy sees ``%2E%2E%2Fsecrets`` (no ``../``), the tool reads
``../secrets``. The same call decided with the full registry is denied (the control).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langchain_core.tools import BaseTool, StructuredTool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition
from test_redteam12_rewrite_revalidated import POLICY, USER, read_tools

from langchain_opa_guard import EmbeddedPolicy, GuardedToolNode, PolicyEngine, PolicyGuardNode
from langchain_opa_guard.testing import tool_call


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> PolicyEngine:
    folder: Path = tmp_path_factory.mktemp("rt13registry")
    (folder / "redteam12rewrite.rego").write_text(POLICY)
    return EmbeddedPolicy(folder, policy="redteam12rewrite/decision")


def other() -> BaseTool:
    def list_files(folder: str) -> str:
        """List a folder."""
        return folder

    return StructuredTool.from_function(list_files)


def run(engine: PolicyEngine, done: list[Any], full_registry: bool) -> None:
    tools = [*read_tools(done), other()]
    turn = AIMessage(
        "", tool_calls=[tool_call("read_file", {"path": "%2E%2E%2Fsecrets", "limit": 5}, "c1")]
    )
    script = iter([turn])
    builder = StateGraph(MessagesState)
    builder.add_node("agent", lambda s: {"messages": [next(script, AIMessage("done"))]})
    node = GuardedToolNode(tools)
    registry: Any = node if full_registry else [tools[1]]
    builder.add_node("guard", PolicyGuardNode(engine, registry=registry))
    builder.add_node("tools", node)
    builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
    builder.add_edge(START, "agent")
    builder.add_edge("tools", "agent")
    config = {"configurable": {"thread_id": uuid.uuid4().hex}}
    builder.compile().invoke({"messages": [("user", "go")]}, config, context={"user": USER})


def test_control_the_full_registry_denies_the_parent_path(engine: PolicyEngine) -> None:
    done: list[Any] = []
    run(engine, done, full_registry=True)
    assert done == []


def test_a_tool_missing_from_the_registry_is_not_decided_raw(engine: PolicyEngine) -> None:
    done: list[Any] = []
    run(engine, done, full_registry=False)
    assert "../secrets" not in done, (
        f"the policy saw path '%2E%2E%2Fsecrets' (the registry lacks read_file) and the "
        f"GuardedToolNode's tool read {done}"
    )
