"""The check where the tool starts (``guards/tool_start_check.py``): a tool that runs
other tools in turn still runs, on every wiring, sync and async; the check sees only the tool
the call names, with the arguments allowed.

The tools here: ``read`` (allowed by the mediation policy) looks its item up with a
``lookup`` tool of its own, which nobody decides (it is ``read``'s business), passing the
run's config on or leaving LangChain to find it.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import BaseTool, InjectedToolArg, InjectedToolCallId, StructuredTool
from mediation_kit import (
    USER,
    WIRINGS,
    Ledger,
    Script,
    mediation_engine,  # noqa: F401 - the engine fixture
    mediation_tools,
    wired_graph,
)
from pydantic import BaseModel

from langchain_opa_guard import EmbeddedPolicy, guard_tools
from langchain_opa_guard.guards.tool_start_check import (
    ToolStartCheck,
    UncheckedToolRun,
    checking,
    expected_digest,
)
from langchain_opa_guard.testing import tool_call


def _nesting_tools(ledger: Ledger, flavour: str) -> list[BaseTool]:
    """``read`` that runs ``lookup`` inside it (``flavour``: sync or async, config passed on
    or not), and the mediation tools but ``read``."""

    def find(key: str) -> str:
        """Look a key up."""
        ledger.record("lookup", "-", {"key": key})
        return f"found {key}"

    lookup = StructuredTool.from_function(find, name="lookup")

    def read(
        item: str, tool_call_id: Annotated[str, InjectedToolCallId], config: RunnableConfig
    ) -> str:
        """Read an item."""
        found = lookup.invoke({"key": item}, config if flavour == "config" else None)
        return ledger.record("read", tool_call_id, {"item": item, "found": found})

    async def aread(
        item: str, tool_call_id: Annotated[str, InjectedToolCallId], config: RunnableConfig
    ) -> str:
        """Read an item."""
        found = await lookup.ainvoke({"key": item}, config)
        return ledger.record("read", tool_call_id, {"item": item, "found": found})

    if flavour == "async":
        own = StructuredTool.from_function(coroutine=aread, name="read", description="Read.")
    else:
        own = StructuredTool.from_function(read)
    return [own, *(t for t in mediation_tools(ledger) if t.name != "read")]


def _run(graph: Any, mode: str) -> Any:
    value = {"messages": [("user", "read i")]}
    config = {"configurable": {"thread_id": f"tool-start-{id(graph)}"}}
    if mode == "async":
        return asyncio.run(graph.ainvoke(value, config, context={"user": USER}))
    return graph.invoke(value, config, context={"user": USER})


@pytest.mark.parametrize("flavour", ["config", "context", "async"])
@pytest.mark.parametrize("kind", WIRINGS)
def test_a_tool_that_runs_another_tool_runs(
    engine: EmbeddedPolicy, kind: str, flavour: str
) -> None:
    ledger = Ledger()
    script = Script([AIMessage("", tool_calls=[tool_call("read", {"item": "i"}, "r1")]), "ok"])
    graph = wired_graph(engine, kind, _nesting_tools(ledger, flavour), script)
    out = _run(graph, "async" if flavour == "async" else "sync")
    assert [name for name, _, _ in ledger.runs] == ["lookup", "read"]
    (answer,) = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert answer.status == "success", answer.content


@pytest.mark.parametrize("flavour", ["config", "context", "async"])
def test_a_guarded_tool_that_runs_another_tool_runs(engine: EmbeddedPolicy, flavour: str) -> None:
    ledger = Ledger()
    (read,) = [t for t in guard_tools(_nesting_tools(ledger, flavour), engine) if t.name == "read"]
    call = tool_call("read", {"item": "i"}, "r1")
    config: Any = {"configurable": {"user": USER}}
    if flavour == "async":
        out = asyncio.run(read.ainvoke(call, config))
    else:
        out = read.invoke(call, config)
    assert [name for name, _, _ in ledger.runs] == ["lookup", "read"]
    assert isinstance(out, ToolMessage) and out.status == "success", out


def test_the_check_stops_another_tool_or_other_arguments() -> None:
    """Under the check, only the tool the call names starts, with the arguments allowed."""
    ledger = Ledger()
    read, send, *_ = mediation_tools(ledger)
    allowed = {"item": "i"}
    check = ToolStartCheck(tool_call("read", allowed, "r1"), expected_digest(read, "read", allowed))
    with checking(check):
        assert read.invoke(tool_call("read", {"item": "i"}, "r1")).content.startswith("read")
    for tool, args in ((read, {"item": "j"}), (send, {"to": "a@ok.test", "body": "b"})):
        with (
            checking(
                ToolStartCheck(
                    tool_call("read", allowed, "r1"), expected_digest(read, "read", allowed)
                )
            ),
            pytest.raises(UncheckedToolRun),
        ):
            tool.invoke(tool_call(tool.name, args, "r1"))
    assert [name for name, _, _ in ledger.runs] == ["read"]


# -- the expected digest: LangChain's filter, kept per tool and schema --------------------


def _visible_only(args: dict[str, Any]) -> str:
    from langchain_opa_guard.guards.tools_payload import call_digest

    return call_digest("lookup", args)


def _tool_with(schema: type) -> StructuredTool:
    def lookup(**kwargs: Any) -> str:
        """Look a key up."""
        return "x"

    return StructuredTool.from_function(lookup, name="lookup", args_schema=schema)


class Plain(BaseModel):
    key: str
    region: str


class WithInjected(BaseModel):
    key: str
    region: Annotated[str, InjectedToolArg]


def test_the_expected_digest_leaves_out_what_the_run_does_not_report() -> None:
    """An injected argument is left out as LangChain's run leaves it out of ``inputs``, on
    the first call and on later ones (the filter's answer is kept); a schema put in place
    later is read again."""
    tool = _tool_with(Plain)
    args = {"key": "k", "region": "eu"}
    for _ in range(2):
        assert expected_digest(tool, "lookup", args) == _visible_only(args)
    tool.args_schema = WithInjected
    for _ in range(2):
        assert expected_digest(tool, "lookup", args) == _visible_only({"key": "k"})
    tool.args_schema = Plain
    assert expected_digest(tool, "lookup", args) == _visible_only(args)


def test_a_tool_with_a_filter_of_its_own_is_asked_every_time() -> None:
    """A tool class that filters injected arguments its own way is not answered from what
    an earlier call's filter left out."""
    from pydantic import BaseModel

    class Args(BaseModel):
        key: str
        secret: str

    asked: list[frozenset[str]] = []

    class OwnFilter(StructuredTool):
        hide: str = "secret"

        def _filter_injected_args(self, tool_input: dict[str, Any]) -> dict[str, Any]:
            asked.append(frozenset(tool_input))
            return {k: v for k, v in tool_input.items() if k != self.hide}

    def lookup(key: str, secret: str) -> str:
        """Look a key up."""
        return key

    tool = OwnFilter(name="lookup", description="d", func=lookup, args_schema=Args, hide="secret")
    args = {"key": "k", "secret": "s"}
    assert expected_digest(tool, "lookup", args) == _visible_only({"key": "k"})
    tool.hide = "key"
    assert expected_digest(tool, "lookup", args) == _visible_only({"secret": "s"})
    assert len(asked) == 2


def test_a_known_digest_counts_only_for_its_own_arguments_object() -> None:
    """The grant's digest (``known``) is taken for the very arguments object it was taken
    of, and only when the run reports all of it; an equal copy, or arguments with an
    injected one, are digested afresh."""
    from pydantic import BaseModel

    class Args(BaseModel):
        key: str
        region: Annotated[str, InjectedToolArg]

    tool = _tool_with(Args)
    plain = {"key": "k"}
    marked = (plain, "the-grant's-digest")
    assert expected_digest(tool, "lookup", plain, marked) == "the-grant's-digest"
    assert expected_digest(tool, "lookup", dict(plain), marked) == _visible_only(plain)
    with_injected = {"key": "k", "region": "eu"}
    assert expected_digest(
        tool, "lookup", with_injected, (with_injected, "the-grant's-digest")
    ) == _visible_only(plain)
