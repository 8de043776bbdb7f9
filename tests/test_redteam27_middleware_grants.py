"""Red team 27: the middleware's sealed grants of one agent run in another agent.

``OPAGuardMiddleware`` writes its sealed grants to the agent state, where a caller reads them
(``stream_mode="values"``, ``get_state_history``). The seal binds the message id and each
call's name and arguments, but neither the thread, the graph, nor the guard or policy that
granted them. A caller of two agents served by one process (a sandbox whose policy allows
everything, a production agent whose policy denies payments over 1000) writes the sandbox's
grants and its model message into the production agent's state with
``Command(update=..., goto="tools")``: the production tool runs the payment its policy denies.
"""

from __future__ import annotations

import copy
from typing import Any

from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from mediation_kit import POLICY, USER, Ledger, Script, agent_graph
from opa_process import ROOT

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.guards.middleware_grants import GRANTS_KEY
from langchain_opa_guard.testing import tool_call

PERMISSIVE = """
package rt27open

default decision := {"allow": true, "reasons": []}
"""


def test_grants_of_a_sandbox_agent_run_a_denied_payment_in_production(tmp_path: Any) -> None:
    directory = tmp_path / "rt27open"
    directory.mkdir()
    (directory / "policy.rego").write_text(PERMISSIVE)
    message = AIMessage("", tool_calls=[tool_call("pay", {"amount": 99999}, "c1")], id="m1")
    sandbox = agent_graph(
        EmbeddedPolicy(directory, policy="rt27open/decision"),
        Script([message]),
        Ledger(),
        checkpointer=InMemorySaver(),
    )
    seen = None
    for values in sandbox.stream(
        {"messages": [("user", "hi")]},
        {"configurable": {"thread_id": "sandbox"}},
        context={"user": USER},
        stream_mode="values",
    ):
        if values.get(GRANTS_KEY):
            seen = copy.deepcopy(values[GRANTS_KEY])
    assert seen is not None

    ledger = Ledger()
    production = agent_graph(
        EmbeddedPolicy(ROOT / "tests" / "policies", policy=POLICY),
        Script(["hi"]),
        ledger,
        checkpointer=InMemorySaver(),
    )
    config = {"configurable": {"thread_id": "prod"}}
    production.invoke({"messages": [("user", "hi")]}, config, context={"user": USER})
    production.invoke(
        Command(update={"messages": [message], GRANTS_KEY: seen}, goto="tools"),
        config,
        context={"user": USER},
    )

    # Expected: production's guard never allowed it; decided where it runs, it is denied.
    assert ledger.runs == []
