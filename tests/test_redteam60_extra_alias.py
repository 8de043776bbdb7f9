"""A schema with ``extra="allow"`` and an aliased field (``amount`` shown to the model as
``sum``): the model sends both the alias and the field's own name, which the schema keeps as
an extra. The policy must see the value the tool runs with under the name the model sees."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.tools import StructuredTool
from mediation_kit import USER, Ledger, mediation_engine  # noqa: F401
from pydantic import BaseModel, ConfigDict, Field

from langchain_opa_guard import guard_tools

CONFIG: Any = {"configurable": {"user": USER}}


class PayArgs(BaseModel):
    model_config = ConfigDict(extra="allow")
    amount: int = Field(alias="sum")


@pytest.mark.parametrize(
    "args", [{"sum": 5000, "amount": 50}, {"amount": 50, "sum": 5000}, {"sum": "5000", "amount": 1}]
)
def test_the_aliased_value_that_runs_is_decided(engine: Any, args: dict[str, Any]) -> None:
    ledger = Ledger()

    def pay(amount: int, **extra: Any) -> str:
        return ledger.record("pay", "-", {"amount": amount, **extra})

    tool = StructuredTool.from_function(pay, name="pay", description="Pay.", args_schema=PayArgs)
    (wrapped,) = guard_tools([tool], engine)
    out = wrapped.invoke(dict(args), CONFIG)
    assert all(run[2]["amount"] <= 1000 for run in ledger.runs), (ledger.runs, out)
