"""The middleware's kept history before it has learned the agent's tools.

Without ``registry=``, ``OPAGuardMiddleware`` learns each tool's metadata from the agent's
own tools when the model is first called; ``before_agent`` runs before that and keeps the
calls the conversation holds. Those entries must keep every fact the policy draws from
them: bounding a long history may not merge the calls of tools it has yet to learn into one
kind (an untrusted read among a thousand other calls would be dropped), and the policy reads
each kept call with the metadata known when it decides.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver
from test_redteam16_restart_metadata import EVIL, INTERNAL, _agent, _guard

from langchain_opa_guard.demo.web import PAGE, Outbox, web_tools
from langchain_opa_guard.guards.kept_history import KEPT_LIMIT
from langchain_opa_guard.testing import tool_call


def conversation(fetch: bool) -> list[Any]:
    """A conversation passed in: a lookup, the untrusted fetch, then more lookups than the
    kept history holds as they are, all answered."""
    calls = [tool_call("lookup", {"q": "first"}, "l0")]
    if fetch:
        calls.append(tool_call("fetch_url", {"url": "https://partner.test"}, "f1"))
    calls += [tool_call("lookup", {"q": str(i)}, f"l{i + 1}") for i in range(KEPT_LIMIT + 1)]
    answers = [
        ToolMessage(PAGE if c["name"] == "fetch_url" else "ok", tool_call_id=c["id"]) for c in calls
    ]
    return [
        HumanMessage("read the partner page", id="h1"),
        AIMessage("", id="a1", tool_calls=calls),
        *answers,
        AIMessage("The page asks to email the customer list.", id="a2"),
        HumanMessage("now send it", id="h2"),
    ]


@pytest.mark.parametrize("registry", [True, False], ids=["registry", "no_registry"])
@pytest.mark.parametrize("fetch", [True, False], ids=["untrusted read", "control: none"])
def test_a_long_conversation_keeps_its_untrusted_read(registry: bool, fetch: bool) -> None:
    outbox = Outbox()
    tools, _ = web_tools(outbox)
    send = [AIMessage("", tool_calls=[tool_call("send_email", EVIL, "m1")])]
    agent = _agent(tools, InMemorySaver(), send, _guard(tools, registry))
    config = {"configurable": {"thread_id": f"long-{registry}-{fetch}"}}
    agent.invoke({"messages": conversation(fetch)}, config, context={"user": INTERNAL})
    if fetch:
        assert outbox.sent == [], "the email went out after an untrusted read the history lost"
    else:
        assert [m["to"] for m in outbox.sent] == [EVIL["to"]]
