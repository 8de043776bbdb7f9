# ruff: noqa: E501
"""Red team 13: an approval resume runs a rewrite the policy no longer writes.

A turn holds ``search`` (allowed, and for an auditor widened by a rewrite to
``scope: "all"``) and a ``send`` that waits for a human. The ticket keeps the search *as
rewritten*. On resume the guard decides every call of the turn again (README: "every call of
the waiting turn is decided again") under the subject in force now. The user is no longer an
auditor: the policy now allows the search only as the model wrote it (``scope: "docs"``,
no rewrite), and denies ``scope: "all"`` outright for anyone else (the control). The recheck's
allow carries no ``args``, so ``settle_review`` keeps the call from the ticket, which still
holds the old rewrite: ``search(scope="all")`` runs for a user the policy denies it to.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from mediation_kit import Ledger, Script, agent_graph, node_graph
from opa_process import OPAProcess

from langchain_opa_guard import OPAServer
from langchain_opa_guard.testing import tool_call

POLICY = """package redteam13stale

import rego.v1

default decision := {"allow": false, "reasons": [{"code": "default_deny", "message": "no rule"}]}

auditor if input.user.role == "auditor"

# Auditors search every tenant: their searches are widened.
decision := {"allow": true, "reasons": [], "args": {"scope": "all", "limit": input.tool.args.limit}} if {
	input.tool.name == "search"
	auditor
}

# Everyone else searches as asked, never every tenant.
decision := {"allow": true, "reasons": []} if {
	input.tool.name == "search"
	not auditor
	input.tool.args.scope != "all"
}

decision := {"allow": false, "reasons": [{"code": "all_tenants", "message": "only auditors search all tenants"}]} if {
	input.tool.name == "search"
	not auditor
	input.tool.args.scope == "all"
}

decision := {"allow": false, "require_approval": true, "reasons": [{"code": "ask", "message": "a human must approve"}]} if {
	input.tool.name == "send"
}
"""

AUDITOR = {"id": "u-1", "role": "auditor"}
DEMOTED = {"id": "u-1", "role": "tester"}


@pytest.fixture(scope="module")
def opa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OPAProcess]:
    root = tmp_path_factory.mktemp("redteam13-stale")
    (root / "policy.rego").write_text(POLICY)
    with OPAProcess([root], log_path=root / "opa.log") as server:
        yield server


@pytest.fixture
def engine(opa: OPAProcess) -> Iterator[OPAServer]:
    client = OPAServer(opa.url, policy="redteam13stale/decision")
    yield client
    client.close()


def build(kind: str, engine: OPAServer, script: Script, ledger: Ledger) -> Any:
    maker = node_graph if kind == "node" else agent_graph
    return maker(engine, script, ledger, checkpointer=InMemorySaver())


def turn(*calls: Any) -> AIMessage:
    return AIMessage("", tool_calls=list(calls))


@pytest.mark.parametrize("kind", ["node", "middleware"])
def test_control_all_tenants_is_denied_to_a_non_auditor(engine: OPAServer, kind: str) -> None:
    ledger = Ledger()
    script = Script([turn(tool_call("search", {"scope": "all", "limit": 5}, "q1")), "ok"])
    graph = build(kind, engine, script, ledger)
    config = {"configurable": {"thread_id": f"rt13-control-{kind}"}}
    graph.invoke({"messages": [("user", "go")]}, config, context={"user": DEMOTED})
    assert [r for r in ledger.runs if r[0] == "search"] == []


@pytest.mark.parametrize("kind", ["node", "middleware"])
def test_control_an_auditor_search_is_widened(engine: OPAServer, kind: str) -> None:
    ledger = Ledger()
    script = Script([turn(tool_call("search", {"scope": "docs", "limit": 5}, "q1")), "ok"])
    graph = build(kind, engine, script, ledger)
    config = {"configurable": {"thread_id": f"rt13-widened-{kind}"}}
    graph.invoke({"messages": [("user", "go")]}, config, context={"user": AUDITOR})
    assert [args for name, _, args in ledger.runs if name == "search"] == [
        {"scope": "all", "limit": 5}
    ]


@pytest.mark.parametrize("kind", ["node", "middleware"])
def test_a_rewrite_the_recheck_no_longer_writes_does_not_run(engine: OPAServer, kind: str) -> None:
    ledger = Ledger()
    script = Script(
        [
            turn(
                tool_call("search", {"scope": "docs", "limit": 5}, "q1"),
                tool_call("send", {"to": "a@example.com", "body": "x"}, "s1"),
            ),
            "ok",
        ]
    )
    graph = build(kind, engine, script, ledger)
    config = {"configurable": {"thread_id": f"rt13-stale-{kind}"}}
    first = graph.invoke({"messages": [("user", "go")]}, config, context={"user": AUDITOR})
    assert first["__interrupt__"]
    assert ledger.runs == []
    # The user stops being an auditor while the turn waits; the reviewer approves the send.
    graph.invoke(
        Command(resume={"decisions": [{"type": "approve"}]}), config, context={"user": DEMOTED}
    )
    scopes = [args["scope"] for name, _, args in ledger.runs if name == "search"]
    assert "all" not in scopes, (
        f"search ran with scope {scopes} for a non-auditor: the recheck allowed scope 'docs' "
        "without a rewrite, and the ticket's old rewrite ran"
    )
