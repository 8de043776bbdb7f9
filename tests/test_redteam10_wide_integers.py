"""Red team 10: an integer past 64 bits reaches the regopy backend wrapped around.

``EmbeddedPolicy(backend="regopy")`` (also what ``backend="auto"`` falls back to when no
``opa`` binary is found, as on a plain ``pip install`` or ``make demo``) hands the policy
input to rego-cpp, which reads an integer past 64 bits modulo 2**64: ``2**64 + 5`` is
decided as ``5``, ``2**63`` as ``-2**63``. An integer field of the tool's schema takes any
size, and JSON carries it, so a model's ``amount=18446744073709551621`` passes a rule
``amount <= 100`` and the tool runs with the whole number. ``arguments_problem`` refuses
non-finite and inexact numbers; it lets these through. The WebAssembly backend reads them
whole (the control).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.tools import BaseTool, StructuredTool
from pydantic import BaseModel
from surface_kit import SURFACES, run_turn

from langchain_opa_guard import EmbeddedPolicy, PolicyEngine

POLICY = """package redteam10ints

import rego.v1

decision := {"allow": allow, "reasons": reasons}

allow if input.tool.args.amount <= 100

reasons := [] if allow
reasons := [{"code": "rt10", "message": "refunds above 100 need a manager"}] if not allow
"""

USER = {"id": "u-1", "role": "tester"}
WIDE = [2**64 + 5, 2**63, 2**65 + 50]


def _engine(folder: Path, backend: str) -> PolicyEngine:
    (folder / "ints.rego").write_text(POLICY)
    return EmbeddedPolicy(folder, policy="redteam10ints/decision", backend=backend)


@pytest.fixture(scope="module")
def regopy_engine(tmp_path_factory: pytest.TempPathFactory) -> PolicyEngine:
    return _engine(tmp_path_factory.mktemp("rt10regopy"), "regopy")


@pytest.fixture(scope="module")
def wasm_engine(tmp_path_factory: pytest.TempPathFactory) -> PolicyEngine:
    return _engine(tmp_path_factory.mktemp("rt10wasm"), "wasm")


class RefundArgs(BaseModel):
    order_id: str
    amount: int


def refund_tools(done: list[Any]) -> list[BaseTool]:
    def refund(order_id: str, amount: int) -> str:
        """Refund an order."""
        done.append(amount)
        return "refunded"

    return [StructuredTool.from_function(refund, args_schema=RefundArgs)]


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("amount", WIDE, ids=["2**64+5", "2**63", "2**65+50"])
def test_a_refund_past_64_bits_does_not_run_on_regopy(
    regopy_engine: PolicyEngine, surface: str, amount: int
) -> None:
    done: list[Any] = []
    answer, _ = run_turn(
        surface,
        regopy_engine,
        refund_tools(done),
        "refund",
        {"order_id": "o-1", "amount": amount},
        "invoke",
        context={"user": USER},
    )
    assert done == [], f"the policy allowed a refund of {amount} (it read another number)"
    assert answer.status == "error"


@pytest.mark.parametrize("amount", WIDE, ids=["2**64+5", "2**63", "2**65+50"])
def test_regopy_decides_the_number_it_is_given(regopy_engine: PolicyEngine, amount: int) -> None:
    decision = regopy_engine.decide(
        {"tool": {"name": "refund", "args": {"order_id": "o-1", "amount": amount}}, "user": USER}
    )
    assert not decision.allow, decision.result


@pytest.mark.parametrize("amount", WIDE, ids=["2**64+5", "2**63", "2**65+50"])
def test_control_wasm_denies_the_same_refund(wasm_engine: PolicyEngine, amount: int) -> None:
    done: list[Any] = []
    answer, _ = run_turn(
        "node",
        wasm_engine,
        refund_tools(done),
        "refund",
        {"order_id": "o-1", "amount": amount},
        "invoke",
        context={"user": USER},
    )
    assert done == [] and answer.status == "error"


def test_control_regopy_denies_a_plain_large_refund(regopy_engine: PolicyEngine) -> None:
    done: list[Any] = []
    answer, _ = run_turn(
        "node",
        regopy_engine,
        refund_tools(done),
        "refund",
        {"order_id": "o-1", "amount": 5000},
        "invoke",
        context={"user": USER},
    )
    assert done == [] and answer.status == "error"
