# ruff: noqa: E501
"""Red team 2: policy changes while a run waits, outside the approval path.

The earlier fix re-decides a turn that waits for a *reviewer*. A grant issued before any
other pause is never looked at again, and on an approval resume a re-decision's rewrite is
dropped: the call runs with the arguments an older policy chose.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from mediation_kit import USER, Ledger, Script, agent_graph, node_graph
from opa_process import OPAProcess

from langchain_opa_guard import OPAServer
from langchain_opa_guard.testing import tool_call

# read: allowed unless the user is revoked. search: allowed, limit capped at data.cap (a
# rewrite). send to *@ask.test: a human must approve.
POLICY = """package mediation

default decision := {"allow": false, "reasons": [{"code": "default_deny", "message": "no rule"}]}

revoked if data.revoked[input.user.id]

decision := {"allow": false, "reasons": [{"code": "revoked", "message": "user revoked"}]} if revoked

decision := {"allow": true, "reasons": []} if {
	not revoked
	input.tool.name == "read"
}

decision := {"allow": true, "reasons": [], "args": {"scope": input.tool.args.scope, "limit": min([input.tool.args.limit, data.cap])}} if {
	not revoked
	input.tool.name == "search"
}

decision := {"allow": false, "require_approval": true, "reasons": [{"code": "ask", "message": "a human must approve"}]} if {
	not revoked
	input.tool.name == "send"
	endswith(input.tool.args.to, "@ask.test")
}
"""


@pytest.fixture(scope="module")
def opa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OPAProcess]:
    root = tmp_path_factory.mktemp("redteam2-resume")
    (root / "policy.rego").write_text(POLICY)
    (root / "data.json").write_text('{"cap": 10, "revoked": {}}')
    with OPAProcess([root], log_path=root / "opa.log") as server:
        yield server


@pytest.fixture
def engine(opa: OPAProcess) -> Iterator[OPAServer]:
    httpx.put(f"{opa.url}/v1/data/revoked", json={})
    httpx.put(f"{opa.url}/v1/data/cap", json=10)
    client = OPAServer(opa.url, policy="mediation/decision")
    yield client
    client.close()


def build(kind: str, engine: OPAServer, script: Script, ledger: Ledger, **kw: Any) -> Any:
    maker = node_graph if kind == "node" else agent_graph
    return maker(engine, script, ledger, checkpointer=InMemorySaver(), **kw)


@pytest.mark.parametrize("kind", ["node", "middleware"])
def test_a_recheck_on_resume_applies_the_policys_current_rewrite(
    opa: OPAServer, engine: OPAServer, kind: str
) -> None:
    """A turn with a search (allowed, limit capped by a rewrite) and a send that waits for
    a human. While it waits the cap goes from 10 to 3. On resume the guard decides the
    search again (README: every call of the waiting turn is decided again) and the policy
    now allows it only with limit 3; the search runs with limit 10."""
    ledger = Ledger()
    script = Script(
        [
            AIMessage(
                "",
                tool_calls=[
                    tool_call("search", {"scope": "docs", "limit": 50}, "q1"),
                    tool_call("send", {"to": "a@ask.test", "body": "x"}, "s1"),
                ],
            ),
            "ok",
        ]
    )
    graph = build(kind, engine, script, ledger)
    config = {"configurable": {"thread_id": f"cap-{kind}"}}
    first = graph.invoke({"messages": [("user", "go")]}, config, context={"user": USER})
    assert first["__interrupt__"]
    assert httpx.put(f"{opa.url}/v1/data/cap", json=3).status_code == 204
    graph.invoke(
        Command(resume={"decisions": [{"type": "approve"}]}), config, context={"user": USER}
    )
    limits = [args["limit"] for name, _, args in ledger.runs if name == "search"]
    assert limits and all(limit <= 3 for limit in limits), f"search ran with limit {limits}"
