"""Red team 51: a tool's own injected-argument filter that reads the values
(``guards/tool_start_check.py``).

A tool class may override LangChain's ``_filter_injected_args``, which decides what a tool
run reports to its callbacks (``inputs``): leave out the arguments left unset, mask a secret
in what callbacks and traces see. That is legitimate LangChain. Commit f205510 asked such a
filter which keys it leaves out with ``dict.fromkeys(keys)`` (every value ``None``) and then
digested the call's own values, so the check where the tool starts refused these tools on
every wiring. Fixed: a filter of the tool's own is applied to the arguments themselves, as
the tool's run applies it; only LangChain's own filter, which reads keys alone, is answered
from what it left out before.

``tests/policies/mediation.rego``: ``read`` allowed.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import BaseTool, InjectedToolCallId, StructuredTool
from mediation_kit import (
    USER,
    WIRINGS,
    Ledger,
    Script,
    mediation_engine,  # noqa: F401 - the engine fixture
    mediation_tools,
    wired_graph,
)

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.guards.tool_start_check import expected_digest
from langchain_opa_guard.guards.tools_payload import call_digest
from langchain_opa_guard.testing import tool_call


class UnsetLeftOut(StructuredTool):
    """Callbacks and traces see only the arguments the model set (``None`` left out)."""

    def _filter_injected_args(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        shown = super()._filter_injected_args(tool_input)
        return {k: v for k, v in shown.items() if v is not None}


class TokenMasked(StructuredTool):
    """Callbacks and traces see ``token`` masked."""

    def _filter_injected_args(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        shown = super()._filter_injected_args(tool_input)
        return {k: ("***" if k == "token" else v) for k, v in shown.items()}


FILTERS = {"unset_left_out": UnsetLeftOut, "token_masked": TokenMasked}


def _read(ledger: Ledger, cls: type[StructuredTool]) -> BaseTool:
    def read(
        item: str,
        tool_call_id: Annotated[str, InjectedToolCallId],
        token: str | None = None,
    ) -> str:
        """Read an item (``token``: the reader's access token, if any)."""
        return ledger.record("read", tool_call_id, {"item": item, "token": token})

    return cls.from_function(read)


@pytest.mark.parametrize("flavour", sorted(FILTERS))
def test_the_expected_digest_is_what_the_tools_own_filter_reports(flavour: str) -> None:
    """What was done: ``expected_digest`` for ``read(item="i", token="t")``, a tool whose
    class filters injected arguments its own way, reading the values (``unset_left_out``:
    drops ``None`` values; ``token_masked``: masks ``token``).

    Observed: the digest of other arguments than the run reports (``unset_left_out``: of
    ``{}``, since every key looked ``None`` to the filter; ``token_masked``: of the
    unmasked arguments, since no key was left out), so the check stops every run of it.

    Expected: the digest of what the tool's run reports as its ``inputs``, that filter
    applied to the arguments."""
    tool = _read(Ledger(), FILTERS[flavour])
    args = {"item": "i", "token": "t"}
    reported = tool._filter_injected_args(dict(args))
    assert expected_digest(tool, "read", args) == call_digest("read", reported)
    assert expected_digest(tool, "read", args, (args, call_digest("read", args))) == (
        call_digest("read", reported)
    )


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("flavour", sorted(FILTERS))
@pytest.mark.parametrize("kind", [*WIRINGS, "guard_tools"])
def test_an_allowed_call_of_a_tool_with_its_own_filter_runs(
    engine: EmbeddedPolicy, kind: str, flavour: str, mode: str
) -> None:
    """False refusal. What was done: the model calls ``read(item="i", token="t")``, which
    the policy allows; ``read`` is a ``StructuredTool`` subclass whose
    ``_filter_injected_args`` reads values (see the module's docstring), on every wiring.

    Observed (f205510): ``read`` never runs; the call is answered "did not run: it was
    changed after the policy allowed it".

    Expected: ``read`` runs once with the allowed arguments (as before f205510)."""
    ledger = Ledger()
    tools = [
        _read(ledger, FILTERS[flavour]),
        *(t for t in mediation_tools(ledger) if t.name != "read"),
    ]
    call = tool_call("read", {"item": "i", "token": "t"}, "r1")
    graph = wired_graph(engine, kind, tools, Script([AIMessage("", tool_calls=[call]), "ok"]))
    value = {"messages": [("user", "read i")]}
    config = {"configurable": {"thread_id": f"rt51-filter-{kind}-{flavour}-{mode}"}}
    if mode == "async":
        out = asyncio.run(graph.ainvoke(value, config, context={"user": USER}))
    else:
        out = graph.invoke(value, config, context={"user": USER})
    answers = [m.content for m in out["messages"] if isinstance(m, ToolMessage)]
    assert ledger.runs == [("read", "r1", {"item": "i", "token": "t"})], answers
    assert answers == ["read ran"]
