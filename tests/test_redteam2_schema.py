"""Red team 2: what the schema step hands the policy is not what the tool runs with.

`prepared_call` validates the model's arguments with the tool's schema and then dumps them
with ``model_dump(mode="json")``; the dump is what the policy decides and what the tool gets,
and the tool validates it *again*. Two consequences:

1. JSON mode writes some types as strings. A ``Decimal`` amount (the type Python money code
   uses) reaches the policy as ``"5000"`` although the model sent the number 5000 and the
   tool runs ``Decimal("5000")``; the mediation policy's number rule (the one that exists so
   that a quoted "5000" is not let through) never fires.
2. Validators run once for the decision and twice for the run: a validator that decodes
   (percent-decoding a path, say) decodes the decided value once more in the tool, so
   "docs/%252e%252e/secret" is decided as "docs/%2e%2e/secret" and read as "docs/../secret".
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from urllib.parse import unquote

import pytest
from conftest import TEST_POLICIES
from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langchain_core.tools import BaseTool, StructuredTool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition
from mediation_kit import POLICY, USER
from pydantic import BaseModel, field_validator

from langchain_opa_guard import (
    EmbeddedPolicy,
    GuardedToolNode,
    OPAGuardMiddleware,
    PolicyEngine,
    PolicyGuardNode,
    guard_tools,
)
from langchain_opa_guard.testing import ScriptedChatModel, tool_call

SURFACES = ["guard_node", "middleware", "guard_tools"]


def run(engine: PolicyEngine, surface: str, tools: list[BaseTool], message: AIMessage) -> None:
    if surface == "guard_node":
        node = GuardedToolNode(tools)
        script = iter([message])
        builder = StateGraph(MessagesState)
        builder.add_node("agent", lambda s: {"messages": [next(script, AIMessage("done"))]})
        builder.add_node("guard", PolicyGuardNode(engine, registry=node))
        builder.add_node("tools", node)
        builder.add_edge(START, "agent")
        builder.add_conditional_edges("agent", tools_condition, {"tools": "guard", END: END})
        builder.add_edge("tools", "agent")
        graph = builder.compile()
    elif surface == "middleware":
        graph = create_agent(
            ScriptedChatModel(script=[message, "done"]),
            tools,
            middleware=[OPAGuardMiddleware(engine, registry=tools)],
        )
    else:
        graph = create_agent(
            ScriptedChatModel(script=[message, "done"]), guard_tools(tools, engine)
        )
    graph.invoke({"messages": [("user", "go")]}, context={"user": USER})


# -- 1. Decimal ------------------------------------------------------------------------------


class IntAmount(BaseModel):
    amount: int


class DecimalAmount(BaseModel):
    amount: Decimal


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("schema", [IntAmount, DecimalAmount], ids=["int (control)", "Decimal"])
def test_a_decimal_amount_is_decided_as_a_number(surface: str, schema: type[BaseModel]) -> None:
    """tests/policies/mediation.rego denies pay when `amount` is a number over 1000. The
    model sends the number 5000."""
    engine = EmbeddedPolicy(TEST_POLICIES, policy=POLICY)
    paid: list[Any] = []

    def pay(amount: Any) -> str:
        paid.append(amount)
        return "paid"

    tool = StructuredTool.from_function(
        pay, name="pay", description="Pay an amount.", args_schema=schema
    )
    run(engine, surface, [tool], AIMessage("", tool_calls=[tool_call("pay", {"amount": 5000})]))
    assert paid == [], f"paid {paid!r}: the policy saw a string"


# -- 2. A decoding validator, run twice -----------------------------------------------------

PATH_POLICY = """package paths

default decision := {"allow": false, "reasons": [{"code": "outside_docs", "message": "only docs/"}]}

decision := {"allow": true, "reasons": []} if {
	input.tool.name == "read_file"
	startswith(input.tool.args.path, "docs/")
	not contains(input.tool.args.path, "..")
}
"""


class ReadArgs(BaseModel):
    path: str

    @field_validator("path")
    @classmethod
    def decoded(cls, value: str) -> str:
        """Paths arrive URL-encoded from the document API's links."""
        return unquote(value)


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize(
    "path",
    ["docs/%2e%2e/secret.txt", "docs/%252e%252e/secret.txt"],
    ids=["encoded once (control)", "encoded twice"],
)
def test_a_decoding_validator_is_not_applied_twice(tmp_path: Any, surface: str, path: str) -> None:
    (tmp_path / "paths.rego").write_text(PATH_POLICY)
    engine = EmbeddedPolicy(tmp_path, policy="paths/decision")
    read: list[str] = []

    def read_file(path: str) -> str:
        read.append(path)
        return "contents"

    tool = StructuredTool.from_function(
        read_file, name="read_file", description="Read a file.", args_schema=ReadArgs
    )
    run(engine, surface, [tool], AIMessage("", tool_calls=[tool_call("read_file", {"path": path})]))
    assert not any(".." in p for p in read), f"read {read}"
