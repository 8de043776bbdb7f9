# ruff: noqa: E501
"""Red team 18: after a reviewer's edit, the other calls of the turn are decided on a turn
that no longer exists.

README (the policy contract): ``input.turn`` holds "every call the model proposed in the same
turn, this one included", and on resume "every call of the waiting turn is decided again".
``resume.to_recheck`` puts the edited call's new arguments only into the edited call's own
``input.turn``; every other call of the turn is decided again on the ticket's documents, whose
``turn`` still holds the edited call as the model proposed it.

The policy below lets ``pay`` run only in a turn that sends nothing outside ``@ok.test`` (the
control shows a turn that does is denied). The model proposes ``send(to=a@ok.test)`` (a human
must approve every send) beside ``pay``. The reviewer edits the send to ``boss@elsewhere.test``
(the policy still only asks for a human for it, so the edit runs). The payment is decided again
on a turn whose send still goes to ``a@ok.test``, is allowed, and runs in a turn that really
sends outside ``@ok.test``: the policy decided on a turn other than the one that ran.
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

POLICY = """package redteam18turn

import rego.v1

default decision := {"allow": false, "reasons": [{"code": "default_deny", "message": "no rule"}]}

# Every send waits for a human, whatever the address.
decision := {"allow": false, "require_approval": true, "reasons": [{"code": "ask", "message": "a human must approve"}]} if {
	input.tool.name == "send"
}

outside_send if {
	some call in input.turn
	call.name == "send"
	not endswith(call.args.to, "@ok.test")
}

# A payment runs only in a turn that sends nothing outside @ok.test.
decision := {"allow": true, "reasons": []} if {
	input.tool.name == "pay"
	not outside_send
}

decision := {"allow": false, "reasons": [{"code": "pay_beside_outside_send", "message": "no payment in a turn that sends outside"}]} if {
	input.tool.name == "pay"
	outside_send
}
"""

USER = {"id": "u-1", "role": "tester"}


@pytest.fixture(scope="module")
def opa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OPAProcess]:
    root = tmp_path_factory.mktemp("redteam18-turn")
    (root / "policy.rego").write_text(POLICY)
    with OPAProcess([root], log_path=root / "opa.log") as server:
        yield server


@pytest.fixture
def engine(opa: OPAProcess) -> Iterator[OPAServer]:
    client = OPAServer(opa.url, policy="redteam18turn/decision")
    yield client
    client.close()


def build(kind: str, engine: OPAServer, script: Script, ledger: Ledger) -> Any:
    maker = node_graph if kind == "node" else agent_graph
    return maker(engine, script, ledger, checkpointer=InMemorySaver())


def turn(*calls: Any) -> AIMessage:
    return AIMessage("", tool_calls=list(calls))


@pytest.mark.parametrize("kind", ["node", "middleware"])
def test_control_pay_beside_an_outside_send_is_denied(engine: OPAServer, kind: str) -> None:
    ledger = Ledger()
    script = Script(
        [
            turn(
                tool_call("send", {"to": "boss@elsewhere.test", "body": "x"}, "s1"),
                tool_call("pay", {"amount": 5}, "p1"),
            ),
            "ok",
        ]
    )
    graph = build(kind, engine, script, ledger)
    config = {"configurable": {"thread_id": f"rt18-turn-control-{kind}"}}
    first = graph.invoke({"messages": [("user", "go")]}, config, context={"user": USER})
    assert first["__interrupt__"]
    graph.invoke(
        Command(resume={"decisions": [{"type": "approve"}]}), config, context={"user": USER}
    )
    assert [name for name, _, _ in ledger.runs] == ["send"]


@pytest.mark.parametrize("kind", ["node", "middleware"])
def test_control_pay_beside_an_ok_send_runs(engine: OPAServer, kind: str) -> None:
    ledger = Ledger()
    script = Script(
        [
            turn(
                tool_call("send", {"to": "a@ok.test", "body": "x"}, "s1"),
                tool_call("pay", {"amount": 5}, "p1"),
            ),
            "ok",
        ]
    )
    graph = build(kind, engine, script, ledger)
    config = {"configurable": {"thread_id": f"rt18-turn-ok-{kind}"}}
    graph.invoke({"messages": [("user", "go")]}, config, context={"user": USER})
    graph.invoke(
        Command(resume={"decisions": [{"type": "approve"}]}), config, context={"user": USER}
    )
    assert sorted(name for name, _, _ in ledger.runs) == ["pay", "send"]


@pytest.mark.parametrize("kind", ["node", "middleware"])
def test_pay_is_decided_on_the_turn_as_edited(engine: OPAServer, kind: str) -> None:
    ledger = Ledger()
    script = Script(
        [
            turn(
                tool_call("send", {"to": "a@ok.test", "body": "x"}, "s1"),
                tool_call("pay", {"amount": 5}, "p1"),
            ),
            "ok",
        ]
    )
    graph = build(kind, engine, script, ledger)
    config = {"configurable": {"thread_id": f"rt18-turn-edit-{kind}"}}
    first = graph.invoke({"messages": [("user", "go")]}, config, context={"user": USER})
    assert first["__interrupt__"]
    assert ledger.runs == []
    edited = {"name": "send", "args": {"to": "boss@elsewhere.test", "body": "x"}}
    graph.invoke(
        Command(resume={"decisions": [{"type": "edit", "edited_action": edited}]}),
        config,
        context={"user": USER},
    )
    sent = [args["to"] for name, _, args in ledger.runs if name == "send"]
    assert sent == ["boss@elsewhere.test"]  # the edit ran
    paid = [args for name, _, args in ledger.runs if name == "pay"]
    assert paid == [], (
        "pay ran in a turn that sent outside @ok.test: it was decided again on the turn as "
        "the model proposed it (send to a@ok.test), not as it ran after the reviewer's edit"
    )
