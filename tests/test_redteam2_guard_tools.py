"""Red team 2: guard_tools decides a string input as {"input": ...}, while the wrapped
tool runs it as its first field.

A tool called with a string (LangChain's single-input form: legacy text agents such as
AgentExecutor pass the model's "Action Input" as a string; `tool.invoke("...")`) is run
by LangChain as ``{<first field>: <string>}``, validated by the tool's schema. The
GuardedTool asks the policy about ``{"input": <string>}``, without the schema, so a rule
on the field (here: the mediation policy's amount limit) never sees the value.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import TEST_POLICIES
from langchain_core.tools import StructuredTool
from mediation_kit import POLICY, USER

from langchain_opa_guard import EmbeddedPolicy, PolicyEngine, guard_tools


@pytest.fixture
def engine() -> PolicyEngine:
    return EmbeddedPolicy(TEST_POLICIES, policy=POLICY)


def guarded_pay(engine: PolicyEngine, paid: list[int]) -> Any:
    def pay(amount: int) -> str:
        """Pay an amount."""
        paid.append(int(amount))  # the function gets the string itself
        return f"paid {amount}"

    return guard_tools([StructuredTool.from_function(pay)], engine)[0]


@pytest.mark.parametrize(
    "tool_input",
    [{"amount": 5000}, {"amount": "5000"}, "5000"],
    ids=["dict (control)", "dict, quoted (control)", "string"],
)
def test_a_string_input_is_decided_as_the_field_it_runs_as(
    engine: PolicyEngine, tool_input: Any
) -> None:
    paid: list[int] = []
    pay = guarded_pay(engine, paid)
    pay.invoke(tool_input, config={"configurable": {"user": USER}})
    assert paid == [], f"paid {paid} past the policy's 1000 limit"
