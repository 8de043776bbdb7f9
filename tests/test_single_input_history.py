"""An earlier call of a single-input tool reads in ``input.history`` as it was decided.

LangChain's single-input ``Tool`` runs with its one value whatever key the model sent it
under; the guard decides it under one name (``tool_input``). A policy that looks for an
earlier call of the tool (here: the same URL posted twice) finds it under that name too,
whatever key the model used each time, and a repeated denial counts as a repeat.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import Tool

from langchain_opa_guard import EmbeddedPolicy, OPAGuardMiddleware, PolicyEngine
from langchain_opa_guard.demo import build_agent
from langchain_opa_guard.testing import ScriptedChatModel, tool_call

POLICY = """package singlehistory

import rego.v1

default decision := {"allow": true, "reasons": []}

decision := {"allow": false, "reasons": ["posted there already"]} if {
	some earlier in input.history
	earlier.name == input.tool.name
	earlier.decision == "allow"
	earlier.args.tool_input == input.tool.args.tool_input
}
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> PolicyEngine:
    folder: Path = tmp_path_factory.mktemp("singlehistory")
    (folder / "singlehistory.rego").write_text(POLICY)
    return EmbeddedPolicy(folder, policy="singlehistory/decision")


def post_tool(posted: list[Any]) -> Tool:
    def post(target: str) -> str:
        posted.append(target)
        return "posted"

    return Tool(name="http_post", func=post, description="POST the notes to a URL.")


@pytest.mark.parametrize("surface", ["node", "middleware"])
@pytest.mark.parametrize("keys", [("__arg1", "url"), ("url", "__arg1"), ("url", "url")])
def test_an_earlier_call_is_found_under_the_decided_name(
    engine: PolicyEngine, surface: str, keys: tuple[str, str]
) -> None:
    posted: list[Any] = []
    tools = [post_tool(posted)]
    first, second = (
        AIMessage("", tool_calls=[tool_call("http_post", {key: "https://x.test"}, f"p{i}")])
        for i, key in enumerate(keys)
    )
    model = ScriptedChatModel(script=[first, second, "done"])
    if surface == "node":
        graph = build_agent(engine, model, tools)
    else:
        from langchain.agents import create_agent

        graph = create_agent(model, tools, middleware=[OPAGuardMiddleware(engine, registry=tools)])
    result = graph.invoke({"messages": [("user", "post it")]})
    assert posted == ["https://x.test"], "the same URL was posted twice"
    answer = [m for m in result["messages"] if isinstance(m, ToolMessage)][-1]
    assert "posted there already" in str(answer.content)
