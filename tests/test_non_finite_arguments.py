"""A call whose arguments hold an infinite or NaN number is refused before the policy.

The policy input is plain JSON, which has no infinity or NaN: ``jsonable`` writes them as
strings (``"Infinity"``), so a policy comparing a number would see a string while the tool
runs with the number. A call holding one, as the model sent it (``1e400`` parses as
``inf``) or as the tool's schema reads it (``"inf"``, ``"nan"`` for a float field,
``"Infinity"`` for a ``Decimal`` that allows it), is refused with a reason that names the
problem, never the value: on every surface (guard node + ``GuardedToolNode``, the
``ToolCallGuard`` interceptor, the ``create_agent`` middleware, ``guard_tools``), sync and
async, embedded engine and OPA server. Elsewhere (history, context) the policy input still
writes them as strings.
"""

from __future__ import annotations

import decimal
import math
from decimal import Decimal
from typing import Annotated, Any

import pytest
from conftest import TEST_POLICIES
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import Field
from surface_kit import MODES, SURFACES, run_turn

from langchain_opa_guard import EmbeddedPolicy, OPAServer, PolicyEngine
from langchain_opa_guard.guards.prepared_calls import prepared_call
from langchain_opa_guard.plain_json import NON_FINITE, arguments_problem, jsonable
from langchain_opa_guard.testing import tool_call

POLICY = "mediation/decision"  # pay: a number over 1000 denied, anything else allowed
USER = {"id": "u-1", "role": "tester"}


@pytest.fixture(params=["embedded", "opa"])
def engine(request: pytest.FixtureRequest) -> Any:
    if request.param == "embedded":
        yield EmbeddedPolicy(TEST_POLICIES, policy=POLICY)
        return
    client = OPAServer(request.getfixturevalue("opa_url"), policy=POLICY)
    yield client
    client.close()


def pay_tools(paid: list[Any]) -> list[BaseTool]:
    def pay(amount: float, memo: dict[str, Any] | None = None) -> str:
        """Pay an amount."""
        paid.append(amount)
        return "paid"

    return [StructuredTool.from_function(pay)]


def decimal_pay_tools(paid: list[Any]) -> list[BaseTool]:
    def pay(amount: Annotated[Decimal, Field(allow_inf_nan=True)]) -> str:
        """Pay an amount (a Decimal that may be infinite)."""
        paid.append(amount)
        return "paid"

    return [StructuredTool.from_function(pay)]


def assert_refused(answer: Any) -> None:
    assert answer.status == "error"
    content = str(answer.content)
    assert "not finite" in content, content
    for value in ("1e400", "Infinity", "'inf'", "'nan'", "-inf"):
        assert value not in content, (value, content)  # the problem, never the value
    assert answer.response_metadata["opa_guard"]["error"] == "invalid_call"


AMOUNTS = {
    "1e400": 1e400,  # a JSON number Python parses as inf
    "minus-inf": float("-inf"),
    "nan": float("nan"),
    "inf-text": "inf",  # read as inf by the float field
    "Infinity-text": "Infinity",
    "nan-text": "nan",
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("amount", list(AMOUNTS.values()), ids=list(AMOUNTS))
def test_a_non_finite_amount_is_refused_before_the_policy(
    engine: PolicyEngine, surface: str, mode: str, amount: Any
) -> None:
    paid: list[Any] = []
    answer, _ = run_turn(
        surface, engine, pay_tools(paid), "pay", {"amount": amount}, mode, context={"user": USER}
    )
    assert paid == []
    assert_refused(answer)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
def test_a_non_finite_number_deep_in_free_form_arguments_is_refused(
    engine: PolicyEngine, surface: str, mode: str
) -> None:
    paid: list[Any] = []
    memo = {"lines": [{"qty": 1}, {"qty": 1e400}]}
    answer, _ = run_turn(
        surface,
        engine,
        pay_tools(paid),
        "pay",
        {"amount": 10, "memo": memo},
        mode,
        context={"user": USER},
    )
    assert paid == []
    assert_refused(answer)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
def test_an_infinite_decimal_is_refused(engine: PolicyEngine, surface: str, mode: str) -> None:
    paid: list[Any] = []
    answer, _ = run_turn(
        surface,
        engine,
        decimal_pay_tools(paid),
        "pay",
        {"amount": "Infinity"},
        mode,
        context={"user": USER},
    )
    assert paid == []
    assert_refused(answer)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES)
def test_control_finite_amounts_are_decided_by_the_policy(
    engine: PolicyEngine, surface: str, mode: str
) -> None:
    paid: list[Any] = []
    tools = pay_tools(paid)
    small, _ = run_turn(
        surface, engine, tools, "pay", {"amount": 12.5}, mode, context={"user": USER}
    )
    assert small.status == "success", small.content
    big, _ = run_turn(
        surface, engine, tools, "pay", {"amount": "5000"}, mode, context={"user": USER}
    )
    assert big.status == "error"
    assert big.response_metadata["opa_guard"].get("error") is None  # the policy's denial
    assert paid == [12.5]


def test_arguments_problem_names_non_finite_numbers_wherever_they_are() -> None:
    for value in (
        {"a": math.inf},
        {"a": [1, {"b": -math.inf}]},
        {"a": math.nan},
        {"a": Decimal("Infinity")},
        {"a": Decimal("NaN")},
        {"a": (1.0, math.inf)},  # a tuple, converted as jsonable would
        {"a": {1, math.inf}},
    ):
        assert arguments_problem(value) == NON_FINITE, value
    for value in ({"a": 1e308, "b": -0.0, "c": Decimal("1.5"), "d": [1, "inf", "NaN"]}, {}):
        assert arguments_problem(value) is None, value


def test_a_tool_without_a_schema_is_refused_on_the_models_arguments() -> None:
    # Refused whatever the tool: the model's own arguments hold the number.
    _, problem = prepared_call(None, tool_call("pay", {"amount": 1e400}, "c1"))
    assert problem == NON_FINITE
    json_schema_tool = StructuredTool(
        name="pay",
        description="Pay.",
        args_schema={"type": "object", "properties": {"amount": {"type": "number"}}},
        func=lambda **kw: "paid",
    )
    _, problem = prepared_call(json_schema_tool, tool_call("pay", {"amount": math.nan}, "c1"))
    assert problem == NON_FINITE


def test_elsewhere_the_policy_input_still_writes_them_as_strings() -> None:
    """History and context values keep their stand-in strings (only a call's arguments,
    which a tool runs with, are refused)."""
    assert jsonable({"x": math.inf, "y": -math.inf, "z": math.nan}) == {
        "x": "Infinity",
        "y": "-Infinity",
        "z": "NaN",
    }
    assert jsonable(Decimal("Infinity")) == "Infinity"
    with decimal.localcontext():
        assert jsonable([Decimal("NaN")]) == ["NaN"]
