"""Red team 6: an infinite amount is decided as a string and paid as a number.

Every guard decides a call "as the tool will read it": the model's arguments go through the
tool's schema first (``prepared_call``), so "5000" for a numeric field is decided as 5000.
The view is then made plain JSON for the policy (``plain_json.jsonable``), which turns a
non-finite float into a *string*: ``"Infinity"``, ``"-Infinity"``, ``"NaN"``. The tool, though,
runs with the float.

A model reaches an infinite float easily: ``1e400`` is an ordinary JSON number that Python's
``json`` (and so every chat model integration) parses as ``inf``, and Pydantic's lax float
accepts the strings ``"inf"`` and ``"Infinity"``. The mediation policy
(tests/policies/mediation.rego) denies a payment whose amount is a number over 1000 and
allows any other amount (its comment: a quoted amount must not slip through, so the guard
decides the schema's number, not the model's string). For ``pay(amount: float)``:

Observed on main: ``{"amount": 1e400}`` and ``{"amount": "inf"}`` are decided as
``{"amount": "Infinity"}`` (a string: ``is_number`` is false), allowed, and the tool pays
``inf`` (guard node and middleware, both engines). A finite 5000.0 is denied.

What should happen: a call whose arguments, as the tool reads them, hold a number the
policy input cannot carry as a number is not decided on a stand-in string: it is refused
before the policy is asked (as arguments nested too deep are), so the payment does not run.
"""

from __future__ import annotations

import math
from typing import Any

import mediation_kit
import pytest
from conftest import TEST_POLICIES
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from mediation_kit import POLICY, USER, Ledger, Script, agent_graph, node_graph

from langchain_opa_guard import EmbeddedPolicy, OPAServer, PolicyEngine
from langchain_opa_guard.testing import tool_call


@pytest.fixture(params=["embedded", "opa"])
def engine(request: pytest.FixtureRequest) -> Any:
    if request.param == "embedded":
        yield EmbeddedPolicy(TEST_POLICIES, policy=POLICY)
        return
    client = OPAServer(request.getfixturevalue("opa_url"), policy=POLICY)
    yield client
    client.close()


def float_pay(ledger: Ledger) -> StructuredTool:
    def pay(amount: float) -> str:
        """Pay an amount."""
        return ledger.record("pay", "p1", {"amount": amount})

    return StructuredTool.from_function(pay)


def run(
    surface: str, engine: PolicyEngine, amount: Any, monkeypatch: pytest.MonkeyPatch
) -> tuple[Ledger, list[Any]]:
    ledger = Ledger()
    script = Script([AIMessage("", tool_calls=[tool_call("pay", {"amount": amount}, "p1")])])
    original = mediation_kit.mediation_tools
    # The kit's tools with a float amount for pay (the rest unchanged).
    monkeypatch.setattr(
        mediation_kit,
        "mediation_tools",
        lambda lg: [t for t in original(lg) if t.name != "pay"] + [float_pay(lg)],
    )
    maker = node_graph if surface == "node" else agent_graph
    graph = maker(engine, script, ledger, checkpointer=InMemorySaver())
    out = graph.invoke(
        {"messages": [("user", "pay the invoice")]},
        {"configurable": {"thread_id": f"pay-{surface}-{amount!r}"}},
        context={"user": USER},
    )
    return ledger, list(out["messages"])


@pytest.mark.parametrize("surface", ["node", "middleware"])
@pytest.mark.parametrize("amount", [1e400, "inf", "Infinity"], ids=["1e400", "inf", "Infinity"])
def test_an_infinite_amount_is_not_paid(
    engine: PolicyEngine, surface: str, amount: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, messages = run(surface, engine, amount, monkeypatch)
    paid = [args["amount"] for name, _, args in ledger.runs if name == "pay"]
    assert not any(math.isinf(a) for a in paid), f"paid {paid}: decided as the string 'Infinity'"
    answer = {m.tool_call_id: m for m in messages if isinstance(m, ToolMessage)}["p1"]
    assert answer.status == "error"


@pytest.mark.parametrize("surface", ["node", "middleware"])
def test_control_a_finite_large_amount_is_denied(
    engine: PolicyEngine, surface: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger, _ = run(surface, engine, 5000.0, monkeypatch)
    assert ledger.runs == []
