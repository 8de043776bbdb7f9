"""``guard_tools``: every public entry point of a wrapped tool (``invoke`` with plain
arguments or a ``ToolCall``, ``batch``/``abatch``, ``run``/``arun``, ``ainvoke``, ``stream``,
``with_config``) decides the call before the tool's body runs; a denied ``pay`` (over 1000,
as a number or as the text the schema coerces) never runs, an allowed one runs once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tools import StructuredTool
from mediation_kit import USER, Ledger, mediation_engine  # noqa: F401

from langchain_opa_guard import guard_tools

CONFIG: Any = {"configurable": {"user": USER}}


def _pay(engine: Any) -> tuple[Ledger, Any]:
    ledger = Ledger()

    def pay(amount: int) -> str:
        """Pay an amount."""
        return ledger.record("pay", "-", {"amount": amount})

    (wrapped,) = guard_tools([StructuredTool.from_function(pay)], engine)
    return ledger, wrapped


def _call(amount: Any, call_id: str) -> dict[str, Any]:
    return {"name": "pay", "args": {"amount": amount}, "id": call_id, "type": "tool_call"}


@pytest.mark.parametrize("amount", [5000, "5000", 5000.0, "5_000"])
def test_every_entry_point_refuses_a_denied_payment(engine: Any, amount: Any) -> None:
    ledger, tool = _pay(engine)
    outs: list[Any] = [
        tool.invoke({"amount": amount}, CONFIG),
        tool.invoke(_call(amount, "c1"), CONFIG),
        *tool.batch([{"amount": amount}, _call(amount, "c2")], CONFIG),
        tool.run({"amount": amount}, config=CONFIG),
        tool.run({"amount": amount}, config=CONFIG, tool_call_id="c3"),
        tool.with_config(CONFIG).invoke({"amount": amount}),
        *tool.stream({"amount": amount}, CONFIG),
    ]

    async def _async() -> list[Any]:
        return [
            await tool.ainvoke({"amount": amount}, CONFIG),
            await tool.ainvoke(_call(amount, "c4"), CONFIG),
            *(await tool.abatch([{"amount": amount}, _call(amount, "c5")], CONFIG)),
            await tool.arun({"amount": amount}, config=CONFIG),
        ]

    outs += asyncio.run(_async())
    assert ledger.runs == []
    for out in outs:
        text = out.content if isinstance(out, ToolMessage) else out
        assert "amount over 1000" in str(text)


def test_an_allowed_payment_runs_once_per_entry(engine: Any) -> None:
    ledger, tool = _pay(engine)
    tool.invoke({"amount": "50"}, CONFIG)
    out = tool.invoke(_call(50, "c1"), CONFIG)
    assert isinstance(out, ToolMessage) and out.tool_call_id == "c1"
    tool.batch([{"amount": 7}, {"amount": 8}], CONFIG)
    # (``batch`` runs its inputs on threads: in either order.)
    assert ledger.runs[:2] == [("pay", "-", {"amount": 50})] * 2
    assert sorted(ledger.runs[2:], key=repr) == [("pay", "-", {"amount": a}) for a in (7, 8)]
