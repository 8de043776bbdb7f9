"""A tool called with a string is decided under the argument the string runs as.

LangChain runs a string input (legacy text agents pass the model's "Action Input" so;
``tool.invoke("...")``) as the first field of the tool's schema, a ``pydantic.v1`` schema
included, and a tool without a schema gets it as the first argument of its ``_run``: the
argument the tool shows the model. The policy decides it under that name, so a rule on the
argument sees it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic.v1 as pydantic_v1
import pytest
from langchain_core.tools import BaseTool, StructuredTool

from langchain_opa_guard import EmbeddedPolicy, PolicyEngine, guard_tools

POLICY = """package stringinputs

import rego.v1

default decision := {"allow": false, "reasons": ["no amount the policy can read"]}

decision := {"allow": true, "reasons": []} if to_number(input.tool.args.amount) <= 1000

decision := {"allow": false, "reasons": ["amount over 1000"]} if {
	to_number(input.tool.args.amount) > 1000
}
"""


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> PolicyEngine:
    folder: Path = tmp_path_factory.mktemp("stringinputs")
    (folder / "stringinputs.rego").write_text(POLICY)
    return EmbeddedPolicy(folder, policy="stringinputs/decision")


class PayV1(pydantic_v1.BaseModel):
    amount: int = 0


def v1_tool(paid: list[Any]) -> BaseTool:
    def pay(amount: int = 0) -> str:
        """Pay an amount."""
        paid.append(amount)
        return f"paid {amount}"

    return StructuredTool.from_function(pay, name="pay", args_schema=PayV1)


def schemaless_tool(paid: list[Any]) -> BaseTool:
    class Pay(BaseTool):
        name: str = "pay"
        description: str = "Pay an amount."

        def _run(self, amount: str) -> str:
            paid.append(amount)
            return f"paid {amount}"

    return Pay()


@pytest.mark.parametrize("make", [v1_tool, schemaless_tool], ids=["pydantic.v1", "no schema"])
def test_a_string_over_the_limit_is_denied(engine: PolicyEngine, make: Any) -> None:
    paid: list[Any] = []
    tool = guard_tools([make(paid)], engine)[0]
    answer = tool.invoke("5000")
    assert paid == [], answer
    assert "over 1000" in str(answer)


@pytest.mark.parametrize("make", [v1_tool, schemaless_tool], ids=["pydantic.v1", "no schema"])
def test_a_string_within_the_limit_runs(engine: PolicyEngine, make: Any) -> None:
    paid: list[Any] = []
    tool = guard_tools([make(paid)], engine)[0]
    tool.invoke("50")
    assert [str(p) for p in paid] == ["50"]
