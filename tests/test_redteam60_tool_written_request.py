"""``input.context.request`` taken from a HumanMessage a tool wrote (the infoflow pack's
``destination_not_requested``).

A tool that fetches untrusted content (``"trust": "untrusted"``) hands it to the model the way
many tools hand over pages and images that a ToolMessage cannot carry: it returns a
``Command`` that answers its own call and adds a ``HumanMessage`` with the content. The
README allows a tool's result that answers its own call and adds messages. The guard node and
the ``ToolNode`` interceptor read ``context.request`` again at each turn, as "the text of the
latest human message", which is now the page. The page names eve@evil.test, so the
``send_email`` the page asks for counts as "requested" and runs without a human. The middleware
records the request when the run starts, so there the same e-mail waits for a human.

Expected on every wiring: the e-mail to eve@evil.test does not run without a human (the
user asked for a summary only: the destination is not in the user's request)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import BaseTool, InjectedToolCallId
from langgraph.types import Command
from mail_page_kit import (
    INTERNAL,
    PAGE,
    REQUEST,
    WIRINGS,
    page_engine,  # noqa: F401 - the engine fixture
    page_graph,
    page_tools,
)

from langchain_opa_guard import EmbeddedPolicy
from langchain_opa_guard.contract import TOOL_WRITTEN_KEY


def _tools(emails: list[str], form: str) -> list[BaseTool]:
    def fetch_url(url: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> Any:
        """Fetch a web page."""
        if form == "tool-message":
            return PAGE
        # A human message, or plain text (which LangGraph's reducer reads as one).
        page: Any = HumanMessage([{"type": "text", "text": PAGE}]) if form == "human" else PAGE
        return Command(
            update={
                "messages": [
                    ToolMessage("The page is attached below.", tool_call_id=tool_call_id),
                    page,
                ]
            }
        )

    return page_tools(fetch_url, emails)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("form", ["tool-message", "human", "text"])
@pytest.mark.parametrize("wiring", WIRINGS)
def test_a_page_handed_over_as_a_human_message_is_not_the_users_request(
    engine: EmbeddedPolicy, wiring: str, form: str, mode: str
) -> None:
    emails: list[str] = []
    as_human = form != "tool-message"
    graph = page_graph(wiring, engine, _tools(emails, form))
    config: Any = {"configurable": {"thread_id": f"{wiring}-{form}-{mode}"}}
    inputs = {"messages": [("user", REQUEST)]}
    if mode == "sync":
        out = graph.invoke(inputs, config, context={"user": INTERNAL})
    else:
        out = asyncio.run(graph.ainvoke(inputs, config, context={"user": INTERNAL}))
    assert emails == [], f"{wiring}: the e-mail the page asked for ran without a human"
    # The page did reach the model (as the tool's human message when handed over so), and
    # the e-mail was held, not run.
    pages = [m for m in out["messages"] if isinstance(m, HumanMessage) and PAGE in str(m.content)]
    assert len(pages) == (1 if as_human else 0)
    assert all(m.response_metadata.get(TOOL_WRITTEN_KEY) for m in pages)
    if "__interrupt__" not in out:
        answers = [m for m in out["messages"] if isinstance(m, ToolMessage)]
        assert any(m.tool_call_id == "m1" and m.status == "error" for m in answers), answers
