"""Red team 48: ``guard_tools`` in LangGraph's functional API (``@entrypoint`` with a
checkpointer, ``@task``) (pins: nothing broke).

The attack: an entrypoint runs ``read`` (``r1``, allowed) and ``pay`` of 5000 (``p1``, denied)
through ``guard_tools``, each in a ``@task``, then pauses in ``interrupt()``; it is resumed by
another user, and then runs ``send`` to ``b@ok.test`` (``s1``). The user comes from
``context`` or from ``configurable``; sync and async. The engine is the embedded one, wrapped
only to record the subject of each policy input.

Expected, and observed: ``p1`` never runs and is answered with the policy's denial; ``r1`` runs
once (the resume takes the task's saved result, as LangGraph does for any task, and does not
decide it again); each decision is made with the identity of the run that makes it: the calls
before the pause with the first user's, ``s1`` with the resumer's (the README's "decided under
the subject in force then"); a tool that raises inside a task raises out of the entrypoint as
a plain tool's would (LangChain's default ``handle_tool_error``), and a denial carries no
traceback.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tools import StructuredTool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.func import entrypoint, task
from langgraph.types import Command, interrupt
from mediation_kit import (
    USER,
    Ledger,
    mediation_engine,  # noqa: F401 - the engine fixture
    mediation_tools,
    runs_of,
    thread_config,
)

from langchain_opa_guard import Decision, PolicyEngine, guard_tools
from langchain_opa_guard.testing import tool_call

OTHER = {"id": "u-2", "role": "other"}


class Recording:
    """``inner``, recording the subject of every policy input it decides."""

    def __init__(self, inner: PolicyEngine) -> None:
        self.inner = inner
        self.users: list[Any] = []
        self.engine_name = inner.engine_name
        self.policy = inner.policy
        self.in_process = getattr(inner, "in_process", False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def decide(self, document: dict[str, Any], *a: Any, **k: Any) -> Decision:
        self.users.append(document.get("user"))
        return self.inner.decide(document, *a, **k)

    async def adecide(self, document: dict[str, Any], *a: Any, **k: Any) -> Decision:
        self.users.append(document.get("user"))
        return await self.inner.adecide(document, *a, **k)


def workflow(engine: Recording, ledger: Ledger) -> Any:
    tools = {t.name: t for t in guard_tools(mediation_tools(ledger), engine)}  # type: ignore[arg-type]

    @task
    def call(name: str, args: dict[str, Any], call_id: str) -> Any:
        return tools[name].invoke(tool_call(name, args, call_id))

    @entrypoint(checkpointer=InMemorySaver())
    def flow(_: Any) -> list[Any]:
        out = [
            call("read", {"item": "i"}, "r1").result(),
            call("pay", {"amount": 5000}, "p1").result(),
        ]
        interrupt("go on?")
        out.append(call("send", {"to": "b@ok.test", "body": "x"}, "s1").result())
        return out

    return flow


@pytest.mark.parametrize("where", ["context", "configurable"])
def test_a_denied_call_in_a_task_never_runs_and_each_run_decides_as_its_own_user(
    engine: PolicyEngine, where: str
) -> None:
    recording = Recording(engine)
    ledger = Ledger()
    flow = workflow(recording, ledger)
    config: dict[str, Any] = thread_config(f"func-{where}")
    if where == "context":
        first = flow.invoke("go", config, context={"user": USER})
    else:
        config["configurable"]["user"] = USER
        first = flow.invoke("go", config)
    assert "__interrupt__" in first
    assert [i for _, i, _ in ledger.runs] == ["r1"]
    assert recording.users == [USER, USER]
    resumed_config = thread_config(f"func-{where}")
    if where == "configurable":
        resumed_config["configurable"]["user"] = OTHER
        result = flow.invoke(Command(resume=True), resumed_config)
    else:
        result = flow.invoke(Command(resume=True), resumed_config, context={"user": OTHER})
    read, pay, send = result
    assert read.content == "read ran" and send.content == "send ran"
    assert isinstance(pay, ToolMessage) and pay.status == "error"
    assert "denied by policy" in pay.content and "Traceback" not in pay.content
    assert runs_of(ledger, "p1") == 0 and runs_of(ledger, "r1") == 1 and runs_of(ledger, "s1") == 1
    assert recording.users == [USER, USER, OTHER]


def test_an_async_entrypoint_decides_with_the_context_user(engine: PolicyEngine) -> None:
    recording = Recording(engine)
    ledger = Ledger()
    tools = {t.name: t for t in guard_tools(mediation_tools(ledger), recording)}  # type: ignore[arg-type]

    @task
    async def call(name: str, args: dict[str, Any], call_id: str) -> Any:
        return await tools[name].ainvoke(tool_call(name, args, call_id))

    @entrypoint(checkpointer=InMemorySaver())
    async def flow(_: Any) -> list[Any]:
        return [
            await call("read", {"item": "i"}, "r9"),
            await call("pay", {"amount": 5000}, "p9"),
        ]

    read, pay = asyncio.run(flow.ainvoke("go", thread_config("afunc"), context={"user": USER}))
    assert read.content == "read ran" and pay.status == "error"
    assert [i for _, i, _ in ledger.runs] == ["r9"]
    assert recording.users == [USER, USER]


def test_a_tool_raising_in_a_task_raises_as_a_plain_tool_would(engine: PolicyEngine) -> None:
    def read(item: str) -> str:
        """Read an item."""
        raise ValueError("internal detail")

    (guarded,) = guard_tools([StructuredTool.from_function(read)], engine)

    @task
    def call() -> Any:
        return guarded.invoke(tool_call("read", {"item": "i"}, "b1"))

    @entrypoint(checkpointer=InMemorySaver())
    def flow(_: Any) -> Any:
        return call().result()

    with pytest.raises(ValueError, match="internal detail"):
        flow.invoke("go", thread_config("raising"), context={"user": USER})
